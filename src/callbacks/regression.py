"""Pictures of a regressor on the validation set: predicted vs true, and the residuals."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from src.callbacks.pictures import ValidationPictures
from src.callbacks.tensorboard import CARD_HEIGHT, add_figure, new_figure


class RegressionPlots(ValidationPictures):
    """``val/pred_vs_true`` (a scatter with the identity line, at most ``max_points`` points)
    and ``val/residuals`` (a histogram of prediction minus truth).

    Axes name the target by the data module's ``target_label`` where it has one (California
    housing: with its units). Multi-output targets are pooled. The batches' outputs are
    kept on the device until a drawing, so collecting costs no copy; with several
    processes, the first one's share of the validation set is drawn.
    """

    picture = "regression_plots"

    def __init__(self, max_points: int = 5000, every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs)
        self.max_points = max_points

    def reset(self) -> None:
        self.predictions: list[Tensor] = []
        self.targets: list[Tensor] = []

    def collect(self, inputs: Tensor, targets: Tensor, outputs: Tensor, batch_idx: int) -> None:
        self.predictions.append(outputs)
        self.targets.append(targets)

    def draw(self, trainer: L.Trainer, logger: TensorBoardLogger, step: int) -> None:
        if not trainer.is_global_zero:
            return
        predicted = torch.cat(self.predictions).flatten().float().cpu()
        true = torch.cat(self.targets).flatten().float().cpu()
        residuals = predicted - true
        target = getattr(trainer.datamodule, "target_label", "target")
        title = f"validation, epoch {self.collected_epoch}"

        axes = new_figure(1.7 * CARD_HEIGHT).subplots()
        shown = torch.randperm(len(true), generator=torch.Generator().manual_seed(0))
        shown = shown[: self.max_points]
        axes.scatter(true[shown].numpy(), predicted[shown].numpy(), s=3, alpha=0.4)
        both = torch.cat([true, predicted])
        low, high = float(both.min()), float(both.max())
        axes.plot([low, high], [low, high], color="tab:red", linewidth=1, label="y = x")
        axes.set(xlabel=f"true {target}", ylabel="predicted")
        axes.legend(loc="upper left")
        rmse = residuals.pow(2).mean().sqrt()
        add_figure(logger, "val/pred_vs_true", axes.figure, step, f"{title}: rmse {rmse:.4g}")

        axes = new_figure(1.7 * CARD_HEIGHT).subplots()
        axes.hist(residuals.numpy(), bins=50)
        axes.axvline(0.0, color="tab:red", linewidth=1)
        axes.set(xlabel=f"predicted - true {target}", ylabel="count")
        add_figure(logger, "val/residuals", axes.figure, step, f"{title}: residuals")
