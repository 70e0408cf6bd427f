"""Pictures of a classifier on the validation set: confusion matrix and labelled samples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from src.callbacks.pictures import ValidationPictures
from src.callbacks.tensorboard import CARD_HEIGHT, add_figure, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CORRECT, WRONG = "tab:green", "tab:red"
FRAME, LABEL_HEIGHT = 2, 12  # image pixels around each sample and above it for its label
TITLE_HEIGHT, FIGURE_WIDTH = 27, 340  # pixels above a sample grid for its title; least width
CARD_PIXELS = round(CARD_HEIGHT * 100)
CELL_TEXT = {"fontsize": 6}
FEW_CLASSES = 12  # up to this many, a confusion matrix names every class and counts each cell


class ConfusionMatrix(ValidationPictures):
    """``val/confusion_matrix``: (true, predicted) class over the validation set, each cell
    in percent of its true class.

    torchmetrics accumulates it on the device batch by batch (no host sync per batch) and
    sums it across processes when several train together. Drawn to fit an image card: with
    more than ``FEW_CLASSES`` classes, the cells stay uncounted and every few classes named.
    """

    picture = "confusion_matrix"

    def reset(self) -> None:
        self.matrix: MulticlassConfusionMatrix | None = None

    def collect(self, inputs: Tensor, targets: Tensor, outputs: Tensor, batch_idx: int) -> None:
        if self.matrix is None:
            self.matrix = MulticlassConfusionMatrix(outputs.shape[-1]).to(outputs.device)
        self.matrix.update(outputs.argmax(dim=-1), targets)

    def draw(self, trainer: L.Trainer, logger: TensorBoardLogger, step: int) -> None:
        counts = self.matrix.compute().cpu()
        if not trainer.is_global_zero:
            return
        from sklearn.metrics import ConfusionMatrixDisplay

        few = len(counts) <= FEW_CLASSES
        axes = new_figure(1.6 * CARD_HEIGHT).subplots()
        # percent of each true class: at most 3 digits in a cell, whatever the set's size
        percent = 100 * counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
        display = ConfusionMatrixDisplay(percent.numpy())
        display.plot(
            ax=axes,
            cmap="Blues",
            colorbar=False,
            include_values=few,
            values_format=".0f",
            text_kw=CELL_TEXT,
        )
        ticks = range(0, len(counts), 1 if few else len(counts) // 5)
        names = getattr(trainer.datamodule, "label_names", None)  # an image folder's classes
        labels = [names[tick] for tick in ticks] if names else list(ticks)
        axes.set_xticks(ticks, labels=labels, rotation=90 if names else 0)
        axes.set_yticks(ticks, labels=labels)
        axes.set(xlabel="predicted class (% of each true class)", ylabel="true class")
        accuracy = counts.diag().sum() / counts.sum().clamp_min(1)
        title = f"validation, epoch {self.collected_epoch}: accuracy {accuracy:.3f}"
        add_figure(logger, "val/confusion_matrix", axes.figure, step, title)


class ValidationSamples(ValidationPictures):
    """``val/predictions``: the first validation images, each labelled with its predicted
    class, in green; misclassified ones framed in red and labelled "predicted, true".
    Drawn for image data only (inputs of shape channels x height x width).
    """

    picture = "validation_samples"

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
        targets, predictions = (t.cpu().tolist() for t in self.samples[1:])
        pairs = list(zip(predictions, targets, strict=True))
        labels = [f"{p}, {t}" if p != t else f"{p}" for p, t in pairs]
        wrong = sum(p != t for p, t in pairs)
        colors = [WRONG if p != t else CORRECT for p, t in pairs]
        figure = sample_figure(self.samples[0].cpu(), labels, colors)
        title = (
            f"validation, epoch {self.collected_epoch}: {wrong} of {len(pairs)} wrong "
            "(red: predicted, true)"
        )
        add_figure(logger, "val/predictions", figure, step, title)


def sample_figure(images: Tensor, labels: list[str], colors: list[str]) -> Figure:
    """The images in rows of 8, one image pixel per screen pixel (so 32 digits of 28 pixels
    fill an image card at its size), each framed in its color under its label in that color.
    One image and one text per tile: much faster to render than a subplot per image."""
    from matplotlib.colors import to_rgb

    columns = min(8, len(images))
    frames = torch.tensor([to_rgb(color) for color in colors])
    grid, (tile_height, tile_width) = labelled_grid(images, frames, columns)
    height, width = grid.shape[:2]
    # at least a card's size (TensorBoard would enlarge it), wide enough for the title
    figure_width, figure_height = max(width, FIGURE_WIDTH), max(height + TITLE_HEIGHT, CARD_PIXELS)
    figure = new_figure(figure_width / 100, figure_height / 100)
    figure.set_layout_engine("none")  # the axes placed by hand, pixel for pixel
    left = (1 - width / figure_width) / 2
    axes = figure.add_axes((left, 0, width / figure_width, height / figure_height))
    axes.imshow(grid.numpy(), interpolation="nearest")
    axes.set_axis_off()
    for index, (label, color) in enumerate(zip(labels, colors, strict=True)):
        row, column = divmod(index, columns)
        x, y = (column + 0.5) * tile_width, row * tile_height + LABEL_HEIGHT / 2
        axes.text(x, y, label, color=color, ha="center", va="center", fontweight="bold")
    return figure


def labelled_grid(images: Tensor, frames: Tensor, columns: int) -> tuple[Tensor, tuple[int, int]]:
    """HxWx3 grid of the images rescaled to [0, 1], each framed in its RGB color of
    ``frames`` with white space above it for its label; also returns one tile's (height,
    width)."""
    from torchvision.utils import make_grid

    images = images.float()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    images = (images - low) / (high - low).clamp_min(1e-8)
    if images.shape[1] != 3:  # grayscale (or an odd channel count: its first channel)
        images = images[:, :1].expand(-1, 3, -1, -1)
    height, width = images.shape[-2:]
    framed = frames[:, :, None, None].repeat(1, 1, height + 2 * FRAME, width + 2 * FRAME)
    framed[:, :, FRAME:-FRAME, FRAME:-FRAME] = images
    tiles = F.pad(framed, (2, 2, LABEL_HEIGHT, 1), value=1.0)
    grid = make_grid(tiles, nrow=columns, padding=0)
    return grid.permute(1, 2, 0), tuple(tiles.shape[-2:])
