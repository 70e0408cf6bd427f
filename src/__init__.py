"""Lightning + Hydra experiment template.

Configs find the repository through ``PROJECT_ROOT`` so that ``python src/train.py``
writes to the same ``logs/`` and reads the same ``data/`` from any working directory.
The task decides the metric that picks the best checkpoint (``configs/data/_shared.yaml``).
"""

import importlib
import os
from pathlib import Path

from omegaconf import OmegaConf

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
TASK_MONITOR = {"classification": ("val/acc", "max"), "regression": ("val/loss", "min")}
OmegaConf.register_new_resolver("task_monitor", lambda task: TASK_MONITOR[task][0], replace=True)
OmegaConf.register_new_resolver(
    "task_monitor_mode", lambda task: TASK_MONITOR[task][1], replace=True
)


def swept() -> str:
    """A sweep job's run name ends with the overrides that differ between the sweep's jobs."""
    return importlib.import_module("src.sweeps").swept_overrides()


OmegaConf.register_new_resolver("swept", swept, use_cache=True, replace=True)
