"""Ctrl-C and SIGTERM stop training at the end of a batch, saved there, to resume at the next.

Lightning stops on SIGTERM after the current batch, but also in the middle of a
validation, and on Ctrl-C wherever the ``KeyboardInterrupt`` lands, mid-step included;
neither saves anything. While it trains on one process, :class:`StopAtBatch` holds both
signals until the batch ends, writes ``last.ckpt`` there (atomically, as every checkpoint:
``AtomicCheckpointIO``) with the loader's position, the random generators and the
metrics' sums, and then stops as Lightning would (``KeyboardInterrupt`` or
``SIGTERMException``), so ``interrupts.py`` reports it and exits 130 or 143. In a submitit
job (SLURM), its SIGUSR2 is held and saved the same way, then handed to submitit's handler,
which requeues the job and ends the process.

A batch after which a validation is due (the epoch's last one, or ``val_check_interval``'s)
is not one to stop at: Lightning resumes from there without that validation. The stop
then waits for the next batch, or for the next epoch's start, where the epoch's own
``last.ckpt`` holds the state and nothing is saved. A second Ctrl-C stops at once, as
before. Under DDP every process must stop at the same batch: Lightning's own stop runs
there, and the run resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# submitit's signal in a SLURM job (a time limit or a preemption notice): its handler requeues
# the job and ends the process. Held the same way when a handler is installed, then handed to it.
REQUEUE_SIGNAL = signal.SIGUSR2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedStop:
    """Where a stop saved the run: the file, the epoch (from 0), the batches of it done
    (optimizer steps' batches, with ``trainer.steps_per_call``) and the global step."""

    path: Path
    epoch: int
    batches: int
    step: int


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """The file of the checkpoint callback that keeps the latest state (``monitor: null``,
    ``configs/callbacks/last_checkpoint.yaml``); ``None`` when the run keeps none."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor is None and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.filename}{callback.FILE_EXTENSION}"
    return None


def resumable_after(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether a run saved after batch ``batch_idx`` resumes as if it had not stopped: no
    validation is due after it (it is not the epoch's last, nor a ``val_check_interval``'s)."""
    every = trainer.val_check_batch  # None: validation by elapsed time, which no one can foresee
    last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    return every is not None and not last and (batch_idx + 1) % every != 0


class StopAtBatch(Callback):
    """Hold Ctrl-C and SIGTERM (and submitit's SIGUSR2) during training until a batch that
    resumes exactly; save it into ``last.ckpt`` and stop. ``saved`` says where, for the
    stop's report."""

    def __init__(self) -> None:
        self.pending: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}
        self.saved: SavedStop | None = None

    def hold(self, signum: int, frame: FrameType | None) -> None:
        if self.pending == signal.SIGINT == signum:
            raise KeyboardInterrupt  # a second Ctrl-C: at once, as without this callback
        self.pending = self.pending or signal.Signals(signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pending, self.saved = None, None
        # signal.signal works in the main thread only (a notebook's or a launcher's thread);
        # held already (a second fit before a release), the handlers to give back are kept
        main = threading.current_thread() is threading.main_thread()
        if trainer.world_size == 1 and main and not self.previous:
            requeue = [REQUEUE_SIGNAL] if callable(signal.getsignal(REQUEUE_SIGNAL)) else []
            held = (*STOP_SIGNALS, *requeue)
            self.previous = {signum: signal.signal(signum, self.hold) for signum in held}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self.pending is None or not resumable_after(trainer, idx):
            return
        path = last_checkpoint_path(trainer)
        if path is not None:
            trainer.save_checkpoint(path)
            done = (idx + 1) * getattr(pl_module, "steps_per_call", 1)  # groups of batches
            self.saved = SavedStop(path, trainer.current_epoch, done, trainer.global_step)
        self.stop()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is not None:  # held over the last epoch's end: its last.ckpt is this
            self.stop()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is not None:
            self.stop()
        self.release()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.release()

    def stop(self) -> None:
        signum, self.pending = self.pending, None
        handler = self.previous.get(signum)
        self.release()
        if signum == REQUEUE_SIGNAL and callable(handler):
            if saved := self.saved:  # no report follows: submitit ends the process
                log.warning(
                    "SIGUSR2: training stopped after batch %d of epoch %d (step %d), saved in %s",
                    *(saved.batches, saved.epoch, saved.step, saved.path),
                )
            handler(signum, None)  # submitit's: requeues the job and ends this process
        raise KeyboardInterrupt if signum == signal.SIGINT else SIGTERMException

    def release(self) -> None:
        """Give the signals back to the handlers they had before training started."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
