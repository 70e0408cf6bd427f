"""``trainer.steps_per_call=K``: K optimizer steps per Lightning step.

A small model's optimizer step takes less time than Lightning's fixed cost per step (hooks,
progress, loop bookkeeping). The data module then serves K consecutive batches of the same
shuffled order as one, and the module takes K optimizer steps over them with Lightning's
manual optimization, which counts every ``optimizer.step()`` in ``global_step``: the weights
are those of K=1, and ``max_steps``, checkpoints and logged steps count optimizer steps.

Lightning counts its own steps (groups) for the rest: settings given in batches are divided
by K here, and those that could not mean the same are refused before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor

from src.harness.compat import count_logged_steps, count_optimizer_step
from src.harness.errors import ConfigError

# What Lightning calls around each optimizer step of manual optimization.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")

# Trainer settings counted in training batches: with K > 1 Lightning counts groups.
IN_BATCHES = ("val_check_interval", "limit_train_batches")


def trainer_arguments(trainer: dict[str, Any]) -> tuple[dict[str, Any], int, list[str]]:
    """The Trainer's arguments without ``steps_per_call``, with the settings given in
    batches converted to groups; the number of steps per call, and the problems found."""
    trainer = dict(trainer)
    steps = trainer.pop("steps_per_call", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return trainer, 1, [f"trainer.steps_per_call={steps!r} must be an integer >= 1"]
    if steps == 1:
        return trainer, steps, []
    problems = [
        f"trainer.{name}={trainer.get(name)!r} cannot be combined with trainer.steps_per_call"
        f"={steps} (the module steps its optimizer itself): leave one of them out"
        for name, off in (("accumulate_grad_batches", (None, 1)), ("gradient_clip_val", (None, 0)))
        if trainer.get(name) not in off
    ]
    for name in IN_BATCHES:
        value = trainer.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            if value % steps:
                problems.append(
                    f"trainer.{name}={value} batches must be a multiple of "
                    f"trainer.steps_per_call={steps}"
                )
            trainer[name] = value // steps
    return trainer, steps, problems


def take_steps_per_call(
    steps: int, datamodule: L.LightningDataModule, model: L.LightningModule
) -> None:
    """Have ``datamodule`` serve groups of ``steps`` batches and ``model`` step through them.
    A module or data module that cannot (a LightningModule of one's own that has not opted
    in) is refused."""
    if steps == 1:
        return
    missing = [
        f"{type(part).__name__} has no {method}()"
        for part, method in ((model, "take_steps_per_call"), (datamodule, "serve_groups"))
        if not callable(getattr(part, method, None))
    ]
    if missing:
        raise ConfigError(
            f"trainer.steps_per_call={steps} needs a module that takes several optimizer steps "
            "per training step and in-memory data that serves batches in groups: "
            f"{'; '.join(missing)}. Leave trainer.steps_per_call at 1, or see the README's "
            "Speed section for how a module opts in."
        )
    datamodule.serve_groups(steps)
    model.take_steps_per_call(steps, datamodule.batch_size)


class LoggedSteps(Callback):
    """Log at optimizer steps: Lightning logs metrics at its count of stepping batches, one per
    group, which would squeeze the curves of a K-step run K-fold along the step axis."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        count_logged_steps(trainer, trainer.global_step - 1)  # Lightning adds the last one


def optimizer_step(model: L.LightningModule) -> Callable[[Tensor], None]:
    """A function taking one optimizer step from a loss, as ``manual_backward`` and
    ``optimizer.step()`` do, for a module in the middle of its training step.

    Lightning calls every callback at three hooks around each step (``STEP_HOOKS``): on a small
    model that costs as much as the step. Where no callback, nor the module, has them, the
    precision is plain 32-bit and one device trains, torch takes the step directly and
    ``global_step`` counts it as Lightning would: the same arithmetic, without the calls."""
    trainer, optimizer = model.trainer, model.optimizers()
    hooked = [
        part
        for part in (model, *trainer.callbacks)
        for hook in STEP_HOOKS
        if getattr(type(part), hook)
        is not getattr(L.LightningModule if part is model else Callback, hook)
    ]
    plain = type(trainer.precision_plugin) is Precision
    if hooked or not plain or type(trainer.strategy) is not SingleDeviceStrategy:

        def lightning_step(loss: Tensor) -> None:
            optimizer.zero_grad()
            model.manual_backward(loss)
            optimizer.step()

        return lightning_step
    torch_optimizer = optimizer.optimizer

    def torch_step(loss: Tensor) -> None:
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()
        count_optimizer_step(trainer)

    return torch_step
