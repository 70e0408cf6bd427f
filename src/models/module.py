"""The one LightningModule: trains any net, with loss and metrics chosen by the task.

Its hyperparameters are plain dicts (Hydra ``_target_`` specs for the net, optimizer and
scheduler), so checkpoints load under torch's ``weights_only=True`` and
``SupervisedModule.load_from_checkpoint(path)`` rebuilds the model without Hydra.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score


def task_metrics(task: str, num_outputs: int) -> MetricCollection:
    if task == "classification":
        accuracy = MulticlassAccuracy(num_classes=num_outputs, average="micro")
        return MetricCollection({"acc": accuracy})
    return MetricCollection(
        {
            "mse": MeanSquaredError(),
            "rmse": MeanSquaredError(squared=False),
            "mae": MeanAbsoluteError(),
            "r2": R2Score(),
        }
    )


class SupervisedModule(L.LightningModule):
    """Classification (cross-entropy, accuracy) or regression (MSE, RMSE/MAE/R2).

    The training step does no logging and no host-device sync: it keeps each batch's
    detached loss and reduces them once per epoch, which keeps the per-step overhead small.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        task: str,
        num_outputs: int,
        scheduler: dict[str, Any] | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "net": net,
                "optimizer": optimizer,
                "task": task,
                "num_outputs": num_outputs,
                "scheduler": scheduler,
                "monitor": monitor,
            }
        )
        self.net = instantiate(net)
        self.task = task
        self.loss_fn = F.cross_entropy if task == "classification" else F.mse_loss
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        metrics = task_metrics(task, num_outputs)
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # One list append per step is cheaper than arithmetic on a device tensor.
        self.step_losses: list[Tensor] = []
        self.step_sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        self.step_losses.append(loss.detach())
        self.step_sizes.append(len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        if not self.step_losses:
            return
        losses = torch.stack(self.step_losses)
        sizes = losses.new_tensor(self.step_sizes)
        self.log("train/loss", (losses * sizes).sum() / sizes.sum(), sync_dist=True)
        self.step_losses.clear()
        self.step_sizes.clear()

    def evaluate(self, batch: tuple[Tensor, Tensor], loss_metric: MeanMetric, metrics) -> Tensor:
        x, y = batch
        output = self.net(x)
        loss_metric.update(self.loss_fn(output, y), weight=len(y))
        metrics.update(output.argmax(dim=1) if self.task == "classification" else output, y)
        return output

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Returns the net's output, which Lightning hands to the callbacks that draw the
        validation set (confusion matrix, samples): they need no second forward pass."""
        output = self.evaluate(batch, self.val_loss, self.val_metrics)
        self.log("val/loss", self.val_loss)
        self.log_dict(self.val_metrics)
        return output

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluate(batch, self.test_loss, self.test_metrics)
        self.log("test/loss", self.test_loss)
        self.log_dict(self.test_metrics)

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        output = self.net(x)
        return output.softmax(dim=1) if self.task == "classification" else output

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler_spec = dict(self.hparams.scheduler)
        interval = scheduler_spec.pop("interval", "epoch")
        scheduler = instantiate(scheduler_spec)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": interval,
                "monitor": self.hparams.monitor,
            },
        }
