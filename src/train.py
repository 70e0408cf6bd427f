"""Train a model: ``python src/train.py [model=...] [data=...] [key=value ...]``.

One straight line: compose config -> seed -> data module, model and Trainer, checked ->
checkpoint to resume -> read the data -> fit -> test the best checkpoint -> metrics.json.
``train(cfg)`` returns the metrics, so tests and sweepers call the same function the CLI
does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.callbacks.hparams import log_hparams
from src.harness.best_score import best_metrics
from src.harness.build import build_data, build_model, build_trainer, model_hparams
from src.harness.errors import ConfigError
from src.harness.failures import run_reporting_errors
from src.harness.interrupts import earlier_attempt_checkpoint, exit_resumably
from src.harness.paths import absolute_paths
from src.harness.problems import Problems
from src.harness.provenance import log_debug_changes, record_run
from src.harness.reporting import collect_metrics, fit_metrics, report, run_identity
from src.harness.resume import resume_checkpoint
from src.harness.speed import set_threads
from src.harness.sweeps import sweep_job
from src.harness.validation import checked_seed

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and return its metrics (also written to metrics.json): the final
    epoch's, the best checkpoint's validation score and epoch, and that checkpoint's test."""
    started = time.perf_counter()
    set_threads(cfg.get("num_threads"))
    output_dir = Path(cfg.paths.output_dir)
    absolute_paths(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(checked_seed(cfg.seed), workers=True)
    datamodule, model, trainer = Problems().build_all(cfg, build_data, build_model, build_trainer)
    if not cfg.get("train") and cfg.get("ckpt_path") is None:
        raise ConfigError(
            "train=false tests a trained checkpoint: give it with ckpt_path=PATH (or "
            "ckpt_path=last), or test one with python src/eval.py ckpt_path=PATH."
        )
    # Resolved now, so a bad path fails before the data loads and config.yaml names the file.
    cfg.ckpt_path = resume_checkpoint(cfg, model_hparams(cfg)) or earlier_attempt_checkpoint(cfg)
    log_debug_changes(cfg)
    # Read the data now so a missing data set fails before anything else is created.
    datamodule.prepare_data()
    datamodule.setup("fit")
    record_run(cfg, output_dir)
    for logger in trainer.loggers:
        logger.log_hyperparams(run_identity(cfg))

    metrics: dict[str, Any] = {}
    best_path = cfg.ckpt_path  # train=false tests the checkpoint given
    if cfg.get("train") and not trainer.checkpoint_callback:
        log.warning(
            "This run saves no checkpoint: its callbacks have none, so it cannot be resumed and "
            "tests its final weights. callbacks=NAME replaces the default callbacks; "
            "callbacks=[default,NAME] adds NAME to them."
        )
    with exit_resumably(trainer, cfg):
        if cfg.get("train"):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
            metrics.update(fit_metrics(trainer, cfg))
            # Read before testing, which restores the callback's state from best.ckpt.
            best = best_metrics(trainer, cfg.data.monitor)
            for logger in trainer.loggers:  # the score, beside the epochs' (no epoch chart)
                logger.log_metrics({k: v for k, v in best.items() if "/" in k}, trainer.global_step)
            metrics.update(best)
            best_path = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if cfg.get("test"):
            trainer.test(
                model, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True
            )
            metrics.update(collect_metrics(trainer))

    metrics["best_model_path"] = best_path or None
    log_hparams(trainer, cfg)
    return report(trainer, cfg, metrics, started)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_job(train, cfg)  # a failed job does not end the sweep
    metrics = run_reporting_errors(train, cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
