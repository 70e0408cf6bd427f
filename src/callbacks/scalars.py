"""Scalars beside the module's per-epoch metrics: step loss, learning rate, epoch timing.

They go to every logger of the run (TensorBoard and CSV alike) and cost nothing without
one. None of them reads a device value on a step that does not log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch import callbacks

from src.harness.compat import prefix_rate_keys


def log_to_all(trainer: L.Trainer, values: dict[str, float]) -> None:
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.global_step)


class StepLoss(callbacks.Callback):
    """Logs ``train/loss_step`` every ``trainer.log_every_n_steps`` optimizer steps, or
    ``points_per_epoch`` times an epoch where epochs are shorter: a run of a few short
    epochs (21 steps of digits against the default 50) still draws a curve.

    The training step logs only the epoch mean (a per-step ``self.log`` costs time on small
    models); reading the step's loss here, on logging steps only, keeps the host-device
    sync off every other step.
    """

    def __init__(self, points_per_epoch: int = 10) -> None:
        self.points_per_epoch = points_per_epoch
        self.every = 0
        self.last_logged_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # trainer.steps_per_call=K: a training batch holds K optimizer steps
        steps_per_batch = getattr(pl_module, "steps_per_call", 1) / trainer.accumulate_grad_batches
        steps = int(trainer.num_training_batches * steps_per_batch)
        # log_every_n_steps=0: never, as Lightning reads it
        self.every = min(trainer.log_every_n_steps, max(1, steps // self.points_per_epoch))
        self.last_logged_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        # Logged when the step count reaches a multiple of `every`, or passes one within a
        # group of steps; once per step when several batches share it (accumulation).
        step, every = trainer.global_step, self.every
        if not trainer.loggers or not every or step // every <= self.last_logged_step // every:
            return
        self.last_logged_step = step
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None:
            log_to_all(trainer, {"train/loss_step": float(loss)})


class LearningRateMonitor(callbacks.LearningRateMonitor):
    """Lightning's monitor, naming the rate ``train/lr-<Optimizer>``: it sits with the
    training scalars, not in a chart group of its own that TensorBoard sorts first. Lightning's
    raises without a logger: the Trainer is built without it then (``build_trainer``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        prefix_rate_keys(self, "train/")


class EpochTimer(callbacks.Callback):
    """Logs ``time/epoch_s`` (training and validation) and ``time/train_samples_per_s``.

    Throughput counts training time only, from the epoch's start to its last training
    batch, so a slow validation does not hide a fast training loop. Lightning's
    ``ThroughputMonitor`` measures otherwise: it waits for the GPU after every batch, times
    the whole fit rather than each epoch, and averages over the last 100 batches, so a short
    run logs no throughput at all.
    """

    def __init__(self) -> None:
        self.started = self.train_ended = 0.0
        self.samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = self.train_ended = time.perf_counter()
        self.samples = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.samples += len(batch[0]) if isinstance(batch, tuple | list) else len(batch)
        self.train_ended = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.loggers:
            return
        train_seconds = max(self.train_ended - self.started, 1e-9)
        log_to_all(
            trainer,
            {
                "time/epoch_s": time.perf_counter() - self.started,
                "time/train_samples_per_s": self.samples / train_seconds,
            },
        )
