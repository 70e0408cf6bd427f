"""Debug modes run, do what they say, and log what they changed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from src.train import train

# 500 samples: 360 train rows, 6 batches of 64 per epoch.
SMALL = ["data.num_samples=500", "trainer.max_epochs=1"]


def global_step(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def test_fdr_runs_one_batch_and_writes_no_checkpoint(make_cfg, caplog):
    caplog.set_level(logging.INFO)
    cfg = make_cfg("debug=fdr", *SMALL)
    metrics = train(cfg)
    assert "test/loss" in metrics
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
    assert "debug=fdr changes: task_name=debug" in caplog.text
    assert "trainer.detect_anomaly=True" in caplog.text
    assert "trainer.fast_dev_run=True" in caplog.text


@pytest.mark.parametrize(("mode", "steps"), [("limit", 5), ("overfit", 1)])
def test_limit_and_overfit_train_only_a_few_batches(make_cfg, mode, steps):
    cfg = make_cfg(f"debug={mode}", *SMALL)
    train(cfg)
    assert global_step(Path(cfg.paths.output_dir)) == steps  # one epoch


def test_overfit_drives_the_training_loss_near_zero(make_cfg):
    metrics = train(make_cfg("debug=overfit", "data.num_samples=500", "test=false"))
    assert metrics["train/loss"] < 0.05


def test_fdr_is_quiet(make_cfg, caplog):
    train(make_cfg("debug=fdr", *SMALL))
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_profiler_saves_its_report_in_the_run_folder(make_cfg):
    cfg = make_cfg("debug=profiler", *SMALL, "trainer.limit_train_batches=3")
    train(cfg)
    report = Path(cfg.paths.output_dir) / "fit-profile.txt"
    assert "run_training_epoch" in report.read_text()
