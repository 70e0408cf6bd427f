"""Predict on new inputs: ``python src/predict.py ckpt_path=PATH input=FILE_OR_FOLDER``.

prepare (the model rebuilt from the checkpoint; the inputs preprocessed with the
statistics saved in it; the run recorded) -> ``Trainer.predict`` -> predictions.csv (class
and per-class probabilities, or the regressed values). Needs neither the training data
nor the network.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.data.base import TensorBatches, keep_batch
from src.harness.failures import run_reporting_errors
from src.harness.run import predict_outputs, prepare_prediction, write_predictions


def predictions_csv(names: list[str], outputs: torch.Tensor, task: str) -> str:
    """One row per input: ``input,class,prob_0,...`` or ``input,prediction`` (``_k`` per output)."""
    if task == "classification":
        header = ["input", "class", *(f"prob_{k}" for k in range(outputs.shape[1]))]
        rows = [
            [name, int(row.argmax()), *row.tolist()]
            for name, row in zip(names, outputs, strict=True)
        ]
    else:
        columns = (
            ["prediction"]
            if outputs.shape[1] == 1
            else [f"prediction_{k}" for k in range(outputs.shape[1])]
        )
        header = ["input", *columns]
        rows = [[name, *row.tolist()] for name, row in zip(names, outputs, strict=True)]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *rows])
    return text.getvalue()


def predict(cfg: DictConfig) -> Path:
    """Write ``predictions.csv`` for ``cfg.input`` into the run folder; return its path."""
    run, names, inputs = prepare_prediction(cfg)
    batches = DataLoader(
        TensorBatches(inputs, torch.zeros(len(inputs))),
        batch_size=cfg.batch_size,
        collate_fn=keep_batch,
    )
    outputs = predict_outputs(run, batches)  # fewer than the inputs under the trainer's limits
    table = predictions_csv(names[: len(outputs)], outputs, run.model.hparams.task)
    return write_predictions(run, table, len(outputs))


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(predict, cfg)


if __name__ == "__main__":
    main()
