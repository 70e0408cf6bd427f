"""Every private name of another library that the project uses, each behind one function here.

Hydra, Optuna, Lightning and torch's TensorBoard writer offer no public way to do these
things. Each function's comment names the library and the version its private name was
checked against (``CHECKED``); tests/test_compat.py fails, naming the library, that
version, the installed one and this file, when an installed version no longer has it.
Each function imports what it reaches into, so that a name gone is reported as that
function's; nothing here imports Optuna, Lightning or torch: callers pass in their objects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins

if TYPE_CHECKING:
    import lightning as L
    import optuna
    from hydra.core.override_parser.types import Override
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.writer import FileWriter

# The installed versions (distribution names) that every private name below was checked against.
CHECKED = {"hydra-core": "1.3.8", "optuna": "5.1.0", "lightning": "2.6.6", "torch": "2.14.1"}
CHECKED["litdata"] = "0.2.76"


def sweep_parser(config_sources: list[dict[str, str]]) -> OverridesParser:
    """Hydra's override parser over a finished sweep's config search path (as its
    ``multirun.yaml`` records it), so that a ``glob(...)`` lists that path's config groups:
    Hydra builds one only inside a run."""
    # hydra-core 1.3.8: hydra._internal's ConfigSearchPathImpl and ConfigLoaderImpl
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

    Plugins.instance()  # registers the config source types (file://, pkg://) to read
    search_path = ConfigSearchPathImpl()
    for source in config_sources:
        search_path.append(source["provider"], f"{source['schema']}://{source['path']}")
    return OverridesParser.create(ConfigLoaderImpl(config_search_path=search_path))


def sweep_jobs(overrides: list[Override]) -> list[list[str]]:
    """The jobs of a basic sweep, each as its overrides, in the order Hydra numbers them."""
    # hydra-core 1.3.8: hydra._internal's BasicSweeper.split_arguments
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    [jobs] = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return jobs


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a trial (``trial.number`` counts within its study only), which
    ``optuna.Trial(study, trial_id)`` takes and the storage's heartbeat records."""
    # optuna 5.1.0: Trial._trial_id
    return trial._trial_id


def tensorboard_file_writer(experiment: SummaryWriter) -> FileWriter:
    """The writer's event file, to add a ready-made summary to, as Lightning's own
    ``TensorBoardLogger.log_hyperparams`` does."""
    # torch 2.14.1 (with tensorboard 2.21.0): SummaryWriter._get_file_writer
    return experiment._get_file_writer()


def mlflow_experiment_ready(logger: MLFlowLogger) -> bool:
    """Whether the logger has already created or found its MLflow experiment."""
    # lightning 2.6.6 (with mlflow 3.17.2): MLFlowLogger._initialized
    return logger._initialized


def wandb_run_started(logger: WandbLogger) -> bool:
    """Whether the logger has already started (or taken over) a W&B run."""
    # lightning 2.6.6 (with wandb 0.31.0): WandbLogger._experiment, None until then
    return logger._experiment is not None


def prefix_rate_keys(monitor: LearningRateMonitor, prefix: str) -> None:
    """Log the monitor's rates as ``prefix`` + Lightning's name (``train/lr-Adam``), which
    Lightning has no setting for."""
    # lightning 2.6.6: LearningRateMonitor._add_prefix(name, optimizer_cls,
    # seen_optimizer_types), the last step of naming each rate's key
    monitor._add_prefix = functools.partial(_with_prefix, prefix, monitor._add_prefix)


def _with_prefix(prefix: str, name: Callable[..., str], *args: object) -> str:
    return prefix + name(*args)


def count_logged_steps(trainer: L.Trainer, steps: int) -> None:
    """Set the step count at which Lightning logs metrics, which it counts in training
    batches that stepped and has no setting for."""
    # lightning 2.6.6: _TrainingEpochLoop._batches_that_stepped, the step of logged metrics
    # (and of log_every_n_steps); saved in checkpoints by the loop
    trainer.fit_loop.epoch_loop._batches_that_stepped = steps


def count_optimizer_step(trainer: L.Trainer) -> None:
    """Count an optimizer step taken without Lightning's wrapper in ``global_step``, as
    ``LightningOptimizer.step`` counts one under manual optimization."""
    # lightning 2.6.6: _ManualOptimization.optim_step_progress, which global_step reads under
    # manual optimization and checkpoints save
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()


def download_chunks_with_boto3() -> None:
    """Have LitData download chunks with boto3, not obstore, in this process and the loader
    workers it forks: LitData builds its obstore store without obstore's ``allow_http``, so
    from a plain-http endpoint (MinIO, a local moto server) every chunk download fails."""
    # litdata 0.2.76: litdata.streaming.downloader._OBSTORE_INIT_PID, the process that may
    # use obstore (obstore_usable() is false in any other)
    import litdata.streaming.downloader

    litdata.streaming.downloader._OBSTORE_INIT_PID = -1
