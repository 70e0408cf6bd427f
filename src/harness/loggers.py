"""The experiment trackers users bring: MLflow and Weights & Biases, as optional extras.

Lightning's own loggers, with two things added. A missing package is named with the
project's extra that installs it, in the configuration message before any work starts
(Lightning's error would suggest a bare ``pip install`` after the data loaded). Parallel
jobs sharing a new SQLite store take turns to create its tables and the experiment: at once,
all but one failed (``table params already exists``). And a W&B logger starts a run of its
own: Lightning's reuses a run still open in the process, so the second job of a sweep (or
the run after a failed one) would log into the first.
"""

from __future__ import annotations

from contextlib import nullcontext
from importlib.util import find_spec
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

from src.harness.compat import mlflow_experiment_ready, wandb_run_started
from src.harness.errors import ConfigError


def require(package: str, extra: str | None = None) -> None:
    """Raise the one-line install command when the optional ``package`` is missing; its
    project extra is ``extra``, or the package's own name."""
    if find_spec(package) is None:
        raise ConfigError(
            f"{package} is not installed; it is in an optional extra: "
            f'pip install -e ".[{extra or package}]"'
        )


class MLflowRun(MLFlowLogger):
    """Lightning's MLflow logger, which needs the ``mlflow`` extra."""

    def __init__(self, tracking_uri: str | None = None, **kwargs: Any) -> None:
        require("mlflow")
        from filelock import FileLock

        database = (tracking_uri or "").partition("sqlite:///")[2]
        self._setting_up = FileLock(f"{database}.lock") if database else nullcontext()
        with self._setting_up:  # the client creates a new store's tables
            super().__init__(tracking_uri=tracking_uri, **kwargs)

    @property
    def experiment(self) -> Any:
        if mlflow_experiment_ready(self):
            return super().experiment
        with self._setting_up:  # the first access creates the experiment if it is new
            return super().experiment


class WandbRun(WandbLogger):
    """Lightning's W&B logger, which needs the ``wandb`` extra and logs to a run of its own."""

    def __init__(self, **kwargs: Any) -> None:
        require("wandb")
        super().__init__(**kwargs)

    @property
    def experiment(self) -> Any:
        if not wandb_run_started(self):
            import wandb

            wandb.finish()  # the previous run's, if one is open: this run starts a new one
        return super().experiment
