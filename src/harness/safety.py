"""Callbacks every Trainer gets, whatever ``callbacks=`` selects: they guard what is on disk
and record the run in its log file.

- :class:`DivergenceGuard` stops at the first NaN/inf training loss or weight, before a
  checkpoint with those weights can replace the last good one.
- :class:`RNGState` and :class:`MetricStates` (``resume_state.py``) and
  :class:`RestoreLoaderPosition` (``resumable_loader.py``) make a resumed run, from the end
  of an epoch or its middle, go on as the uninterrupted run would have.
- :class:`EpochLog` writes each epoch's metrics to the run's log file.
- :class:`PredictStop` ends predicting on SIGTERM, which Lightning does not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src.harness.errors import TrainingDiverged
from src.harness.interrupts import last_checkpoint
from src.harness.overrides import eval_command
from src.harness.resumable_loader import RestoreLoaderPosition
from src.harness.resume_state import MetricStates, RNGState

log = logging.getLogger(__name__)
log_file_only = logging.getLogger("log_file_only")  # not on the console (configs/hydra)


class DivergenceGuard(Callback):
    """Raise :class:`TrainingDiverged` on the first step whose loss is not finite.

    Reading the loss is free on the CPU, so there every step is checked. On an accelerator
    it would stall the device once per step, so the check runs every
    ``trainer.log_every_n_steps`` steps and before every checkpoint is written: a diverged
    run may then go on a few steps, but its weights still never reach the disk.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        on_cpu = pl_module.device.type == "cpu"
        every = trainer.log_every_n_steps  # 0: only before checkpoints
        if on_cpu or every and trainer.global_step % every == 0:
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            self.check(trainer, loss, f"batch {idx}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs before Lightning computes and resets train/loss, and before the
        # checkpoint callbacks save the epoch.
        self.check_steps_so_far(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check_steps_so_far(trainer, pl_module)
        # The last optimizer step comes after the last loss: its weights are checked too.
        weights = torch.stack([p.detach().abs().sum() for p in pl_module.parameters()])
        self.check(trainer, weights.sum(), "weights checked before saving a checkpoint")

    def check_steps_so_far(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Every loss of the epoch so far at once: their running sum, one sync."""
        losses = getattr(pl_module, "train_loss", None)
        if losses is not None:
            self.check(trainer, losses.mean_value, "checked before saving a checkpoint")

    def check(self, trainer: L.Trainer, loss: Any, where: str) -> None:
        if loss is None or bool(torch.isfinite(loss).all()):
            return
        learning_rate = trainer.optimizers[0].param_groups[0]["lr"]
        raise TrainingDiverged(
            f"training diverged: the {'weights are' if 'weights' in where else 'loss is'} "
            f"{loss.item()} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, {where}) with learning rate {learning_rate:g}. "
            f"The run stopped before saving these weights; {last_good_checkpoint(trainer)} "
            "Try a lower optimizer.lr, gradient clipping (trainer.gradient_clip_val=1.0), or "
            "check the data for NaN/inf values."
        )


def last_good_checkpoint(trainer: L.Trainer) -> str:
    """Where the good weights are: the best by validation, as the latest may already be
    drifting towards the divergence."""
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback and callback.monitor else ""
    if best and Path(best).is_file():
        return (
            f"{best} holds the best weights so far ({callback.monitor} "
            f"{float(callback.best_model_score):.4g}); test them with "
            f"{eval_command(best)}."
        )
    last = last_checkpoint(trainer)
    if last is None:
        return "no epoch had completed, so no checkpoint was saved."
    return f"{last} holds the last complete epoch."


class EpochLog(Callback):
    """Log an epoch's metrics to the run's log file, and to the console when no progress bar
    shows them there. Logged when the next epoch starts or training ends: the module adds
    the epoch's ``train/loss`` only after the callbacks' ``on_train_epoch_end``."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer)

    def write(self, trainer: L.Trainer) -> None:
        metrics = sorted(trainer.callback_metrics.items())
        if metrics and trainer.is_global_zero:
            shown = ", ".join(f"{name}={float(value):.4g}" for name, value in metrics)
            logger = log_file_only if trainer.progress_bar_callback else log
            logger.info("Epoch %d: %s", trainer.current_epoch - 1, shown)


class PredictStop(Callback):
    """Stop predicting after the batch on SIGTERM, as Lightning's own loops stop fitting and
    testing (its predict loop never looks)."""

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException


def safety_callbacks() -> list[Callback]:
    return [
        DivergenceGuard(),
        RNGState(),
        MetricStates(),
        RestoreLoaderPosition(),
        EpochLog(),
        PredictStop(),
    ]
