"""Train a model: ``python src/train.py [model=...] [data=...] [key=value ...]``.

prepare (threads, paths, seed; data module, model and Trainer built and checked; the
checkpoint to resume; the data read; the run recorded) -> fit -> test the best checkpoint
-> finish (metrics.json). ``train(cfg)`` returns the metrics, so tests and sweepers call
the same function the CLI does.
"""

from __future__ import annotations

from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.callbacks.hparams import log_hparams
from src.harness.failures import run_reporting_errors
from src.harness.run import finish, fit, prepare_training, test
from src.harness.sweeps import sweep_job


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and return its metrics (also written to metrics.json): the final
    epoch's, the best validation score and its epoch, and the best checkpoint's test."""
    run = prepare_training(cfg)
    fit(run)
    test(run)  # the best checkpoint's weights, not the last epoch's
    log_hparams(run.trainer, cfg)  # TensorBoard's HParams tab, beside the final metrics
    return finish(run)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_job(train, cfg)  # a failed job does not end the sweep
    return run_reporting_errors(train, cfg).get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
