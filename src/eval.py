"""Test a trained checkpoint: ``python src/eval.py ckpt_path=PATH [data=NAME] [model=NAME]``.

The same line as train.py without fit: prepare (the model rebuilt from the checkpoint
alone; the data and Trainer built and checked; the run recorded) -> test -> finish
(metrics.json). Without ``data=...`` the data config is the one the checkpoint's run
recorded in its ``config.yaml``, so the test split is the very one that run tested on.
``model=NAME`` (as in lightning-hydra-template's eval) checks that the checkpoint holds
the net that model config sets up.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.harness.failures import run_reporting_errors
from src.harness.run import finish, prepare_evaluation, test


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint ``cfg.ckpt_path``; return its metrics (also in metrics.json)."""
    run = prepare_evaluation(cfg)
    test(run)
    return finish(run)


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(evaluate, cfg)


if __name__ == "__main__":
    main()
