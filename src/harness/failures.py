"""How a run ends when something goes wrong: one paragraph on the console, the traceback in
the run's log file, nothing half-written left behind, and an exit code a shell understands.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from src.harness.errors import UserError

log_file_only = logging.getLogger("log_file_only")  # not on the console (configs/hydra)

# A run stopped by Ctrl-C or SIGTERM exits as a shell reports a process a signal ended.
EXIT_CODES = {signum: 128 + signum for signum in (signal.SIGINT, signal.SIGTERM)}


def failure(error: Exception, cfg: DictConfig) -> str:
    """The one paragraph that reports ``error``; its traceback goes to the run's log file only.

    A ``UserError`` says what to fix in its own words, also where a library that called the
    code raising it wraps it (a config resolver's, in OmegaConf's error). Anything else (a
    library's error about the input, a bug) is named by its type and first line, and points
    to the log; an ``OSError`` under it (a full or read-only disk) is named instead of the
    library's error.
    """
    chain = [error]
    while chain[-1].__context__ is not None:
        chain.append(chain[-1].__context__)
    # also one that a config resolver raised, which OmegaConf wraps in an error of its own
    user_error = next((cause for cause in chain if isinstance(cause, UserError)), None)
    if user_error:
        text = str(user_error)
    else:
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

    What the trainer interrupted is reported by ``src/harness/interrupts.py``; an interrupt
    before the trainer's work ends here. An error that is not the user's to fix leaves only
    the run's log file, which holds its traceback.
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
