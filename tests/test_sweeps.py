"""Sweeps: failed jobs, resumed sweep folders, summaries and launchers (searches: test_search).

Multiruns run Hydra's real command line, ``python src/train.py -m``, in this process
(``run_in_process``); a stopped sweep's tests run it in a subprocess, as signals need.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from src.harness.summary import summarize
from src.harness.sweep_jobs import read_job
from src.harness.sweeps import ERROR_FILE, TRIAL_ENV, sweep_job
from src.train import train
from tests.conftest import QUIET, ROOT, compose_config, run_in_process, start_in_fork, wait_for_exit

# One short epoch, not fast_dev_run: the jobs keep checkpoints, as real ones do (and a job
# run again resumes from its own).
TINY = [*QUIET, "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
TINY += ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def multirun(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_in_process("-m", *args, *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=ROOT)


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open() as file:
        return list(csv.DictReader(file))


def test_a_sweep_runs_every_job_despite_a_failing_one_and_summarises_them(tmp_path):
    sweep = tmp_path / "sweep"
    # weight_decay=-1 makes the optimizer raise inside fit: a crash, not a config check
    result = multirun(sweep, "model=mlp,lenet", "data=digits", "optimizer.weight_decay=0,-1")

    assert result.returncode == 1
    assert "error: 2 of 4 jobs did not finish (jobs 1, 3)" in result.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    for failed in ("1", "3"):
        error = (sweep / failed / ERROR_FILE).read_text()
        assert "Traceback" in error and "Invalid weight_decay value: -1" in error
        assert not (sweep / failed / "metrics.json").exists()
    rows = summary_rows(sweep)
    assert [(r["job"], r["status"]) for r in rows[2:]] == [("1", "failed"), ("3", "failed")]
    finished = rows[:2]
    assert {r["model"] for r in finished} == {"mlp", "lenet"}
    assert all(r["status"] == "ok" and r["optimizer.weight_decay"] == "0" for r in finished)
    assert float(finished[0]["val/acc_best"]) >= float(finished[1]["val/acc_best"])  # best first
    assert "Invalid weight_decay value" in rows[2]["error"]
    assert "| job | status | model | optimizer.weight_decay | val/acc_best |" in result.stdout
    assert "Same in every job: `data=digits`" in (sweep / "summary.md").read_text()
    assert "Ranked by val/acc_best (higher is better)" in result.stdout
    assert (sweep / "summary.png").stat().st_size > 0


def test_a_sweep_job_is_skipped_when_it_finished_and_rerun_when_it_did_not(tmp_path):
    def must_not_run(cfg):
        raise AssertionError("a finished job was trained again")

    def crash(cfg):
        raise RuntimeError("out of memory")

    run_dir = tmp_path / "run"
    cfg = compose_config([*TINY, "data=digits"], run_dir)
    first = sweep_job(train, cfg)
    assert first == json.loads((run_dir / "metrics.json").read_text())["val/acc_best"]
    assert sweep_job(must_not_run, cfg) == first

    # the same folder with other overrides (another sweep, reordered values) runs again
    other = compose_config([*TINY, "data=digits", "optimizer.lr=0.1"], run_dir)
    assert sweep_job(crash, other) is None
    assert "RuntimeError: out of memory" in (run_dir / ERROR_FILE).read_text()
    assert not (run_dir / "metrics.json").exists()  # the other job's result is not kept
    sweep_job(train, other)
    assert not (run_dir / ERROR_FILE).exists()
    assert "optimizer.lr=0.1" in json.loads((run_dir / "run_info.json").read_text())["overrides"]


def test_a_sweep_rerun_with_other_values_keeps_the_earlier_finished_jobs_whole(tmp_path):
    sweep = tmp_path / "sweep"
    assert multirun(sweep, "data=digits", "optimizer.lr=0.01,0.001").returncode == 0
    earlier = {name: (sweep / "0" / name).read_text() for name in ("metrics.json", "config.yaml")}

    result = multirun(sweep, "data=digits", "optimizer.lr=0.003,0.001")

    assert result.returncode == 0, result.stderr
    aside = sweep / "0-earlier-1"
    assert {name: (aside / name).read_text() for name in earlier} == earlier
    assert "optimizer.lr=0.01" in (aside / ".hydra" / "overrides.yaml").read_text()
    rows = {row["job"]: row for row in summary_rows(sweep)}
    lrs = {job: (row["status"], row["optimizer.lr"]) for job, row in rows.items()}
    assert lrs == {"0-earlier-1": ("ok", "0.01"), "0": ("ok", "0.003"), "1": ("ok", "0.001")}
    assert "Skipped: this job already finished" in result.stdout + result.stderr  # job 1


@pytest.mark.slow  # a sweep in a process of its own, stopped by a signal
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_sweep_prints_once_the_command_that_goes_on_with_it(tmp_path, launcher, signum):
    sweep = tmp_path / "sweep"
    overrides = ["data=digits", "optimizer.lr=0.01,0.001", f"hydra/launcher={launcher}", *QUIET]
    overrides += ["trainer.max_epochs=100", "trainer.limit_train_batches=2"]
    output = tmp_path / "stderr.txt"
    if launcher == "basic":  # the jobs run in the sweep's process: forked, it starts at once
        process = start_in_fork(
            "-m", *overrides, f"hydra.sweep.dir={sweep}", cwd=ROOT, stderr=output
        )
    else:
        command = [sys.executable, "src/train.py", "-m", *overrides, f"hydra.sweep.dir={sweep}"]
        with output.open("w") as file:  # a session of its own, as a terminal gives a command
            process = subprocess.Popen(command, cwd=ROOT, stderr=file, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (sweep / "0" / "checkpoints" / "last.ckpt").exists():
            assert time.monotonic() < deadline, "no epoch ended"
            time.sleep(0.1)
        if signum == signal.SIGINT:  # Ctrl-C reaches every process of the sweep
            os.killpg(process.pid, signum)
        else:  # kill PID: the sweep's main process only
            os.kill(process.pid, signum)
        returncode = wait_for_exit(process, timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    stderr = output.read_text()

    assert returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "ckpt_path=" not in stderr  # no job's own command
    assert stderr.count("Go on with:") == 1, stderr
    assert f"The sweep stopped by {signal.Signals(signum).name}. {sweep} keeps" in stderr
    go_on = shlex.split(stderr.split("Go on with:")[1].strip().splitlines()[0])
    assert go_on[:3] == ["python", "src/train.py", "-m"]
    assert sorted(go_on[3:-1]) == sorted(overrides) and go_on[-1] == f"hydra.sweep.dir={sweep}"


def test_a_resumed_run_that_trains_no_epoch_says_why_it_has_no_training_metrics(tmp_path):
    first = compose_config([*TINY, "data=digits"], tmp_path / "first")
    train(first)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    again = compose_config([*TINY, "data=digits", f"ckpt_path={last}"], tmp_path / "sweep" / "0")

    metrics = sweep_job(train, again)  # as a sweep job stopped while testing, run again

    written = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    epochs = [key for key in written if key.startswith(("train/", "val/"))]
    assert epochs == ["val/acc_best"]  # no epoch's metrics; the best one is the checkpoint's
    assert written["note"].startswith(f"no train/ or val/ metrics: ckpt_path={last} had trained")
    assert metrics == written["val/acc_best"]  # the checkpoint's record of its best score
    (tmp_path / "sweep" / "0" / ".hydra").mkdir()  # as Hydra writes it for a sweep's job
    (tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").write_text("[]")
    job = read_job(tmp_path / "sweep" / "0")  # a row of the sweep's summary
    assert (job.status, job.error) == ("ok", written["note"])


def test_an_optimized_metric_never_logged_ends_the_sweep_with_a_clear_error(tmp_path):
    cfg = compose_config([*TINY, "optimized_metric=val/accuracy"], tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        sweep_job(lambda cfg: {"val/acc": 0.9, "val/loss": 0.3, "wall_time_s": 1.0}, cfg)
    message = str(exit_info.value.code)
    assert "optimized_metric='val/accuracy' was never logged" in message
    assert "The job logged: val/acc, val/loss." in message


def test_jobs_that_never_validate_go_unranked_in_a_sweep_and_end_a_search(tmp_path, monkeypatch):
    cfg = compose_config([*TINY, "data=digits", "trainer.limit_val_batches=0"], tmp_path / "run")
    assert sweep_job(train, cfg) is None  # a sweep of jobs without validation goes on
    assert (tmp_path / "run" / "metrics.json").is_file()
    (tmp_path / "run" / "metrics.json").unlink()
    monkeypatch.setenv(TRIAL_ENV, "1")  # as a search sets it for its jobs
    with pytest.raises(SystemExit) as exit_info:
        sweep_job(train, cfg)
    message = str(exit_info.value.code)
    assert "optimized_metric='val/acc_best' was never logged" in message
    assert message.endswith(
        ", train/loss. val/acc_best is the job's best validation score, and the job never "
        "validated (trainer.limit_val_batches=0, or trainer.check_val_every_n_epoch above "
        "trainer.max_epochs). Validate at least once, or set optimized_metric to one of them "
        "(for a search, with the matching direction)."
    )


def test_a_fast_dev_run_job_is_ranked_by_its_validation_without_a_checkpoint(tmp_path):
    cfg = compose_config([*QUIET, "data=digits", "trainer.fast_dev_run=true"], tmp_path / "run")
    score = sweep_job(train, cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_model_path"] is None  # fast_dev_run saves no checkpoint
    assert score == metrics["val/acc_best"] == metrics["val/acc"]  # its one validation
    assert metrics["best_epoch"] == 0


def write_job(
    sweep: Path,
    name: str,
    overrides: list[str],
    metrics: dict | None,
    monitor=("val/acc", "max"),
    sweeper: dict | None = None,
) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"sweeper": sweeper or {}}})
    )
    data = {"monitor": monitor[0], "monitor_mode": monitor[1]}
    config = {"optimized_metric": "${data.monitor}_best", "data": data}  # as Hydra saves it
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def test_a_fold_sweep_is_summarised_as_mean_and_std_per_setting(tmp_path):
    accuracies = {"mlp": [0.7, 0.8, 0.9], "lenet": [0.9, 0.95, 1.0]}
    for m, (model, values) in enumerate(accuracies.items()):
        for fold, value in enumerate(values):
            overrides = [f"model={model}", "data.num_folds=3", f"data.fold={fold}"]
            metrics = {"val/acc_best": value, "test/acc": value - 0.1, "run_name": "x"}
            write_job(tmp_path, str(3 * m + fold), overrides, metrics)

    summary = summarize(tmp_path)

    assert [job.name for job in summary.jobs][:2] == ["5", "4"]  # best first
    assert "| model=mlp | 3/3 | 0.8 ± 0.1 | 0.7 ± 0.1 |" in summary.markdown
    assert "| model=lenet | 3/3 | 0.95 ± 0.05 | 0.85 ± 0.05 |" in summary.markdown
    assert "Same in every job: `data.num_folds=3`" in summary.markdown


def test_a_loss_is_ranked_lowest_first_and_unfinished_jobs_are_listed_last(tmp_path):
    regression = ("val/loss", "min")
    write_job(tmp_path, "0", ["optimizer.lr=0.1"], {"val/loss_best": 0.5}, regression)
    write_job(tmp_path, "1", ["optimizer.lr=0.01"], {"val/loss_best": 0.2}, regression)
    write_job(tmp_path, "2", ["optimizer.lr=0.001"], None, regression)  # killed, or never ran

    summary = summarize(tmp_path)

    assert [(job.name, job.status) for job in summary.jobs] == [
        ("1", "ok"),
        ("0", "ok"),
        ("2", "missing"),
    ]
    assert "Ranked by val/loss_best (lower is better)" in summary.markdown
    assert [row["job"] for row in summary_rows(tmp_path)] == ["1", "0", "2"]


def test_jobs_are_ranked_by_their_best_checkpoint_not_their_last_epoch(tmp_path):
    # job 0 peaked early and then declined; job 1 ended higher but never reached job 0's best
    write_job(tmp_path, "0", ["optimizer.lr=0.1"], {"val/acc": 0.5, "val/acc_best": 0.9})
    write_job(tmp_path, "1", ["optimizer.lr=0.01"], {"val/acc": 0.8, "val/acc_best": 0.8})

    summary = summarize(tmp_path)

    assert [job.name for job in summary.jobs] == ["0", "1"]
    assert "Ranked by val/acc_best (higher is better)" in summary.markdown


def test_a_killed_sweep_is_summarised_with_every_job_it_asked_for(tmp_path):
    sweep = tmp_path / "sweep"
    result = multirun(sweep, "data=digits", "optimizer=glob(ada*)")  # adagrad, adam, adamw
    assert result.returncode == 0, result.stderr
    # as if killed during job 1: job 2 never started, job 1 left no metrics.json
    shutil.rmtree(sweep / "2")
    (sweep / "1" / "metrics.json").unlink()

    summary = summarize(sweep)

    assert [(job.name, job.status, job.overrides["optimizer"]) for job in summary.jobs] == [
        ("0", "ok", "adagrad"),
        ("1", "missing", "adam"),
        ("2", "missing", "adamw"),
    ]
    assert "3 jobs: 1 ok, 0 pruned, 0 failed, 2 missing." in summary.markdown
    assert "| 2 | missing | adamw |" in summary.markdown
    assert [row["optimizer"] for row in summary_rows(sweep)] == ["adagrad", "adam", "adamw"]


def test_the_slurm_launcher_takes_its_cluster_settings_from_the_config(tmp_path):
    cfg = compose_config(
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"],
        tmp_path,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 4, 240)


def test_the_schedule_script_runs_each_experiment_with_the_extra_arguments(tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls.txt"}\n')
    fake_python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake_python)}
    result = subprocess.run(
        ["bash", "scripts/schedule.sh", "logger=none"], cwd=ROOT, env=env, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) >= 3
    assert all(call.startswith("src/train.py") and call.endswith("logger=none") for call in calls)


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_and_a_rerun_resumes_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["data=digits", "optimizer.lr=0.01,0.001"]
    result = multirun(sweep, *args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert result.returncode == 0, result.stderr
    spans = [
        ((sweep / job / ".hydra").stat().st_mtime, (sweep / job / "metrics.json").stat().st_mtime)
        for job in ("0", "1")
    ]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "the jobs did not overlap"

    # a sweep killed after job 0: re-running into its folder runs job 1 only
    (sweep / "1" / "metrics.json").unlink()
    finished_at = (sweep / "0" / "metrics.json").stat().st_mtime
    result = multirun(sweep, *args)
    assert result.returncode == 0, result.stderr
    assert (sweep / "0" / "metrics.json").stat().st_mtime == finished_at
    assert "Skipped: this job already finished" in (sweep / "0" / "train.log").read_text()
    assert (sweep / "1" / "metrics.json").is_file()
    assert [row["status"] for row in summary_rows(sweep)] == ["ok", "ok"]


def parent_of(pid: int) -> int | None:
    """The parent of a running process (from /proc); None once it has exited."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return None
    return None if state == "Z" else int(parent)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_killing_a_joblib_sweep_ends_its_worker_processes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["data=digits", "optimizer.lr=0.01,0.001", "trainer.max_epochs=100000", *QUIET]
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]
    command = [sys.executable, "src/train.py", "-m", *args, *launcher]
    main = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not all((sweep / job / "checkpoints" / "last.ckpt").is_file() for job in "01"):
            assert main.poll() is None and time.monotonic() < deadline, "no job started training"
            time.sleep(0.5)
        pids = [int(path.name) for path in Path("/proc").iterdir() if path.name.isdigit()]
        workers = [pid for pid in pids if parent_of(pid) == main.pid]  # and loky's helpers
        assert len(workers) >= 2

        main.kill()
        main.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(parent_of(pid) is not None for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.5)

        assert [pid for pid in workers if parent_of(pid) is not None] == []
        for job in "01":  # each stopped as an interrupted run does, then its worker ended
            assert "Training stopped by SIGTERM" in (sweep / job / "train.log").read_text()
    finally:
        main.kill()
        for pid in workers:
            if parent_of(pid) is not None:
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_submitit_local_launcher_runs_a_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = multirun(sweep, "data=digits", "hydra/launcher=submitit_local")
    assert result.returncode == 0, result.stderr
    assert json.loads((sweep / "0" / "metrics.json").read_text())["val/acc"] >= 0
    assert (sweep / ".submitit").is_dir()
