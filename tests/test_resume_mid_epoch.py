"""A run stopped in the middle of an epoch resumes at the next batch and ends as if it had not
stopped: the loader's position, the random generators and the metrics' sums travel in the
checkpoint (src/harness/resumable_loader.py, resume_state.py, stop_checkpoint.py)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import MeanMetric

from src.data.base import EpochShuffle
from src.eval import evaluate
from src.harness.errors import ConfigError
from src.harness.resumable_loader import (
    RestoreLoaderPosition,
    ResumableLoader,
    loader_states,
    resumable_loader,
)
from src.harness.resume_state import METRIC_STATES, MetricStates, RNGState
from src.harness.run_checkpoint import AtomicCheckpointIO, RunCheckpoint
from src.harness.stop_checkpoint import StopAtBatch
from src.models.module import SupervisedModule
from src.train import train
from tests.conftest import QUIET, compose_config
from tests.test_reliability import (
    SMALL,
    SignalAt,
    interrupt_after_first_epoch,
    signal_at,
    start_training,
)

# 600 samples, batch 64: 7 batches an epoch; step 10 is batch 3 of epoch 1. Shuffled, with
# dropout: the order and the random stream must both go on where they stopped.
COMMON = [*SMALL, "trainer.deterministic=true", "model.net.dropout=0.2", "test=false"]
COMMON += ["trainer.max_epochs=2"]
FINAL = ("train/loss", "train/acc", "val/loss", "val/acc")


def state_dict(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_run(expected: dict, actual: dict, expected_run: Path, actual_run: Path) -> None:
    for name in FINAL:
        assert actual[name] == expected[name], name
    weights, resumed = state_dict(expected_run), state_dict(actual_run)
    assert weights.keys() == resumed.keys()
    assert all(torch.equal(weights[name], resumed[name]) for name in weights)


def stop_and_resume(make_cfg, tmp_path, monkeypatch, *overrides: str) -> tuple[dict, Path]:
    """SIGTERM at step 10, then the job run again in its folder, as SLURM requeues it."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    cfg = make_cfg(
        *COMMON,
        *overrides,
        *signal_at(10, "SIGTERM", tmp_path / "preempted"),
    )
    with pytest.raises(SystemExit) as excinfo:
        train(cfg)
    assert excinfo.value.code == 143
    run = Path(cfg.paths.output_dir)
    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (stopped["epoch"], stopped["global_step"]) == (1, 10)
    assert METRIC_STATES in stopped
    return train(cfg), run


def test_a_run_stopped_mid_epoch_resumes_at_the_next_batch_and_ends_as_the_uninterrupted_one(
    make_cfg, tmp_path, monkeypatch
):
    straight = train(compose_config([*QUIET, *COMMON], tmp_path / "straight"))
    resumed, run = stop_and_resume(make_cfg, tmp_path, monkeypatch)
    assert_same_run(straight, resumed, tmp_path / "straight", run)


def test_the_loader_position_is_restored_when_the_optimizers_read_the_stepping_batches(
    make_cfg, tmp_path, monkeypatch
):
    # Lightning issue #20550: a module whose configure_optimizers reads
    # estimated_stepping_batches (a OneCycle schedule) has its loader built before the
    # checkpoint is restored, and Lightning drops the loader's state.
    configure = SupervisedModule.configure_optimizers

    def reading_stepping_batches(self):
        if self._trainer is not None:  # also called once before, to check the optimizer
            assert self.trainer.estimated_stepping_batches == 14
        return configure(self)

    monkeypatch.setattr(SupervisedModule, "configure_optimizers", reading_stepping_batches)
    load = ResumableLoader.load_state_dict
    given = []
    monkeypatch.setattr(
        ResumableLoader, "load_state_dict", lambda self, state: given.append(load(self, state))
    )
    straight = train(compose_config([*QUIET, *COMMON], tmp_path / "straight"))
    resumed, run = stop_and_resume(make_cfg, tmp_path, monkeypatch)
    assert len(given) == 1  # by RestoreLoaderPosition alone: Lightning gave none
    assert_same_run(straight, resumed, tmp_path / "straight", run)


class FailAt(Callback):
    """A crash (not a signal) after ``step`` optimizer steps: what is on disk is what stays."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


@pytest.mark.parametrize(
    ("every", "steps_per_call", "crash", "saved", "served"),
    [
        ("every_n_train_steps=4", 1, 5, 4, 4),
        # groups of 3, 3 and 1 batches: steps 3, 6, 7 end them; 6 is the first past 4
        ("every_n_train_steps=4", 3, 7, 6, 2),
        ("every_n_minutes=0", 1, 5, 4, 4),  # after every batch; the crash comes first
    ],
)
def test_a_checkpoint_every_n_steps_or_minutes_resumes_exactly(
    tmp_path, every, steps_per_call, crash, saved, served
):
    every = [*QUIET, *COMMON, f"callbacks.last_checkpoint.{every}"]
    every += [f"trainer.steps_per_call={steps_per_call}"]
    straight = train(compose_config(every, tmp_path / "straight"))
    crashing = ["+callbacks.crash._target_=tests.test_resume_mid_epoch.FailAt"]
    crashing += [f"+callbacks.crash.step={crash}"]
    with pytest.raises(RuntimeError, match="crash"):
        train(compose_config([*every, *crashing], tmp_path / "crashed"))
    last = tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (0, saved)
    assert loader_states(checkpoint) == [{"epoch": 0, "batches": served}]
    resumed = train(compose_config([*every, f"ckpt_path={last}"], tmp_path / "resumed"))
    assert_same_run(straight, resumed, tmp_path / "straight", tmp_path / "resumed")


def test_bad_checkpoint_intervals_are_named_before_any_work(make_cfg):
    cfg = make_cfg(
        "callbacks.last_checkpoint.every_n_train_steps=0",
        "+callbacks.model_checkpoint.every_n_minutes=5",
    )
    with pytest.raises(ConfigError) as excinfo:
        train(cfg)
    assert "callbacks.last_checkpoint: every_n_train_steps=0 must be null or >= 1" in str(
        excinfo.value
    )
    assert "callbacks.model_checkpoint: every_n_train_steps and every_n_minutes rewrite one" in (
        str(excinfo.value)
    )
    assert not Path(cfg.paths.output_dir).exists()


def test_a_checkpoint_without_the_new_state_resumes_at_the_epoch_start_and_any_evaluates(
    make_cfg, tmp_path, monkeypatch
):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    cfg = make_cfg(
        *COMMON,
        *signal_at(10, "SIGINT"),
    )
    with pytest.raises(SystemExit):
        train(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    # As a checkpoint of the earlier code: no loader position, metric sums, numpy or Python
    # random state. It is mid-epoch (step 10), so the epoch resumes from its start.
    old = torch.load(folder / "last.ckpt", weights_only=True)
    del old["loops"]["fit_loop"]["state_dict"]["combined_loader"], old[METRIC_STATES]
    (rng_key,) = [key for key in old["callbacks"] if key.startswith("RNGState")]
    old["callbacks"][rng_key] = {"cpu": old["callbacks"][rng_key]["cpu"]}
    torch.save(old, folder / "old.ckpt")
    overrides = [*QUIET, *COMMON, f"ckpt_path={folder / 'old.ckpt'}"]
    resumed = train(compose_config(overrides, tmp_path / "resumed"))
    ended = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (ended["epoch"], ended["global_step"]) == (1, 14) and resumed["val/acc"] > 0.5
    # Evaluating needs none of it: the old checkpoint and the new mid-epoch one both load
    # (strictly), and test the same weights.
    tested = [
        evaluate(compose_config([*QUIET, f"ckpt_path={folder / name}"], tmp_path / name, "eval"))
        for name in ("old.ckpt", "last.ckpt")
    ]
    assert tested[0]["test/loss"] == tested[1]["test/loss"] and "test/acc" in tested[0]


class Numbered(Dataset):
    """A plain map-style data set read one sample at a time, as a per-sample path reads."""

    def __init__(self) -> None:
        self.inputs = torch.randn(96, 4, generator=torch.Generator().manual_seed(0))
        self.targets = (self.inputs.sum(dim=1) > 0).long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 2))
        self.train_loss = MeanMetric()

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        loss = F.cross_entropy(self.net(inputs), targets)
        self.train_loss.update(loss.detach())
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> ResumableLoader:
        data = Numbered()
        return resumable_loader(data, EpochShuffle(data, 7), 8, 7, num_workers=2)


def fit_tiny(folder: Path, *extra: Callback, ckpt_path: Path | None = None) -> L.Trainer:
    L.seed_everything(7, workers=True)
    last = RunCheckpoint(
        dirpath=folder, filename="last", monitor=None, enable_version_counter=False
    )
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[
            RNGState(),
            MetricStates(),
            RestoreLoaderPosition(),
            last,
            *extra,
            StopAtBatch(),
        ],
        plugins=[AtomicCheckpointIO()],
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), ckpt_path=ckpt_path, weights_only=True)
    return trainer


def test_the_per_sample_path_with_workers_resumes_at_the_next_batch(tmp_path):
    # 12 batches an epoch, read by two workers: step 15 is batch 3 of epoch 1.
    straight = fit_tiny(tmp_path / "straight")
    with pytest.raises(SIGTERMException):
        fit_tiny(tmp_path / "stopped", SignalAt(15, "SIGTERM"))
    last = tmp_path / "stopped" / "last.ckpt"
    assert loader_states(torch.load(last, weights_only=True)) == [{"epoch": 1, "batches": 3}]
    resumed = fit_tiny(tmp_path / "resumed", ckpt_path=last)
    assert resumed.global_step == straight.global_step == 24
    assert resumed.callback_metrics["train/loss"] == straight.callback_metrics["train/loss"]
    expected, actual = straight.lightning_module.state_dict(), resumed.lightning_module.state_dict()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


@pytest.mark.slow
def test_a_real_sigterm_saves_the_batch_it_names(tmp_path):
    stderr = interrupt_after_first_epoch(start_training(tmp_path), tmp_path, signal.SIGTERM)
    found = re.search(r"at step (\d+), after batch (\d+) of epoch (\d+)\. (\S+) holds", stderr)
    assert found, stderr
    step, batches, epoch, path = *map(int, found.groups()[:3]), found[4]
    checkpoint = torch.load(path, weights_only=True)
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (step, epoch)
    assert loader_states(checkpoint) == [{"epoch": epoch, "batches": batches}]
    assert f"goes on at batch {batches + 1}" in stderr
