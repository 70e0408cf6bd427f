"""What a checkpoint holds besides Lightning's own state, so that a resumed run draws the same
random numbers and ends an epoch with the same metrics as a run left alone.

- :class:`RNGState`: torch's CPU and CUDA generators, numpy's and Python's ``random``
  (Lightning saves none of them), for dropout, random layers and a user's own draws.
- :class:`MetricStates`: what the module's torchmetrics have accumulated so far in the
  epoch (the training loss and accuracy are epoch means), in checkpoints written in the
  middle of an epoch only. They are kept beside the module's ``state_dict``, not in it:
  there they would make every checkpoint written before them fail a strict load
  (``eval.py``, ``predict.py``), and a checkpoint written at an epoch's end would carry an
  epoch that the resumed run must not count again.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import Metric

# The checkpoint's key for the metrics' accumulated states, by the metric's module name.
METRIC_STATES = "metric_states"


class RNGState(Callback):
    """Save and restore the random generators with every checkpoint: tensors and plain
    values only (numpy's key as a tensor), so the checkpoint loads with ``weights_only=True``.
    A checkpoint written before numpy's and Python's were kept restores torch's alone."""

    def state_dict(self) -> dict[str, Any]:
        name, keys, position, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "cpu": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        if "numpy" in state_dict:
            name, keys, position, has_gauss, gauss = state_dict["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        if "python" in state_dict:
            version, internal, gauss = state_dict["python"]
            random.setstate((version, tuple(internal), gauss))


def module_metrics(pl_module: L.LightningModule) -> Iterator[tuple[str, Metric]]:
    """Every torchmetrics metric of the module, by its module name (``train_loss``,
    ``val_metrics.acc``): those of a user's own module as well."""
    for name, module in pl_module.named_modules():
        if isinstance(module, Metric):
            yield name, module


def mid_epoch(trainer: L.Trainer) -> bool:
    """Whether training stands inside an epoch: some of its batches done, not all."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return trainer.training and 0 < done < trainer.num_training_batches


class MetricStates(Callback):
    """Carry the metrics' accumulated states through a checkpoint written mid-epoch."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if mid_epoch(trainer):
            checkpoint[METRIC_STATES] = {
                name: dict(metric.metric_state) for name, metric in module_metrics(pl_module)
            }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get(METRIC_STATES, {})
        for name, metric in module_metrics(pl_module):
            for state, value in saved.get(name, {}).items():
                current = metric.metric_state.get(state)  # only the states it declares
                if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor):
                    setattr(metric, state, value.to(current.device, current.dtype))
                elif isinstance(current, list) and isinstance(value, list):
                    setattr(metric, state, [v.to(pl_module.device) for v in value])
