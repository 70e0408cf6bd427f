"""California housing (1990 census): 8 numeric features, median house value as target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from src.data.base import InMemoryDataModule
from src.errors import ConfigError, DataUnavailableError

FEATURES = [
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
]
TARGET = "MedHouseVal"


def read_housing_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV in the column form ``fetch_california_housing(as_frame=True)`` gives."""
    if not path.is_file():
        raise ConfigError(
            f"data.csv_path={path} does not exist. Give the path of a CSV with the columns "
            f"{','.join([*FEATURES, TARGET])}, or leave csv_path unset to use scikit-learn's "
            "downloader."
        )
    with path.open() as handle:
        header = handle.readline().strip().split(",")
    missing = [c for c in [*FEATURES, TARGET] if c not in header]
    extra = [c for c in header if c not in [*FEATURES, TARGET]]
    if missing or extra:
        raise ConfigError(
            f"{path} has the wrong columns: missing {missing or 'none'}, unexpected "
            f"{extra or 'none'}. Expected exactly {','.join([*FEATURES, TARGET])}."
        )
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    columns = {name: table[:, i] for i, name in enumerate(header)}
    return np.stack([columns[f] for f in FEATURES], axis=1), columns[TARGET]


def fetch_housing(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Use scikit-learn's cached copy under ``data_dir``, downloading it when online."""
    from sklearn.datasets import fetch_california_housing

    try:
        bunch = fetch_california_housing(data_home=str(data_dir), download_if_missing=True)
    except OSError as error:  # URLError and socket errors are OSErrors
        raise DataUnavailableError(
            f"California housing is not in {data_dir} and could not be downloaded ({error}). "
            "Connect to the internet once, or give a local CSV with "
            f"data.csv_path=PATH (columns {','.join([*FEATURES, TARGET])}), "
            "or train offline on data=synthetic_regression."
        ) from error
    return bunch.data.astype(np.float32), bunch.target.astype(np.float32)


class CaliforniaDataModule(InMemoryDataModule):
    """Standardizes each feature with statistics of the training split only."""

    def __init__(self, *, data_dir: str, csv_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir)
        self.csv_path = Path(csv_path) if csv_path else None

    def prepare_data(self) -> None:
        if self.csv_path is None:
            fetch_housing(self.data_dir)

    def load(self) -> tuple[Tensor, Tensor, None]:
        if self.csv_path is None:
            features, target = fetch_housing(self.data_dir)
        else:
            features, target = read_housing_csv(self.csv_path)
        return torch.from_numpy(features), torch.from_numpy(target), None

    def fit_normalization(self, train_inputs: Tensor) -> None:
        self.mean = train_inputs.mean(dim=0)
        self.std = train_inputs.std(dim=0).clamp_min(1e-8)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "feature_names": FEATURES}
