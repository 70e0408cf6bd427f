"""The tasks: what a data set's targets are, and so how a net's outputs are trained and read.

A data set declares its task in its config (``task: classification``); everything that
depends on it (the loss, the metrics and the one that picks ``best.ckpt``, the targets'
dtype, ``predict.py``'s columns, the pictures, the nets that fit) asks the definition
here. A new task is one more class and one more entry in ``TASKS``; checkpoints record
the entry's name.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import F1Score, Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

Row = list[Any]


class Task:
    """The base of every task; its class attributes are what configs and nets read."""

    name = ""  # what data configs and checkpoints call it (``task: classification``)
    monitor, monitor_mode = "val/loss", "min"  # what picks best.ckpt, unless data overrides it
    continuous = False  # outputs are the targets' own values (what a linear regression fits)
    pictures: frozenset[str] = frozenset()  # the validation pictures that suit it (callbacks/)
    hits = None  # optional (outputs, targets) -> 0/1 per example: train/acc, cheaply

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def metrics(self, num_outputs: int) -> dict[str, Metric]:
        """Fed ``predictions`` and ``targets``, logged as ``val/<name>`` and ``test/<name>``."""
        raise NotImplementedError

    def targets(self, targets: Tensor) -> Tensor:
        """The targets as ``loss`` and ``metrics`` take them: a float column per output."""
        return targets.float().reshape(len(targets), -1)

    def predictions(self, outputs: Tensor) -> Tensor:
        """What ``predict_step`` returns: probabilities, or the values themselves."""
        return outputs

    def decide(self, predictions: Tensor) -> Tensor:
        """The answer the predictions give, as ``targets`` holds it (synthetic data's labels)."""
        return predictions

    def table(self, predictions: Tensor, labels: list[str] | None) -> tuple[list[str], list[Row]]:
        """``predict.py``'s columns after ``input``, and one row per input."""
        columns = [f"prediction_{k}" for k in range(predictions.shape[1])]
        return columns if len(columns) > 1 else ["prediction"], predictions.tolist()

    def least_examples(self, num_outputs: int) -> int:
        """The fewest training examples that can train it."""
        return 1


class Classification(Task):
    """One class out of ``num_outputs``: cross-entropy on logits, accuracy."""

    name = "classification"
    monitor, monitor_mode = "val/acc", "max"
    pictures = frozenset({"confusion_matrix", "validation_samples", "train_inputs"})

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

    def metrics(self, num_outputs: int) -> dict[str, Metric]:
        return {"acc": MulticlassAccuracy(num_outputs, average="micro")}

    def targets(self, targets: Tensor) -> Tensor:
        return targets.long()

    @staticmethod
    def hits(outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(dim=1) == targets).float()

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.softmax(dim=1)

    def decide(self, predictions: Tensor) -> Tensor:
        return predictions.argmax(dim=1)

    def table(self, predictions: Tensor, labels: list[str] | None) -> tuple[list[str], list[Row]]:
        """The class (its name where the data names its classes) and each one's probability."""
        names = labels or list(range(predictions.shape[1]))
        rows = zip(self.decide(predictions).tolist(), predictions.tolist(), strict=True)
        return ["class", *(f"prob_{name}" for name in names)], [
            [names[decision], *row] for decision, row in rows
        ]

    def least_examples(self, num_outputs: int) -> int:
        return num_outputs  # one per class


class Regression(Task):
    """Real-valued targets, one column each: mean squared error, RMSE/MAE/R2."""

    name = "regression"
    continuous = True
    pictures = frozenset({"regression_plots"})

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs, targets)

    def metrics(self, num_outputs: int) -> dict[str, Metric]:
        return {
            "mse": MeanSquaredError(),
            "rmse": MeanSquaredError(squared=False),
            "mae": MeanAbsoluteError(),
            "r2": R2Score(),
        }


class MultiLabel(Task):
    """Any number of ``num_outputs`` labels per example (a 0/1 target each; one label is a
    binary target): binary cross-entropy on logits, F1 per label (averaged), each label on
    above probability 0.5."""

    name = "multilabel"
    monitor, monitor_mode = "val/f1", "max"
    threshold = 0.5

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(outputs, targets)

    def metrics(self, num_outputs: int) -> dict[str, Metric]:
        kind = "multilabel" if num_outputs > 1 else "binary"  # one label: a binary target
        return {
            "f1": F1Score(kind, threshold=self.threshold, num_labels=num_outputs, average="macro")
        }

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.sigmoid()

    def decide(self, predictions: Tensor) -> Tensor:
        return (predictions > self.threshold).float()  # as torchmetrics decides

    def table(self, predictions: Tensor, labels: list[str] | None) -> tuple[list[str], list[Row]]:
        labels = labels or [f"label_{k}" for k in range(predictions.shape[1])]
        decisions = self.decide(predictions).int().tolist()
        rows = zip(decisions, predictions.tolist(), strict=True)
        return [*labels, *(f"prob_{label}" for label in labels)], [[*d, *p] for d, p in rows]


TASKS: dict[str, Task] = {
    task.name: task for task in (Classification(), Regression(), MultiLabel())
}


def task(name: str) -> Task:
    """The task a data config names (``data.task``), or a message naming those that exist."""
    if name not in TASKS:
        raise ValueError(f"data.task={name!r} is not a task; the tasks: {', '.join(TASKS)}")
    return TASKS[name]
