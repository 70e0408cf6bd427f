"""Checkpoints written complete or not at all, and carried across a resume.

Lightning's own writer stages a checkpoint in the system temporary folder and moves it,
which is a copy when that folder is on another file system: a kill during the copy leaves a
truncated file. Here it is written beside its target and renamed.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from src.harness.atomic_files import replaced_atomically

log_file_only = logging.getLogger("log_file_only")  # not on the console (configs/hydra)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``path`` through a temporary file in the same folder, fsync and a rename."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        with replaced_atomically(Path(path)) as file:
            torch.save(checkpoint, file)
        log_file_only.info("Saved %s (epoch %s)", path, checkpoint.get("epoch"))


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose record of the best checkpoints survives a resume.

    A resumed run writes into a new folder of its own. Lightning then drops the best
    score so far and keeps only a path into the old folder, so the resumed run's
    ``best.ckpt`` and test metrics would weigh only the epochs after the resume. Here the
    files the record names are copied into the new folder and the record carried over:
    a stopped-and-resumed run ends with the same ``best.ckpt`` as an uninterrupted one.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir, new_dir = state_dict.get("dirpath"), self.dirpath
        files = {*state_dict.get("best_k_models", {}), state_dict.get("best_model_path")} - {""}
        if old_dir and new_dir and old_dir != new_dir and all(map(os.path.isfile, files)):
            moved = {old: str(Path(new_dir) / Path(old).name) for old in files}
            # Files already there are newer: trainer.test(ckpt_path=...) restores this
            # state again from the run's own best.ckpt, after this run's epochs.
            for old, new in moved.items():
                if not os.path.exists(new):
                    with open(old, "rb") as source, replaced_atomically(Path(new)) as target:
                        shutil.copyfileobj(source, target)
            state_dict = {
                **state_dict,
                "dirpath": new_dir,
                "best_k_models": {moved[p]: v for p, v in state_dict["best_k_models"].items()},
                "best_model_path": moved.get(state_dict["best_model_path"], ""),
                "kth_best_model_path": moved.get(state_dict.get("kth_best_model_path"), ""),
                "last_model_path": "",
            }
        super().load_state_dict(state_dict)
