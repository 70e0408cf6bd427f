"""The run's objects built from the config: data module, model and Trainer.

Each is built the way the run uses it and checked on the way (``src/harness/validation.py``), so
one message lists every problem of the command line before any data is read. The entry
points share these builders; none imports another.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ModelSummary, ProgressBar
from omegaconf import DictConfig

from src.harness.allowlist import spec_class
from src.harness.best_score import best_score_callbacks
from src.harness.cluster import requeue_plugins
from src.harness.problems import CannotBuild, Problems
from src.harness.provenance import plain
from src.harness.safety import safety_callbacks
from src.harness.speed import NoProfiler, skip_failing_nvml_probe
from src.harness.sweeps import pruning_callbacks
from src.harness.validation import (
    accelerator_problems,
    checked_arguments,
    checked_spec,
    non_finite_problems,
    pair_problems,
)


def model_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The LightningModule's arguments as plain values: what its checkpoints record."""
    return {
        "net": plain(cfg.model.net),
        "optimizer": plain(cfg.optimizer),
        "scheduler": plain(cfg.scheduler),
        "task": cfg.data.task,
        "num_outputs": cfg.data.num_outputs,
        "monitor": cfg.data.monitor,
    }


def build_data(cfg: DictConfig, problems: Problems) -> L.LightningDataModule:
    """The data module, not yet holding any data."""
    defaults = checked_spec(cfg.data, "data", problems)
    return problems.attempt("data", lambda: instantiate(cfg.data, **defaults))


def build_model(cfg: DictConfig, problems: Problems) -> L.LightningModule:
    """The module and its net, checked as training will use them: the data the net declares
    it supports, its arguments, then the optimizer and scheduler built on its parameters."""
    hparams = model_hparams(cfg)
    net_class = spec_class(hparams["net"], "net")[0]
    configs = Path(cfg.paths.root_dir) / "configs"
    unpaired = pair_problems(net_class, cfg.data.task, list(cfg.data.input_shape), configs)
    problems.add(*unpaired)

    def check(name: str, key: str) -> None:
        spec = {k: v for k, v in hparams[name].items() if k != "interval"}  # Lightning's
        problems.add(*non_finite_problems(spec, key))
        hparams[name] = {
            **hparams[name],
            **checked_arguments(*spec_class(spec, name), key, problems),
        }

    keys = (("net", "model.net"), ("optimizer", "optimizer"), ("scheduler", "scheduler"))
    problems.each(functools.partial(check, name, key) for name, key in keys if hparams[name])
    if unpaired:
        raise CannotBuild
    model = problems.attempt(
        "model.net", lambda: get_class(cfg.model._target_)(**hparams, compile=cfg.model.compile)
    )
    problems.attempt("optimizer", model.configure_optimizers)
    return model


def build_trainer(cfg: DictConfig, problems: Problems) -> L.Trainer:
    """The Trainer with the configured callbacks and loggers, and the ones that guard the
    run. A callback that a trainer flag switches off (``enable_progress_bar=false``,
    ``enable_model_summary=false``) is left out rather than refused, as that flag asks, and so
    is a learning-rate monitor in a run without a logger (``logger=none``)."""
    specs = {
        f"{group}.{name}": spec
        for group in ("callbacks", "logger")
        for name, spec in (cfg.get(group) or {}).items()
    }

    def build(key: str, spec: Any) -> tuple[str, Any]:
        defaults = checked_spec(spec, key, problems)
        return key, problems.attempt(key, lambda: instantiate(spec, **defaults))

    problems.add(*accelerator_problems(cfg.trainer.get("accelerator")))
    built = dict(problems.each(functools.partial(build, *item) for item in specs.items()))
    defaults = checked_spec(cfg.trainer, "trainer", problems)
    # A progress bar on a terminal only: in a file or a pipe it is a heap of escape codes
    # (the run's log then prints each epoch's metrics instead: EpochLog).
    bar = sys.stdout.isatty() and cfg.trainer.get("enable_progress_bar") is not False
    off = (() if bar else (ProgressBar,)) + (
        (ModelSummary,) if cfg.trainer.get("enable_model_summary") is False else ()
    )
    loggers = [c for k, c in built.items() if k.startswith("logger.")]
    off += () if loggers else (LearningRateMonitor,)  # Lightning's raises without a logger
    callbacks = [
        c for k, c in built.items() if k.startswith("callbacks.") and not isinstance(c, off)
    ]
    # Without a checkpoint callback of the config's, Lightning would add one of its own and
    # save into the logger's folder: no checkpoint, rather than one where nobody looks.
    saves = any(isinstance(c, Checkpoint) for c in callbacks)
    skip_failing_nvml_probe()
    # A profiler chosen in the config (debug=profiler) wins over the cheap no-op.
    quiet = {} if cfg.trainer.get("profiler") else {"profiler": NoProfiler()}
    return problems.attempt(
        "trainer",
        lambda: instantiate(
            cfg.trainer,
            **defaults,
            callbacks=safety_callbacks()
            + best_score_callbacks(cfg)
            + callbacks
            + pruning_callbacks(cfg),
            enable_progress_bar=bar,
            enable_checkpointing=saves,
            logger=loggers or False,
            plugins=[instantiate(spec) for spec in cfg.trainer.get("plugins") or []]
            + requeue_plugins(),
            **quiet,
        ),
    )
