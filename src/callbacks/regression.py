"""Pictures of a regressor on the validation set: predicted vs true, and the residuals."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from src.callbacks.pictures import ValidationPictures
from src.callbacks.tensorboard import add_figure, new_figure


class RegressionPlots(ValidationPictures):
    """``val/pred_vs_true`` (a scatter with the identity line, at most ``max_points`` points)
    and ``val/residuals`` (a histogram of prediction minus truth).

    Multi-output targets are pooled. The batches' outputs are kept on the device until a
    drawing, so collecting costs no copy; with several processes, the first one's share
    of the validation set is drawn.
    """

    task = "regression"

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
        title = f"validation, epoch {self.collected_epoch}"

        figure = new_figure(5, 5)
        axes = figure.subplots()
        shown = torch.randperm(len(true), generator=torch.Generator().manual_seed(0))
        shown = shown[: self.max_points]
        axes.scatter(true[shown].numpy(), predicted[shown].numpy(), s=4, alpha=0.4)
        both = torch.cat([true, predicted])
        low, high = float(both.min()), float(both.max())
        axes.plot([low, high], [low, high], color="tab:red", linewidth=1, label="y = x")
        rmse = residuals.pow(2).mean().sqrt()
        axes.set(xlabel="true", ylabel="predicted", title=f"{title}: rmse {rmse:.4g}")
        axes.legend(loc="upper left")
        add_figure(logger, "val/pred_vs_true", figure, step)

        figure = new_figure(5, 3.5)
        axes = figure.subplots()
        axes.hist(residuals.numpy(), bins=50)
        axes.axvline(0.0, color="tab:red", linewidth=1)
        axes.set(xlabel="predicted - true", ylabel="count", title=f"{title}: residuals")
        add_figure(logger, "val/residuals", figure, step)
