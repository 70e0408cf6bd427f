"""Checks of the composed config that run before any data is read or folder is filled.

Every problem found is reported at once, in one message, so a user fixes a command
line in one go instead of one crash at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig

from src.errors import ConfigError
from src.models.nets import ACTIVATIONS, NETS


def model_data_problems(cfg: DictConfig) -> list[str]:
    net_class = get_class(cfg.model.net._target_)
    if not hasattr(net_class, "supports"):
        return []
    if net_class.supports(cfg.data.task, list(cfg.data.input_shape)):
        return []
    pairs = "; ".join(f"model={name} trains on {net.accepts}" for name, net in NETS.items())
    return [
        f"{net_class.__name__} cannot train on this data ({cfg.data.task}, input shape "
        f"{list(cfg.data.input_shape)}): it needs {net_class.accepts}. Supported pairs: {pairs}."
    ]


def value_problems(cfg: DictConfig) -> list[str]:
    trainer = cfg.trainer
    checks: list[tuple[str, object, Callable[[object], bool], str]] = [
        ("data.batch_size", cfg.data.get("batch_size"), is_positive_int, "a positive integer"),
        ("optimizer.lr", cfg.optimizer.get("lr"), is_positive_number, "a positive number"),
        ("trainer.max_epochs", trainer.get("max_epochs"), is_epoch_limit, "-1 or >= 1"),
        ("data.val_fraction", cfg.data.get("val_fraction"), is_fraction, "in [0, 1)"),
        ("data.test_fraction", cfg.data.get("test_fraction"), is_fraction, "in [0, 1)"),
        ("data.eval_batch_size", cfg.data.get("eval_batch_size"), is_positive_int, "> 0"),
        ("data.num_folds", cfg.data.get("num_folds"), is_fold_count, "an integer >= 2"),
        ("model.net.dropout", cfg.model.net.get("dropout"), is_fraction, "in [0, 1)"),
        ("trainer.devices", trainer.get("devices"), is_devices, "> 0, -1, 'auto' or a list"),
        ("trainer.num_nodes", trainer.get("num_nodes"), is_positive_int, "a positive integer"),
        ("trainer.precision", trainer.get("precision"), is_precision, f"one of {PRECISIONS}"),
        ("trainer.log_every_n_steps", trainer.get("log_every_n_steps"), is_positive_int, "> 0"),
        ("trainer.gradient_clip_val", trainer.get("gradient_clip_val"), is_non_negative, ">= 0"),
    ]
    problems = [
        f"{name}={value!r} must be {expected}"
        for name, value, is_ok, expected in checks
        if value is not None and not is_ok(value)
    ]
    shift = cfg.data.get("augment_shift")
    if shift and len(cfg.data.input_shape) != 3:
        problems.append(
            f"data.augment_shift={shift} shifts images, but data.input_shape="
            f"{list(cfg.data.input_shape)} is not an image [C, H, W]; leave it at 0"
        )
    fold, num_folds = cfg.data.get("fold"), cfg.data.get("num_folds")
    if is_fold_count(num_folds) and not (isinstance(fold, int) and 0 <= fold < num_folds):
        problems.append(f"data.fold={fold!r} must be in 0..{num_folds - 1} (data.num_folds)")
    net = cfg.model.net
    hidden = net.get("hidden_sizes")
    if hidden is not None and not all(is_positive_int(size) for size in hidden):
        problems.append(f"model.net.hidden_sizes={list(hidden)} must be positive integers")
    activation = net.get("activation")
    if activation is not None and activation not in ACTIVATIONS:
        problems.append(
            f"model.net.activation={activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}"
        )
    return problems


def accelerator_problems(cfg: DictConfig) -> list[str]:
    accelerator = cfg.trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        return [
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
            "Train on the CPU with trainer=cpu, or install a CUDA build of torch on a GPU machine."
        ]
    if accelerator == "mps" and not torch.backends.mps.is_available():
        return [
            "trainer.accelerator=mps needs Apple silicon and an MPS torch build; use trainer=cpu."
        ]
    return []


def validate_config(cfg: DictConfig) -> None:
    """Raise one ``ConfigError`` listing every problem, or return if there is none."""
    problems = value_problems(cfg) + model_data_problems(cfg) + accelerator_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def is_epoch_limit(value: object) -> bool:
    return isinstance(value, int) and (value == -1 or value >= 1)


PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16")


def is_fold_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 2


def is_non_negative(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def is_devices(value: object) -> bool:
    if isinstance(value, list | ListConfig):
        return bool(value) and all(isinstance(item, int) and item >= 0 for item in value)
    return value in ("auto", -1) or is_positive_int(value)


def is_precision(value: object) -> bool:
    return str(value) in PRECISIONS


def is_fraction(value: object) -> bool:
    return isinstance(value, int | float) and 0 <= value < 1
