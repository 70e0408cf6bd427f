"""The fast paths: device-resident data, batched augmentation, the cheap no-op profiler,
CPU threads for the cores a run was given."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
import torch
from hydra.utils import instantiate

from src.data import base
from src.data.base import random_shift
from src.harness import speed
from src.harness.build import build_trainer
from src.harness.errors import ConfigError
from src.harness.problems import Problems
from src.train import train
from tests.conftest import QUIET, compose_config
from tests.test_own_module import own, own_modules  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]


def test_random_shift_moves_each_image_by_at_most_max_shift() -> None:
    torch.manual_seed(0)
    images = torch.zeros(200, 1, 9, 9)
    images[:, 0, 4, 4] = 1.0  # one bright pixel in the centre of each image
    shifted = random_shift(images, max_shift=2, fill=-1.0)
    assert shifted.shape == images.shape
    bright = (shifted == 1.0).nonzero()
    assert len(bright) == 200  # the pixel survives: a shift of 2 cannot push it out
    offsets = bright[:, 2:] - 4
    assert offsets.abs().max() == 2
    assert len({tuple(o) for o in offsets.tolist()}) > 15  # images get their own offsets
    # The uncovered border takes the fill value; an unshifted image has no fill at all.
    unmoved = (offsets == 0).all(dim=1)
    assert (shifted[bright[unmoved, 0]] == -1.0).sum() == 0
    assert (shifted[bright[~unmoved, 0]] == -1.0).any()


def test_device_resident_data_and_augmentation_train(make_cfg, monkeypatch) -> None:
    """On the CPU the device-resident path is a no-op move, but its code runs end to end;
    augmentation touches training batches only."""
    shifted = []

    def spy(images, *args):
        shifted.append(len(images))
        return random_shift(images, *args)

    monkeypatch.setattr(base, "random_shift", spy)
    cfg = make_cfg(
        "model=lenet",
        "data=digits",
        "data.device_resident=true",
        "data.augment_shift=2",
        "trainer.fast_dev_run=true",
    )
    metrics = train(cfg)
    assert metrics["test/loss"] > 0
    assert shifted == [cfg.data.batch_size]  # fast_dev_run: one training batch


def test_pin_memory_follows_the_device_unless_set(make_cfg) -> None:
    datamodule = instantiate(make_cfg("data=digits").data)
    datamodule.setup("fit")
    assert datamodule.train_dataloader().pin_memory is False  # no trainer: the CPU
    datamodule.pin_memory = True
    assert datamodule.train_dataloader().pin_memory is True
    datamodule.device_resident = True  # data on the device leaves nothing to pin
    assert datamodule.train_dataloader().pin_memory is False


def test_augment_shift_on_tabular_data_is_refused(make_cfg) -> None:
    with pytest.raises(ConfigError, match="augment_shift=2 shifts images"):
        train(make_cfg("model=linreg", "data=synthetic_regression", "+data.augment_shift=2"))


def test_trainer_gets_the_cheap_profiler_unless_one_is_chosen(make_cfg) -> None:
    assert isinstance(build_trainer(make_cfg(), Problems()).profiler, speed.NoProfiler)
    chosen = build_trainer(make_cfg("+trainer.profiler=simple"), Problems()).profiler
    assert type(chosen).__name__ == "SimpleProfiler"


def test_nvml_check_dropped_only_without_a_driver(monkeypatch) -> None:
    def no_library(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setenv(speed.NVML_CHECK, "1")
    monkeypatch.setattr(speed.ctypes, "CDLL", no_library)
    speed.skip_failing_nvml_probe()
    assert speed.NVML_CHECK not in os.environ

    monkeypatch.setenv(speed.NVML_CHECK, "1")
    monkeypatch.setattr(speed.ctypes, "CDLL", lambda name: object())
    speed.skip_failing_nvml_probe()
    assert os.environ[speed.NVML_CHECK] == "1"


def test_benchmark_quick_run_writes_its_figures(tmp_path: Path, monkeypatch, capsys) -> None:
    """A smoke run of scripts/benchmark.py on tiny data: one pair at batch 64 and at the
    experiment's batch size, through train(cfg), printed as a table and written as JSON."""
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmark", benchmark)  # its timer is found by name
    spec.loader.exec_module(benchmark)
    out = tmp_path / "bench.json"
    results = benchmark.main(
        ["--quick", "--only", "pairs", "--pairs", "linreg:california", "--housing-rows=300"]
        + [f"--json={out}"]
    )
    rows = results["pairs"]
    assert json.loads(out.read_text())["pairs"] == rows
    experiment = benchmark.compose_train_config(["experiment=linreg_california"])
    assert sorted(row["batch_size"] for row in rows) == sorted({64, experiment.data.batch_size})
    assert all(row["plain_samples_per_s"] > 0 and row["project_samples_per_s"] > 0 for row in rows)
    assert "| linreg x california | 64 |" in capsys.readouterr().out


@pytest.fixture
def restore_threads():
    yield
    torch.set_num_threads(1)  # the tests' setting (conftest.py)


def test_threads_are_the_cores_given_unless_set(make_cfg, monkeypatch, restore_threads) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(speed.joblib, "cpu_count", lambda: 3)  # a container allowed 3 cores
    speed.set_threads(None)
    assert torch.get_num_threads() == 3
    speed.set_threads(2)  # num_threads=2
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's, or joblib's for a sweep's job
    torch.set_num_threads(1)  # as torch read it at start-up
    speed.set_threads(None)
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="num_threads=0: give a number of CPU threads"):
        train(make_cfg("num_threads=0"))


@pytest.mark.slow
def test_each_job_of_a_parallel_sweep_gets_its_share_of_the_cores(tmp_path: Path) -> None:
    """Two jobs at once: each records cores / 2 torch threads (torch alone would take all)."""
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    command = [sys.executable, "src/train.py", "-m", "data=digits", "trainer.fast_dev_run=true"]
    command += ["logger=none", f"paths.log_dir={tmp_path}", "hydra/launcher=joblib"]
    command += ["hydra.launcher.n_jobs=2", "seed=1,2"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    jobs = sorted(tmp_path.glob("train/multiruns/*/*/run_info.json"))
    threads = [json.loads(job.read_text())["torch_threads"] for job in jobs]
    assert threads == [max(1, joblib.cpu_count() // 2)] * 2


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


# 600 samples, batch 64: 7 batches an epoch, so steps_per_call=3 ends each epoch with a group
# of one; dropout and a learning rate that changes every 2 steps must line up across groups.
GROUPED = [
    *QUIET,
    "data.num_samples=600",
    "trainer.deterministic=true",
    "model.net.dropout=0.2",
    "test=false",
]
STEP_LR = ["scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.7"]
# val/acc is monitored: in mode "min" a better epoch is a worse one, so the rate drops each epoch
HISTOGRAMS = "src.callbacks.inspection.ParameterHistograms"  # has on_before_optimizer_step
PLATEAU = ["scheduler=plateau", "scheduler.patience=0", "scheduler.mode=min"]


@pytest.mark.parametrize(
    ("overrides", "steps"),
    [
        (["trainer.max_epochs=2", *STEP_LR, "scheduler.interval=step"], 14),
        (["trainer.max_epochs=3", *STEP_LR, "scheduler.interval=epoch"], 21),
        (["+trainer.max_steps=11", *STEP_LR, "scheduler.interval=step"], 11),  # within a group
        (["trainer.max_epochs=3", *PLATEAU], 21),
        # a callback with a step hook: the steps go through Lightning's hooks, not straight to torch
        (["trainer.max_epochs=2", *STEP_LR, f"+callbacks.hooked._target_={HISTOGRAMS}"], 14),
    ],
    ids=["step-scheduler", "epoch-scheduler", "max-steps", "plateau-scheduler", "hooked"],
)
def test_steps_per_call_ends_with_the_weights_of_one_step_per_call(
    tmp_path, overrides, steps
) -> None:
    # Bit for bit on the CPU: the same batches, dropout draws and updates in the same order.
    one = train(compose_config([*GROUPED, *overrides], tmp_path / "one"))
    three = [*GROUPED, *overrides, "trainer.steps_per_call=3"]
    grouped = train(compose_config(three, tmp_path / "three"))
    expected, actual = last_weights(tmp_path / "one"), last_weights(tmp_path / "three")
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    for run in ("one", "three"):
        last = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == steps
    assert grouped["val/loss"] == one["val/loss"]
    # the epoch's losses summed in another order: equal to float32 rounding
    assert grouped["train/loss"] == pytest.approx(one["train/loss"], rel=1e-6)


def test_settings_steps_per_call_cannot_honour_are_listed_before_any_work(make_cfg) -> None:
    cfg = make_cfg(
        "trainer.steps_per_call=3",
        "+trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=1.0",
        "+trainer.val_check_interval=5",
        "trainer.limit_train_batches=6",  # a multiple of 3: two groups
    )
    with pytest.raises(ConfigError) as refused:
        train(cfg)
    message = str(refused.value)
    assert "trainer.accumulate_grad_batches=2 cannot be combined" in message
    assert "trainer.gradient_clip_val=1.0 cannot be combined" in message
    assert "trainer.val_check_interval=5 batches must be a multiple of" in message
    assert "limit_train_batches" not in message
    assert not Path(cfg.paths.output_dir).exists()
    with pytest.raises(ConfigError, match=r"trainer.steps_per_call=0 must be an integer >= 1"):
        train(make_cfg("trainer.steps_per_call=0"))


@pytest.mark.usefixtures("own_modules")
def test_an_own_module_that_has_not_opted_in_is_refused_steps_per_call(make_cfg) -> None:
    cfg = make_cfg(*own("Smoothed"), "trainer.steps_per_call=2")
    with pytest.raises(ConfigError, match=r"Smoothed has no take_steps_per_call\(\)"):
        train(cfg)
    assert not Path(cfg.paths.output_dir, "checkpoints").exists()


def test_steps_per_call_logs_metrics_at_the_same_optimizer_steps(tmp_path) -> None:
    def epoch_rows(run: Path) -> list[tuple[str, str]]:
        [table] = run.glob("**/metrics.csv")
        rows = csv.DictReader(table.read_text().splitlines())
        return [(row["step"], row["epoch"]) for row in rows if row["train/loss"]]

    common = [*GROUPED, "logger=csv", "trainer.max_epochs=2", "trainer.limit_train_batches=6"]
    train(compose_config(common, tmp_path / "one"))
    train(compose_config([*common, "trainer.steps_per_call=3"], tmp_path / "three"))
    assert (
        epoch_rows(tmp_path / "three") == epoch_rows(tmp_path / "one") == [("5", "0"), ("11", "1")]
    )
