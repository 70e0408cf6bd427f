"""The shared timing of the validation pictures: collect while validating, draw now and then.

A subclass collects what it needs from each validation batch (the module's
``validation_step`` returns the net's output, so no second forward pass runs) and draws
it on every ``every_n_epochs``-th epoch, and once more at the end of training from the
last validation epoch, unless that epoch was just drawn. ``every_n_epochs=null`` draws
only at the end, which keeps a run's cost to one drawing.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from src.callbacks.tensorboard import CARD_TEXT, tensorboard_logger


def suited_pictures(pl_module: L.LightningModule) -> frozenset[str]:
    """The pictures its task suits; none for a module without a task."""
    return getattr(getattr(pl_module, "task", None), "pictures", frozenset())


class ValidationPictures(Callback):
    """Base of the callbacks that draw the validation set; no-op without TensorBoard, or
    where the module's task does not list the subclass's ``picture`` (``src/tasks.py``)."""

    picture: str

    def __init__(self, every_n_epochs: int | None = None) -> None:
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be null or >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.logger: TensorBoardLogger | None = None
        self.collected_epoch: int | None = None  # the epoch whose validation data is held
        self.drawn_epoch: int | None = None
        self.reset()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        applies = stage == TrainerFn.FITTING and self.picture in suited_pictures(pl_module)
        self.logger = tensorboard_logger(trainer) if applies else None

    def active(self, trainer: L.Trainer) -> bool:
        return self.logger is not None and not trainer.sanity_checking

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active(trainer):
            self.reset()
            self.collected_epoch = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.active(trainer) and isinstance(outputs, Tensor):
            inputs, targets = batch
            self.collect(inputs, targets, outputs.detach(), batch_idx)
            self.collected_epoch = trainer.current_epoch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.active(trainer) and self.every_n_epochs and self.collected_epoch is not None):
            return
        if (self.collected_epoch + 1) % self.every_n_epochs == 0:
            self.draw_now(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.logger is not None and self.collected_epoch not in (None, self.drawn_epoch):
            self.draw_now(trainer)

    def draw_now(self, trainer: L.Trainer) -> None:
        from matplotlib import rc_context

        self.drawn_epoch = self.collected_epoch
        with rc_context(CARD_TEXT):
            self.draw(trainer, self.logger, trainer.global_step)

    # -- what subclasses provide -------------------------------------------------------
    def reset(self) -> None:
        raise NotImplementedError

    def collect(self, inputs: Tensor, targets: Tensor, outputs: Tensor, batch_idx: int) -> None:
        raise NotImplementedError

    def draw(self, trainer: L.Trainer, logger: TensorBoardLogger, step: int) -> None:
        """Called on every process (a metric may need to sync); write on global rank 0 only."""
        raise NotImplementedError
