"""Callbacks every Trainer gets, whatever ``callbacks=`` selects: they guard what is on disk.

- :class:`DivergenceGuard` stops at the first NaN/inf training loss, before a checkpoint
  with those weights can replace the last good one.
- :class:`RNGState` stores torch's random generators in each checkpoint, which Lightning
  does not, so dropout and other random layers continue after a resume exactly as in
  an uninterrupted run.
- :class:`SecondInterruptExits` makes a second Ctrl-C end the process at once, where
  Lightning would ignore it while it shuts down.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from src.errors import TrainingDiverged

INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a process ended by SIGINT


class DivergenceGuard(Callback):
    """Raise :class:`TrainingDiverged` on the first step whose loss is not finite.

    The check reads one number per step; on a GPU that is one small host-device sync.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is None or bool(torch.isfinite(loss).all()):
            return
        learning_rate = trainer.optimizers[0].param_groups[0]["lr"]
        raise TrainingDiverged(
            f"training diverged: the loss is {loss.item()} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {idx}) with learning rate {learning_rate:g}. "
            f"The run stopped before saving these weights; {last_good_checkpoint(trainer)} "
            "Try a lower optimizer.lr, gradient clipping (trainer.gradient_clip_val=1.0), or "
            "check the data for NaN/inf values."
        )


def last_good_checkpoint(trainer: L.Trainer) -> str:
    callback = trainer.checkpoint_callback
    last = Path(callback.last_model_path) if isinstance(callback, ModelCheckpoint) else None
    if last and last.is_file():
        return f"{last} still holds the last complete epoch."
    return "no epoch had completed, so no checkpoint was saved."


class RNGState(Callback):
    """Save and restore torch's CPU (and CUDA) random state with every checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class SecondInterruptExits(Callback):
    """After the first Ctrl-C, a second one exits immediately with code 130.

    Nothing on disk can be corrupted by that exit: checkpoints and ``metrics.json`` are
    written to a temporary file and renamed, so a kill leaves the old or the new file.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error: Any) -> None:
        if isinstance(error, KeyboardInterrupt):
            signal.signal(signal.SIGINT, lambda *_: os._exit(INTERRUPTED_EXIT_CODE))


def safety_callbacks() -> list[Callback]:
    return [DivergenceGuard(), RNGState(), SecondInterruptExits()]
