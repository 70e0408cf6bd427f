"""Predict on new inputs: ``python src/predict.py ckpt_path=PATH input=FILE_OR_FOLDER``.

prepare (the model rebuilt from the checkpoint; the inputs preprocessed with the
statistics saved in it; the run recorded) -> ``Trainer.predict`` -> predictions.csv, in the
columns of the checkpoint's task (class and per-class probabilities, each label's 0/1 and
probability, or the regressed values). Needs neither the training data nor the network.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.harness.failures import run_reporting_errors
from src.harness.run import predict_outputs, prepare_prediction, write_predictions
from src.tasks import TASKS, Task


def predictions_csv(
    names: list[str], predictions: torch.Tensor, task: Task, labels: list[str] | None = None
) -> str:
    """One row per input: its name, then the task's columns (``src/tasks.py``)."""
    columns, rows = task.table(predictions, labels)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(
        [["input", *columns], *([name, *row] for name, row in zip(names, rows, strict=True))]
    )
    return text.getvalue()


def predict(cfg: DictConfig) -> Path:
    """Write ``predictions.csv`` for ``cfg.input`` into the run folder; return its path."""
    run, names, inputs, state = prepare_prediction(cfg)
    task = TASKS[state.get("task") or run.model.hparams.task]  # older checkpoints: the module's
    outputs = predict_outputs(run, DataLoader(inputs, batch_size=cfg.batch_size))
    if type(run.model).predict_step is L.LightningModule.predict_step:
        outputs = task.predictions(outputs)  # no predict_step of its own: read by the task
    table = predictions_csv(names[: len(outputs)], outputs, task, state.get("label_names"))
    return write_predictions(run, table, len(outputs))


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(predict, cfg)


if __name__ == "__main__":
    main()
