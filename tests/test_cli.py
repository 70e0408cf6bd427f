"""The command line itself: one run in a subprocess as a user types it (slow: a new
interpreter imports torch and Lightning); the rest run the same Hydra main in this process
(``run_in_process``)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_in_process, run_script


@pytest.mark.slow
def test_default_run_from_another_directory_writes_a_complete_run(tmp_path, monkeypatch):
    """Hydra imports every module in hydra_plugins/ when any run starts; the sweeper there
    leaves Optuna and SQLAlchemy (0.14 s together) to the search."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # python -X importtime
    result = run_script("trainer.max_epochs=1", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.5
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "train.log").is_file()
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    imported = [line.rpartition("|")[2].strip() for line in lines]
    assert "hydra.core.plugins" in imported  # the listing names every module
    assert not [name for name in imported if name.split(".")[0] in ("optuna", "sqlalchemy")]


def test_bad_input_exits_non_zero_with_a_message_and_leaves_no_run(tmp_path):
    args = ("model=lenet", "data=synthetic", f"paths.log_dir={tmp_path}")
    result = run_in_process(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert "LeNet5 cannot train on this data" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "train" / "runs").glob("*"))


def test_cfg_job_prints_the_config_without_running(tmp_path):
    args = ("--cfg", "job", "model=lenet", f"paths.log_dir={tmp_path}")
    result = run_in_process(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "LeNet5" in result.stdout
    assert not (tmp_path / "train").exists()
