"""Tags and the run name reach the config, the logger's hyperparameters and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from src.train import train


def test_tags_and_run_name_are_recorded_everywhere(make_cfg):
    cfg = make_cfg(
        "tags=[baseline,small]",
        "run_name=first-try",
        "logger=csv",
        "data.num_samples=200",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
    )
    train(cfg)
    run = Path(cfg.paths.output_dir)
    for recorded in (
        json.loads((run / "metrics.json").read_text()),
        OmegaConf.load(run / "config.yaml"),
        OmegaConf.load(run / "csv" / "hparams.yaml"),
    ):
        assert recorded["run_name"] == "first-try"
        assert list(recorded["tags"]) == ["baseline", "small"]


def test_run_name_defaults_to_the_model_and_data_chosen(make_cfg):
    assert make_cfg("model=lenet", "data=digits").run_name == "lenet-digits"
