"""Relative paths on the command line are relative to the folder the command started in.

They are made absolute before anything checks or records them, so a message names the
very file that was looked for and a run's ``config.yaml`` (which ``eval.py`` reads its
data config from) works from any folder. Only the options listed here are paths.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from src.utils.ckpt import LAST

# paths.* first: data.data_dir interpolates paths.data_dir, which interpolates paths.root_dir
PATH_KEYS = (
    "paths.root_dir",
    "paths.data_dir",
    "paths.log_dir",
    "data.data_dir",
    "data.csv_path",
    "ckpt_path",
    "input",
)


def absolute_paths(cfg: DictConfig) -> None:
    """Make each relative path of ``PATH_KEYS`` absolute against Hydra's ``runtime.cwd``."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is None or (key == "ckpt_path" and value == LAST):
            continue
        if not Path(str(value)).is_absolute():
            path = to_absolute_path(os.path.expanduser(str(value)))
            OmegaConf.update(cfg, key, os.path.normpath(path))
