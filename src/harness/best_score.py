"""The run's best validation score and its epoch: what a sweep ranks and a search optimizes.

Tracked from what the module logs at each validation, so any module has it whenever
validation ran, with or without a checkpoint (``trainer.fast_dev_run``, ``callbacks=none``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig


class BestScore(Callback):
    """Keep the data's validation score (``monitor``) of the run's best validation, as
    ``<monitor>_best``, and its epoch (from 0, as the console's ``Epoch N:`` lines count) as
    ``best_epoch``; log the score to the loggers when training ends.

    The best validation is chosen as the run chooses the weights it keeps and tests: by the
    checkpoint callback's monitor and mode when it has one (``monitor: step`` in the
    experiments that test their final weights picks the last), else by ``monitor`` and
    ``mode``. So where a best checkpoint exists, the two agree. The state goes into each
    checkpoint: a resumed run keeps the best of the epochs before it.
    """

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.rank: float | None = None  # the ranking value of the best validation so far
        self.best: dict[str, float | int] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        key, mode = self.monitor, self.mode
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor:
            key, mode = checkpoint.monitor, checkpoint.mode
        candidates = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        value = {**candidates, **trainer.callback_metrics}.get(key)
        if value is None or not torch.isfinite(torch.as_tensor(value)):
            return
        value = float(value)
        if self.rank is None or (value > self.rank if mode == "max" else value < self.rank):
            self.rank = value
            score = float(trainer.callback_metrics[self.monitor])
            self.best = {f"{self.monitor}_best": score, "best_epoch": trainer.current_epoch}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scores = {name: value for name, value in self.best.items() if "/" in name}
        for logger in trainer.loggers:  # the score, beside the epochs' (no epoch chart)
            logger.log_metrics(scores, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rank, self.best = state_dict["rank"], state_dict["best"]


def best_score_callbacks(cfg: DictConfig) -> list[Callback]:
    """A run on data (train, eval) tracks the data's monitor; predict has none."""
    data = cfg.get("data")
    return [BestScore(data.monitor, data.monitor_mode)] if data else []


def best_metrics(trainer: L.Trainer) -> dict[str, float | int]:
    """``<monitor>_best`` and ``best_epoch``; empty when validation never ran."""
    return next((dict(c.best) for c in trainer.callbacks if isinstance(c, BestScore)), {})
