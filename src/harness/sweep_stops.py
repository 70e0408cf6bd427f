"""A stopped sweep or search says once how to go on with all of it: the same command, in its
folder; and a job in a worker process stops when the sweep's main process is gone.

Run again into the same ``hydra.sweep.dir``, a sweep skips its finished jobs and resumes a
stopped one from its last checkpoint (``sweeps.py``, ``interrupts.py``), and a search
goes on with its study (``search.py``), so one command goes on with the whole sweep.
Ctrl-C reaches every process of a sweep, SIGTERM perhaps its main process only; its jobs
write their own reports to their log files, and the sweep's main process prints the one
message: the job's stop when the basic launcher runs it in that process, the handlers of
:func:`stop_resumably` while the joblib launcher's workers run the jobs, the search itself.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.harness.failures import EXIT_CODES
from src.harness.overrides import override, override_key

log = logging.getLogger(__name__)
SWEEP_DIR = "hydra.sweep.dir"
PARENT_POLL_S = 0.5
STOP_GRACE_S = 3.0  # for the current batch to end and the job to report where it stopped


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
    """In the main process of a sweep over the joblib launcher: a Ctrl-C or SIGTERM prints the
    one message and exits 130/143, which joblib answers by stopping its workers (a raw
    ``KeyboardInterrupt`` traceback otherwise, and a SIGTERM ends it silently). A search
    prints its own message when the exit reaches it (``search.py``)."""
    hydra = config.hydra
    if not hydra.launcher._target_.endswith("JoblibLauncher"):
        return
    search = not hydra.sweeper._target_.endswith("BasicSweeper")
    overrides, sweep_dir = OmegaConf.to_container(hydra.overrides), Path(hydra.sweep.dir)

    def stop(signum: int, frame: Any) -> None:
        for again in EXIT_CODES:  # a second signal ends the process at once
            signal.signal(again, lambda number, _: os._exit(EXIT_CODES[number]))
        if not search:
            name = signal.Signals(signum).name
            print(stopped_sweep(name, overrides, sweep_dir), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODES[signum])

    for signum in EXIT_CODES:
        signal.signal(signum, stop)


@functools.cache  # once per process: a worker runs job after job
def end_with_the_sweep() -> None:
    """In a worker process that a launcher's process pool started, watch for its parent.

    Polled rather than ``prctl(PR_SET_PDEATHSIG)``, which fires when the *thread* that
    started the process ends, and loky starts replacement workers from a thread of its
    own. The basic launcher runs each job in the sweep's main process, whose parent is a
    shell that it must outlive (``nohup``): there is nothing to watch there; nor in a
    process that a forkserver made for another program, whose parent is not the server.
    """
    if in_a_launchers_pool():
        parent = multiprocessing.parent_process()
        threading.Thread(target=stop_when_orphaned, args=(parent.pid,), daemon=True).start()


def in_a_launchers_pool() -> bool:
    """Whether a launcher's process pool (joblib's loky) started this process: its parent
    is the process that started it, unlike one that a forkserver made for another program."""
    parent = multiprocessing.parent_process()
    return parent is not None and parent.pid == os.getppid()


def stop_when_orphaned(parent_pid: int) -> None:
    """Once the parent is gone, stop as an interrupted run does, then end the process."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    log.warning("The sweep's main process (pid %d) is gone: stopping this job.", parent_pid)
    # Lightning stops after the current batch and the run says how to resume it
    # (src/harness/interrupts.py); loky would then keep the worker waiting for the next job.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_S)
    os._exit(EXIT_CODES[signal.SIGTERM])
