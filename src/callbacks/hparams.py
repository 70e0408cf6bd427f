"""TensorBoard's HParams tab: the config values that tell runs apart, beside their results.

Not a callback: it runs once after testing, when the final metrics are known. Only the
session summaries are written. Without an experiment summary, TensorBoard builds the
experiment from every run under ``--logdir``: it marks the values that differ between
runs and shows those columns first (the first five are ticked), and it lists every run's
scalars as metrics, so classification and regression runs under one logdir each show
their own ``train/``, ``val/`` and ``test/`` results (one run's experiment summary would
stand for all runs). A metric's value is read from the run's scalar of the same tag, so
no metric is logged twice. The module's own hyperparameters (nested ``_target_`` specs)
go to ``hparams.yaml`` at the start, not to this tab.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.callbacks.tensorboard import tensorboard_logger
from src.harness.compat import tensorboard_file_writer
from src.harness.provenance import resolved_config

CHOSEN_GROUPS = ("model", "data", "optimizer", "scheduler")
DATA_KEYS = ("batch_size", "fold", "num_folds", "split_seed")
TRAINER_KEYS = ("max_epochs", "precision", "accumulate_grad_batches", "gradient_clip_val")
NET_SIZING_KEYS = ("_target_", "input_shape", "num_outputs")
MODULE_KEYS = ("net", "compile", *NET_SIZING_KEYS)  # a module's own arguments are the rest


def hparams_of(cfg: DictConfig) -> dict[str, str]:
    """Flat ``{name: value}`` of what a person varies between runs, interpolations resolved,
    unset (``None``) values left out."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    params: dict[str, Any] = {group: choices[group] for group in CHOSEN_GROUPS if group in choices}
    config = resolved_config(cfg)
    model = config["model"]
    params.update({f"model.{k}": v for k, v in model.items() if k not in MODULE_KEYS})
    net = model.get("net") or {}
    params.update({f"model.net.{k}": v for k, v in net.items() if k not in NET_SIZING_KEYS})
    for group in ("optimizer", "scheduler"):
        spec = config.get(group) or {}
        params.update({f"{group}.{k}": v for k, v in spec.items() if not k.startswith("_")})
    params.update({f"data.{k}": config["data"][k] for k in DATA_KEYS if k in config["data"]})
    trainer = config["trainer"]
    params.update({f"trainer.{k}": trainer[k] for k in TRAINER_KEYS if k in trainer})
    # the run name is each row's trial id
    params.update({key: config[key] for key in ("seed", "tags") if key in config})
    return {name: shown(value) for name, value in params.items() if value is not None}


def shown(value: Any) -> str:
    """A value as a person types it: TensorBoard prints every number to five digits
    (``64.000``, ``0.0010000``), and a list as Python does (``['dev']``)."""
    if isinstance(value, list):
        return ", ".join(map(shown, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def log_hparams(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Write the run's HParams session: its values, and that it ended (its metrics are its
    scalars)."""
    logger = tensorboard_logger(trainer)
    if logger is None or not trainer.is_global_zero:
        return
    from torch.utils.tensorboard.summary import hparams

    _, session_start, session_end = hparams(hparams_of(cfg), {})
    writer = tensorboard_file_writer(logger.experiment)
    for summary in (session_start, session_end):
        writer.add_summary(summary)
    logger.experiment.close()
