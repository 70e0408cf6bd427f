"""The loggers users bring: MLflow and W&B get the metrics, hyperparameters and run name that
TensorBoard and CSV get; a missing extra is named before any work; a real MLflow server."""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.harness.errors import ConfigError
from src.train import train

TINY = ["data.num_samples=200", "trainer.max_epochs=2"]
# What every logger must get: the module's metrics (their names as logged) ...
EXPECTED_METRICS = {"train/loss", "val/acc", "val/loss", "test/acc", "test/loss"}
# ... and the run's name, tags and the module's hyperparameters (nested ones as key/key).
EXPECTED_PARAMS = {"run_name": "first-try", "optimizer/lr": "0.01"}


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """W&B offline, its settings and caches in ``tmp_path``; the run finished afterwards."""
    wandb = pytest.importorskip("wandb", reason='logger=wandb needs pip install -e ".[wandb]"')
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")  # restored after Lightning's own setting
    yield wandb
    wandb.finish()


def mlflow_run(tracking_uri: str, experiment: str = "train"):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


@pytest.mark.slow  # an MLflow store and a W&B run created: 5-10 s
def test_every_logger_gets_the_same_metrics_params_and_run_name(make_cfg, tmp_path, wandb_offline):
    pytest.importorskip("mlflow", reason='logger=mlflow needs pip install -e ".[mlflow]"')
    logs = tmp_path / "logs"
    cfg = make_cfg("logger=many", f"paths.log_dir={logs}", "run_name=first-try", *TINY)
    cfg.optimizer.lr = 0.01
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    with open(run_dir / "csv" / "metrics.csv") as file:
        logged = set(next(csv.reader(file))) - {"epoch", "step"}
    assert logged >= EXPECTED_METRICS

    tensorboard = EventAccumulator(str(next((logs / "first-try").iterdir()))).Reload()
    assert set(tensorboard.Tags()["scalars"]) == logged

    run = mlflow_run(f"sqlite:///{logs}/mlflow.db")
    assert run.info.run_name == "first-try" and run.info.status == "FINISHED"
    assert set(run.data.metrics) - {"epoch"} == logged
    assert EXPECTED_PARAMS.items() <= run.data.params.items()

    wandb_run = wandb_offline.run
    assert wandb_run.name == "first-try" and wandb_run.offline
    summary = wandb_run.summary.keys()  # noqa: SIM118 - a W&B Summary is not iterable
    assert {k for k in summary if "/" in k} - {"trainer/global_step"} == logged
    config = dict(wandb_run.config)
    assert config["run_name"] == "first-try" and config["optimizer"]["lr"] == 0.01
    assert list((run_dir / "wandb").glob(f"offline-run-*-{wandb_run.id}/run-{wandb_run.id}.wandb"))


@pytest.mark.slow  # W&B starts a service process of its own
def test_each_wandb_run_of_a_process_is_a_run_of_its_own(make_cfg, wandb_offline):
    """As the jobs of a sweep in one process: Lightning's logger would reuse the first run."""
    ids = []
    for name in ("first", "second"):
        train(make_cfg("logger=wandb", f"run_name={name}", *TINY))
        ids.append((wandb_offline.run.id, wandb_offline.run.name))
    assert ids[0][0] != ids[1][0] and [name for _, name in ids] == ["first", "second"]


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_a_missing_extra_is_named_before_any_work(make_cfg, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    cfg = make_cfg(f"logger={package}")
    with pytest.raises(ConfigError, match=rf'pip install -e "\.\[{package}\]"') as error:
        train(cfg)
    assert len(str(error.value).splitlines()) == 2  # "invalid configuration:" and the line
    assert not Path(cfg.paths.output_dir).exists()


def log_as_a_job_when_told(store: str, go: Path, name: str) -> None:
    """One job of a parallel sweep: started, it waits for the others to create the store."""
    from src.harness.loggers import MLflowRun

    Path(f"{go}.{name}").touch()  # ready
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    logger = MLflowRun(tracking_uri=store, experiment_name="train", run_name=name)
    logger.log_metrics({"val/acc": 0.5})
    logger.finalize("success")


@pytest.mark.slow
def test_parallel_jobs_create_a_new_sqlite_store_together(tmp_path):
    """Without taking turns, all but one job failed with "table params already exists".
    The jobs are forked from this process, with MLflow imported: they start in milliseconds."""
    pytest.importorskip("mlflow", reason='logger=mlflow needs pip install -e ".[mlflow]"')
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imported before the forks

    store, go = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "go"
    fork = multiprocessing.get_context("fork")
    jobs = [
        fork.Process(target=log_as_a_job_when_told, args=(store, go, f"job{i}")) for i in range(3)
    ]
    for job in jobs:
        job.start()
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("go.job*"))) < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.1)
        go.touch()
        for job in jobs:
            job.join(timeout=120)
        assert [job.exitcode for job in jobs] == [0, 0, 0]
    finally:
        for job in jobs:
            job.kill()
    from mlflow import MlflowClient

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["job0", "job1", "job2"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1, stopped (its process group) however the test ends."""
    pytest.importorskip("mlflow", reason='logger=mlflow needs pip install -e ".[mlflow]"')
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", url.rsplit(":", 1)[1], "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path}/server.db"]
    command += ["--artifacts-destination", str(tmp_path / "artifacts")]
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"mlflow server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no /health in 120 s: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


@pytest.mark.slow
def test_a_run_logs_to_a_real_mlflow_server(make_cfg, mlflow_server):
    cfg = make_cfg(
        "logger=mlflow", f"logger.mlflow.tracking_uri={mlflow_server}", "run_name=first-try", *TINY
    )
    cfg.optimizer.lr = 0.01
    train(cfg)
    run = mlflow_run(mlflow_server)
    assert run.info.run_name == "first-try" and run.info.status == "FINISHED"
    assert set(run.data.metrics) >= EXPECTED_METRICS
    assert EXPECTED_PARAMS.items() <= run.data.params.items()
    assert run.data.params["tags"] == "['dev']"
