"""Every named experiment (configs/experiment/) trains a fast_dev_run, offline."""

from __future__ import annotations

import math

import pytest
import yaml

from src.train import train
from tests.conftest import CONFIG_DIR

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs(name, make_cfg, tiny_idx_root, tiny_housing_csv):
    chosen = make_cfg(f"experiment={name}")
    # data sets that are downloaded when online read tiny local copies instead
    if "csv_path" in chosen.data:
        offline = [f"data.csv_path={tiny_housing_csv}"]
    elif "download" in chosen.data:
        offline = [f"data.data_dir={tiny_idx_root}", "data.download=false"]
    else:
        offline = []
    cfg = make_cfg(f"experiment={name}", *offline, "trainer.fast_dev_run=true")

    metrics = train(cfg)

    assert math.isfinite(metrics["test/loss"])
    pinned = yaml.safe_load((CONFIG_DIR / "experiment" / f"{name}.yaml").read_text())
    assert metrics["tags"] == pinned.get("tags", metrics["tags"])
