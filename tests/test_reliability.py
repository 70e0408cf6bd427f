"""What happens when things go wrong: interrupts, resume, corrupt files, divergence."""

from __future__ import annotations

import functools
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import Callback

from src.harness.checkpoints import trained_checkpoint as checkpoint_to_load
from src.harness.errors import ConfigError, TrainingDiverged
from src.harness.interrupts import resume_command
from src.harness.resumable_loader import loader_states
from src.harness.run_checkpoint import AtomicCheckpointIO
from src.harness.safety import DivergenceGuard
from src.train import train
from tests.conftest import QUIET, ROOT, compose_config

SMALL = ["data.num_samples=600", "optimizer=sgd", "optimizer.lr=0.05"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_resumed_run_ends_with_the_same_weights_and_metrics_as_an_uninterrupted_one(tmp_path):
    # Dropout draws from the global RNG and shuffling from the sampler: both must resume.
    common = [*QUIET, *SMALL, "trainer.deterministic=true", "model.net.dropout=0.2", "test=false"]
    straight = train(compose_config([*common, "trainer.max_epochs=2"], tmp_path / "straight"))
    train(compose_config([*common, "trainer.max_epochs=1"], tmp_path / "first"))
    resume = f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"
    resumed = train(compose_config([*common, "trainer.max_epochs=2", resume], tmp_path / "rest"))
    expected, actual = weights(tmp_path / "straight"), weights(tmp_path / "rest")
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    for name in ("train/loss", "val/loss", "val/acc"):
        assert resumed[name] == straight[name]


def test_nan_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(make_cfg):
    # The learning rate jumps by 1e12 after the first epoch: the second epoch diverges.
    cfg = make_cfg(*SMALL, "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=1e12")
    with pytest.raises(TrainingDiverged) as excinfo:
        train(cfg)
    message = str(excinfo.value)
    assert "the loss is nan at step" in message and "epoch 1" in message
    assert "learning rate 5e+10" in message and "gradient_clip_val" in message
    checkpoint = torch.load(
        Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


class PoisonAt(Callback):
    """Turns the weights into NaN before step 10 (in epoch 1), as a diverging run would."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 10:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))


def test_divergence_between_checked_steps_never_reaches_a_checkpoint(make_cfg, monkeypatch):
    # On an accelerator not every step is checked; the check before saving still catches it.
    monkeypatch.setattr(DivergenceGuard, "on_train_batch_end", lambda *args: None)
    cfg = make_cfg(*SMALL, "+callbacks.poison._target_=tests.test_reliability.PoisonAt")
    with pytest.raises(TrainingDiverged, match="checked before saving a checkpoint"):
        train(cfg)
    checkpoint = torch.load(
        Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


@pytest.fixture
def trained_checkpoint(tmp_path) -> Path:
    train(compose_config([*QUIET, *SMALL, "trainer.max_epochs=1", "test=false"], tmp_path / "ok"))
    return tmp_path / "ok" / "checkpoints" / "last.ckpt"


def test_truncated_checkpoint_is_named_before_any_work(make_cfg, trained_checkpoint):
    truncated = trained_checkpoint.with_name("cut.ckpt")
    truncated.write_bytes(trained_checkpoint.read_bytes()[: trained_checkpoint.stat().st_size // 2])
    cfg = make_cfg(*SMALL, f"ckpt_path={truncated}")
    with pytest.raises(ConfigError, match=str(truncated)):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def test_checkpoint_that_needs_a_full_unpickle_is_refused(make_cfg, tmp_path):
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net": functools.partial(print)}}, unsafe)
    with pytest.raises(ConfigError, match=str(unsafe)):
        train(make_cfg(f"ckpt_path={unsafe}"))


def test_checkpoint_write_interrupted_midway_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)

    def killed_while_writing(obj, file):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_checkpoint_from_outside_the_logs_is_flagged(trained_checkpoint, tmp_path, caplog):
    logs = trained_checkpoint.parents[2]  # <logs>/<run>/checkpoints/last.ckpt
    inside = [f"ckpt_path={trained_checkpoint}", f"paths.log_dir={logs}"]
    assert checkpoint_to_load(compose_config(inside, tmp_path, "eval")) == trained_checkpoint
    assert "does not come from one of this project's runs" not in caplog.text
    outside = [f"ckpt_path={trained_checkpoint}", f"paths.log_dir={tmp_path / 'logs'}"]
    checkpoint_to_load(compose_config(outside, tmp_path, "eval"))
    assert "does not come from one of this project's runs" in caplog.text


class SignalAt(Callback):
    """Sends this process a real signal after ``step`` optimizer steps (once per ``marker``)."""

    def __init__(self, step: int, signal_name: str, marker: str | None = None) -> None:
        self.step, self.signum = step, signal.Signals[signal_name]
        self.marker = Path(marker) if marker else None

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step != self.step or (self.marker and self.marker.exists()):
            return
        if self.marker:
            self.marker.touch()
        os.kill(os.getpid(), self.signum)


def signal_at(step: int, signal_name: str, marker: Path | None = None) -> list[str]:
    """The overrides that add :class:`SignalAt` to a run (``marker``: a rerun is not signalled)."""
    added = "+callbacks.signal_at"
    overrides = [f"{added}._target_=tests.test_reliability.SignalAt", f"{added}.step={step}"]
    overrides.append(f"{added}.signal_name={signal_name}")
    return overrides + ([f"{added}.marker={marker}"] if marker else [])


@pytest.mark.parametrize(("signal_name", "exit_code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_mid_epoch_exits_non_zero_with_that_batch_saved_and_named(
    make_cfg, signal_name, exit_code, capsys
):
    # 600 samples, batch 64: 7 steps per epoch; step 10 is in the middle of epoch 1.
    cfg = make_cfg(
        *SMALL,
        *signal_at(10, signal_name),
    )
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as excinfo:
            train(cfg)
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, sigint_handler)
    assert excinfo.value.code == exit_code
    assert after not in (sigint_handler, signal.SIG_IGN)  # a second Ctrl-C exits at once
    run = Path(cfg.paths.output_dir)
    stderr = capsys.readouterr().err
    assert f"Training stopped by {signal_name} at step 10, after batch 3 of epoch 1." in stderr
    assert "the resumed run goes on at batch 4" in stderr
    assert f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in stderr
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 10)
    assert not list(run.rglob("*.tmp"))
    assert not (run / "metrics.json").exists()


def test_resume_command_runs_as_printed_whatever_the_log_folder_holds(make_cfg, tmp_path):
    log_dir = tmp_path / "ünï 日本"
    cfg = make_cfg(*SMALL, f"paths.log_dir='{log_dir}'")  # as a user quotes it for Hydra
    checkpoint = log_dir / "train" / "runs" / "it's a,b" / "checkpoints" / "last.ckpt"
    words = shlex.split(resume_command(cfg, checkpoint))
    parsed = OverridesParser.create().parse_overrides(words[2:])
    values = {override.key_or_group: override.value() for override in parsed}
    assert values["paths.log_dir"] == str(log_dir)
    assert values["ckpt_path"] == str(checkpoint)
    assert values["optimizer.lr"] == 0.05


def test_requeued_job_resumes_from_the_checkpoint_its_first_attempt_left(
    make_cfg, tmp_path, caplog, monkeypatch
):
    # A preempted SLURM/submitit job runs again with the same config in the same folder.
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    cfg = make_cfg(
        *SMALL,
        "trainer.max_epochs=2",
        "test=false",
        *signal_at(10, "SIGTERM", tmp_path / "preempted"),
    )
    with pytest.raises(SystemExit):
        train(cfg)
    train(cfg)
    assert "left by an earlier attempt of this job" in caplog.text
    last = torch.load(Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 2 * 7


def start_training(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    """A CLI run long enough to interrupt: ~130 steps per epoch, 1,000 epochs."""
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *QUIET,
        "data.num_samples=3000",
        "data.batch_size=16",
        "trainer.max_epochs=1000",
        f"paths.log_dir={tmp_path / 'logs'}",
        *overrides,
    ]
    # Files, not pipes: an unread pipe fills up and blocks the child.
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        return subprocess.Popen(command, cwd=tmp_path, stdout=stdout, stderr=stderr)


def interrupt_after_first_epoch(process: subprocess.Popen, tmp_path: Path, *signals: int) -> str:
    """Send ``signals`` once the first last.ckpt exists; return stderr. Always reaps the child."""
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt")):
            assert process.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "no epoch finished within 60 s"
            time.sleep(0.05)
        first, *more = signals
        process.send_signal(first)
        # Further signals once the run has reported its stop: a deterministic moment at which
        # a real user's second Ctrl-C must still end the process at once and cleanly.
        while more and "Resume with:" not in (tmp_path / "stderr").read_text():
            if process.poll() is not None or time.monotonic() > deadline + 60:
                break
            time.sleep(0.02)
        for signum in more:
            if process.poll() is None:
                process.send_signal(signum)
        process.wait(timeout=60)
        return (tmp_path / "stderr").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_ctrl_c_twice_exits_130_with_a_resumable_checkpoint_and_the_resume_command(tmp_path):
    process = start_training(tmp_path, "seed=3")
    stderr = interrupt_after_first_epoch(process, tmp_path, signal.SIGINT, signal.SIGINT)
    # Either way a shell reports status 130: an exit with 130, or death by the second SIGINT.
    assert process.returncode in (130, -signal.SIGINT), stderr
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] >= 0 and checkpoint["loops"]
    assert not list(run.rglob("*.tmp"))
    command = shlex.split(stderr.split("Resume with:")[1].strip().splitlines()[0])
    assert command[:2] == ["python", str(ROOT / "src" / "train.py")]  # run from another folder
    assert "seed=3" in command and f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in command
    # The printed overrides resume in-process, one epoch further than the checkpoint.
    overrides = [word for word in command[2:] if not word.startswith("trainer.max_epochs=")]
    epochs = checkpoint["epoch"] + 2
    resumed = train(
        compose_config([*overrides, f"trainer.max_epochs={epochs}", "test=false"], tmp_path / "r")
    )
    assert resumed["val/acc"] > 0.5
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt")["epoch"] == epochs - 1


def test_every_bad_value_users_often_change_is_listed_in_one_message(make_cfg):
    # Each class reports its own problems: the data module all of them, the net, Lightning's
    # Trainer its first; a value of the wrong type is named and its default used meanwhile.
    cfg = make_cfg(
        "model.net.dropout=1.0",
        "data.num_folds=5",
        "data.fold=5",
        "data.eval_batch_size=0",
        "trainer.devices=0",
        "trainer.precision=17",
        "data.batch_size=2.5",
    )
    with pytest.raises(ConfigError) as excinfo:
        train(cfg)
    message = str(excinfo.value)
    for problem in (
        "model.net: hidden_sizes must be positive integers and dropout in [0, 1), got "
        "[128, 64] and 1.0",
        "data: eval_batch_size=0 must be positive; fold=5 must be in 0..num_folds-1",
        "trainer: `Trainer(devices=0)` value is not a valid input",
        "trainer.precision=17 must be one of 64, 32, 16 or one of 'transformer-engine'",
        "data.batch_size=2.5 must be int",
    ):
        assert problem in message
    assert not Path(cfg.paths.output_dir).exists()


def test_several_steps_per_call_stop_at_the_end_of_a_group_and_resume_at_the_next_exactly(
    make_cfg, tmp_path, capsys, monkeypatch
):
    # 7 batches an epoch in groups of 3, 3 and 1: step 10 ends the first group of epoch 1.
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # the second attempt resumes the first
    common = [*SMALL, "trainer.deterministic=true", "model.net.dropout=0.2", "test=false"]
    common += ["trainer.max_epochs=2", "trainer.steps_per_call=3"]
    straight = train(compose_config([*QUIET, *common], tmp_path / "straight"))
    cfg = make_cfg(
        *common,
        *signal_at(10, "SIGTERM", tmp_path / "preempted"),
    )
    with pytest.raises(SystemExit) as excinfo:
        train(cfg)
    assert excinfo.value.code == 143
    stderr = capsys.readouterr().err
    assert "Training stopped by SIGTERM at step 10, after batch 3 of epoch 1." in stderr
    assert "the resumed run goes on at batch 4" in stderr
    stopped = torch.load(Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), weights_only=True)
    assert loader_states(stopped) == [{"epoch": 1, "batches": 1}]  # one group of 3 batches
    resumed = train(cfg)
    expected, actual = weights(tmp_path / "straight"), weights(Path(cfg.paths.output_dir))
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    for name in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert resumed[name] == straight[name]
