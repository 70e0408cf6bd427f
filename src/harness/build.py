"""The run's objects built from the config: data module, model and Trainer.

Each is built the way the run uses it and checked on the way (``src/harness/validation.py``), so
one message lists every problem of the command line before any data is read. The entry
points share these builders; none imports another.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Container
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ModelSummary, ProgressBar
from omegaconf import DictConfig, OmegaConf

from src.harness.allowlist import SPEC_ARGUMENTS, spec_class
from src.harness.best_score import best_score_callbacks
from src.harness.checkpoints import RecordModuleClass
from src.harness.cluster import requeue_plugins
from src.harness.errors import ConfigError
from src.harness.problems import CannotBuild, Problems
from src.harness.provenance import plain
from src.harness.safety import safety_callbacks
from src.harness.speed import NoProfiler, skip_failing_nvml_probe
from src.harness.steps_per_call import LoggedSteps, trainer_arguments
from src.harness.stop_checkpoint import StopAtBatch
from src.harness.sweeps import pruning_callbacks
from src.harness.validation import (
    accelerator_problems,
    checked_arguments,
    checked_spec,
    keyword_parameters,
    non_finite_problems,
    pair_problems,
    paired_class,
)

# What the run gives a module whose signature asks for it, and where each comes from: the
# optimizer and scheduler groups, the data's task, outputs and monitored metric.
SUPPLIED = {"optimizer": "optimizer", "scheduler": "scheduler", "task": "data.task"}
SUPPLIED |= {"num_outputs": "data.num_outputs", "monitor": "data.monitor"}


def config_key(argument: str, model: DictConfig) -> str:
    """Where a module's argument is set in the config (``model``, its ``model`` node), for
    messages."""
    return SUPPLIED[argument] if argument in SUPPLIED.keys() - model.keys() else f"model.{argument}"


def module_arguments(cfg: DictConfig, parameters: Container[str]) -> dict[str, Any]:
    """The module's arguments as plain values: the config's own ``model.*`` keys, and those
    of :data:`SUPPLIED` its signature asks for. ``model.compile`` goes to a module that takes
    it; one that does not is refused it only when it is switched on."""
    own = {key: value for key, value in plain(cfg.model).items() if not key.startswith("_")}
    if "compile" not in parameters and not own.get("compile"):
        own.pop("compile", None)
    supplied = {name: plain(OmegaConf.select(cfg, key)) for name, key in SUPPLIED.items()}
    return {**{k: v for k, v in supplied.items() if k in parameters}, **own}


def build_data(cfg: DictConfig, problems: Problems) -> L.LightningDataModule:
    """The data module, not yet holding any data. ``data.num_outputs: null`` is what the
    module counted (an image folder's classes), set in the config for the model to read."""
    defaults = checked_spec(cfg.data, "data", problems)
    datamodule = problems.attempt("data", lambda: instantiate(cfg.data, **defaults))
    if counts_outputs(cfg):
        cfg.data.num_outputs = problems.attempt(
            "data.num_outputs", lambda: outputs_counted(datamodule)
        )
    return datamodule


def counts_outputs(cfg: DictConfig) -> bool:
    """Whether the data config leaves ``num_outputs`` to its module (``null``)."""
    return "num_outputs" in cfg.data and cfg.data.num_outputs is None


def outputs_counted(datamodule: L.LightningDataModule) -> int:
    counted = getattr(datamodule, "num_outputs", None)
    if not isinstance(counted, int):
        raise ConfigError(f"is null, and {type(datamodule).__name__} does not count its outputs")
    return counted


def build_model(cfg: DictConfig, problems: Problems) -> L.LightningModule:
    """The configured LightningModule, built by its signature and checked as training will use
    it: the data its net (or the module itself) declares it supports, its arguments and its
    net's, optimizer's and scheduler's, then the optimizers built on its parameters. What it
    records with ``save_hyperparameters`` must rebuild it from a checkpoint: plain values."""
    cls_path = cfg.model.get("_target_")
    cls = problems.attempt("model", lambda: spec_class({"_target_": cls_path}, "module")[0])
    configs = Path(cfg.paths.root_dir) / "configs"
    paired = paired_class(cfg.model)
    unpaired = pair_problems(paired, cfg.data.task, list(cfg.data.input_shape), configs)
    problems.add(*unpaired)
    if counts_outputs(cfg):
        raise CannotBuild  # the data module could not count them: build_data said why
    arguments = module_arguments(cfg, keyword_parameters(cls) or {})

    def check(name: str) -> None:
        spec = {k: v for k, v in arguments[name].items() if k != "interval"}  # Lightning's
        key = config_key(name, cfg.model)
        problems.add(*non_finite_problems(spec, key))
        checked = checked_arguments(*spec_class(spec, name), key, problems)
        arguments[name] = {**arguments[name], **checked}

    builds = [functools.partial(check, name) for name in SPEC_ARGUMENTS if arguments.get(name)]
    replaced = checked_arguments(cls, arguments, "model", problems)
    problems.each(builds)
    if unpaired:
        raise CannotBuild
    # What a module raises while it builds its net is most often about the net's arguments.
    key = "model.net" if arguments.get("net") else "model"
    model = problems.attempt(key, lambda: cls(**{**arguments, **replaced}))
    unrecorded = [name for name in arguments if name not in model.hparams and name != "compile"]
    problems.add(
        *(
            f"{config_key(name, cfg.model)}: {cls.__name__} does not record it, so its "
            "checkpoints could not rebuild it: call self.save_hyperparameters() in its __init__"
            for name in unrecorded
        )
    )
    problems.attempt("model", lambda: spec_class({**model.hparams, "_target_": cls_path}, "module"))
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
    trainer, steps_per_call, grouping = trainer_arguments(plain(cfg.trainer))
    problems.add(*grouping)
    defaults = checked_spec(trainer, "trainer", problems)
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
            trainer,
            **defaults,
            callbacks=safety_callbacks()
            + best_score_callbacks(cfg)
            + [RecordModuleClass(), *callbacks]
            + pruning_callbacks(cfg)
            + ([LoggedSteps()] if steps_per_call > 1 else [])
            # last: a signal sent by an earlier callback at a batch's end stops at that batch
            + [StopAtBatch()],
            enable_progress_bar=bar,
            enable_checkpointing=saves,
            logger=loggers or False,
            plugins=[instantiate(spec) for spec in cfg.trainer.get("plugins") or []]
            + requeue_plugins(),
            **quiet,
        ),
    )
