"""Test a trained checkpoint: ``python src/eval.py ckpt_path=PATH [data=NAME] [model=NAME]``.

The same straight line as train.py without fit: checkpoint -> model (rebuilt from the
checkpoint alone) -> data -> Trainer -> test -> metrics.json. Without ``data=...`` the data
config is the one the checkpoint's run recorded in its ``config.yaml``, so the test split
is the very one that run tested on. ``model=NAME`` (as in lightning-hydra-template's
eval) checks that the checkpoint holds the net that model config sets up.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.harness.build import build_data, build_trainer
from src.harness.checkpoints import load_checkpoint, restore_model, trained_checkpoint
from src.harness.eval_data import choose_test_data
from src.harness.failures import run_reporting_errors
from src.harness.interrupts import exit_resumably
from src.harness.paths import absolute_paths
from src.harness.problems import Problems
from src.harness.provenance import record_run
from src.harness.reporting import collect_metrics, report

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint ``cfg.ckpt_path``; return its metrics (also in metrics.json)."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    absolute_paths(cfg)
    ckpt_path = trained_checkpoint(cfg)
    checkpoint = load_checkpoint(ckpt_path)
    model = restore_model(checkpoint, ckpt_path)
    choose_test_data(cfg, ckpt_path, checkpoint)
    datamodule, trainer = Problems().build_all(cfg, build_data, build_trainer)
    datamodule.prepare_data()
    datamodule.setup("test")
    record_run(cfg, output_dir)

    with exit_resumably(trainer, cfg):
        trainer.test(model, datamodule=datamodule)
    return report(trainer, cfg, {**collect_metrics(trainer), "ckpt_path": str(ckpt_path)}, started)


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(evaluate, cfg)


if __name__ == "__main__":
    main()
