"""Feature rows with a target: a CSV file, or a scikit-learn ``load_*``/``fetch_*`` loader.

A new tabular data set needs no module of its own, only a config naming a loader
(``loader: sklearn.datasets.load_wine``) or a file (``csv_path: FILE``, ``target: COLUMN``)
with its task, input shape and number of outputs. Features are standardized one by one
(the base class), and their names are saved for ``predict.py``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from src.data.base import InMemoryDataModule, value_problems
from src.harness.errors import ConfigError, DataUnavailableError

LOADERS = "sklearn.datasets."


def read_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, target and feature names of a CSV whose header names its columns."""
    if not path.is_file():
        raise ConfigError(f"data.csv_path={path} does not exist (or is not a file).")
    with path.open() as handle:
        header = handle.readline().strip().split(",")
    if target not in header:
        raise ConfigError(
            f"data.csv_path={path} has no column {target!r} (data.target); its columns: {header}."
        )
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    features = [name for name in header if name != target]
    columns = [header.index(name) for name in features]
    return table[:, columns], table[:, header.index(target)], features


class TabularDataModule(InMemoryDataModule):
    """Rows from ``csv_path`` when it is given, else from the scikit-learn ``loader``."""

    def __init__(
        self,
        *,
        loader: str | None = None,
        csv_path: str | None = None,
        target: str = "target",
        target_label: str | None = None,
        data_dir: str = "data",
        input_shape: list[int],
        **kwargs,
    ) -> None:
        super().__init__(input_shape=input_shape, **kwargs)
        value_problems(
            loader=(
                loader,
                bool(csv_path) or str(loader).startswith(LOADERS),
                f"must name a function of {LOADERS} (or give csv_path)",
            ),
            input_shape=(input_shape, len(input_shape) == 1, "must be [number of features]"),
        )
        self.loader, self.target, self.data_dir = loader, target, Path(data_dir)
        self.target_label = target_label or target  # what the regression plots call it
        self.csv_path = Path(csv_path) if csv_path else None

    def fetch(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The loader's data, downloaded into ``data_dir`` by loaders that download."""
        import sklearn.datasets

        function = getattr(sklearn.datasets, self.loader.removeprefix(LOADERS))
        takes_home = "data_home" in inspect.signature(function).parameters
        try:
            bunch = function(**({"data_home": str(self.data_dir)} if takes_home else {}))
        except OSError as error:  # URLError and socket errors are OSErrors
            raise DataUnavailableError(
                f"{self.loader} has no copy in {self.data_dir} and could not download one "
                f"({error}). Connect to the internet once, or give a local CSV with "
                f"data.csv_path=PATH (a header naming the features and the target column "
                f"{self.target!r}), or train offline on data=synthetic_regression."
            ) from error
        names = list(getattr(bunch, "feature_names", [])) or None
        return bunch.data.astype(np.float32), bunch.target.astype(np.float32), names

    def prepare_data(self) -> None:
        if self.csv_path is None:
            self.fetch()

    def load(self) -> tuple[Tensor, Tensor, None]:
        source = f"data.csv_path={self.csv_path}" if self.csv_path else self.loader
        features, targets, names = (
            read_csv(self.csv_path, self.target) if self.csv_path else self.fetch()
        )
        if features.shape[1] != self.input_shape[0]:
            raise ConfigError(
                f"{source} gives {features.shape[1]} features ({names}), but data.input_shape "
                f"is {self.input_shape}: set data.input_shape=[{features.shape[1]}]."
            )
        self.feature_names = names
        return torch.from_numpy(features), torch.from_numpy(targets), None

    def state_dict(self) -> dict:
        """Also the target column's name: predict.py takes the training CSV as it is."""
        return {**super().state_dict(), "target": self.target}
