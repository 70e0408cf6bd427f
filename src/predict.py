"""Predict on new inputs: ``python src/predict.py ckpt_path=PATH input=FILE_OR_FOLDER``.

checkpoint -> inputs preprocessed with the statistics saved in it -> model rebuilt from
it -> ``Trainer.predict`` -> predictions.csv, in the columns of the checkpoint's task (class
and per-class probabilities, each label's 0/1 and probability, or the regressed values).
Needs neither the training data nor the network.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.data.base import TensorBatches, keep_batch
from src.harness.atomic_files import write_atomic
from src.harness.build import build_trainer
from src.harness.checkpoints import load_checkpoint, restore_model, trained_checkpoint
from src.harness.errors import ConfigError
from src.harness.failures import run_reporting_errors
from src.harness.interrupts import exit_resumably
from src.harness.paths import absolute_paths
from src.harness.problems import Problems
from src.harness.provenance import record_run
from src.harness.raw_inputs import preprocessing_state, read_inputs, spreadsheet_safe
from src.tasks import TASKS, Task

log = logging.getLogger(__name__)


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
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    absolute_paths(cfg)
    ckpt_path = trained_checkpoint(cfg)
    if cfg.get("input") is None:
        raise ConfigError(
            "no input given: pass input=FILE_OR_FOLDER (a CSV of feature rows for tabular "
            "models, a folder of PNG images or an .npy array for image models)."
        )
    [trainer] = Problems().build_all(cfg, build_trainer)
    checkpoint = load_checkpoint(ckpt_path)
    state = preprocessing_state(checkpoint)
    names, inputs = read_inputs(Path(cfg.input), state)
    names = [spreadsheet_safe(name) for name in names]

    model = restore_model(checkpoint, ckpt_path)
    record_run(cfg, output_dir)
    batches = DataLoader(
        TensorBatches(inputs, torch.zeros(len(inputs))),
        batch_size=cfg.batch_size,
        collate_fn=keep_batch,
    )
    with exit_resumably(trainer, cfg):
        outputs = torch.cat(trainer.predict(model, dataloaders=batches)).float().cpu()
    if len(outputs) < len(names):  # trainer.fast_dev_run or limit_predict_batches
        log.warning("The trainer's limits let %d of %d inputs through.", len(outputs), len(names))
        names = names[: len(outputs)]

    path = output_dir / "predictions.csv"
    csv_text = predictions_csv(names, outputs, TASKS[model.hparams.task], state.get("label_names"))
    write_atomic(path, csv_text)
    log.info("%d predictions in %s (%.1f s)", len(names), path, time.perf_counter() - started)
    return path


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(predict, cfg)


if __name__ == "__main__":
    main()
