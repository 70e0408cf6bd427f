"""A run folder: what it records (resolved config, provenance, metrics), the commands it
prints, its paths, and its end when the user's input is wrong.

Relative paths on the command line are relative to the folder the command started in.
They are made absolute before anything checks or records them, so a message names the
very file looked for and a run's ``config.yaml`` (which ``eval.py`` reads) works from any
folder. Files are replaced in one rename, so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.errors import HydraException
from hydra.utils import to_absolute_path
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError

log = logging.getLogger(__name__)
errors_log = logging.getLogger("run_errors")  # to the run's log file only (configs/hydra)

KEY_PACKAGES = ("torch", "lightning", "torchmetrics", "hydra-core", "torchvision", "scikit-learn")
# The options that are paths; paths.* first, as data.data_dir interpolates paths.data_dir.
PATH_KEYS = ("paths.root_dir", "paths.data_dir", "paths.log_dir", "data.data_dir")
PATH_KEYS += ("data.csv_path", "ckpt_path", "input")
LAST = "last"  # ckpt_path=last: the newest last.ckpt


def absolute_paths(cfg: DictConfig) -> None:
    """Make each relative path of ``PATH_KEYS`` absolute against Hydra's ``runtime.cwd``."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None and value != LAST and not Path(str(value)).is_absolute():
            path = to_absolute_path(os.path.expanduser(str(value)))
            OmegaConf.update(cfg, key, os.path.normpath(path))


@contextmanager
def replaced_atomically(path: Path) -> Iterator[BinaryIO]:
    """A new file to write that then replaces ``path`` in one rename.

    The temporary name is unique per writer, so processes writing the same path (DDP
    ranks, runs sharing a folder) never rename each other's half-written files.
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


def override(key: str, value: str) -> str:
    """``key=value`` that Hydra reads back as the string ``value``: bare if it can, else quoted.

    The user's own overrides are valid Hydra already; a value built here, such as a path
    with spaces or non-ASCII letters, may need Hydra's quotes.
    """
    try:
        if OverridesParser.create().parse_override(f"{key}={value}").value() == value:
            return f"{key}={value}"
    except HydraException:  # a character its grammar has no bare form for
        pass
    return f"{key}={QuotedString(text=value, quote=Quote.single).with_quotes()}"


def command_line(words: list[str]) -> str:
    """``words`` quoted for a POSIX shell: pasted back, each arrives as one argument."""
    return " ".join(shlex.quote(word) for word in words)


@rank_zero_only  # DDP processes started by Lightning re-run the script in the same folder
def record_run(cfg: DictConfig, output_dir: Path) -> None:
    """Save the resolved config and where it came from (code version, packages, command)."""
    write_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(resolved_config(cfg)))
    info = {
        "command": [sys.executable, *sys.argv],
        "overrides": job_overrides(),
        "git": git_state(Path(cfg.paths.root_dir)),
        "python": sys.version.split()[0],
        "packages": {name: package_version(name) for name in KEY_PACKAGES},
    }
    write_atomic(output_dir / "run_info.json", json.dumps(info, indent=2) + "\n")


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
    write_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def collect_metrics(trainer: Any) -> dict[str, float]:
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The run's name and tags, recorded in metrics.json and the loggers' hyperparameters."""
    return {"run_name": cfg.get("run_name"), "tags": list(cfg.get("tags") or [])}


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


def discard_empty_run(output_dir: Path) -> None:
    """Remove a run folder that holds only Hydra's bookkeeping, so no result is faked."""
    # Hydra's folder and the log named after task_name (train.log, eval.log, debug.log, ...)
    if output_dir.is_dir() and all(
        p.name == ".hydra" or p.suffix == ".log" for p in output_dir.iterdir()
    ):
        for path in sorted(output_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        output_dir.rmdir()


def run_reporting_errors(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``task(cfg)``; turn a ``UserError`` into a one-paragraph message and exit 1."""
    try:
        return task(cfg)
    except UserError as error:
        errors_log.error("%s", error)
        discard_empty_run(Path(cfg.paths.output_dir))
        raise SystemExit(f"error: {error}") from None
