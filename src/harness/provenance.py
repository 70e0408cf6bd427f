"""What a run records about itself: the resolved config, the code version, the packages,
the command, and what a debug mode changed, so a run folder explains itself.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.harness.atomic_files import write_atomic
from src.harness.overrides import job_overrides

log_file_only = logging.getLogger("log_file_only")  # not on the console (configs/hydra)

log = logging.getLogger(__name__)

KEY_PACKAGES = ("torch", "lightning", "torchmetrics", "hydra-core", "torchvision", "scikit-learn")


def git_state(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {
        "commit": commit or None,
        "dirty": bool(git("status", "--porcelain")) if commit else None,
    }


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def plain(node: Any) -> Any:
    """Resolved plain Python values, the only kind checkpoints may hold (weights_only)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config with every ``${...}`` resolved, without Hydra's own settings."""
    return {key: plain(value) for key, value in cfg.items() if key != "hydra"}


@rank_zero_only  # DDP processes started by Lightning re-run the script in the same folder
def record_run(cfg: DictConfig, output_dir: Path) -> None:
    """Save the resolved config and where it came from (code version, packages, command);
    say on the console where the run goes and what it changes (``--cfg job`` prints all)."""
    write_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(resolved_config(cfg)))
    info = {
        "command": [sys.executable, *sys.argv],
        "overrides": job_overrides(),
        "git": git_state(Path(cfg.paths.root_dir)),
        "python": sys.version.split()[0],
        "packages": {name: package_version(name) for name in KEY_PACKAGES},
        "torch_threads": torch.get_num_threads(),
    }
    write_atomic(output_dir / "run_info.json", json.dumps(info, indent=2) + "\n")
    log_file_only.info("Command: %s", shlex.join(info["command"]))
    changed = shlex.join(info["overrides"]) or "none"
    log.info(
        "Run folder: %s (overrides: %s; config.yaml holds the full config)", output_dir, changed
    )


def log_debug_changes(cfg: DictConfig) -> str | None:
    """Log (and return) ``debug=NAME changes: key=value, ...``: a debug run is never taken
    for a real one. The keys are those ``configs/debug/NAME.yaml`` (and its bases) set."""
    name = HydraConfig.get().runtime.choices.get("debug") if HydraConfig.initialized() else None
    if not name:
        return None

    def leaves(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return [prefix.rstrip(".")]
        return [key for name, value in node.items() for key in leaves(value, f"{prefix}{name}.")]

    def keys(name: str) -> list[str]:
        path = Path(cfg.paths.root_dir) / "configs" / "debug" / f"{name}.yaml"
        spec = OmegaConf.to_container(OmegaConf.load(path))
        inherited = [key for base in spec.pop("defaults", []) for key in keys(base)]
        return list(dict.fromkeys(inherited + leaves(spec, "")))

    changes = ", ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in keys(name))
    message = f"debug={name} changes: {changes}"
    log.info(message)
    return message
