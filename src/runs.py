"""A run folder: what it records (resolved config, provenance, metrics), the commands it
prints, its paths, and its end when the user's input is wrong.

Relative paths on the command line are relative to the folder the command started in.
They are made absolute before anything checks or records them, so a message names the
very file looked for and a run's ``config.yaml`` (which ``eval.py`` reads) works from any
folder. Files are replaced in one rename, so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.utils import to_absolute_path
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError

log = logging.getLogger(__name__)
log_file_only = logging.getLogger("log_file_only")  # not on the console (configs/hydra)

KEY_PACKAGES = ("torch", "lightning", "torchmetrics", "hydra-core", "torchvision", "scikit-learn")
# The options that are paths; paths.* first, as data.data_dir interpolates paths.data_dir.
PATH_KEYS = ("paths.root_dir", "paths.data_dir", "paths.log_dir", "data.data_dir")
PATH_KEYS += ("data.csv_path", "ckpt_path", "input")
LAST = "last"  # ckpt_path=last: the newest last.ckpt
# A run stopped by Ctrl-C or SIGTERM exits as a shell reports a process a signal ended.
EXIT_CODES = {signum: 128 + signum for signum in (signal.SIGINT, signal.SIGTERM)}


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
    ranks, runs sharing a folder) never rename each other's half-written files. Ctrl-C and
    SIGTERM wait until the file is in place: raised inside torch's writer, a
    ``KeyboardInterrupt`` aborts the whole process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    held: list[int] = []
    handlers = {
        signum: signal.signal(signum, lambda signum, _: held.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with open(temporary, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in held:
            signal.raise_signal(signum)


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


def plain(node: Any) -> Any:
    """Resolved plain Python values, the only kind checkpoints may hold (weights_only)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config with every ``${...}`` resolved, without Hydra's own settings."""
    return {key: plain(value) for key, value in cfg.items() if key != "hydra"}


def job_overrides() -> list[str]:
    """This run's command-line overrides; in a sweep, this job's share of them."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def override_key(item: str) -> str:
    """The key an override sets: ``data`` for ``data=digits``, ``+data=digits`` or ``~data``."""
    return item.lstrip("+~").split("=")[0]


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


def eval_command(ckpt_path: str | Path) -> str:
    """The command that tests a checkpoint, ready to paste into a POSIX shell."""
    return shlex.join(["python", "src/eval.py", override("ckpt_path", str(ckpt_path))])


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


def report(
    trainer: Any, cfg: DictConfig, metrics: dict[str, Any], started: float
) -> dict[str, Any]:
    """The run's metrics with its name, tags and wall time, which the global rank 0 writes
    to ``metrics.json`` and sums up in the run's last line: its headline metric and folder.
    That is the best checkpoint's validation score and epoch, and its test score: what the
    run keeps. A run without a best checkpoint shows its final validation score instead."""
    metrics = {**run_identity(cfg), **metrics, "wall_time_s": time.perf_counter() - started}
    if not trainer.is_global_zero:
        return metrics
    output_dir, monitor = Path(cfg.paths.output_dir), cfg.data.monitor
    write_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    best = f"{monitor}_best"
    names = [best if best in metrics else monitor, monitor.replace("val/", "test/", 1)]
    shown = [f"{name}={metrics[name]:.4g}" for name in dict.fromkeys(names) if name in metrics]
    if best in metrics:
        shown[0] += f" (epoch {metrics['best_epoch']})"
    log.info("Done%s. Run folder: %s", f": {', '.join(shown)}" if shown else "", output_dir)
    return metrics


def collect_metrics(trainer: Any) -> dict[str, float]:
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The run's name and tags, recorded in metrics.json and the loggers' hyperparameters."""
    return {"run_name": cfg.get("run_name"), "tags": list(cfg.get("tags") or [])}


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


class CreateRunFolder(Callback):
    """Create the run's (or the sweep's) folder before Hydra does: Hydra reports a folder it
    cannot write (a read-only or full disk) with a traceback; here it ends in one line."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.create(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.create(config.hydra.sweep.dir)

    @staticmethod
    def create(folder: str) -> None:
        existing = next(path for path in (Path(folder), *Path(folder).parents) if path.exists())
        try:
            if shutil.disk_usage(existing).free < 2**20:  # not even Hydra's own files fit
                raise OSError(errno.ENOSPC, "less than 1 MB free")
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:  # SystemExit: Hydra turns a callback's exceptions into warnings
            raise SystemExit(
                f"error: cannot write the run folder {folder} ({error.strerror}). Free space "
                "there, or choose a folder you can write to with paths.log_dir=FOLDER."
            ) from None


def failure(error: Exception, cfg: DictConfig) -> str:
    """The one paragraph that reports ``error``; its traceback goes to the run's log file only.

    A ``UserError`` says what to fix in its own words. Anything else (a library's error about
    the input, a bug) is named by its type and first line, and points to the log; an
    ``OSError`` under it (a full or read-only disk) is named instead of the library's error.
    """
    if isinstance(error, UserError):
        text = str(error)
    else:
        chain = [error]
        while chain[-1].__context__ is not None:
            chain.append(chain[-1].__context__)
        shown = next((cause for cause in chain if isinstance(cause, OSError)), error)
        first = str(shown).strip().splitlines()[0] if str(shown).strip() else repr(shown)
        log_path = Path(cfg.paths.output_dir) / f"{cfg.task_name}.log"
        text = f"{type(shown).__name__}: {first} (the traceback is in {log_path})"
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # a library's terminal colours
    log_file_only.error("%s", text, exc_info=error)
    return text


@rank_zero_only
def discard_unfinished_run(output_dir: Path, keep_log: bool) -> None:
    """Remove what a failed run wrote unless it holds checkpoints, so no failed run passes for
    a result; ``keep_log`` keeps its log file, which holds the traceback."""
    if not output_dir.is_dir() or any(output_dir.rglob("*.ckpt")):
        return
    for path in output_dir.iterdir():
        if not (keep_log and path.suffix == ".log"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not keep_log:
        output_dir.rmdir()


def raise_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM outside Lightning's loops stops the run as Ctrl-C does; inside them, Lightning's
    own handler (which calls this one) stops after the current batch."""
    if signal.getsignal(signal.SIGTERM) is raise_sigterm:
        raise SIGTERMException


def run_reporting_errors(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``task(cfg)``; end any failure in one paragraph on the console and a non-zero exit.

    What the trainer interrupted is reported by ``src/interrupts.py``; an interrupt before the
    trainer's work ends here. An error that is not the user's to fix leaves only the run's
    log file, which holds its traceback.
    """
    output_dir = Path(cfg.paths.output_dir)
    previous = signal.signal(signal.SIGTERM, raise_sigterm)
    try:
        return task(cfg)
    except (KeyboardInterrupt, SIGTERMException) as error:
        signum = signal.SIGTERM if isinstance(error, SIGTERMException) else signal.SIGINT
        log_file_only.warning("Stopped by %s.", signum.name, exc_info=error)
        discard_unfinished_run(output_dir, keep_log=False)
        kept = f"{output_dir} keeps what was written" if output_dir.exists() else "nothing kept"
        print(f"Stopped by {signum.name} ({kept}). Run the command again.", file=sys.stderr)
        raise SystemExit(EXIT_CODES[signum]) from None
    except Exception as error:  # noqa: BLE001 - every failure ends in the one message
        message = failure(error, cfg)
        discard_unfinished_run(output_dir, keep_log=not isinstance(error, UserError))
        raise SystemExit(f"error: {message}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
