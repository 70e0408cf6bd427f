"""The steps of a run, each one call from an entry point: prepare -> fit / test / predict ->
finish.

``prepare_*`` does everything that can fail before any work starts (paths, the checkpoint,
the objects built and checked, the data read) and records the run; the work steps wrap
the trainer in :func:`exit_resumably`; ``finish`` writes the result. What passes from one
step to the next is a :class:`Run`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from src.harness.atomic_files import write_atomic
from src.harness.best_score import best_metrics
from src.harness.build import build_data, build_model, build_trainer
from src.harness.checkpoints import load_checkpoint, restore_model, trained_checkpoint
from src.harness.errors import ConfigError
from src.harness.eval_data import choose_test_data
from src.harness.interrupts import earlier_attempt_checkpoint, exit_resumably
from src.harness.paths import absolute_paths
from src.harness.problems import Problems
from src.harness.provenance import log_debug_changes, record_run
from src.harness.raw_inputs import preprocessing_state, read_inputs, spreadsheet_safe
from src.harness.reporting import collect_metrics, fit_metrics, report, run_identity
from src.harness.resume import resume_checkpoint
from src.harness.speed import set_threads
from src.harness.steps_per_call import take_steps_per_call
from src.harness.validation import checked_seed

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What one step hands the next: the config, what was built from it, the results."""

    cfg: DictConfig
    started: float  # time.perf_counter() when the run began: its wall time
    trainer: L.Trainer
    model: L.LightningModule
    datamodule: L.LightningDataModule | None = None
    # The checkpoint the trainer loads: in training, the one to resume, then the best to
    # test; None when the model already holds the weights to use.
    ckpt_path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def prepare_training(cfg: DictConfig) -> Run:
    """Threads, paths and seed; the data module, model and Trainer, checked; the checkpoint
    to resume; the data read; the run recorded."""
    started = time.perf_counter()
    set_threads(cfg.get("num_threads"))
    absolute_paths(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(checked_seed(cfg.seed), workers=True)
    datamodule, model, trainer = Problems().build_all(cfg, build_data, build_model, build_trainer)
    take_steps_per_call(cfg.trainer.get("steps_per_call", 1), datamodule, model)
    if not cfg.get("train") and cfg.get("ckpt_path") is None:
        raise ConfigError(
            "train=false tests a trained checkpoint: give it with ckpt_path=PATH (or "
            "ckpt_path=last), or test one with python src/eval.py ckpt_path=PATH."
        )
    # Resolved now, so a bad path fails before the data loads and config.yaml names the file.
    cfg.ckpt_path = resume_checkpoint(cfg, model) or earlier_attempt_checkpoint(cfg)
    log_debug_changes(cfg)
    # Read the data now so a missing data set fails before anything else is created.
    datamodule.prepare_data()
    datamodule.setup("fit")
    record_run(cfg, Path(cfg.paths.output_dir))
    for logger in trainer.loggers:
        logger.log_hyperparams(run_identity(cfg))
    if cfg.get("train") and not trainer.checkpoint_callback:
        log.warning(
            "This run saves no checkpoint: its callbacks have none, so it cannot be resumed and "
            "tests its final weights. callbacks=NAME replaces the default callbacks; "
            "callbacks=[default,NAME] adds NAME to them."
        )
    return Run(cfg, started, trainer, model, datamodule, ckpt_path=cfg.ckpt_path)


def fit(run: Run) -> None:
    """Train (``train=false`` skips it and tests the checkpoint given); then the final
    epoch's metrics, the best validation score and its epoch, and the best checkpoint to
    test."""
    if run.cfg.get("train"):
        with exit_resumably(run.trainer, run.cfg):
            run.trainer.fit(
                run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True
            )
        run.metrics.update(fit_metrics(run.trainer, run.cfg))
        run.metrics.update(best_metrics(run.trainer))
        run.ckpt_path = getattr(run.trainer.checkpoint_callback, "best_model_path", "") or None
    run.metrics["best_model_path"] = run.ckpt_path


def test(run: Run) -> None:
    """Test the weights the run keeps (``test=false`` in training skips it)."""
    if run.cfg.get("test", True):
        with exit_resumably(run.trainer, run.cfg):
            run.trainer.test(
                run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True
            )
        run.metrics.update(collect_metrics(run.trainer))


def finish(run: Run) -> dict[str, Any]:
    """The metrics, written to metrics.json and summed up in the run's last line."""
    return report(run.trainer, run.cfg, run.metrics, run.started)


def trained_model(cfg: DictConfig) -> tuple[Path, dict[str, Any], L.LightningModule]:
    """The checkpoint ``eval.py`` and ``predict.py`` start from, read, and its model."""
    absolute_paths(cfg)
    path = trained_checkpoint(cfg)
    checkpoint = load_checkpoint(path)
    return path, checkpoint, restore_model(checkpoint, path)


def prepare_evaluation(cfg: DictConfig) -> Run:
    """The trained model; the data it is tested on (its run's unless ``data=`` is given) and
    the Trainer, checked; the test data read; the run recorded."""
    started = time.perf_counter()
    path, checkpoint, model = trained_model(cfg)
    choose_test_data(cfg, path, checkpoint)
    datamodule, trainer = Problems().build_all(cfg, build_data, build_trainer)
    datamodule.prepare_data()
    datamodule.setup("test")
    record_run(cfg, Path(cfg.paths.output_dir))
    return Run(cfg, started, trainer, model, datamodule, metrics={"ckpt_path": str(path)})


def prepare_prediction(cfg: DictConfig) -> tuple[Run, list[str], torch.Tensor, dict[str, Any]]:
    """The trained model, the Trainer, the inputs preprocessed as training preprocessed its
    data, their names (safe in a spreadsheet), and the data's state saved in the checkpoint
    (its task, label names); the run recorded."""
    started = time.perf_counter()
    _, checkpoint, model = trained_model(cfg)
    if cfg.get("input") is None:
        raise ConfigError(
            "no input given: pass input=FILE_OR_FOLDER (a CSV of feature rows for tabular "
            "models, a folder of PNG images or an .npy array for image models)."
        )
    [trainer] = Problems().build_all(cfg, build_trainer)
    state = preprocessing_state(checkpoint)
    names, inputs = read_inputs(Path(cfg.input), state)
    record_run(cfg, Path(cfg.paths.output_dir))
    names = [spreadsheet_safe(name) for name in names]
    return Run(cfg, started, trainer, model), names, inputs, state


def predict_outputs(run: Run, batches: DataLoader) -> torch.Tensor:
    """The model's outputs for ``batches``, on the CPU."""
    with exit_resumably(run.trainer, run.cfg):
        outputs = torch.cat(run.trainer.predict(run.model, dataloaders=batches)).float().cpu()
    if len(outputs) < len(batches.dataset):  # trainer.fast_dev_run or limit_predict_batches
        log.warning(
            "The trainer's limits let %d of %d inputs through.", len(outputs), len(batches.dataset)
        )
    return outputs


def write_predictions(run: Run, table: str, count: int) -> Path:
    """``predictions.csv`` in the run folder, written whole or not at all."""
    path = Path(run.cfg.paths.output_dir) / "predictions.csv"
    write_atomic(path, table)
    log.info("%d predictions in %s (%.1f s)", count, path, time.perf_counter() - run.started)
    return path
