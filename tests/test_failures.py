"""Every way a run can fail or be stopped ends the same way: one paragraph on the console,
a non-zero exit, the traceback (if any) only in the run's log file, and no run folder that
passes for a result. Interrupts say what was kept and how to go on, in every phase. The
console shows what a person reads (no config tree, tips or colour codes in pipes), and the
logs hold the run's record."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from scripts.benchmark import parse_args
from src.data.base import InMemoryDataModule
from src.eval import evaluate
from src.harness.failures import run_reporting_errors
from src.harness.overrides import override
from src.harness.paths import CreateRunFolder
from src.harness.summary import job_table
from src.harness.sweep_jobs import read_job
from src.predict import predict
from src.train import train
from tests.conftest import QUIET, compose_config, run_in_process

TINY = [*QUIET, "data.num_samples=200"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Three epochs of the MLP on 200 synthetic rows: a run folder holding checkpoints."""
    folder = tmp_path_factory.mktemp("logs") / "train" / "runs" / "three"
    train(compose_config([*TINY, "trainer.max_epochs=3", "test=false"], folder))
    return folder


def fails(task: Callable[[DictConfig], object], cfg: DictConfig) -> str:
    """Run as the command line does (Hydra has made the folder); return the exit message."""
    output_dir = Path(cfg.paths.output_dir)
    (output_dir / ".hydra").mkdir(parents=True)
    (output_dir / f"{cfg.task_name}.log").touch()
    with pytest.raises(SystemExit) as excinfo:
        run_reporting_errors(task, cfg)
    message = str(excinfo.value.code)
    assert message.startswith("error: ") and "Traceback" not in message and "\x1b" not in message
    return message


def write_torch_file(path: Path, kind: str) -> Path:
    if kind == "tensors":
        torch.save({"net": torch.zeros(3)}, path)
    else:  # what a full unpickle would need: torch's own error is pages of escape-coded text
        torch.save({"state_dict": {}, "hyper_parameters": {"net": Path("x")}}, path)
    return path


@pytest.mark.parametrize(
    ("config_name", "overrides", "expected"),
    [
        ("train", ["ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_epochs=1"],
         "has trained 3 epochs, more than trainer.max_epochs=1. Resume with "
         "trainer.max_epochs above 3 to train on, or test it: python src/eval.py ckpt_path="),
        ("train", ["ckpt_path={run}/checkpoints"],
         "checkpoints is a folder (relative paths start from the folder the command runs in)"),
        ("eval", ["ckpt_path={tensors}"], "is a torch file but not a Lightning checkpoint"),
        ("eval", ["ckpt_path={objects}"],
         "is not a readable checkpoint (torch's safe loader refuses it: not a checkpoint, or "
         "Python objects whose loading could run code)"),
        ("train", ["data.num_samples=1"],
         "data: the train/validation/test sets hold 1/0/0 examples: too few to train (4 at "
         "least) and to validate and test (1 each)"),
        ("train", ["data.num_samples=8", "data.val_fraction=0.5", "data.test_fraction=0.5"],
         "data: the train/validation/test sets hold 2/2/4 examples"),
        ("train", ["+optimizer.lrr=0.1"], "optimizer.lrr is not an argument of Adam"),
    ],
)  # fmt: skip
def test_bad_input_ends_in_one_paragraph_and_leaves_no_run_folder(
    config_name, overrides, expected, trained, tmp_path
):
    paths = {
        "run": trained,
        "tensors": write_torch_file(tmp_path / "tensors.pt", "tensors"),
        "objects": write_torch_file(tmp_path / "objects.pt", "objects"),
    }
    base = TINY if config_name == "train" else QUIET
    cfg = compose_config(
        [*base, *(item.format(**paths) for item in overrides)], tmp_path / "run", config_name
    )
    message = fails({"train": train, "eval": evaluate}[config_name], cfg)
    assert expected in message
    assert "\n" not in message or message.startswith("error: invalid configuration:")
    assert not (tmp_path / "run").exists()


def test_an_unexpected_error_names_its_type_and_the_log_that_holds_its_traceback(
    tmp_path, monkeypatch
):
    def crash(*args):
        raise RuntimeError("something broke\nand a second line nobody needs")

    monkeypatch.setattr(InMemoryDataModule, "train_dataloader", crash)
    cfg = compose_config(TINY, tmp_path / "run")
    message = fails(train, cfg)
    log_file = tmp_path / "run" / "train.log"
    assert message == f"error: RuntimeError: something broke (the traceback is in {log_file})"
    assert [path.name for path in (tmp_path / "run").iterdir()] == ["train.log"]


def test_a_full_disk_ends_in_one_message_with_every_earlier_checkpoint_intact(
    tmp_path, monkeypatch
):
    save, calls = torch.save, []

    def fill_the_disk(obj, file):
        calls.append(1)
        if len(calls) == 3:  # best.ckpt and last.ckpt of epoch 0 are written
            file.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(obj, file)

    monkeypatch.setattr(torch, "save", fill_the_disk)
    cfg = compose_config([*TINY, "trainer.max_epochs=3"], tmp_path / "run")
    message = fails(train, cfg)
    assert message.startswith("error: OSError: [Errno 28] No space left on device")
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(path.name for path in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("best.ckpt", "last.ckpt"):
        assert torch.load(folder / name, weights_only=True)["epoch"] == 0


def test_benchmark_on_a_missing_gpu_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as excinfo:
        parse_args(["--device", "cuda"])
    assert str(excinfo.value.code).startswith("error: --device cuda, but torch ")


class SignalDuring(Callback):
    """Sends this process a real signal in the given phase of the run."""

    def __init__(self, hook: str, signal_name: str) -> None:
        self.signum = signal.Signals[signal_name]
        setattr(self, hook, self.send)

    def send(self, *args) -> None:
        os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(("signal_name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_while_testing_exits_non_zero_with_the_command_that_tests_again(
    signal_name, code, tmp_path, capsys
):
    overrides = [*TINY, "trainer.max_epochs=1", "data.eval_batch_size=8"]
    stop = [
        "+callbacks.stop._target_=tests.test_failures.SignalDuring",
        "+callbacks.stop.hook=on_test_batch_end",
        f"+callbacks.stop.signal_name={signal_name}",
    ]
    cfg = compose_config([*overrides, *stop], tmp_path / "run")
    with pytest.raises(SystemExit) as excinfo:
        run_reporting_errors(train, cfg)
    assert excinfo.value.code == code
    stderr = capsys.readouterr().err
    assert f"Testing stopped by {signal_name}: training had finished" in stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    command = shlex.split(stderr.split("Test its best checkpoint with:")[1].strip())
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert command[-2:] == ["train=false", f"ckpt_path={best}"]
    again = [word for word in command[2:] if not word.startswith("+callbacks.stop")]
    metrics = train(compose_config(again, tmp_path / "again"))
    assert "test/acc" in metrics and "val/acc" not in metrics  # tested, not trained


@pytest.mark.parametrize("script", ["eval", "predict"])
def test_eval_and_predict_stopped_exit_143_and_keep_nothing(script, trained, tmp_path, capsys):
    hook, phase = {"eval": ("on_test_batch_end", "Testing")}.get(
        script, ("on_predict_batch_end", "Predicting")
    )
    stop = [
        "+callbacks.stop._target_=tests.test_failures.SignalDuring",
        f"+callbacks.stop.hook={hook}",
        "+callbacks.stop.signal_name=SIGTERM",
    ]
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join([",".join(f"x{i}" for i in range(20))] + ["0.5," * 19 + "0.5"] * 40))
    extra = {
        "eval": [*TINY, "data=synthetic", "data.eval_batch_size=8"],
        "predict": [*QUIET, f"input={rows}", "batch_size=8"],
    }[script]
    last = trained / "checkpoints" / "last.ckpt"
    cfg = compose_config([f"ckpt_path={last}", *extra, *stop], tmp_path / "run", script)
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit) as excinfo:
        run_reporting_errors({"eval": evaluate, "predict": predict}[script], cfg)
    assert excinfo.value.code == 143
    assert f"{phase} stopped by SIGTERM: its results were not written." in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_rerun_in_a_folder_removes_the_temporary_files_a_hard_kill_left(trained, tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / ".last.ckpt.0123456789ab.tmp").write_bytes(b"half a checkpoint")
    train(compose_config([*TINY, "trainer.max_epochs=1", "test=false"], tmp_path / "run"))
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_the_resume_refusal_shows_the_runs_overrides_without_its_ckpt_path(trained, tmp_path):
    run = tmp_path / "resumed"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- data.num_samples=200\n- ckpt_path=last\n")
    (run / "checkpoints").mkdir()
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes((trained / "checkpoints" / "last.ckpt").read_bytes())
    cfg = compose_config([*TINY, f"ckpt_path={last}", "model.net.hidden_sizes=[8]"], tmp_path / "r")
    message = fails(train, cfg)
    assert "Resume with the overrides of that run (data.num_samples=200) and change" in message


def test_a_stop_before_training_starts_exits_non_zero_and_keeps_nothing(
    tmp_path, monkeypatch, capsys
):
    setup = InMemoryDataModule.setup

    def terminated_while_loading(self, stage=None):
        os.kill(os.getpid(), signal.SIGTERM)
        setup(self, stage)

    monkeypatch.setattr(InMemoryDataModule, "setup", terminated_while_loading)
    cfg = compose_config(TINY, tmp_path / "run")
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    with pytest.raises(SystemExit) as excinfo:
        run_reporting_errors(train, cfg)
    assert excinfo.value.code == 143
    assert "Stopped by SIGTERM (nothing kept)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_a_checkpoint_is_written_completes_it_then_stops(
    tmp_path, monkeypatch, capsys
):
    # Raised inside torch's writer, the KeyboardInterrupt used to abort the whole process.
    save = torch.save

    def interrupted_while_saving(obj, file):
        os.kill(os.getpid(), signal.SIGINT)
        save(obj, file)

    monkeypatch.setattr(torch, "save", interrupted_while_saving)
    cfg = compose_config([*TINY, "trainer.max_epochs=3"], tmp_path / "run")
    with pytest.raises(SystemExit) as excinfo:
        run_reporting_errors(train, cfg)
    assert excinfo.value.code == 130
    # Written whole; the stop then waits for the end of the epoch's checkpoints (last.ckpt
    # too) and comes as the next epoch starts.
    best, last = (tmp_path / "run" / "checkpoints" / name for name in ("best.ckpt", "last.ckpt"))
    assert torch.load(best, weights_only=True)["epoch"] == 0
    assert torch.load(last, weights_only=True)["epoch"] == 0
    stderr = capsys.readouterr().err
    assert "Training stopped by SIGINT at step 3. " in stderr
    assert f"{last} holds the end of epoch 0, the last complete one. Resume with:" in stderr
    assert not list((tmp_path / "run").rglob("*.tmp"))


class Boom(Callback):
    def on_train_start(self, *args) -> None:
        raise RuntimeError("boom")


def test_the_console_and_the_logs_of_a_walk_through(tmp_path):
    logs = tmp_path / "lögs with spaces"
    base = ["data.num_samples=200", override("paths.log_dir", str(logs))]
    trained = run_in_process(*base, "trainer.max_epochs=2", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    (run,) = (logs / "train" / "runs").iterdir()
    lines = trained.stdout.strip().splitlines()
    overrides = shlex.join([*base, "trainer.max_epochs=2"])
    assert (
        lines[0] == f"Run folder: {run} (overrides: {overrides}; config.yaml holds the full config)"
    )
    assert re.match(r"Done: val/acc_best=[\d.]+ \(epoch [01]\), test/acc=[\d.]+\. ", lines[-1])
    assert lines[-1].endswith(f"Run folder: {run}")
    assert "Epoch 1: " in trained.stdout  # no progress bar in a pipe: a line per epoch
    for noise in ("├──", "\x1b", "Tip:", "Trainer already configured", "Seed set", "Traceback"):
        assert noise not in trained.stdout + trained.stderr
    log = (run / "train.log").read_text()
    for line in ("Command: ", "Run folder: ", "Epoch 1: ", "Saved ", "Done: val/acc_best="):
        assert line in log

    evaluated = run_in_process(base[1], "ckpt_path=last", cwd=tmp_path, script="eval")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"Checkpoint: {run / 'checkpoints' / 'last.ckpt'} (run mlp-synthetic)" in (
        evaluated.stdout
    )
    (eval_run,) = (logs / "eval" / "runs").iterdir()
    assert json.loads((eval_run / "metrics.json").read_text())["run_name"] == "mlp-synthetic"
    assert "Done: test/acc=" in (eval_run / "eval.log").read_text()

    boom = run_in_process(*base, "+callbacks.boom._target_=tests.test_failures.Boom", cwd=tmp_path)
    assert boom.returncode == 1 and "Traceback" not in boom.stdout
    (failed,) = [folder for folder in (logs / "train" / "runs").iterdir() if folder != run]
    assert boom.stderr == f"error: RuntimeError: boom (the traceback is in {failed}/train.log)\n"
    assert [path.name for path in failed.iterdir()] == ["train.log"]
    assert "RuntimeError: boom" in (failed / "train.log").read_text().split("Traceback")[1]


def test_a_log_folder_that_cannot_be_written_ends_in_one_line(tmp_path):
    (not_a_folder := tmp_path / "a file").write_text("")
    with pytest.raises(SystemExit) as excinfo:
        CreateRunFolder.create(str(not_a_folder / "logs" / "train" / "runs" / "now"))
    assert str(excinfo.value.code) == (
        f"error: cannot write the run folder {not_a_folder}/logs/train/runs/now (Not a directory)."
        " Free space there, or choose a folder you can write to with paths.log_dir=FOLDER."
    )


def test_a_sweep_summary_has_one_learning_rate_column(tmp_path):
    jobs = []
    for job, (optimizer, rate) in enumerate([("adam", 0.001), ("sgd", 0.1)]):
        folder = tmp_path / str(job)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- optimizer={optimizer}\n")
        metrics = {"val/acc": 0.5, f"lr-{optimizer.capitalize()}": rate}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        jobs.append(read_job(folder))
    assert job_table(jobs, "val/acc", ["optimizer"])[0] == [
        "job", "status", "optimizer", "val/acc", "lr", "wall_time_s", "error"
    ]  # fmt: skip


def test_help_lists_the_groups_users_choose_from(tmp_path):
    text = compose_config([], tmp_path).hydra.help.template
    assert "  model           lenet, linreg, mlp (each brings its data set)\n" in text
    assert "  trainer         cpu, ddp, ddp_sim, default, gpu, mps\n" in text
    for internal in ("model_checkpoint", "_shared", "paths", "images"):
        assert internal not in text
