"""A stopped sweep or search says once how to go on with all of it: the same command, in its folder.

Run again into the same ``hydra.sweep.dir``, a sweep skips its finished jobs and resumes a
stopped one from its last checkpoint (``sweeps.py``, ``interrupts.py``), and a search
goes on with its study (``search.py``), so one command goes on with the whole sweep.
Ctrl-C reaches every process of a sweep, SIGTERM perhaps its main process only; its jobs
write their own reports to their log files, and the sweep's main process prints the one
message: the job's stop when the basic launcher runs it in that process, the handlers of
:func:`stop_resumably` while the joblib launcher's workers run the jobs, the search itself.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.harness.failures import EXIT_CODES
from src.harness.overrides import override, override_key

SWEEP_DIR = "hydra.sweep.dir"


def go_on_command(overrides: Mapping[str, Iterable[str]], sweep_dir: Path | None) -> str:
    """The sweep's command line from Hydra's record of it (``hydra.overrides``: the task's
    and Hydra's own, such as the launcher), in ``sweep_dir`` if given, else in a new one."""
    kept = [
        item
        for item in [*overrides["task"], *overrides["hydra"]]
        if override_key(item) not in (SWEEP_DIR, "hydra.mode")  # -m sets the mode
    ]
    folder = [override(SWEEP_DIR, str(sweep_dir))] if sweep_dir else []
    return shlex.join(["python", "src/train.py", "-m", *kept, *folder])


def stopped_sweep(signal_name: str, overrides: Mapping[str, Iterable[str]], sweep_dir: Path) -> str:
    return (
        f"The sweep stopped by {signal_name}. {sweep_dir} keeps its finished jobs, which are "
        "skipped when it goes on, and a stopped job resumes from its last checkpoint there. "
        f"Go on with:\n  {go_on_command(overrides, sweep_dir)}"
    )


def stop_resumably(config: DictConfig) -> None:
    """In the main process of a basic sweep over the joblib launcher: a Ctrl-C or SIGTERM
    prints the one message and exits 130/143, which joblib answers by stopping its workers
    (a raw ``KeyboardInterrupt`` traceback otherwise, and a SIGTERM ends it silently)."""
    hydra = config.hydra
    if not (
        hydra.sweeper._target_.endswith("BasicSweeper")
        and hydra.launcher._target_.endswith("JoblibLauncher")
    ):
        return
    overrides, sweep_dir = OmegaConf.to_container(hydra.overrides), Path(hydra.sweep.dir)

    def stop(signum: int, frame: Any) -> None:
        for again in EXIT_CODES:  # a second signal ends the process at once
            signal.signal(again, lambda number, _: os._exit(EXIT_CODES[number]))
        name = signal.Signals(signum).name
        print(stopped_sweep(name, overrides, sweep_dir), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODES[signum])

    for signum in EXIT_CODES:
        signal.signal(signum, stop)
