"""How checkpoints are written (complete or absent) and where a loaded one comes from.

Lightning's own writer stages a checkpoint in the system temporary folder and then
moves it; when that folder sits on another file system the move is a copy, and a kill
during the copy leaves a truncated ``.ckpt``. :class:`AtomicCheckpointIO` writes next to
the target and renames, which is atomic on every local file system.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``path`` through ``.path.tmp`` in the same folder, fsync and ``os.replace``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def warn_if_foreign(path: str | Path, log_dir: str | Path) -> bool:
    """Warn when a checkpoint lies outside the project's ``logs/``; return whether it does.

    Loading stays ``weights_only=True`` either way; the warning tells the user that the
    weights (and the hyperparameters stored with them) do not come from a run of theirs.
    """
    foreign = not Path(path).resolve().is_relative_to(Path(log_dir).resolve())
    if foreign:
        log.warning(
            "Checkpoint %s is not under %s: it does not come from one of this project's runs. "
            "It is loaded with weights_only=True (tensors and plain values only).",
            path,
            log_dir,
        )
    return foreign
