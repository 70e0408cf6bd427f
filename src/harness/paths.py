"""The run's paths: relative ones made absolute, and the run folder created before Hydra's.

Relative paths on the command line are relative to the folder the command started in.
They are made absolute before anything checks or records them, so a message names the
very file looked for and a run's ``config.yaml`` (which ``eval.py`` reads) works from any
folder.
"""

from __future__ import annotations

import copy
import errno
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from src.harness.names import configured_names, swept_names, unsafe_names
from src.harness.problems import stop_with_error

# The options that are paths; paths.* first, as data.data_dir interpolates paths.data_dir.
PATH_KEYS = ("paths.root_dir", "paths.data_dir", "paths.log_dir", "data.data_dir")
PATH_KEYS += ("data.csv_path", "data.root", "data.input_dir", "ckpt_path", "input")

LAST = "last"  # ckpt_path=last: the newest last.ckpt


def move_aside(path: Path) -> Path:
    """Move what an earlier run left at ``path``, kept whole, to the first free
    ``<path>-earlier-N`` (returned), so that the new run's files are its own."""
    candidates = (path.with_name(f"{path.name}-earlier-{n}") for n in itertools.count(1))
    return path.rename(next(aside for aside in candidates if not aside.exists()))


def absolute_paths(cfg: DictConfig) -> None:
    """Make each relative path of ``PATH_KEYS`` absolute against Hydra's ``runtime.cwd``; a
    URL (``s3://...``) is left as it is."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is None or value == LAST or "://" in str(value):
            continue
        if not Path(str(value)).is_absolute():
            path = to_absolute_path(os.path.expanduser(str(value)))
            OmegaConf.update(cfg, key, os.path.normpath(path))


class CreateRunFolder(Callback):
    """Create the run's (or the sweep's) folder before Hydra does: Hydra reports a folder it
    cannot write (a read-only or full disk) with a traceback; here it ends in one line. A
    name that would put a folder outside the log folder is refused first (``names.py``)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.refuse_unsafe_names(config)
        self.create(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.refuse_unsafe_names(config)
        self.create(config.hydra.sweep.dir)

    @staticmethod
    def refuse_unsafe_names(config: DictConfig) -> None:
        config = copy.deepcopy(config)  # resolved here as Hydra will, but not cached for it
        HydraConfig.instance().set_config(config)  # ${hydra:...} resolves, as Hydra sets next
        problem = unsafe_names([*configured_names(config), *swept_names(config)])
        if problem:
            stop_with_error(problem)

    @staticmethod
    def create(folder: str) -> None:
        existing = next(path for path in (Path(folder), *Path(folder).parents) if path.exists())
        try:
            if shutil.disk_usage(existing).free < 2**20:  # not even Hydra's own files fit
                raise OSError(errno.ENOSPC, "less than 1 MB free")
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            stop_with_error(
                f"cannot write the run folder {folder} ({error.strerror}). Free space "
                "there, or choose a folder you can write to with paths.log_dir=FOLDER."
            )
