"""Optuna searches (src/harness/search.py): the search space, pruning, failed trials
as outcomes, a stored study that goes on after a stop, and the searches docs/sweeps.md shows.

A search needs Hydra's real command line: those tests run ``python src/train.py`` in a
subprocess on the digits (LeNet) or a tiny housing CSV (MLP), a few epochs per trial.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from src.harness.search import Search, quiet_optuna, search_space
from tests.conftest import (
    QUIET,
    ROOT,
    SHARED_DATA,
    run_in_forks,
    run_in_process,
    start_in_fork,
    wait_for_exit,
)
from tests.test_sweeps import summary_rows


def search(sweep_dir: Path, *args: str, epochs: int = 2) -> subprocess.CompletedProcess:
    settings = (f"trainer.max_epochs={epochs}", f"hydra.sweep.dir={sweep_dir}")
    return run_in_process(*args, *QUIET, *settings, cwd=ROOT)


def study(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def states(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return [trial.state.name for trial in trials]


def test_the_search_space_keeps_the_syntax_of_hydras_optuna_sweeper():
    lines = [
        "optimizer=choice(adam, sgd)",
        "optimizer.lr=tag(log, interval(0.0001, 0.1))",
        "model.net.dropout=interval(0, 0.5)",
        "data.batch_size=range(32, 129, 32)",
        "trainer.max_epochs=tag(int, interval(2, 9))",
        "model.net.hidden_sizes=choice([64],[128,64])",
        "data=digits",
    ]
    space, fixed = search_space(OverridesParser.create().parse_overrides(lines))
    assert space == {
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
        "optimizer.lr": FloatDistribution(0.0001, 0.1, log=True),
        "model.net.dropout": FloatDistribution(0, 0.5),
        "data.batch_size": IntDistribution(32, 128, step=32),
        "trainer.max_epochs": IntDistribution(2, 9),
        "model.net.hidden_sizes": CategoricalDistribution(["[64]", "[128,64]"]),
    }
    assert fixed == ["data=digits"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("hydra/sweeper/sampler=grid", "sampler=grid needs choice(...) for every parameter"),
        ("hydra.sweeper.direction=minimize", "but val/acc_best is better higher"),
        ("hydra.sweeper.storage=nonsense", "cannot open the study 'lenet_optuna' in"),
    ],
)
def test_a_search_with_a_bad_setting_stops_in_one_line_before_any_trial(tmp_path, setting, message):
    result = search(tmp_path / "sweep", "hparams_search=lenet_optuna", setting)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "sweep").exists()  # no trial, no study, no empty sweep folder


SPACE = {"x": FloatDistribution(0, 1), "y": FloatDistribution(1e-4, 1, log=True)}
GRID = {"x": CategoricalDistribution([0.1, 0.2, 0.3, 0.4]), "y": CategoricalDistribution([1, 2])}


def project_sampler(name: str, seed: int, space: dict = SPACE) -> optuna.samplers.BaseSampler:
    """The sampler a search builds from configs/hydra/sweeper/sampler/NAME.yaml."""
    settings = OmegaConf.load(ROOT / "configs" / "hydra" / "sweeper" / "sampler" / f"{name}.yaml")
    settings.seed = seed
    search = Search("minimize", 6, 1, "", "s", settings, None, 60, None)
    search.config = OmegaConf.create(
        {"optimized_metric": "val/loss", "data": {"monitor": "val/loss", "monitor_mode": "min"}}
    )
    return search.algorithms(space)[0]


def drawn(studies: list[optuna.Study], rounds: int, space: dict = SPACE) -> list[tuple]:
    """Each study in turn asks for a trial and tells its outcome, ``rounds`` times."""
    points = []
    for _ in range(rounds):
        for one in studies:
            trial = one.ask(space)
            one.tell(trial, trial.params["x"] * trial.params["y"])
            points.append((trial.params["x"], trial.params["y"]))
    return points


# (CMA-ES needs the cmaes package, which the project does not install)
@pytest.mark.parametrize("name", ["random", "tpe", "gp"])
@pytest.mark.parametrize("workers", ["at once", "one after the other (a resumed search)"])
def test_workers_and_resumed_searches_of_one_study_never_draw_the_same_parameters(
    tmp_path, name, workers
):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    studies = [
        optuna.create_study(
            storage=storage, study_name="s", sampler=project_sampler(name, 0), load_if_exists=True
        )
        for _ in range(2)
    ]
    if workers == "at once":
        points = drawn(studies, rounds=4)
    else:
        points = drawn(studies[:1], rounds=4) + drawn(studies[1:], rounds=4)
    assert len(set(points)) == len(points) == 8


@pytest.mark.parametrize("name", ["random", "tpe", "gp", "grid"])
def test_a_search_from_one_seed_draws_the_same_parameters_again(name):
    def search(seed: int) -> list[tuple]:
        study = optuna.create_study(sampler=project_sampler(name, seed, GRID))
        return drawn([study], rounds=7, space=GRID)

    assert search(7) == search(7)
    assert search(7) != search(8)


def test_optuna_logs_through_hydras_logging_without_colour_codes(caplog, capfd):
    quiet_optuna()
    try:
        with caplog.at_level(logging.INFO):
            optuna.create_study()  # logs that it created a study
        assert "A new study created in memory" in caplog.text  # passed on to Hydra's logging
        assert "\x1b[" not in capfd.readouterr().err  # not by Optuna's own colour handler
    finally:
        optuna.logging.enable_default_handler()  # as it was for the other tests
        optuna.logging.disable_propagation()


def test_a_search_prunes_and_fails_trials_as_outcomes_and_exits_0(tmp_path):
    sweep = tmp_path / "sweep"
    # lr 1e-6 keeps val/acc near chance: a pruner that asks for 0.5 from the first epoch on
    # stops those trials; weight_decay=-1 makes the optimizer refuse to start (a failed trial)
    result = search(
        sweep,
        "-m",
        "hparams_search=lenet_optuna",
        "hydra.sweeper.n_trials=6",
        "hydra/sweeper/sampler=grid",
        "optimizer=adam",
        "data.batch_size=64",
        "optimizer.lr=choice(0.01, 0.000001)",
        "optimizer.weight_decay=choice(0, -1)",
        "hydra/sweeper/pruner=none",
        "++hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 0.5}",
    )
    assert result.returncode == 0, result.stderr
    trials = study(f"sqlite:///{sweep}/optuna.db", "lenet_optuna")
    by_params = {(t.params["optimizer.lr"], t.params["optimizer.weight_decay"]): t for t in trials}
    assert len(trials) == 4  # the grid's 4 settings, each once
    assert by_params[(0.01, 0)].state.name == "COMPLETE"
    assert by_params[(0.000001, 0)].state.name == "PRUNED"
    assert by_params[(0.000001, 0)].intermediate_values  # reported each epoch until pruned
    assert {by_params[(lr, -1)].state.name for lr in (0.01, 0.000001)} == {"FAIL"}
    # one line per failed trial, with the reason; the summary has the same outcomes
    output = result.stdout + result.stderr
    failed_lines = [line for line in output.splitlines() if "failed: " in line]
    assert len(failed_lines) == 2
    assert all("weight_decay value: -1" in line for line in failed_lines)
    assert "Search lenet_optuna: 1 complete, 1 pruned, 2 failed trials." in result.stderr
    assert sorted(row["status"] for row in summary_rows(sweep)) == [
        "failed",
        "failed",
        "ok",
        "pruned",
    ]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"optimizer.lr": 0.01, "optimizer.weight_decay": 0}
    # the run is named by the values drawn (the command line's choices included), not the fixed
    metrics = json.loads((Path(best["best_folder"]) / "metrics.json").read_text())
    assert metrics["run_name"] == "lenet-digits lr=0.01 weight_decay=0"


def test_a_search_with_no_complete_trial_exits_1(tmp_path):
    sweep = tmp_path / "sweep"
    result = search(
        sweep,
        "-m",
        "hparams_search=lenet_optuna",
        "hydra.sweeper.n_trials=2",
        "optimizer.weight_decay=-1",
        epochs=1,
    )
    assert result.returncode == 1
    assert "error: 2 of 2 jobs did not finish" in result.stderr
    assert states(study(f"sqlite:///{sweep}/optuna.db", "lenet_optuna")) == ["FAIL", "FAIL"]


def test_a_fast_dev_run_search_completes_on_each_trials_validation(tmp_path):
    """The smoke test a user (and lightning-hydra-template's own test) runs first: no
    checkpoint is saved, and each trial still has its best validation score."""
    sweep = tmp_path / "sweep"
    result = search(
        sweep,
        "hparams_search=lenet_optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.fast_dev_run=true",
    )
    assert result.returncode == 0, result.stderr
    assert states(study(f"sqlite:///{sweep}/optuna.db", "lenet_optuna")) == ["COMPLETE"] * 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    metrics = json.loads((Path(best["best_folder"]) / "metrics.json").read_text())
    assert best["best_value"] == metrics["val/acc_best"] == metrics["val/acc"]


@pytest.mark.slow
def test_a_search_on_a_metric_never_logged_stops_after_the_first_trial(tmp_path):
    sweep = tmp_path / "sweep"
    result = search(
        sweep, "hparams_search=lenet_optuna", "hydra.sweeper.n_trials=3", "optimized_metric=val/f1"
    )
    assert result.returncode == 1
    assert "optimized_metric='val/f1' was never logged" in result.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0"]
    assert states(study(f"sqlite:///{sweep}/optuna.db", "lenet_optuna")) == ["FAIL"]


def wait_for(path_glob: str, root: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(root.glob(path_glob)):
        assert time.monotonic() < deadline, f"no {path_glob} under {root} after {timeout_s} s"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "launcher"), [("SIGTERM", "basic"), ("SIGKILL", "basic"), ("SIGTERM", "joblib")]
)
def test_a_stopped_search_goes_on_with_its_finished_trials(tmp_path, how, launcher):
    """SIGTERM reaches the search's main process only (kill PID); under joblib the trial
    runs in a worker process, which the main process's exit stops."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    arguments = [
        *("hparams_search=lenet_optuna", *QUIET, f"hydra/launcher={launcher}"),
        *("hydra.sweeper.n_trials=3", "trainer.max_epochs=8", f"paths.log_dir={tmp_path}"),
        *(f"hydra.sweeper.storage={storage}", "hydra/sweeper/pruner=none"),
        "hydra.sweeper.heartbeat_interval=1",
    ]
    output = tmp_path / "stderr.txt"
    if launcher == "basic":  # the trials run in the search's process: forked, it starts at once
        process = start_in_fork(*arguments, cwd=ROOT, stderr=output)
    else:
        with output.open("w") as file:
            command = [sys.executable, "src/train.py", *arguments]
            process = subprocess.Popen(command, cwd=ROOT, stderr=file, start_new_session=True)
    try:
        wait_for("train/multiruns/*/1/checkpoints/last.ckpt", tmp_path)  # trial 1 under way
    finally:
        os.kill(process.pid, getattr(signal, how))
        returncode = wait_for_exit(process, timeout=60)
    assert returncode == {"SIGTERM": 143, "SIGKILL": -9}[how]
    if how == "SIGTERM":
        stderr = output.read_text()
        assert "The search stopped; the trials it finished (1) are kept in" in stderr
        assert stderr.count("Go on with:") == 1
    else:
        time.sleep(2.5)  # no heartbeat for longer than its grace period (2 intervals)
    assert states(study(storage, "lenet_optuna"))[0] == "COMPLETE"

    second = run_in_process(*arguments, cwd=ROOT)

    assert second.returncode == 0, second.stderr
    trials = study(storage, "lenet_optuna")
    # trial 0 kept; trial 1, stopped, failed and ran again first, as trial 2
    assert states(trials) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].params == trials[1].params
    sweeps = sorted((tmp_path / "train" / "multiruns").iterdir())
    assert sorted(p.name for p in sweeps[1].iterdir() if p.name.isdigit()) == ["2", "3"]


def open_shared_study_when_told(storage: str, go: Path, ready: Path) -> None:
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    search = Search("minimize", 1, 1, storage, "shared", {}, None, 60, None)
    search.open_study(optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())


@pytest.mark.slow  # four processes of its own
def test_workers_that_start_at_once_on_a_new_database_all_open_the_study(tmp_path):
    # as the workers of a SLURM array would: each, once started, waits for the signal to
    # open the study at the same moment, so that several create the new database's tables.
    # Forked from this process, they start in milliseconds, with everything imported.
    storage, go = f"sqlite:///{tmp_path}/optuna.db", tmp_path / "go"
    fork = multiprocessing.get_context("fork")
    workers = [
        fork.Process(target=open_shared_study_when_told, args=(storage, go, tmp_path / f"ready{n}"))
        for n in range(4)
    ]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready*"))) < 4:
        assert time.monotonic() < deadline, "the workers did not start within 120 s"
        time.sleep(0.01)
    go.touch()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert optuna.get_all_study_names(storage) == ["shared"]


@pytest.fixture
def postgresql() -> Iterator[str]:
    """A PostgreSQL server of this test's own on 127.0.0.1 (Debian's ``postgresql``), its URL.

    Its folder is not under ``tmp_path``: the server refuses to run as root, and the user
    it runs as cannot enter pytest's private temporary folders.
    """
    pytest.importorskip("psycopg", reason="needs the PostgreSQL driver (the dev extra)")
    found = [shutil.which("pg_ctl"), *map(str, Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))]
    pg_ctl = next((Path(path) for path in found if path), None)
    if pg_ctl is None:
        pytest.skip("needs PostgreSQL's server (Debian: apt-get install postgresql; .ci/run)")
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="optuna-postgresql-"))
    if as_server:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:  # a port free now; the server takes it a moment later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = f"-k {folder} -h 127.0.0.1 -p {port}"
    data, pid = folder / "data", None

    def pg(*args: str) -> None:
        subprocess.run([*as_server, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(pg_ctl.with_name("initdb")), "-D", str(data), "-A", "trust", "-U", "optuna")
        pg(
            str(pg_ctl),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(data),
            "-o",
            server,
            "-l",
            f"{data}.log",
        )
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://optuna@127.0.0.1:{port}/postgres"
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            deadline = time.monotonic() + 30
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_workers_run_one_stored_study(tmp_path, request, database):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    if database == "postgresql":
        storage = request.getfixturevalue("postgresql")
    arguments = [
        *("hparams_search=lenet_optuna", *QUIET),
        *("hydra.sweeper.n_trials=4", "trainer.max_epochs=2", f"hydra.sweeper.storage={storage}"),
    ]
    lists = [[*arguments, f"hydra.sweep.dir={tmp_path / name}"] for name in ("a", "b")]
    workers = run_in_forks(*lists, cwd=ROOT)  # forked from this process, started together

    assert [worker.returncode for worker in workers] == [0, 0], [w.stderr for w in workers]
    trials = study(storage, "lenet_optuna")
    assert states(trials).count("COMPLETE") >= 4  # each worker stops once 4 are done or running
    ran = [
        int(p.name) for name in ("a", "b") for p in (tmp_path / name).iterdir() if p.name.isdigit()
    ]
    assert sorted(ran) == list(
        range(len(trials))
    )  # every trial ran once, in one worker or the other
    assert {len(list((tmp_path / name).glob("[0-9]*"))) > 0 for name in ("a", "b")} == {True}
    drawn = [tuple(sorted(trial.params.items())) for trial in trials]
    assert len(set(drawn)) == len(drawn), drawn  # no parameters drawn twice


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"needs the reference data in {SHARED_DATA}")
def test_the_documented_searches_exit_0_and_report_diverged_trials_in_one_line(tmp_path):
    page = (ROOT / "docs" / "sweeps.md").read_text()
    commands = [line for line in page.splitlines() if "hparams_search=" in line]
    commands = [line for line in commands if line.startswith("python src/train.py")][:2]
    assert len(commands) == 2
    for number, line in enumerate(commands):
        sweep = tmp_path / str(number)
        # six trials of each, not the 30 and 20 documented: what is checked is how a search
        # ends and reports its failed trials, which the first trials show as well
        arguments = [a for a in line.split()[2:] if not a.startswith("hydra.sweeper.n_trials=")]
        result = search(sweep, *arguments, "hydra.sweeper.n_trials=6", epochs=1)
        assert result.returncode == 0, result.stderr
        failed = [row for row in summary_rows(sweep) if row["status"] == "failed"]
        for row in failed:
            output = result.stdout + result.stderr
            lines = [x for x in output.splitlines() if f"Trial {row['job']} failed:" in x]
            assert len(lines) == 1 and "Traceback" not in output
        print(f"{line}: {len(failed)} failed trials")
