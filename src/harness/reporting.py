"""The run's result: its metrics, name and tags in ``metrics.json`` and its last console line."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from src.harness.atomic_files import write_atomic

log = logging.getLogger(__name__)


def report(
    trainer: Any, cfg: DictConfig, metrics: dict[str, Any], started: float
) -> dict[str, Any]:
    """The run's metrics with its name, tags and wall time, which the global rank 0 writes
    to ``metrics.json`` and sums up in the run's last line: its headline metric and folder.
    That is the best validation's score and epoch (the best checkpoint's, where one is kept),
    and the test score of the weights the run keeps."""
    metrics = {**run_identity(cfg), **metrics, "wall_time_s": time.perf_counter() - started}
    if not trainer.is_global_zero:
        return metrics
    output_dir, monitor = Path(cfg.paths.output_dir), cfg.data.monitor
    write_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    best = f"{monitor}_best"
    names = [best if best in metrics else monitor, monitor.replace("val/", "test/", 1)]
    shown = [f"{name}={metrics[name]:.4g}" for name in dict.fromkeys(names) if name in metrics]
    if best in metrics:
        shown[0] += f" (epoch {metrics['best_epoch']})"
    log.info("Done%s. Run folder: %s", f": {', '.join(shown)}" if shown else "", output_dir)
    return metrics


def collect_metrics(trainer: Any) -> dict[str, float]:
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def fit_metrics(trainer: Any, cfg: DictConfig) -> dict[str, Any]:
    """What fit logged. A run resumed from a checkpoint that had trained all its
    ``trainer.max_epochs`` already (or a sweep job stopped while testing, run again) trains
    no epoch and logs no ``train/`` or ``val/`` metric: its ``metrics.json`` says why in
    ``note``, which the sweep summary shows, rather than miss them silently."""
    metrics: dict[str, Any] = collect_metrics(trainer)
    if cfg.get("ckpt_path") is None or any(key.startswith(("train/", "val/")) for key in metrics):
        return metrics
    metrics["note"] = (
        f"no train/ or val/ metrics: ckpt_path={cfg.ckpt_path} had trained its "
        f"trainer.max_epochs={cfg.trainer.max_epochs} epochs, so this run trained none "
        "(the run that trained them has them in its metrics.json)"
    )
    log.warning("%s", metrics["note"])
    return metrics


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The run's name and tags, recorded in metrics.json and the loggers' hyperparameters."""
    return {"run_name": cfg.get("run_name"), "tags": list(cfg.get("tags") or [])}
