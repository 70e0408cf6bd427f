"""What the model sees and what it is: training inputs, the graph, weight histograms.

``TrainInputs`` is cheap (one grid per run) and on by default; ``ModelGraph`` and
``ParameterHistograms`` are opt-in because tracing and histogramming every parameter
cost time. All three do nothing without a TensorBoard logger.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from src.callbacks.classification import sample_figure
from src.callbacks.pictures import suited_pictures
from src.callbacks.tensorboard import CARD_TEXT, add_figure, tensorboard_logger

INPUT = "tab:blue"  # frame and label color of the training samples


class OncePerFit(Callback):
    """Base: acts on the first training batch of a fit, with the TensorBoard logger."""

    def __init__(self) -> None:
        self.done = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.done = tensorboard_logger(trainer) is None or not trainer.is_global_zero

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.done:
            return
        self.done = True
        self.use(tensorboard_logger(trainer), pl_module, batch, trainer.global_step)

    def use(
        self, logger: TensorBoardLogger, pl_module: L.LightningModule, batch: Any, step: int
    ) -> None:
        """Act on the first batch: the data modules' ``(inputs, targets)``."""
        raise NotImplementedError


class TrainInputs(OncePerFit):
    """``train/inputs``: the first training images as the model receives them (after
    normalization and any augmentation), each under its class; image data of a task that
    suits it (classification).
    """

    def __init__(self, num_images: int = 32) -> None:
        super().__init__()
        self.num_images = num_images

    def use(
        self, logger: TensorBoardLogger, pl_module: L.LightningModule, batch: Any, step: int
    ) -> None:
        inputs, targets = batch
        if inputs.dim() != 4 or "train_inputs" not in suited_pictures(pl_module):
            return
        from matplotlib import rc_context

        labels = [str(target) for target in targets[: self.num_images].tolist()]
        with rc_context(CARD_TEXT):
            figure = sample_figure(inputs[: self.num_images].cpu(), labels, [INPUT] * len(labels))
            title = "first training batch as the model sees it, true classes"
            add_figure(logger, "train/inputs", figure, step, title)


class ModelGraph(OncePerFit):
    """The net's graph (TensorBoard's Graphs tab), traced on one training example."""

    def use(
        self, logger: TensorBoardLogger, pl_module: L.LightningModule, batch: Any, step: int
    ) -> None:
        with warnings.catch_warnings():
            # TensorBoard's graph is built by torch.jit.trace, which torch now calls deprecated
            warnings.filterwarnings("ignore", ".*is deprecated.*", FutureWarning)
            logger.experiment.add_graph(pl_module, batch[0][:1])


class ParameterHistograms(Callback):
    """``weights/<name>`` and ``gradients/<name>`` histograms every ``every_n_epochs`` epochs.

    The gradients are those of the epoch's last optimizer step, read just before the step
    (Lightning frees them afterwards); the weights are read at the end of the epoch.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs

    def writer_now(self, trainer: L.Trainer) -> Any:
        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero or trainer.sanity_checking:
            return None
        return None if (trainer.current_epoch + 1) % self.every_n_epochs else logger.experiment

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        if not trainer.is_last_batch or (writer := self.writer_now(trainer)) is None:
            return
        for name, parameter in pl_module.named_parameters():
            if parameter.grad is not None:
                writer.add_histogram(f"gradients/{name}", parameter.grad, trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (writer := self.writer_now(trainer)) is None:
            return
        for name, parameter in pl_module.named_parameters():
            writer.add_histogram(f"weights/{name}", parameter, trainer.global_step)
