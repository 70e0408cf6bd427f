"""Shared fixtures: compose configs the way the CLI does, and write tiny data sets."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import src  # noqa: F401 - sets PROJECT_ROOT

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
SHARED_DATA = ROOT.parent / "shared" / "data"

# The tests' models are tiny: a second intra-op thread buys nothing, and on a small machine
# busy with other work its spin-waits made a LeNet step several times slower (10 s against
# 1 s for the real-MNIST test on 2 shared cores). train() keeps a thread count that
# OMP_NUM_THREADS sets (num_threads=null), and so do the CLI tests' subprocesses.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def run_script(*args: str, cwd: Path, script: str = "train") -> subprocess.CompletedProcess:
    """``python src/<script>.py ARGS`` as a user runs it, on this checkout's code."""
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / f"{script}.py"), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


# Small, fast and quiet: no progress bar or model summary to print, no logger files.
QUIET = [
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
]


def compose_config(
    overrides: Sequence[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` as ``python src/<config_name>.py`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[*overrides, f"paths.output_dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the training config with quiet defaults and outputs under ``tmp_path``."""

    def make(*overrides: str, quiet: bool = True, config_name: str = "train") -> DictConfig:
        extra = QUIET if quiet else []
        return compose_config([*extra, *overrides], tmp_path / "run", config_name)

    return make


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny_idx_root(tmp_path: Path) -> Path:
    """A data_dir holding 80 train and 40 test 28x28 images for each torchvision set."""
    rng = np.random.default_rng(0)
    for name in ("MNIST", "FashionMNIST", "KMNIST"):
        raw = tmp_path / "idx" / name / "raw"
        raw.mkdir(parents=True)
        for prefix, count in (("train", 80), ("t10k", 40)):
            labels = np.arange(count) % 10
            images = rng.integers(0, 60, size=(count, 28, 28))
            images[np.arange(count), labels * 2 + 4, 4:24] = 255  # a label-dependent stroke
            write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path / "idx"


HOUSING_HEADER = (
    "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude,MedHouseVal"
)


def write_housing_csv(path: Path) -> Path:
    """200 rows in the column form of fetch_california_housing(as_frame=True)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 8)) + 3.0
    target = features @ rng.normal(size=8) * 0.1 + 2.0
    rows = [",".join(f"{v:.5f}" for v in [*f, t]) for f, t in zip(features, target, strict=True)]
    path.write_text("\n".join([HOUSING_HEADER, *rows]) + "\n")
    return path


@pytest.fixture
def tiny_housing_csv(tmp_path: Path) -> Path:
    return write_housing_csv(tmp_path / "housing.csv")


@pytest.fixture
def shared_data() -> Path:
    """The real reference data beside the repository; absent in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA}")
    return SHARED_DATA


# A few batches: enough for a checkpoint whose predictions export and serving must reproduce.
TINY_TRAINING = [
    *QUIET,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def train_tiny(run: Path, *overrides: str) -> Path:
    """Train ``overrides``' model a few batches into ``run``; its best checkpoint."""
    from src.train import train

    train(compose_config([*TINY_TRAINING, *overrides], run))
    return run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="session")
def lenet_digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("lenet_digits"), "model=lenet", "data=digits")


@pytest.fixture(scope="session")
def mlp_housing_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("mlp_housing")
    housing = write_housing_csv(run / "housing.csv")
    return train_tiny(run, "model=mlp", "data=california", f"data.csv_path={housing}")


def assert_same_predictions(rows: list[dict[str, Any]], csv_rows: list[dict[str, str]]) -> None:
    """``rows`` say what predict.py's CSV rows say: the same columns, the same classes (or
    labels), and values within 1e-4."""
    assert len(rows) == len(csv_rows) > 0
    for row, expected in zip(rows, csv_rows, strict=True):
        assert set(row) - {"input"} == set(expected) - {"input"}
        for column, value in expected.items():
            if column == "input":
                continue
            if isinstance(row[column], int):  # a class, or a label's 0/1
                assert row[column] == int(value), column
            else:
                assert abs(row[column] - float(value)) <= 1e-4, column


def optimize_chunks(output_dir: Path, *overrides: str) -> Path:
    """``python scripts/optimize_data.py OVERRIDES output_dir=...``, in this process."""
    pytest.importorskip("litdata", reason='data=streaming needs pip install -e ".[stream]"')
    from scripts.optimize_data import optimize_data

    cfg = compose_config(
        [*overrides, f"output_dir={output_dir}"], output_dir.parent / "log", "optimize_data"
    )
    return Path(optimize_data(cfg))


@pytest.fixture(scope="session")
def digits_chunks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits' splits written into LitData's chunks, for data=streaming."""
    return optimize_chunks(tmp_path_factory.mktemp("streamed") / "digits", "data=digits")
