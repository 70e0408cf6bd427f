"""Pictures of a classifier on the validation set: confusion matrix and labelled samples."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from src.callbacks.pictures import ValidationPictures
from src.callbacks.tensorboard import add_figure, new_figure

CORRECT, WRONG = "tab:green", "tab:red"
FRAME_COLORS = {CORRECT: (0.17, 0.63, 0.17), WRONG: (0.84, 0.15, 0.16)}
FRAME, LABEL_HEIGHT = 2, 10  # image pixels around each sample and above it for its label


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
    """``val/predictions``: the first validation images, each labelled with its predicted
    class, in green; misclassified ones framed in red and labelled "predicted, true".
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
        wrong = predictions != targets
        columns = min(8, len(images))
        grid, (tile_height, tile_width) = labelled_grid(images, wrong, columns)
        # one image and one text per tile: much faster to render than a subplot per image
        scale = 3 / 100  # 3 screen pixels per image pixel, at 100 dpi
        figure = new_figure(grid.shape[1] * scale, grid.shape[0] * scale + 0.4)
        axes = figure.subplots()
        axes.imshow(grid.numpy(), interpolation="nearest")
        axes.set_axis_off()
        axes.set_title(
            f"validation, epoch {self.collected_epoch}: {int(wrong.sum())} of {len(images)} "
            "wrong (red: predicted, true)"
        )
        for index, (target, prediction) in enumerate(zip(targets, predictions, strict=True)):
            row, column = divmod(index, columns)
            label = f"{prediction}, {target}" if prediction != target else f"{prediction}"
            axes.text(
                (column + 0.5) * tile_width,
                row * tile_height + LABEL_HEIGHT / 2,
                label,
                color=WRONG if prediction != target else CORRECT,
                fontsize=9,
                ha="center",
                va="center",
            )
        add_figure(logger, "val/predictions", figure, step)


def labelled_grid(images: Tensor, wrong: Tensor, columns: int) -> tuple[Tensor, tuple[int, int]]:
    """HxWx3 grid of the images rescaled to [0, 1], each framed in green or red with white
    space above it for its label; also returns one tile's (height, width)."""
    from torchvision.utils import make_grid

    images = images.float()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    images = (images - low) / (high - low).clamp_min(1e-8)
    if images.shape[1] != 3:  # grayscale (or an odd channel count: its first channel)
        images = images[:, :1].expand(-1, 3, -1, -1)
    colors = torch.tensor([FRAME_COLORS[CORRECT], FRAME_COLORS[WRONG]])[wrong.long()]
    height, width = images.shape[-2:]
    framed = colors[:, :, None, None].expand(-1, -1, height + 2 * FRAME, width + 2 * FRAME)
    framed = framed.clone()
    framed[:, :, FRAME:-FRAME, FRAME:-FRAME] = images
    tiles = F.pad(framed, (2, 2, LABEL_HEIGHT, 2), value=1.0)
    grid = make_grid(tiles, nrow=columns, padding=0)
    return grid.permute(1, 2, 0), tuple(tiles.shape[-2:])
