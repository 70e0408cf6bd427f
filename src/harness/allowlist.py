"""What a config or a checkpoint may name, and build it without running anything else.

Specs (``{"_target_": ..., **arguments}``) come back from checkpoints, which may come from
anywhere, so they are never given to Hydra's ``instantiate`` (which calls whatever a
``_target_`` names, nested anywhere). :func:`spec_class` admits only the classes a spec may
name, and only plain values as their arguments: loading a checkpoint runs no code but this
project's constructors and torch's optimizers and schedulers.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from typing import Any

import lightning as L
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.utils.data import Dataset

from src.harness.errors import ConfigError

# What each spec may name: a subclass of the base, defined in a module under one of the
# prefixes (checked before anything is imported, and again on the class found).
SPEC_KINDS: dict[str, tuple[tuple[type, ...], tuple[str, ...]]] = {
    "net": ((nn.Module,), ("src.",)),
    "optimizer": ((Optimizer,), ("torch.optim.", "src.")),
    "scheduler": ((LRScheduler, ReduceLROnPlateau), ("torch.optim.lr_scheduler.", "src.")),
    "data": ((L.LightningDataModule,), ("src.",)),
    "module": ((L.LightningModule,), ("src.",)),
    "dataset": ((Dataset,), ("src.",)),
    "transform": ((nn.Module,), ("torchvision.transforms.v2.", "src.")),
}
# The arguments of a module that hold specs (SupervisedModule's): each is admitted as a spec
# of its own kind; a ``_key_`` anywhere else in a module's arguments is refused.
SPEC_ARGUMENTS = ("net", "optimizer", "scheduler")
# Those of a data module (src/data/samples.py): argument -> kind; transforms come in lists.
DATA_SPECS = {"dataset": "dataset", "test_dataset": "dataset"}
DATA_SPECS |= {"train_transforms": "transform", "eval_transforms": "transform"}

PLAIN_TYPES = (str, int, float, bool, type(None))


def plain_value_problem(value: Any, key: str) -> str | None:
    """Why ``value`` is not plain data (numbers, strings, lists and dicts of them), or None."""
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str) or (name.startswith("_") and name.endswith("_")):
                return f"{key} holds the key {name!r} (only plain values are allowed there)"
            problem = plain_value_problem(item, f"{key}.{name}")
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        problems = (plain_value_problem(item, f"{key}[{i}]") for i, item in enumerate(value))
        return next((problem for problem in problems if problem), None)
    if isinstance(value, PLAIN_TYPES):
        return None
    return f"{key} holds a {type(value).__name__}, not a plain value"


def spec_class(spec: Any, kind: str) -> tuple[type, dict[str, Any]]:
    """The class a ``{"_target_": ..., **arguments}`` spec names, and its plain arguments.

    Raises ``ConfigError`` naming the key for anything else: a class outside the allowed
    modules or of the wrong kind, a nested ``_target_`` (or any other ``_key_``) outside a
    module's :data:`SPEC_ARGUMENTS`, a non-plain value.
    """
    bases, prefixes = SPEC_KINDS[kind]
    if not isinstance(spec, dict) or not isinstance(spec.get("_target_"), str):
        raise ConfigError(f"{kind} must be a mapping with a _target_ class name, got {spec!r}")
    target = spec["_target_"]
    arguments = {key: value for key, value in spec.items() if key not in ("_target_", "_partial_")}
    nested = {"module": {name: name for name in SPEC_ARGUMENTS}, "data": DATA_SPECS}
    kinds = nested.get(kind, {})
    specs = {key: value for key, value in arguments.items() if key in kinds and value}
    for key, value in specs.items():
        for item in value if isinstance(value, list) else [value]:
            spec_class(item, kinds[key])
    problem = plain_value_problem({k: v for k, v in arguments.items() if k not in specs}, kind)
    if problem:
        raise ConfigError(problem)
    allowed = " or ".join(f"{prefix}*" for prefix in prefixes)
    module_name, _, class_name = target.rpartition(".")
    found = None
    if target.startswith(prefixes) and module_name:
        with contextlib.suppress(ImportError):
            found = getattr(importlib.import_module(module_name), class_name, None)
    if not (
        isinstance(found, type)
        and issubclass(found, bases)
        and f"{found.__module__}.".startswith(prefixes)
    ):
        raise ConfigError(
            f"{kind}._target_={target!r} is not allowed: it must name a "
            f"{' or '.join(base.__name__ for base in bases)} class defined in {allowed}"
        )
    return found, arguments


def build(spec: Any, kind: str) -> Any:
    """The net itself, or for an optimizer or scheduler a factory awaiting its first argument."""
    cls, arguments = spec_class(spec, kind)
    return cls(**arguments) if kind == "net" else functools.partial(cls, **arguments)
