"""On a real SLURM scheduler: a sweep, DDP in two srun tasks, a job requeued and resumed.

The slow tests need ``sbatch`` and a live cluster (CI starts a one-node one with
``scripts/slurm_local.sh start``); elsewhere they skip and say why. Every job gets a name
unique to its test, and whatever a test leaves queued is cancelled by that name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback

from src.harness.build import build_trainer
from src.harness.problems import Problems
from src.models.module import SupervisedModule
from src.train import train
from tests.conftest import QUIET, ROOT, compose_config, run_in_process

# Each job takes one of the node's cores; the local cluster's node has at least eight, so
# the tests' jobs run at once when pytest-xdist runs the tests at once.
PER_JOB = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
SMALL = ["data.num_samples=600", "optimizer=sgd", "optimizer.lr=0.05"]


def test_a_slurm_sweep_where_sbatch_is_missing_exits_1_with_one_paragraph(tmp_path, monkeypatch):
    path = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "sbatch").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    args = ("-m", "hydra/launcher=slurm", "seed=1,2", f"paths.log_dir={tmp_path}")
    result = run_in_process(*args, cwd=ROOT)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith("error: hydra/launcher=slurm submits")
    assert "no SLURM is reachable" in message and "sbatch command is not on the PATH" in message
    assert "scripts/slurm_local.sh start" in message and "hydra/launcher=submitit_local" in message
    assert not list(tmp_path.iterdir())  # no sweep folder made


def test_inside_a_submitit_job_lightning_leaves_the_requeue_to_submitit(make_cfg, monkeypatch):
    for name, value in {
        "SLURM_JOB_ID": "7",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
    }.items():
        monkeypatch.setenv(name, value)
    trainer = build_trainer(make_cfg(), Problems())
    lightning_alone = trainer._accelerator_connector.cluster_environment
    assert isinstance(lightning_alone, SLURMEnvironment) and lightning_alone.auto_requeue

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    environment = build_trainer(make_cfg(), Problems())._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and not environment.auto_requeue


def no_cluster_reason() -> str | None:
    """Why no SLURM job could run here, or None when a node answers and takes jobs."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on the PATH"
    try:
        states = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=20
        ).stdout.split()
    except subprocess.TimeoutExpired:
        states = ["(no answer in 20 s)"]
    # "planned": the scheduler keeps the node for a job that waits for its cores
    if {"idle", "mixed", "allocated", "completing", "planned"} & set(states):
        return None
    return f"no SLURM node is up (sinfo: {' '.join(states) or 'no answer'})"


@pytest.fixture
def slurm_job_name() -> Iterator[str]:
    """A name for this test's jobs; cancels what is left of them afterwards.

    Without a live cluster the test skips, or fails where REQUIRE_SLURM is set (CI, which
    starts one): a skipped test there would pass for a tested one.
    """
    reason = no_cluster_reason()
    if reason:
        message = f"{reason}; start one with: sudo bash scripts/slurm_local.sh start"
        if os.environ.get("REQUIRE_SLURM"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"pytest-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", f"--name={name}"], timeout=30, check=False)


def slurm_command(sweep: Path, job_name: str, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "src/train.py",
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.name={job_name}",
        *PER_JOB,
        *QUIET,
        f"hydra.sweep.dir={sweep}",
        *overrides,
    ]


def slurm_multirun(sweep: Path, job_name: str, *overrides: str) -> subprocess.CompletedProcess:
    command = slurm_command(sweep, job_name, *overrides)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the jobs inherit it through sbatch
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_2x2_sweep_on_slurm_writes_every_job_and_the_summary_despite_failing_jobs(
    tmp_path, slurm_job_name
):
    sweep = tmp_path / "sweep"
    # weight_decay=-1 makes the optimizer raise inside fit: jobs 1 and 3 fail
    result = slurm_multirun(
        sweep,
        slurm_job_name,
        "data=digits",
        "optimizer.lr=0.01,0.001",
        "optimizer.weight_decay=0,-1",
        "trainer.max_epochs=2",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: 2 of 4 jobs did not finish (jobs 1, 3)" in result.stderr
    (submission,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "#SBATCH --array=0-3" in submission.read_text()  # one array job, four tasks
    assert len(list(sweep.glob(".submitit/*_*/*_result.pkl"))) == 4
    for job in ("0", "2"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["best_model_path"] == str(sweep / job / "checkpoints" / "best.ckpt")
        assert metrics["test/acc"] > 0.5
    for job in ("1", "3"):
        assert "Invalid weight_decay value: -1" in (sweep / job / "error.txt").read_text()
    summary = (sweep / "summary.md").read_text()
    assert "4 jobs: 2 ok, 0 pruned, 2 failed, 0 missing" in summary


@pytest.mark.slow
def test_ddp_in_two_srun_tasks_writes_one_run_whose_metrics_equal_one_process(
    tmp_path, slurm_job_name
):
    sweep = tmp_path / "sweep"
    result = slurm_multirun(
        sweep,
        slurm_job_name,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "hydra.launcher.tasks_per_node=2",
        "data.num_samples=2000",
        "trainer.max_epochs=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [".submitit", "0"]
    run = sweep / "0"
    assert sorted(p.name for p in run.iterdir()) == [
        ".hydra",
        "checkpoints",
        "config.yaml",
        "metrics.json",
        "run_info.json",
        "train.log",
    ]
    # Each rank is one srun task, and both log into the run's one log: Lightning took the
    # ranks from SLURM.
    log = (run / "train.log").read_text()
    for rank in (0, 1):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log
    assert len(list(sweep.glob(".submitit/*/*_log.out"))) == 2  # one per srun task
    assert "distributed_backend=gloo" in log
    metrics = json.loads((run / "metrics.json").read_text())
    # The same weights evaluated by one process: the two ranks' metrics were reduced.
    cfg = compose_config(["data.num_samples=2000"], tmp_path / "single")
    one = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    last = SupervisedModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    (val,) = one.validate(last, datamodule=instantiate(cfg.data), verbose=False)
    best = SupervisedModule.load_from_checkpoint(metrics["best_model_path"])
    (test,) = one.test(best, datamodule=instantiate(cfg.data), verbose=False)
    assert val["val/acc"] == pytest.approx(metrics["val/acc"], abs=1e-6)
    assert val["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-5)
    assert test["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert metrics["val/acc"] > 0.5


class SlowFirstAttempt(Callback):
    """Stretches each epoch of a job's first attempt so that it is interrupted mid-training."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if "SLURM_RESTART_COUNT" not in os.environ:  # set from the first requeue on
            time.sleep(self.seconds)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("interruption", "time_limit"),
    [
        # a 2-minute limit: SLURM sends SIGUSR2 30 to 60 s in, and submitit requeues the job
        pytest.param(
            "time limit",
            ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60"],
            id="time-limit",
        ),
        # the scheduler itself requeues the running job (SIGTERM, then a new start), as a
        # preemption with PreemptMode=REQUEUE does
        pytest.param("scontrol requeue", [], id="scontrol-requeue"),
    ],
)
def test_an_interrupted_job_is_requeued_and_finishes_from_its_checkpoint(
    tmp_path, slurm_job_name, interruption, time_limit
):
    training = [*SMALL, "trainer.max_epochs=40", "trainer.deterministic=true"]
    command = slurm_command(
        tmp_path / "sweep",
        slurm_job_name,
        *training,
        *time_limit,
        # the first attempt alone would train for over 2 minutes
        "+callbacks.slow_first_attempt._target_=tests.test_slurm.SlowFirstAttempt",
        "+callbacks.slow_first_attempt.seconds=3",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "output", "w") as output:
        sweep = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    job, submitit = tmp_path / "sweep" / "0", tmp_path / "sweep" / ".submitit"
    try:
        if interruption == "scontrol requeue":
            deadline = time.monotonic() + 120
            while not (job / "checkpoints" / "last.ckpt").exists():
                assert sweep.poll() is None, (tmp_path / "output").read_text()[-3000:]
                assert time.monotonic() < deadline, "the job finished no epoch within 120 s"
                time.sleep(0.5)
            (job_id,) = [p.name for p in submitit.iterdir() if p.is_dir()]
            subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        sweep.wait(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, (tmp_path / "output").read_text()[-3000:]
    job_output = "".join(path.read_text() for path in submitit.glob("*/*_0_log.*"))
    if interruption == "time limit":
        assert "this job is timed-out" in job_output  # submitit's SIGUSR2 handler
        assert "Requeued job" in job_output
    else:
        assert "Training stopped by SIGTERM" in job_output
    assert "left by an earlier attempt of this job" in (job / "train.log").read_text()
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 39
    # Metrics intact: the same as one uninterrupted run of the same training.
    resumed = json.loads((job / "metrics.json").read_text())
    straight = train(compose_config([*QUIET, *training], tmp_path / "straight"))
    for name in ("train/loss", "val/loss", "val/acc", "test/acc"):
        assert resumed[name] == pytest.approx(straight[name], rel=1e-6), name


@pytest.mark.slow
def test_a_search_runs_its_trials_as_slurm_jobs_that_report_to_the_study(tmp_path, slurm_job_name):
    import optuna

    sweep = tmp_path / "sweep"
    result = slurm_multirun(
        sweep,
        slurm_job_name,
        "hparams_search=lenet_optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",  # two trials at a time: one array job of two tasks each
        "trainer.max_epochs=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(sweep.glob(".submitit/*/*_submission.sh"))) == 2
    study = optuna.load_study(study_name="lenet_optuna", storage=f"sqlite:///{sweep}/optuna.db")
    trials = study.get_trials()
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 4
    # each job, on its node, reported every epoch's val/acc to its trial (for the pruner)
    assert all(sorted(trial.intermediate_values) == [0, 1] for trial in trials)
    assert all((sweep / str(trial.number) / "metrics.json").is_file() for trial in trials)
