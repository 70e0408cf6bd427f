"""Ctrl-C and SIGTERM end a run with what was kept, the command that goes on, exit 130/143.

Lightning already does the hard part: on Ctrl-C it calls every callback's
``on_exception`` and exits with 1; on SIGTERM its signal connector stops the loop after
the current batch (``SIGTERMException``, exit 0). Neither says what to do next, and exit
codes 1 and 0 hide from a shell or scheduler that the run was interrupted: a job stopped
while testing would pass for a finished one. :func:`exit_resumably` wraps the trainer's
work (fit, test, predict) to add exactly that.

During training on one process, ``stop_checkpoint.py`` holds the signal until the end of a
batch and saves ``last.ckpt`` there: the report names that batch, and the run resumes at
the next one. Otherwise (a second Ctrl-C, DDP, a run that keeps no ``last.ckpt``) it
resumes from the newest checkpoint, ``last.ckpt`` (or ``best.ckpt``), and the report says
how many batches of the epoch that repeats.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from src.harness.checkpoints import checkpoint_epoch
from src.harness.failures import EXIT_CODES, discard_unfinished_run
from src.harness.overrides import job_overrides, override, override_key
from src.harness.paths import move_aside
from src.harness.provenance import resolved_config
from src.harness.stop_checkpoint import StopAtBatch
from src.harness.sweep_stops import in_a_launchers_pool, stopped_sweep
from src.harness.sweeps import TRIAL_ENV

log = logging.getLogger(__name__)
log_file_only = logging.getLogger("log_file_only")  # not on the console (configs/hydra)


@contextmanager
def exit_resumably(trainer: L.Trainer, cfg: DictConfig) -> Iterator[None]:
    """Turn Lightning's interrupt exits into a message, the command to go on and exit 130/143."""
    try:
        yield
    except SIGTERMException:  # Lightning's stop, or src.runs.raise_sigterm between its loops
        stop(trainer, cfg, signal.SIGTERM)
    except SystemExit as error:
        if not isinstance(error.__context__, KeyboardInterrupt):
            raise
        stop(trainer, cfg, signal.SIGINT)
    except KeyboardInterrupt:
        stop(trainer, cfg, signal.SIGINT)


def stop(trainer: L.Trainer, cfg: DictConfig, signum: signal.Signals) -> None:
    # Lightning has finished its shutdown: from here a second Ctrl-C ends the process at
    # once. Nothing on disk can break, as checkpoints and metrics.json are renamed into place.
    signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_CODES[signal.SIGINT]))
    if trainer.is_global_zero:
        message = interrupt_report(trainer, cfg, signum.name)
        log_file_only.warning("%s", message)
        discard_unfinished_run(Path(cfg.paths.output_dir), keep_log=False)
        if shown := console_report(message, signum.name):
            print(shown, file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CODES[signum]) from None


def console_report(message: str, signal_name: str) -> str | None:
    """A run's own report; in a sweep, one message for the whole sweep, printed by the sweep's
    main process (``sweep_stops.py``), or by this job if the basic launcher runs it there. A
    submitit job (SLURM, ``submitit_local``) runs alone with an output file of its own, where
    its own report belongs: on SLURM the job is requeued and goes on by itself."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if not multirun or os.environ.get("SUBMITIT_EXECUTOR"):
        return message
    if TRIAL_ENV in os.environ or in_a_launchers_pool():
        return None  # the search, or the sweep's main process, says how to go on
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    overrides = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides
    return stopped_sweep(signal_name, overrides, sweep_dir)


def interrupt_report(trainer: L.Trainer, cfg: DictConfig, signal_name: str) -> str:
    """What was kept and the command that goes on, for the phase the signal stopped."""
    if trainer.state.fn != TrainerFn.FITTING:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if trainer.state.fn != TrainerFn.TESTING or not cfg.get("train") or not best:
            return (
                f"{trainer.state.fn.value.capitalize()}ing stopped by {signal_name}: its results "
                "were not written. Run the same command again."
            )
        return (
            f"Testing stopped by {signal_name}: training had finished, but its test metrics "
            f"and metrics.json were not written. Test its best checkpoint with:\n  "
            f"{resume_command(cfg, Path(best), 'train=false')}"
        )
    where = f"{signal_name} at step {trainer.global_step}"
    if TRIAL_ENV in os.environ:  # the search says how to go on (src/harness/search.py)
        return f"Trial stopped by {where}: it runs again from its start when the search goes on."
    saved = next((c.saved for c in trainer.callbacks if isinstance(c, StopAtBatch)), None)
    if saved is not None:
        return (
            f"Training stopped by {where}, after batch {saved.batches} of epoch {saved.epoch}. "
            f"{saved.path} holds that point: the resumed run goes on at batch "
            f"{saved.batches + 1}. Resume with:\n  {resume_command(cfg, saved.path)}"
        )
    last = last_checkpoint(trainer)
    if last is None:
        return (
            f"Training stopped by {where}, before any epoch completed: there is no checkpoint "
            "to resume from. Run the same command again to start over."
        )
    # Read from the file: a stop while the epoch's checkpoints are written is after its end.
    epoch = checkpoint_epoch(last)
    # trainer.steps_per_call=K: a training batch of Lightning's holds K, and only an epoch's
    # last group is shorter
    steps_per_call = getattr(trainer.lightning_module, "steps_per_call", 1)
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed * steps_per_call
    lost = (
        f"The {batches} batches of epoch {epoch + 1} are not in it, so training resumes at "
        "the start of that epoch. "
        if batches and trainer.current_epoch > epoch
        else ""
    )
    return (
        f"Training stopped by {where}. {last} holds the end of epoch {epoch}, the last "
        f"complete one. {lost}Resume with:\n  {resume_command(cfg, last)}"
    )


def last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest end-of-epoch checkpoint the run's ``ModelCheckpoint`` callbacks wrote."""
    paths = [
        path
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint)
        for path in (callback.last_model_path, callback.best_model_path)
    ]
    existing = [Path(path) for path in paths if path and Path(path).is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime, default=None)


def resume_command(cfg: DictConfig, checkpoint: Path, *extra: str) -> str:
    """The command line that reruns this job's overrides from ``checkpoint`` (plus ``extra``)."""
    replaced = ("ckpt_path", *map(override_key, extra))
    overrides = [item for item in job_overrides() if override_key(item) not in replaced]
    script = Path(cfg.paths.root_dir) / "src" / "train.py"
    if script.resolve().is_relative_to(Path.cwd().resolve()):
        script = script.resolve().relative_to(Path.cwd().resolve())
    ckpt = override("ckpt_path", str(checkpoint.resolve()))
    return shlex.join(["python", str(script), *overrides, *extra, ckpt])


def earlier_attempt_checkpoint(cfg: DictConfig) -> str | None:
    """The ``last.ckpt`` an earlier attempt of this very job left in its own run folder.

    A job requeued after preemption or a timeout (SLURM or ``submitit_local`` through
    hydra-submitit-launcher), or a sweep job run again into the same sweep folder, runs
    with the same config in the same folder: it resumes from there instead of starting
    over, when the folder's ``config.yaml`` records the same settings. Otherwise (another
    job's settings, or a single run pointed at a used folder by ``hydra.run.dir``) the old
    checkpoints are moved aside, so ``best.ckpt`` and ``last.ckpt`` always mean this run's.
    Either way, the temporary files of a write that a hard kill cut short are removed.
    """
    output_dir = Path(cfg.paths.output_dir)
    # Files change on the global rank 0 only: the other DDP processes share the folder (and
    # under srun start at the same moment, mid-write for rank 0).
    writer = rank_zero_only.rank == 0
    for stale in output_dir.rglob(".*.tmp") if writer else []:  # cut short by a kill -9
        stale.unlink()
    folder = output_dir / "checkpoints"
    if cfg.get("ckpt_path") is not None or not any(folder.glob("*.ckpt")):
        return None
    last, recorded = folder / "last.ckpt", output_dir / "config.yaml"
    rerun = (
        os.environ.get("SUBMITIT_EXECUTOR")
        or os.environ.get("SLURM_RESTART_COUNT")
        or (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)
    )
    # The earlier attempt recorded the checkpoint it resumed from, if any; this one has none.
    if (
        rerun
        and last.is_file()
        and recorded.is_file()
        and {**OmegaConf.to_container(OmegaConf.load(recorded)), "ckpt_path": None}
        == resolved_config(cfg)
    ):
        log.warning("Resuming from %s, left by an earlier attempt of this job.", last)
        return str(last)
    if not writer:
        return None
    aside = move_aside(folder)
    log.warning(
        "%s held the checkpoints of an earlier run with other settings: moved to %s, so that "
        "this run's best.ckpt and last.ckpt are its own.",
        folder,
        aside,
    )
    return None
