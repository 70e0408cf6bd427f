"""What every entry point sets up when ``src`` is imported: the config resolvers that read
the machinery (``${swept:}``, ``${options:GROUP}``), and warnings routed to the run's log."""

import importlib
import logging
import warnings
from pathlib import Path

from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def swept() -> str:
    """A sweep job's run name ends with the overrides that differ between the sweep's jobs."""
    return importlib.import_module("src.harness.sweeps").swept_overrides()


def options(group: str) -> str:
    """A config group's options, for ``--help`` (configs/train.yaml); ``_shared`` is none."""
    return ", ".join(sorted(path.stem for path in (CONFIGS / group).glob("[!_]*.yaml")))


OmegaConf.register_new_resolver("swept", swept, use_cache=True, replace=True)
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
# LitData's StreamingDataset gives each loader worker its own share, as Lightning asks.
warnings.filterwarnings("ignore", ".*`IterableDataset` has `__len__` defined.*")
