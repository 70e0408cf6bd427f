"""Shared fixtures: compose configs the way the CLI does, and write tiny data sets."""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import importlib
import importlib.metadata
import io
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import omegaconf.base
import pytest
from hydra import compose, initialize_config_dir
from hydra._internal import config_loader_impl
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.config_repository import ConfigRepository
from hydra._internal.defaults_list import DefaultsList, Overrides
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import src  # noqa: F401 - sets PROJECT_ROOT

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
SHARED_DATA = ROOT.parent / "shared" / "data"

# The tests' models are tiny: a second intra-op thread buys nothing, and on a small machine
# busy with other work its spin-waits made a LeNet step several times slower (10 s against
# 1 s for the real-MNIST test on 2 shared cores). train() keeps a thread count that
# OMP_NUM_THREADS sets (num_threads=null), and so do the CLI tests' subprocesses. Set before
# torch is imported (conftest does not import it: pytest-xdist's controller runs no test).
os.environ["OMP_NUM_THREADS"] = "1"


def keep_composed_project_configs() -> None:
    """Hydra reads and parses the ~40 YAML files of a config, walks its defaults tree and
    merges the files each time it composes one: 0.15 s, a third of a tiny test, which the
    suite pays some 600 times. The project's own configs/ never change while the tests run,
    so what is read, walked and merged from it is kept and copied; configs copied elsewhere
    (a test's fork) are read as usual. Private names of hydra-core, checked with 1.3.8:
    ConfigRepository.load_config, config_loader_impl.create_defaults_list, Overrides and
    ConfigLoaderImpl._compose_config_from_defaults_list."""
    project = str(CONFIG_DIR)
    read, merged = ConfigRepository.load_config, ConfigLoaderImpl._compose_config_from_defaults_list
    walk = config_loader_impl.create_defaults_list
    files: dict[str, bytes] = {}
    trees: dict[tuple, DefaultsList] = {}
    configs: dict[tuple, bytes] = {}

    def ours(repo: Any) -> bool:
        return {s.path for s in repo.get_sources() if s.scheme() == "file"} == {project}

    def read_once(repo: ConfigRepository, config_path: str) -> Any:
        if not ours(repo):
            return read(repo, config_path)
        if config_path not in files:
            files[config_path] = pickle.dumps(read(repo, config_path))
        return pickle.loads(files[config_path])  # a copy, twice as fast as copy.deepcopy

    def walk_once(
        repo: Any, config_name: str | None, overrides_list: list, **flags: bool
    ) -> DefaultsList:
        """The tree depends on the config groups chosen, added and deleted only: values
        (``trainer.max_epochs=1``) are applied after it, so they are left out of the key."""
        if not ours(repo):
            return walk(repo, config_name, overrides_list, **flags)
        values = Overrides(repo, overrides_list).config_overrides
        groups = [o for o in overrides_list if o not in values and not o.is_sweep_override()]
        key = (config_name, *flags.items(), *(o.input_line for o in groups))
        if key not in trees:
            trees[key] = walk(repo, config_name, overrides_list, **flags)
        kept = trees[key]
        return DefaultsList(
            defaults=copy.deepcopy(kept.defaults),
            config_overrides=values,
            defaults_tree=kept.defaults_tree,
            overrides=kept.overrides,
        )

    def merge_once(loader: ConfigLoaderImpl, defaults: list, repo: Any) -> Any:
        if not ours(repo):
            return merged(loader, defaults, repo)
        key = tuple((d.config_path, d.package, d.parent, d.is_self, d.primary) for d in defaults)
        if key not in configs:
            configs[key] = pickle.dumps(merged(loader, defaults, repo))
        return pickle.loads(configs[key])

    ConfigRepository.load_config = read_once
    config_loader_impl.create_defaults_list = walk_once
    ConfigLoaderImpl._compose_config_from_defaults_list = merge_once


keep_composed_project_configs()


# OmegaConf parses an interpolation's text again each time it resolves it (7% of the
# suite): the parse of a text is kept. Private name, checked with omegaconf 2.3.0.
omegaconf.base.parse = functools.lru_cache(maxsize=4096)(omegaconf.base.parse)


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    """Each test starts with Ctrl-C raising KeyboardInterrupt, as in a command started from a
    terminal (a shell starts a background job with Ctrl-C ignored, and pytest inherits
    that), and ends with the process's handlers back: a run stopped in-process leaves a
    second Ctrl-C exiting at once, as it should in a command."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: a worker per core, at most 4; each worker holds torch and Lightning
    (over 1 GB), and the suite's longest tests set a floor that more workers cannot lower."""
    return min(4, len(os.sched_getaffinity(0)))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Where tests run (not in pytest-xdist's controller, which runs none and so imports
    neither torch nor Lightning):
    - one intra-op thread (OMP_NUM_THREADS=1 does it unless torch was imported before);
    - no entry-point lookup at each Trainer: Lightning reads every installed package's entry
      points for external callbacks each time (5 ms, some 400 times), so where none is
      installed it is told so once (private name, checked with Lightning 2.6.6:
      callback_connector._load_external_callbacks);
    - Lightning's PossibleUserWarning not recorded: its advice on tiny runs (500 warnings a
      run) made the controller, which unpickles each warning's class to list it, import
      Lightning and torch (4 s). Set here, not in a fixture: a filter set during a test
      ends with it."""
    if session.config.pluginmanager.has_plugin("dsession"):
        return
    import torch
    from lightning.fabric.utilities.warnings import PossibleUserWarning
    from lightning.pytorch.trainer.connectors import callback_connector

    torch.set_num_threads(1)
    if not importlib.metadata.entry_points(group="lightning.pytorch.callbacks_factory"):
        callback_connector._load_external_callbacks = lambda group: []
    warnings.filterwarnings("ignore", category=PossibleUserWarning)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A pytest-xdist worker has sent every result by now; it leaves without the 2-4 s an
    interpreter holding torch and Lightning takes to tear itself down, which the whole run
    would otherwise wait for."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def run_script(*args: str, cwd: Path, script: str = "train") -> subprocess.CompletedProcess:
    """``python src/<script>.py ARGS`` as a user runs it, on this checkout's code."""
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / f"{script}.py"), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """Give every logger back the handlers, level and propagation it had, closing the ones
    a run's Hydra set up (a file handler of a run folder since removed would fail later)."""
    loggers = [logging.root, *logging.root.manager.loggerDict.values()]
    kept = {
        logger: (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for logger in loggers
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        for logger in [logging.root, *logging.root.manager.loggerDict.values()]:
            if not isinstance(logger, logging.Logger):
                continue
            handlers, level, propagate, disabled = kept.get(
                logger, ([], logging.NOTSET, True, False)
            )
            for handler in set(logger.handlers) - set(handlers):
                handler.close()
            logger.handlers, logger.level = handlers, level
            logger.propagate, logger.disabled = propagate, disabled


def run_in_process(
    *args: str, cwd: Path, script: str = "train", root: Path = ROOT
) -> subprocess.CompletedProcess:
    """``python src/<script>.py ARGS`` run in this process: the same Hydra main, callbacks,
    sweeper, output and exit code as :func:`run_script`, without a new interpreter's 5 s of
    imports. For what the process itself is not the subject of: signals, parallel
    processes and import-time checks keep :func:`run_script`."""
    main = importlib.import_module(f"src.{script}").main
    stdout, stderr = io.StringIO(), io.StringIO()
    argv, code = sys.argv, 0
    sys.argv = [str(root / "src" / f"{script}.py"), *args]
    GlobalHydra.instance().clear()
    # Hydra finds configs/ from the script's file as for `python src/train.py`, not from the
    # package src.train (hydra-core 1.3.8 reads this variable in _internal/utils.py)
    os.environ["HYDRA_MAIN_MODULE"] = "__main__"
    try:
        # a warning shows in each run, as in a fresh interpreter's
        with (
            contextlib.chdir(cwd),
            warnings.catch_warnings(),
            restored_logging(),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            main()
    except SystemExit as exit:  # as the interpreter ends: a message goes to stderr, code 1
        code = exit.code if isinstance(exit.code, int | None) else 1
        if code == 1 and not isinstance(exit.code, int):
            print(exit.code, file=stderr)
    finally:
        sys.argv = argv
        del os.environ["HYDRA_MAIN_MODULE"]
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(sys.argv, code or 0, stdout.getvalue(), stderr.getvalue())


def clean_forks() -> multiprocessing.context.ForkServerContext:
    """Where tests start runs that must begin together or be stopped by a signal: processes
    forked from a server that imported the project once and has run nothing since. They
    start in milliseconds, where a new interpreter spends 5 s importing; a fork of the test
    process itself would carry what earlier tests left there (torch refuses autograd in a
    child forked after DDP ran in the parent). The server keeps the environment it started
    with: set what a run needs in its arguments."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.conftest", "src.train"])
    return context


FORKS = clean_forks()


def run_in_forks(
    *argument_lists: Sequence[str], cwd: Path, script: str = "train"
) -> list[subprocess.CompletedProcess]:
    """Several :func:`run_in_process` runs at once, each in a process of :data:`FORKS`: runs
    that start together, as a scheduler starts them."""
    with ProcessPoolExecutor(len(argument_lists), mp_context=FORKS) as pool:
        runs = [
            pool.submit(run_in_process, *arguments, cwd=cwd, script=script)
            for arguments in argument_lists
        ]
        return [run.result(timeout=240) for run in runs]


def run_as_a_command(args: Sequence[str], cwd: Path, stderr: Path, script: str) -> None:
    """:func:`run_in_process` as a new command runs: in a session of its own, as a terminal
    starts one, with an interpreter's signal handling; its stderr written at its end."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    result = run_in_process(*args, cwd=cwd, script=script)
    stderr.write_text(result.stderr)
    os._exit(result.returncode)


def start_in_fork(
    *args: str, cwd: Path, stderr: Path, script: str = "train"
) -> multiprocessing.Process:
    """Start :func:`run_as_a_command` in a process of :data:`FORKS`; its pid is its session's,
    for signals, and :func:`wait_for_exit` gives its exit code."""
    process = FORKS.Process(target=run_as_a_command, args=(args, cwd, stderr, script))
    process.start()
    return process


def wait_for_exit(process: multiprocessing.Process | subprocess.Popen, timeout: float) -> int:
    """The exit code of a started process (-N for signal N); killed with its session, and
    the test failed, after ``timeout`` s."""
    if isinstance(process, subprocess.Popen):
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(timeout)
    else:
        process.join(timeout)
        if process.exitcode is not None:
            return process.exitcode
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"process {process.pid} did not end within {timeout} s")


# Small, fast and quiet: no progress bar or model summary to print, no logger files.
QUIET = [
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
]


def compose_config(
    overrides: Sequence[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` as ``python src/<config_name>.py`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[*overrides, f"paths.output_dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the training config with quiet defaults and outputs under ``tmp_path``."""

    def make(*overrides: str, quiet: bool = True, config_name: str = "train") -> DictConfig:
        extra = QUIET if quiet else []
        return compose_config([*extra, *overrides], tmp_path / "run", config_name)

    return make


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny_idx_root(tmp_path: Path) -> Path:
    """A data_dir holding 80 train and 40 test 28x28 images for each torchvision set."""
    rng = np.random.default_rng(0)
    for name in ("MNIST", "FashionMNIST", "KMNIST"):
        raw = tmp_path / "idx" / name / "raw"
        raw.mkdir(parents=True)
        for prefix, count in (("train", 80), ("t10k", 40)):
            labels = np.arange(count) % 10
            images = rng.integers(0, 60, size=(count, 28, 28))
            images[np.arange(count), labels * 2 + 4, 4:24] = 255  # a label-dependent stroke
            write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path / "idx"


SHAPES = ("bar", "column", "cross")  # an image folder's classes, as folder names


def write_image_folder(root: Path, per_class: int = 20, size: int = 28) -> Path:
    """``root/<shape>/<n>.png``: grey images of a bright bar, column or cross at a random
    place on dark noise; easy to tell apart, so a tiny training learns them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for target, shape in enumerate(SHAPES):
        (root / shape).mkdir(parents=True)
        for n in range(per_class):
            pixels = rng.integers(0, 60, size=(size, size))
            row, col = rng.integers(4, size - 4, size=2)
            if target in (0, 2):
                pixels[row - 1 : row + 2, 3:-3] = 255
            if target in (1, 2):
                pixels[3:-3, col - 1 : col + 2] = 255
            Image.fromarray(pixels.astype(np.uint8)).save(root / shape / f"{n}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


HOUSING_HEADER = (
    "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude,MedHouseVal"
)


def write_housing_csv(path: Path) -> Path:
    """200 rows in the column form of fetch_california_housing(as_frame=True)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 8)) + 3.0
    target = features @ rng.normal(size=8) * 0.1 + 2.0
    rows = [",".join(f"{v:.5f}" for v in [*f, t]) for f, t in zip(features, target, strict=True)]
    path.write_text("\n".join([HOUSING_HEADER, *rows]) + "\n")
    return path


@pytest.fixture
def tiny_housing_csv(tmp_path: Path) -> Path:
    return write_housing_csv(tmp_path / "housing.csv")


@pytest.fixture
def shared_data() -> Path:
    """The real reference data beside the repository; absent in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA}")
    return SHARED_DATA


# A few batches: enough for a checkpoint whose predictions export and serving must reproduce.
TINY_TRAINING = [
    *QUIET,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def train_tiny(run: Path, *overrides: str) -> Path:
    """Train ``overrides``' model a few batches into ``run``; its best checkpoint."""
    from src.train import train

    train(compose_config([*TINY_TRAINING, *overrides], run))
    return run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="session")
def lenet_digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("lenet_digits"), "model=lenet", "data=digits")


@pytest.fixture(scope="session")
def mlp_housing_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("mlp_housing")
    housing = write_housing_csv(run / "housing.csv")
    return train_tiny(run, "model=mlp", "data=california", f"data.csv_path={housing}")


def assert_same_predictions(rows: list[dict[str, Any]], csv_rows: list[dict[str, str]]) -> None:
    """``rows`` say what predict.py's CSV rows say: the same columns, the same classes (or
    labels), and values within 1e-4."""
    assert len(rows) == len(csv_rows) > 0
    for row, expected in zip(rows, csv_rows, strict=True):
        assert set(row) - {"input"} == set(expected) - {"input"}
        for column, value in expected.items():
            if column == "input":
                continue
            if isinstance(row[column], str):  # a class named by the data
                assert row[column] == value, column
            elif isinstance(row[column], int):  # a class, or a label's 0/1
                assert row[column] == int(value), column
            else:
                assert abs(row[column] - float(value)) <= 1e-4, column


def optimize_chunks(output_dir: Path, *overrides: str) -> Path:
    """``python scripts/optimize_data.py OVERRIDES output_dir=...``, in this process."""
    pytest.importorskip("litdata", reason='data=streaming needs pip install -e ".[stream]"')
    from scripts.optimize_data import optimize_data

    cfg = compose_config(
        [*overrides, f"output_dir={output_dir}"], output_dir.parent / "log", "optimize_data"
    )
    return Path(optimize_data(cfg))


@pytest.fixture(scope="session")
def digits_chunks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits' splits written into LitData's chunks, for data=streaming."""
    return optimize_chunks(tmp_path_factory.mktemp("streamed") / "digits", "data=digits")
