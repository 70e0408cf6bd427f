"""Predict on new inputs: ``python src/predict.py ckpt_path=PATH input=FILE_OR_FOLDER``.

checkpoint -> inputs preprocessed with the statistics saved in it -> model rebuilt from
it -> ``Trainer.predict`` -> predictions.csv (class and per-class probabilities, or the
regressed values). Needs neither the training data nor the network.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.harness.atomic_files import write_atomic
from src.harness.build import build_trainer
from src.harness.checkpoints import load_checkpoint, restore_model, trained_checkpoint
from src.harness.errors import ConfigError
from src.harness.failures import run_reporting_errors
from src.harness.interrupts import exit_resumably
from src.harness.paths import absolute_paths
from src.harness.problems import Problems
from src.harness.provenance import record_run
from src.harness.raw_inputs import preprocessing_state, read_inputs

log = logging.getLogger(__name__)


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

    model = restore_model(checkpoint, ckpt_path)
    task = state.get("task", model.hparams.get("task"))  # checkpoints before data recorded it
    record_run(cfg, output_dir)
    with exit_resumably(trainer, cfg):  # each batch: the inputs alone
        outputs = trainer.predict(model, dataloaders=DataLoader(inputs, batch_size=cfg.batch_size))
    outputs = torch.cat(outputs).float().cpu()
    # A module's own predict_step answers as it likes; without one, its outputs are read
    # by the task: probabilities for classification, the values for regression.
    if type(model).predict_step is L.LightningModule.predict_step and task == "classification":
        outputs = outputs.softmax(dim=1)
    if len(outputs) < len(names):  # trainer.fast_dev_run or limit_predict_batches
        log.warning("The trainer's limits let %d of %d inputs through.", len(outputs), len(names))
        names = names[: len(outputs)]

    path = output_dir / "predictions.csv"
    write_atomic(path, predictions_csv(names, outputs, task))
    log.info("%d predictions in %s (%.1f s)", len(names), path, time.perf_counter() - started)
    return path


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(predict, cfg)


if __name__ == "__main__":
    main()
