"""Lightning + Hydra experiment template.

Configs find the repository through ``PROJECT_ROOT`` so that ``python src/train.py``
writes to the same ``logs/`` and reads the same ``data/`` from any working directory.
The task decides the metric that picks the best checkpoint (``configs/data/_shared.yaml``).
"""

import importlib
import logging
import os
import warnings
from pathlib import Path

from omegaconf import OmegaConf

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


def task_monitor(name: str) -> str:
    """What ``data.monitor`` defaults to: the metric that picks the task's best checkpoint."""
    return importlib.import_module("src.tasks").task(name).monitor


def task_monitor_mode(name: str) -> str:
    return importlib.import_module("src.tasks").task(name).monitor_mode


OmegaConf.register_new_resolver("task_monitor", task_monitor, replace=True)
OmegaConf.register_new_resolver("task_monitor_mode", task_monitor_mode, replace=True)


def swept() -> str:
    """A sweep job's run name ends with the overrides that differ between the sweep's jobs."""
    return importlib.import_module("src.harness.sweeps").swept_overrides()


OmegaConf.register_new_resolver("swept", swept, use_cache=True, replace=True)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def options(group: str) -> str:
    """A config group's options, for ``--help`` (configs/train.yaml); ``_shared`` is none."""
    return ", ".join(sorted(path.stem for path in (CONFIGS / group).glob("[!_]*.yaml")))


OmegaConf.register_new_resolver("options", options, replace=True)

# Warnings go through logging, so the run's log file keeps them too (configs/hydra).
logging.captureWarnings(True)
# The data already sits in memory as tensors: loader worker processes would only add
# inter-process copies, so Lightning's advice to add workers does not apply here.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# Lightning 2.6 on torch 2.14 warns about its own use of a torch internal; nothing to act on.
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")
# Lightning's hint to prefix srun, wherever srun is installed (a cluster's login node);
# SLURM runs go through hydra/launcher=slurm. And its notice that overfitting unshuffles.
warnings.filterwarnings("ignore", ".*`srun` command is available on your system.*")
warnings.filterwarnings("ignore", ".*overfit but enabled train dataloader shuffling.*")
