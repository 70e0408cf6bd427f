"""Train a model: ``python src/train.py [model=...] [data=...] [key=value ...]``.

One straight line: compose config -> check it -> seed -> data -> model -> callbacks and
loggers -> Trainer -> fit -> test the best checkpoint -> metrics.json. ``train(cfg)``
returns the metrics, so tests and sweepers call the same function the CLI does.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.callbacks.hparams import log_hparams
from src.callbacks.safety import safety_callbacks
from src.errors import UserError
from src.utils.ckpt import resume_checkpoint
from src.utils.cluster import requeue_plugins
from src.utils.debug import log_debug_changes
from src.utils.interrupts import earlier_attempt_checkpoint, exit_resumably
from src.utils.run_files import print_config_tree, record_run, write_metrics
from src.utils.speed import NoProfiler, skip_failing_nvml_probe
from src.utils.sweeps import sweep_job
from src.utils.validate import validate_config

log = logging.getLogger(__name__)
errors_log = logging.getLogger("run_errors")  # to the run's log file only (configs/hydra)

# The data already sits in memory as tensors: loader worker processes would only add
# inter-process copies, so Lightning's advice to add workers does not apply here.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# Lightning 2.6 on torch 2.14 warns about its own use of a torch internal; nothing to act on.
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")
# A resumed run writes its checkpoints into its own new folder, as intended.
warnings.filterwarnings("ignore", ".*The dirpath has changed from.*")


def plain(node: Any) -> Any:
    """Resolved plain Python values, the only kind checkpoints may hold (weights_only)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def build_model(cfg: DictConfig) -> L.LightningModule:
    return instantiate(
        cfg.model,
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        task=cfg.data.task,
        num_outputs=cfg.data.num_outputs,
        monitor=cfg.data.monitor,
        _recursive_=False,
        _convert_="all",
    )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]
    callbacks += safety_callbacks()
    loggers = [instantiate(spec) for spec in (cfg.get("logger") or {}).values()]
    skip_failing_nvml_probe()
    # A profiler chosen in the config (debug=profiler) wins over the cheap no-op.
    quiet = {} if cfg.trainer.get("profiler") else {"profiler": NoProfiler()}
    plugins = [instantiate(spec) for spec in cfg.trainer.get("plugins") or []]
    plugins += requeue_plugins()
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins, **quiet
    )


def collect_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The run's name and tags, recorded in metrics.json and the loggers' hyperparameters."""
    return {"run_name": cfg.get("run_name"), "tags": list(cfg.get("tags") or [])}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and return its final metrics (also written to metrics.json)."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    validate_config(cfg)
    # Resolved now, so a bad path fails before the data loads and config.yaml names the file.
    cfg.ckpt_path = resume_checkpoint(cfg) or earlier_attempt_checkpoint(cfg)
    log_debug_changes(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    # Read the data now so a missing data set fails before anything else is created.
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg)
    trainer = build_trainer(cfg)
    record_run(cfg, output_dir)
    for logger in trainer.loggers:
        logger.log_hyperparams(run_identity(cfg))

    metrics: dict[str, Any] = run_identity(cfg)
    if cfg.get("train"):
        with exit_resumably(trainer, cfg):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        metrics.update(collect_metrics(trainer))
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test"):
        if not best_path:
            log.warning("No best checkpoint was saved: testing the weights as they are now.")
        trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True)
        metrics.update(collect_metrics(trainer))

    metrics.update(best_model_path=best_path or None, wall_time_s=time.perf_counter() - started)
    log_hparams(trainer, cfg, metrics)
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
    return metrics


def discard_empty_run(output_dir: Path) -> None:
    """Remove a run folder that holds only Hydra's bookkeeping, so no result is faked."""
    # Hydra's folder and the log named after task_name (train.log, eval.log, debug.log, ...)
    if output_dir.is_dir() and all(
        p.name == ".hydra" or p.suffix == ".log" for p in output_dir.iterdir()
    ):
        for path in sorted(output_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        output_dir.rmdir()


def run_reporting_errors(task: Any, cfg: DictConfig) -> dict[str, Any]:
    """Call ``task(cfg)``; turn a ``UserError`` into a one-paragraph message and exit 1."""
    try:
        return task(cfg)
    except UserError as error:
        errors_log.error("%s", error)
        discard_empty_run(Path(cfg.paths.output_dir))
        raise SystemExit(f"error: {error}") from None


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    print_config_tree(cfg)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_job(train, cfg)  # a failed job does not end the sweep
    metrics = run_reporting_errors(train, cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
