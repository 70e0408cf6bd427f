"""Where the dashboard callbacks write: the run's TensorBoard logger, if it has one.

Every picture-drawing callback asks this first and does nothing without a TensorBoard
logger (``logger=csv``, ``logger=none``, ``fast_dev_run``), so such runs pay nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def new_figure(width: float, height: float) -> Figure:
    """A figure outside pyplot's global state: drawn by the Agg canvas, needs no display."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def add_figure(logger: TensorBoardLogger, tag: str, figure: Figure, step: int) -> None:
    logger.experiment.add_figure(tag, figure, global_step=step, close=True)
