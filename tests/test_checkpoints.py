"""Resume, ``ckpt_path=last``, eval of a checkpoint, and bad ``ckpt_path`` values."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.eval import evaluate
from src.harness.checkpoints import resolve_ckpt_path
from src.harness.errors import ConfigError
from src.harness.failures import run_reporting_errors
from src.train import train
from tests.conftest import QUIET, compose_config

# 200 samples: 144 train rows, 3 batches of 64 per epoch.
TINY = [*QUIET, "data.num_samples=200", "scheduler=step"]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def trained_run(log_dir: Path) -> Path:
    """Two epochs of two batches each: 4 optimizer steps."""
    run = log_dir / "train" / "runs" / "first"
    overrides = [*TINY, f"paths.log_dir={log_dir}", "trainer.max_epochs=2"]
    train(compose_config([*overrides, "trainer.limit_train_batches=2"], run))
    return run


def test_resume_from_last_continues_with_optimizer_and_scheduler_state(trained_run, log_dir):
    resumed = log_dir / "train" / "runs" / "resumed"
    train(
        compose_config(
            [*TINY, f"paths.log_dir={log_dir}", "trainer.max_epochs=3", "ckpt_path=last"], resumed
        )
    )
    checkpoint = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 2  # epochs 0 and 1 before the resume, 2 after it
    # 2 + 2 limited steps before, 3 full-epoch steps after; from scratch it would be 9.
    assert checkpoint["global_step"] == 7
    assert int(checkpoint["optimizer_states"][0]["state"][0]["step"]) == 7  # Adam's count
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 3  # 1 if it had restarted
    recorded = OmegaConf.load(resumed / "config.yaml").ckpt_path
    assert recorded == str(trained_run / "checkpoints" / "last.ckpt")


def test_last_is_the_newest_last_ckpt_of_runs_and_multiruns(tmp_path):
    paths = [
        tmp_path / "runs" / "a" / "checkpoints" / "last.ckpt",
        tmp_path / "multiruns" / "b" / "0" / "checkpoints" / "last.ckpt",
        tmp_path / "runs" / "c" / "checkpoints" / "last.ckpt",
    ]
    for age, path in zip([30, 10, 20], paths, strict=True):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (1e9 - age, 1e9 - age))
    assert resolve_ckpt_path("last", tmp_path) == paths[1]
    with pytest.raises(ConfigError, match="found no last.ckpt"):
        resolve_ckpt_path("last", tmp_path / "runs" / "a" / "checkpoints" / "none")


def test_a_device_given_as_ckpt_path_is_named_as_one(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path=/dev/zero is a character device, not a"):
        resolve_ckpt_path("/dev/zero", tmp_path)


def test_eval_reproduces_the_training_runs_test_metrics(trained_run, tmp_path):
    best = trained_run / "checkpoints" / "best.ckpt"
    metrics = evaluate(compose_config([*QUIET, f"ckpt_path={best}"], tmp_path, "eval"))
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert trained["best_model_path"] == str(best)
    assert metrics["test/acc"] == trained["test/acc"]
    assert metrics["test/loss"] == trained["test/loss"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/acc"] == trained["test/acc"] and saved["ckpt_path"] == str(best)


def test_eval_on_data_of_another_shape_is_refused(trained_run, tmp_path, tiny_housing_csv):
    best = trained_run / "checkpoints" / "best.ckpt"
    overrides = [f"ckpt_path={best}", "data=california", f"data.csv_path={tiny_housing_csv}"]
    with pytest.raises(ConfigError, match=r"MLP, classification on input shape \[20\].*\[8\]"):
        evaluate(compose_config(overrides, tmp_path / "run", "eval"))


def test_eval_without_the_run_config_asks_for_data(trained_run, tmp_path):
    lone = tmp_path / "lone" / "model.ckpt"
    lone.parent.mkdir()
    lone.write_bytes((trained_run / "checkpoints" / "best.ckpt").read_bytes())
    with pytest.raises(ConfigError, match="data=NAME"):
        evaluate(compose_config([f"ckpt_path={lone}"], tmp_path / "run", "eval"))


def test_relative_paths_are_recorded_absolute_so_eval_runs_from_any_folder(
    tmp_path, tiny_housing_csv, monkeypatch
):
    monkeypatch.chdir(tiny_housing_csv.parent)
    run = tmp_path / "run"
    overrides = [*QUIET, "model=linreg", f"data.csv_path={tiny_housing_csv.name}", "test=false"]
    train(compose_config([*overrides, "trainer.max_epochs=1"], run))
    assert OmegaConf.load(run / "config.yaml").data.csv_path == str(tiny_housing_csv)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative = ["ckpt_path=../run/checkpoints/last.ckpt"]
    metrics = evaluate(compose_config([*QUIET, *relative], tmp_path / "eval", "eval"))
    assert metrics["ckpt_path"] == str(run / "checkpoints" / "last.ckpt")
    assert metrics["test/loss"] > 0
    missing = ["model=linreg", "data=california", "data.csv_path=../missing.csv"]
    with pytest.raises(ConfigError, match=f"data.csv_path={tmp_path / 'missing.csv'} does not"):
        train(compose_config(missing, tmp_path / "bad"))


def test_resuming_with_another_model_names_the_runs_overrides(trained_run, log_dir, tmp_path):
    # Hydra's record of the run's command line, shown quoted for the shell to paste back
    used = ["data.num_samples=200", "paths.log_dir='/tmp/ünï 日本'"]
    run = tmp_path / "earlier"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(used))
    (run / "checkpoints").mkdir()
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes((trained_run / "checkpoints" / "last.ckpt").read_bytes())
    overrides = [*TINY, f"ckpt_path={last}", "model.net.hidden_sizes=[8]"]
    with pytest.raises(ConfigError, match="trained with other settings") as excinfo:
        train(compose_config(overrides, tmp_path / "run"))
    shown = str(excinfo.value).split("overrides of that run (")[1].split(") and change")[0]
    assert shlex.split(shown) == used


def write_not_a_checkpoint(path: Path, kind: str) -> None:
    if kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        torch.save({"weights": torch.zeros(3)}, path)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("text", "is not a readable checkpoint"),
        ("tensors", "not a Lightning checkpoint"),
        ("fifo", "model.ckpt is a named pipe (FIFO), not a file"),
    ],
)
@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_bad_ckpt_path_exits_before_any_work(config_name, kind, message, tmp_path):
    path = tmp_path / "model.ckpt"
    if kind != "missing":
        write_not_a_checkpoint(path, kind)
    output_dir = tmp_path / "run"
    cfg = compose_config([*QUIET, f"ckpt_path={path}"], output_dir, config_name)
    (output_dir / ".hydra").mkdir(parents=True)  # what Hydra writes before the job starts
    (output_dir / f"{cfg.task_name}.log").write_text("")
    task = train if config_name == "train" else evaluate
    with pytest.raises(SystemExit) as excinfo:
        run_reporting_errors(task, cfg)
    assert message in str(excinfo.value.code)
    assert not output_dir.exists()
