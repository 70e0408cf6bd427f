"""Checkpoints written complete or not at all, and carried across a resume.

Lightning's own writer stages a checkpoint in the system temporary folder and moves it,
which is a copy when that folder is on another file system: a kill during the copy leaves a
truncated file. Here it is written beside its target and renamed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from src.harness.atomic_files import replaced_atomically
from src.harness.errors import ConfigError
from src.harness.stop_checkpoint import resumable_after

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


# The paths a ``ModelCheckpoint``'s state records, besides the keys of ``best_k_models``.
RECORDED_PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` loads as a Lightning checkpoint under torch's safe loader; mapped, so
    only its small pickled part is read."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - torch raises many kinds for a file that is not one
        return False
    return isinstance(checkpoint, dict) and "state_dict" in checkpoint


def recorded_checkpoints(state: dict[str, Any], resumed: Path) -> dict[str, Path]:
    """The files a ``ModelCheckpoint`` state records, each found by its name in the folder of
    the checkpoint ``resumed`` from.

    The state comes with the checkpoint, from anywhere, so a path in it is never opened:
    only a name in that folder, a ``.ckpt`` file (not a link) that loads as a checkpoint. A
    run folder moved elsewhere resumes all the same. Lightning records only files of its
    ``dirpath``; a path anywhere else is refused, as is a name that finds no checkpoint.
    """
    folder = resumed.resolve().parent
    names = [*state.get("best_k_models", {}), *(state.get(key) for key in RECORDED_PATHS)]
    found = {}
    for name in {name for name in names if name != "" and name is not None}:
        file = folder / Path(str(name)).name
        if not (
            isinstance(name, str)
            and Path(name).parent == Path(state.get("dirpath") or "")
            and file.suffix == ".ckpt"
            and not file.is_symlink()
            and is_checkpoint(file)
        ):
            raise ConfigError(
                f"ckpt_path={resumed} was refused: its callback state names {name!r}, which is "
                f"not a checkpoint beside it in {folder}. A resume carries over only the "
                "checkpoints of the resumed one's own folder: resume from a checkpoint in its "
                "run's checkpoints/ folder (a copied run folder keeps them), or start a new run."
            )
        found[name] = file
    return found


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose record of the best checkpoints survives a resume, and that
    can also save every N optimizer steps or every T minutes, besides each validation.

    Lightning's own ``every_n_train_steps`` and ``train_time_interval`` exclude its saving
    at each epoch's end: ``last.ckpt`` would then not hold the last epoch's end. Here they
    add to it. A save is skipped after a batch that a validation follows (the validation's
    own save comes next, and Lightning would resume from before it without it); with
    ``trainer.steps_per_call=K`` the step save comes at the first group that reaches a
    multiple of N. The file is the callback's own (``last.ckpt``), rewritten each time.

    A resumed run writes into a new folder of its own. Lightning then drops the best
    score so far and keeps only a path into the old folder, so the resumed run's
    ``best.ckpt`` and test metrics would weigh only the epochs after the resume. Here the
    files the record names are copied into the new folder (from the resumed checkpoint's
    folder only: :func:`recorded_checkpoints`) and the record carried over: a
    stopped-and-resumed run ends with the same ``best.ckpt`` as an uninterrupted one.
    """

    trainer: L.Trainer | None = None

    def __init__(
        self,
        *args: Any,
        every_n_train_steps: int | None = None,
        every_n_minutes: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ConfigError(f"every_n_train_steps={every_n_train_steps} must be null or >= 1")
        if every_n_minutes is not None and every_n_minutes < 0:
            raise ConfigError(f"every_n_minutes={every_n_minutes} must be null or >= 0")
        if (every_n_train_steps or every_n_minutes is not None) and self.monitor is not None:
            raise ConfigError(
                "every_n_train_steps and every_n_minutes rewrite one file, the latest state: "
                "give them to the checkpoint callback without a monitor (last_checkpoint)"
            )
        self.every_n_train_steps, self.every_n_minutes = every_n_train_steps, every_n_minutes
        self.steps_saved, self.time_saved = 0, time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.steps_saved, self.time_saved = trainer.global_step, time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)
        every, step = self.every_n_train_steps, trainer.global_step
        minutes = (time.monotonic() - self.time_saved) / 60
        due = (every and step // every > self.steps_saved // every) or (
            self.every_n_minutes is not None and minutes >= self.every_n_minutes
        )
        if self.every_n_minutes is not None:  # DDP processes see different times: rank 0's
            due = trainer.strategy.broadcast(bool(due))
        if due and resumable_after(trainer, idx):
            trainer.save_checkpoint(Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}")
            self.steps_saved, self.time_saved = step, time.monotonic()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.trainer = trainer  # its ckpt_path: where the state restored next comes from

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir, new_dir = state_dict.get("dirpath"), self.dirpath
        resumed = self.trainer.ckpt_path if self.trainer else None
        if old_dir and new_dir and old_dir != new_dir and resumed:
            found = recorded_checkpoints(state_dict, Path(resumed))
            moved = {old: str(Path(new_dir) / file.name) for old, file in found.items()}
            # Files already there are newer: trainer.test(ckpt_path=...) restores this
            # state again from the run's own best.ckpt, after this run's epochs.
            for old, new in moved.items():
                if not os.path.exists(new):
                    with open(found[old], "rb") as source, replaced_atomically(Path(new)) as target:
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
