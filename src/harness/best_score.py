"""The run's best validation score and its epoch: what a sweep ranks and a search optimizes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from src.harness.checkpoints import checkpoint_epoch

log_file_only = logging.getLogger("log_file_only")  # not on the console (configs/hydra)


def best_metrics(trainer: Any, monitor: str) -> dict[str, float | int]:
    """The data's validation score (``monitor``) of the checkpoint the run keeps as best, as
    ``<monitor>_best``, and its epoch (from 0, as the console's ``Epoch N:`` lines count) as
    ``best_epoch``.

    The run's result is the checkpoint it keeps and tests, not its last epoch, so these come
    from the checkpoint callback (which carries the best across a resume) and the epoch from
    the file itself. A checkpoint chosen by another value (``monitor: step``, in experiments
    that test their final weights) is the last epoch's, whose score the trainer still holds.
    Empty when the run kept no best checkpoint (``trainer.fast_dev_run``, or no checkpoint
    callback with a monitor).
    """
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "")
    if not (path and callback.monitor and callback.best_model_score is not None):
        return {}
    epoch = checkpoint_epoch(Path(path))
    if callback.monitor == monitor:
        score = callback.best_model_score
    elif epoch == trainer.current_epoch - 1 and monitor in trainer.callback_metrics:
        score = trainer.callback_metrics[monitor]
    else:
        return {}
    return {f"{monitor}_best": float(score), "best_epoch": epoch}
