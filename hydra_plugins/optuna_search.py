"""The Optuna search as the sweeper Hydra finds: ``hydra/sweeper=optuna`` (``hparams_search=NAME``).

Hydra requires a sweeper to live in ``hydra_plugins`` and imports every module there when
any run starts. This one holds only the class Hydra calls; the search itself
(``src/harness/search.py``), with Optuna and its database, is imported when a search runs:
other runs do not pay for it (0.14 s).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSearch(Sweeper):
    """Hydra builds its sweeper for a multirun only: the search is imported then, and takes
    ``hydra.sweeper``'s settings (an unknown one is refused in Hydra's message)."""

    def __init__(self, **settings: Any) -> None:
        from src.harness.search import Search

        self.search = Search(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.search.sweep(arguments)
