"""The run's TensorBoard logger: where it writes, and where the dashboard callbacks find it.

Every picture-drawing callback asks for it first and does nothing without one
(``logger=csv``, ``logger=none``, ``fast_dev_run``), so such runs pay nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger

from src.harness.errors import ConfigError
from src.harness.names import unsafe_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class RunLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger, writing where TensorBoard names the run for a person.

    TensorBoard names a run by its folder under ``--logdir``: inside the run folder
    (``train/runs/<timestamp>/``), every legend, image card and HParams row would start
    with a timestamp. The events go to ``<save_dir>/<run name>/<run folder's name>`` (a
    sweep job's: ``<sweep folder's name>/<job>``) instead: the name first, then the
    timestamp, which keeps two runs of one command apart and leads to the run's folder.
    Lightning adds ``epoch`` to the metrics it logs; TensorBoard would chart it first of
    all (with one more point at the test step), so it is left out here (CSV keeps it).
    """

    def __init__(self, save_dir: str, name: str | None, run_dir: str, **kwargs: Any) -> None:
        # Checked again here: eval.py takes the run name from the checkpoint's run folder.
        if problem := unsafe_names([("name", name)]):
            raise ConfigError(problem)
        run = Path(run_dir)
        in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        folder = f"{run.parent.name}/{run.name}" if in_sweep else run.name
        super().__init__(save_dir, name=name, version=folder, **kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


# TensorBoard's Time Series shows an image 215 pixels high (and up to about 370 wide), pixel
# for pixel rescaled: a picture drawn at that size, in 7.5 pt text, reads there unzoomed.
CARD_HEIGHT = 2.15  # inches at 100 dpi
CARD_TEXT = {"font.size": 7.5}


def new_figure(width: float, height: float = CARD_HEIGHT) -> Figure:
    """A figure outside pyplot's global state: drawn by the Agg canvas, needs no display."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def add_figure(logger: TensorBoardLogger, tag: str, figure: Figure, step: int, title: str) -> None:
    """Log ``figure`` titled with the run's name above ``title``: TensorBoard's image cards
    cut the run's name after about 18 characters, the picture keeps it whole."""
    figure.suptitle(f"{logger.name}\n{title}", fontsize=CARD_TEXT["font.size"])
    logger.experiment.add_figure(tag, figure, global_step=step, close=True)
