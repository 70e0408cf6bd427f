"""The command line itself, in a subprocess, as a user types it."""

from __future__ import annotations

import json

from tests.conftest import run_script


def test_default_run_from_another_directory_writes_a_complete_run(tmp_path):
    result = run_script("trainer.max_epochs=1", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.5
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "train.log").is_file()


def test_bad_input_exits_non_zero_with_a_message_and_leaves_no_run(tmp_path):
    result = run_script("model=lenet", "data=synthetic", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 1
    assert "LeNet5 cannot train on this data" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "train" / "runs").glob("*"))


def test_cfg_job_prints_the_config_without_running(tmp_path):
    result = run_script("--cfg", "job", "model=lenet", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "LeNet5" in result.stdout
    assert not (tmp_path / "train").exists()
