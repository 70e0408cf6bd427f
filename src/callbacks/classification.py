"""Pictures of a classifier on the validation set: confusion matrix and labelled samples."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from src.callbacks.pictures import ValidationPictures
from src.callbacks.tensorboard import add_figure, new_figure

CORRECT, WRONG = "tab:green", "tab:red"


class ConfusionMatrix(ValidationPictures):
    """``val/confusion_matrix``: counts of (true, predicted) class over the validation set.

    torchmetrics accumulates it on the device batch by batch (no host sync per batch) and
    sums it across processes when several train together.
    """

    def reset(self) -> None:
        self.matrix: MulticlassConfusionMatrix | None = None

    def collect(self, inputs: Tensor, targets: Tensor, outputs: Tensor, batch_idx: int) -> None:
        if self.matrix is None:
            num_classes = outputs.shape[-1]
            self.matrix = MulticlassConfusionMatrix(num_classes).to(outputs.device)
        self.matrix.update(outputs.argmax(dim=-1), targets)

    def draw(self, trainer: L.Trainer, logger: TensorBoardLogger, step: int) -> None:
        counts = self.matrix.compute().cpu()
        if not trainer.is_global_zero:
            return
        num_classes = len(counts)
        side = min(4 + 0.4 * num_classes, 16)
        figure = new_figure(side, side)
        axes = figure.subplots()
        self.matrix.plot(val=counts, ax=axes, add_text=num_classes <= 20)
        accuracy = counts.diag().sum() / counts.sum().clamp_min(1)
        axes.set_title(f"validation, epoch {self.collected_epoch}: accuracy {accuracy:.3f}")
        add_figure(logger, "val/confusion_matrix", figure, step)


class ValidationSamples(ValidationPictures):
    """``val/predictions``: the first validation images, each titled with its predicted class
    (and the true one when they differ); misclassified images are framed and titled in red.
    Drawn for image data only (inputs of shape channels x height x width).
    """

    def __init__(self, num_images: int = 32, every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs)
        self.num_images = num_images

    def reset(self) -> None:
        self.samples: tuple[Tensor, Tensor, Tensor] | None = None

    def collect(self, inputs: Tensor, targets: Tensor, outputs: Tensor, batch_idx: int) -> None:
        if batch_idx == 0 and inputs.dim() == 4:
            keep = slice(0, self.num_images)
            self.samples = (inputs[keep], targets[keep], outputs[keep].argmax(dim=-1))

    def draw(self, trainer: L.Trainer, logger: TensorBoardLogger, step: int) -> None:
        if self.samples is None or not trainer.is_global_zero:
            return
        images, targets, predictions = (t.cpu() for t in self.samples)
        columns = min(8, len(images))
        rows = math.ceil(len(images) / columns)
        figure = new_figure(1.3 * columns, 1.45 * rows + 0.4)
        wrong = int((predictions != targets).sum())
        figure.suptitle(f"validation, epoch {self.collected_epoch}: {wrong} of {len(images)} wrong")
        grid = figure.subplots(rows, columns, squeeze=False).ravel()
        for axes in grid[len(images) :]:
            axes.set_axis_off()
        shown = zip(grid[: len(images)], images, targets, predictions, strict=True)
        for axes, image, target, prediction in shown:
            show_image(axes, image)
            color = CORRECT if prediction == target else WRONG
            title = f"{prediction}" if prediction == target else f"{prediction} (true {target})"
            axes.set_title(title, color=color, fontsize=9)
            for spine in axes.spines.values():
                spine.set(color=color, linewidth=3 if color == WRONG else 1)
        add_figure(logger, "val/predictions", figure, step)


def show_image(axes, image: Tensor) -> None:
    """Draw one CxHxW tensor, rescaled to [0, 1]: inputs arrive normalized."""
    image = image.float()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    if image.shape[0] == 1:
        axes.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        axes.imshow(image[:3].permute(1, 2, 0).numpy())
    axes.set_xticks([])
    axes.set_yticks([])
