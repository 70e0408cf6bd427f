"""What a run folder records besides checkpoints: resolved config, provenance, metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

KEY_PACKAGES = ("torch", "lightning", "torchmetrics", "hydra-core", "torchvision", "scikit-learn")


@contextmanager
def replaced_atomically(path: Path) -> Iterator[BinaryIO]:
    """A new file to write that then replaces ``path`` in one rename.

    A crash leaves the old file or the new one, never half of one. The temporary name is
    unique per writer, so processes writing the same path (DDP ranks, runs sharing a
    folder) never rename each other's half-written files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    with replaced_atomically(path) as file:
        file.write(text.encode())


def git_state(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain")) if commit else None
    return {"commit": commit or None, "dirty": dirty}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config with every ``${...}`` resolved, without Hydra's own settings."""
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items()
        if key != "hydra"
    }


def job_overrides() -> list[str]:
    """This run's command-line overrides; in a sweep, this job's share of them."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@rank_zero_only  # DDP processes started by Lightning re-run the script in the same folder
def record_run(cfg: DictConfig, output_dir: Path) -> None:
    """Save the resolved config and where it came from (code version, packages, command)."""
    write_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(resolved_config(cfg)))
    info = {
        "command": [sys.executable, *sys.argv],
        "overrides": job_overrides(),
        "git": git_state(Path(cfg.paths.root_dir)),
        "python": sys.version.split()[0],
        "packages": package_versions(),
    }
    write_atomic(output_dir / "run_info.json", json.dumps(info, indent=2) + "\n")


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
    write_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """Print the composed config as a tree, one branch per top-level group."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", guide_style="dim")
    for key, value in resolved_config(cfg).items():
        text = OmegaConf.to_yaml(value) if isinstance(value, dict | list) else str(value)
        tree.add(f"[bold]{key}[/bold]").add(rich.syntax.Syntax(text.rstrip(), "yaml"))
    rich.print(tree)
