"""Export a trained model: ``python src/export.py ckpt_path=PATH format=onnx|pt2 [output=FILE]``.

prepare (the model rebuilt from the checkpoint, with the preprocessing saved in it) -> one
self-contained file (ONNX, or a ``torch.export`` program) that takes the raw inputs predict.py
reads and gives its predictions, for a batch of any size -> a JSON card beside it (input shape,
task, names; the checkpoint's run folder, commit and config). Default output: beside the
checkpoint, ``<checkpoint>.onnx`` or ``.pt2``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.harness.exporting import export, model_card, raw_input_model
from src.harness.failures import run_reporting_errors
from src.harness.run import trained_model
from src.tasks import TASKS

log = logging.getLogger(__name__)


def export_model(cfg: DictConfig) -> Path:
    """Write the exported model and its card; return the model file's path."""
    path, checkpoint, model = trained_model(cfg)
    output = Path(cfg.output or path.with_suffix(f".{cfg.format}")).expanduser().resolve()
    card = model_card(checkpoint, path)
    wrapped = raw_input_model(checkpoint, model, TASKS[card["task"]])
    exported = export(wrapped, card, output, cfg.format)
    log.info("Exported %s to %s (its card: %s.json)", path, exported, exported)
    return exported


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(export_model, cfg)


if __name__ == "__main__":
    main()
