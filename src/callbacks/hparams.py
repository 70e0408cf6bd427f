"""TensorBoard's HParams tab: the config values that tell a sweep's jobs apart, and results.

Not a callback: it runs once after testing, when the final metrics are known, so the
HParams table and parallel-coordinates view can put each job's settings beside its
``train/*``, ``val/*`` and ``test/*`` results. The tab reads a metric's value from the
run's scalar of the same tag, so only the experiment and session summaries are written
here: Lightning's ``log_hyperparams(params, metrics)`` would also log every metric a
second time, one step after the epoch that logged it. The module's own hyperparameters
(nested ``_target_`` specs) go to ``hparams.yaml`` at the start, not to this tab.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.callbacks.tensorboard import tensorboard_logger
from src.runs import resolved_config

CHOSEN_GROUPS = ("model", "data", "optimizer", "scheduler")
DATA_KEYS = ("batch_size", "fold", "num_folds", "split_seed")
TRAINER_KEYS = ("max_epochs", "precision", "accumulate_grad_batches", "gradient_clip_val")
NET_SIZING_KEYS = ("_target_", "input_shape", "num_outputs")


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """Flat ``{name: value}`` of what a person varies between runs, interpolations resolved."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    params: dict[str, Any] = {group: choices[group] for group in CHOSEN_GROUPS if group in choices}
    config = resolved_config(cfg)
    net = config["model"]["net"]
    params["net"] = net["_target_"].rsplit(".", 1)[-1]
    params.update({f"model.net.{k}": v for k, v in net.items() if k not in NET_SIZING_KEYS})
    for group in ("optimizer", "scheduler"):
        spec = config.get(group) or {}
        params.update({f"{group}.{k}": v for k, v in spec.items() if not k.startswith("_")})
    params.update({f"data.{k}": config["data"][k] for k in DATA_KEYS if k in config["data"]})
    trainer = config["trainer"]
    params.update({f"trainer.{k}": trainer[k] for k in TRAINER_KEYS if k in trainer})
    for key in ("seed", "run_name", "tags"):
        if key in config:
            params[key] = config[key]
    return params


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Write the HParams summaries, linked to the run's final ``train/ val/ test/`` scalars.

    Values that TensorBoard cannot show as numbers or strings (lists, ``None``) become text.
    """
    logger = tensorboard_logger(trainer)
    if logger is None or not trainer.is_global_zero:
        return
    results = {
        name: value
        for name, value in metrics.items()
        if name.split("/")[0] in ("train", "val", "test") and isinstance(value, float)
    }
    if not results:
        return
    from torch.utils.tensorboard.summary import hparams

    params = {
        k: v if isinstance(v, bool | int | float | str) else str(v)
        for k, v in hparams_of(cfg).items()
    }
    writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams does
    for summary in hparams(params, results):
        writer.add_summary(summary)
    logger.experiment.close()
