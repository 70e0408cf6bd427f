"""The composed config checked against the classes it configures, before any data is read.

Nothing here knows a rule of its own about a value. Each configured class is asked: its
signature says which arguments exist and their types (checked with ``typeguard``), and
building it runs its own checks (Lightning's ``MisconfigurationException``, a net's or a
data module's ``ValueError``). Whatever those libraries and a user's own classes accept is
accepted. A value of the wrong type is reported and replaced by its default for the build,
so the class still checks the others: every problem is listed at once, in one message.
"""

from __future__ import annotations

import inspect
import math
import typing
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import max_seed_value, min_seed_value
from omegaconf import OmegaConf
from typeguard import TypeCheckError, check_type

from src.harness.allowlist import spec_class
from src.harness.errors import ConfigError
from src.harness.problems import CannotBuild, Problems
from src.harness.provenance import plain


def keyword_parameters(cls: type) -> dict[str, inspect.Parameter] | None:
    """The arguments of ``cls(...)`` (with type hints resolved), following ``**kwargs`` into
    base classes; ``None`` when some ``**kwargs`` go where nothing declares them."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        init = vars(klass)["__init__"]
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - unresolvable annotations: check names only
            hints = {}
        parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        for p in parameters:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in found:
                found[p.name] = p.replace(annotation=hints.get(p.name, Any))
        if all(p.kind != p.VAR_KEYWORD for p in parameters):
            return found
    return None


def described(annotation: Any) -> str:
    """A type as a person reads it: ``int or None``, ``one of 'min', 'max'``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if typing.get_origin(annotation) in (typing.Union, type(int | None)):
        return " or ".join(described(arg) for arg in args)
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def holds_spec(value: Any) -> bool:
    """Whether ``value`` is a ``_target_`` spec or a list of them: built, not a plain value."""
    if isinstance(value, list):
        return any(map(holds_spec, value))
    return isinstance(value, dict) and "_target_" in value


def checked_arguments(
    cls: type, arguments: dict[str, Any], key: str, problems: Problems
) -> dict[str, Any]:
    """Defaults to build ``cls`` with in place of the values of the wrong type; their
    problems go to ``problems``. ``CannotBuild`` if ``cls`` cannot be built: an unknown
    argument, or a required one of the wrong type."""
    parameters = keyword_parameters(cls)
    if parameters is None:
        return {}
    unknown = [name for name in arguments if name not in parameters]
    for name in unknown:
        problems.add(
            f"{key}.{name} is not an argument of {cls.__name__} (it takes: {', '.join(parameters)})"
        )
    buildable, replaced = not unknown, {}
    for name, value in arguments.items():
        if name in unknown or holds_spec(value):
            continue  # specs are objects of their own, checked when built
        annotation, default = parameters[name].annotation, parameters[name].default
        try:
            check_type(value, annotation)
        except TypeCheckError:
            problems.add(f"{key}.{name}={value!r} must be {described(annotation)}")
            buildable = buildable and default is not inspect.Parameter.empty
            replaced[name] = default
    if not buildable:
        raise CannotBuild
    return replaced


def checked_spec(node: Any, key: str, problems: Problems) -> dict[str, Any]:
    """:func:`checked_arguments` of a ``_target_`` config node (nested specs skipped)."""
    spec = plain(node)
    from hydra.utils import get_class

    try:
        cls = get_class(spec["_target_"])
    except Exception as error:  # noqa: BLE001 - Hydra raises several kinds for a bad name
        problems.add(f"{key}._target_={spec['_target_']!r} cannot be imported ({error})")
        raise CannotBuild from None
    arguments = {name: value for name, value in spec.items() if not name.startswith("_")}
    return checked_arguments(cls, arguments, key, problems)


def non_finite_problems(arguments: dict[str, Any], key: str) -> list[str]:
    """Infinite and NaN numbers among a model's arguments (net, optimizer, scheduler): torch's
    optimizers take ``lr=inf``, and the first step then makes every weight infinite or NaN."""
    return [
        f"{key}.{name}={value} must be a finite number"
        for name, value in arguments.items()
        if isinstance(value, float) and not math.isfinite(value)
    ]


def checked_seed(seed: Any) -> int:
    """``seed`` if Lightning's ``seed_everything`` takes it as it is: it would round ``1.5``
    down and stop on ``abc`` or ``-1`` with a bare ``ValueError``."""
    is_integer = isinstance(seed, int) and not isinstance(seed, bool)
    if is_integer and min_seed_value <= seed <= max_seed_value:
        return seed
    raise ConfigError(
        f"seed={seed!r} must be an integer from {min_seed_value} to {max_seed_value} (the seeds "
        "numpy takes), or null for no seed."
    )


def supported(net_class: type, task: str, input_shape: list[int]) -> bool:
    """What a net declares with ``supports(task, input_shape)``; without it, every data set."""
    return getattr(net_class, "supports", lambda *_: True)(task, input_shape)


def paired_class(model: Any) -> type:
    """The class that declares the data a model config trains on: its net, or without one the
    module itself (a user's own LightningModule that builds its nets)."""
    net = model.get("net")
    if net:
        return spec_class({"_target_": net["_target_"]}, "net")[0]
    return spec_class({"_target_": model["_target_"]}, "module")[0]


def pair_problems(net_class: type, task: str, input_shape: list[int], configs: Path) -> list[str]:
    """Why this net cannot train on this data, naming the ``model=`` configs that can."""
    if supported(net_class, task, input_shape):
        return []
    fitting = []
    for path in sorted(configs.glob("model/*.yaml")):
        model = OmegaConf.load(path).get("model") or {}
        if (model.get("net") or model.get("_target_")) and supported(
            paired_class(model), task, input_shape
        ):
            fitting.append(f"model={path.stem}")
    return [
        f"{net_class.__name__} cannot train on this data ({task}, input shape {input_shape}): "
        f"it takes {getattr(net_class, 'accepts', 'other data')}. On this data train "
        f"{', '.join(fitting) or 'a net of your own'}"
    ]


def accelerator_problems(accelerator: str | None) -> list[str]:
    """The machine lacks what ``trainer.accelerator`` asks for (Lightning names no remedy)."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        return [
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, {build}). Train on the CPU with trainer=cpu, or run "
            "on a machine with an NVIDIA GPU and driver."
        ]
    if accelerator == "mps" and not torch.backends.mps.is_available():
        return [
            "trainer.accelerator=mps needs Apple silicon and an MPS torch build; use trainer=cpu."
        ]
    return []
