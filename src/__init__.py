"""Lightning + Hydra experiment template.

Configs find the repository through ``PROJECT_ROOT`` so that ``python src/train.py``
writes to the same ``logs/`` and reads the same ``data/`` from any working directory.
The task decides the metric that picks the best checkpoint (``configs/data/_shared.yaml``);
streamed chunks describe themselves (``configs/data/streaming.yaml``).
"""

import importlib
import os
from pathlib import Path

from omegaconf import OmegaConf

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
importlib.import_module("src.harness.startup")  # the machinery's resolvers and warnings


def task_monitor(name: str) -> str:
    """What ``data.monitor`` defaults to: the metric that picks the task's best checkpoint."""
    return importlib.import_module("src.tasks").task(name).monitor


def task_monitor_mode(name: str) -> str:
    return importlib.import_module("src.tasks").task(name).monitor_mode


def streamed(input_dir: str | None, key: str) -> object:
    """What ``data=streaming`` reads from its chunks' metadata.json: task, shapes, monitor."""
    return importlib.import_module("src.data.streaming").described(input_dir, key)


OmegaConf.register_new_resolver("task_monitor", task_monitor, replace=True)
OmegaConf.register_new_resolver("task_monitor_mode", task_monitor_mode, replace=True)
OmegaConf.register_new_resolver("streamed", streamed, replace=True)
