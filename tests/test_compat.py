"""The private names of other libraries that src/harness/compat.py reaches into are still
there in the installed versions, and no other project file reaches into one.

A library's upgrade that drops one fails here, in a message naming the library, the version
the name was checked against, the installed version and the file to update, rather than
as an ``AttributeError`` deep inside a run (or, for the learning-rate keys, not at all).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from src.harness import compat
from tests.conftest import CONFIG_DIR, ROOT


def sweep_parser_lists_config_groups(tmp_path: Path) -> bool:
    config_dir = {"provider": "main", "schema": "file", "path": str(CONFIG_DIR)}
    [override] = compat.sweep_parser([config_dir]).parse_overrides(["model=glob(lenet)"])
    return list(override.sweep_string_iterator()) == ["lenet"]


def sweep_jobs_expands_a_sweep(tmp_path: Path) -> bool:
    overrides = OverridesParser.create().parse_overrides(["a=1,2", "b=3"])
    return compat.sweep_jobs(overrides) == [["a=1", "b=3"], ["a=2", "b=3"]]


def trial_id_finds_the_trial_again(tmp_path: Path) -> bool:
    import optuna

    study = optuna.create_study()
    study.ask()
    trial = study.ask()
    return optuna.Trial(study, compat.trial_id(trial)).number == 1  # as a search's job does


def file_writer_takes_summaries(tmp_path: Path) -> bool:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    try:
        return callable(compat.tensorboard_file_writer(writer).add_summary)
    finally:
        writer.close()


def mlflow_experiment_is_not_ready_before_use(tmp_path: Path) -> bool:
    pytest.importorskip("mlflow", reason='logger=mlflow needs pip install -e ".[mlflow]"')
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(tracking_uri="http://127.0.0.1:9")  # no server: reached on first use
    return compat.mlflow_experiment_ready(logger) is False


def wandb_run_is_not_started_before_use(tmp_path: Path) -> bool:
    pytest.importorskip("wandb", reason='logger=wandb needs pip install -e ".[wandb]"')
    from lightning.pytorch.loggers import WandbLogger

    return compat.wandb_run_started(WandbLogger(offline=True, save_dir=str(tmp_path))) is False


def rate_keys_get_the_prefix(tmp_path: Path) -> bool:
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor

    monitor = LearningRateMonitor()
    compat.prefix_rate_keys(monitor, "train/")
    name = monitor._add_prefix("lr-Adam", torch.optim.Adam, defaultdict(int))
    return name == "train/lr-Adam"


def logged_steps_are_set(tmp_path: Path) -> bool:
    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    compat.count_logged_steps(trainer, 41)
    # the count the loop saves in checkpoints and logs metrics at
    return trainer.fit_loop.epoch_loop.on_save_checkpoint()["_batches_that_stepped"] == 41


def optimizer_steps_are_counted(tmp_path: Path) -> bool:
    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    compat.count_optimizer_step(trainer)
    compat.count_optimizer_step(trainer)
    # the count global_step reads under manual optimization
    return trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.total.completed == 2


def chunks_download_without_obstore(tmp_path: Path) -> bool:
    pytest.importorskip("litdata", reason='data=streaming needs pip install -e ".[stream]"')
    from litdata.streaming import downloader

    compat.download_chunks_with_boto3()
    return downloader.obstore_usable() is False


# Each function of compat.py: the library and private name it reaches into, and a use of it.
CHECKS: dict[Callable, tuple[str, str, Callable[[Path], bool]]] = {
    compat.sweep_parser: (
        "hydra-core",
        "hydra._internal's ConfigSearchPathImpl, ConfigLoaderImpl",
        sweep_parser_lists_config_groups,
    ),
    compat.sweep_jobs: (
        "hydra-core",
        "hydra._internal's BasicSweeper.split_arguments",
        sweep_jobs_expands_a_sweep,
    ),
    compat.trial_id: ("optuna", "Trial._trial_id", trial_id_finds_the_trial_again),
    compat.tensorboard_file_writer: (
        "torch",
        "SummaryWriter._get_file_writer",
        file_writer_takes_summaries,
    ),
    compat.mlflow_experiment_ready: (
        "lightning",
        "MLFlowLogger._initialized",
        mlflow_experiment_is_not_ready_before_use,
    ),
    compat.wandb_run_started: (
        "lightning",
        "WandbLogger._experiment",
        wandb_run_is_not_started_before_use,
    ),
    compat.prefix_rate_keys: (
        "lightning",
        "LearningRateMonitor._add_prefix",
        rate_keys_get_the_prefix,
    ),
    compat.count_logged_steps: (
        "lightning",
        "_TrainingEpochLoop._batches_that_stepped",
        logged_steps_are_set,
    ),
    compat.count_optimizer_step: (
        "lightning",
        "_ManualOptimization.optim_step_progress",
        optimizer_steps_are_counted,
    ),
    compat.download_chunks_with_boto3: (
        "litdata",
        "litdata.streaming.downloader._OBSTORE_INIT_PID",
        chunks_download_without_obstore,
    ),
}


def check(function: Callable, tmp_path: Path) -> None:
    """Fail, saying what to update, unless ``function``'s use works on the installed library."""
    library, name, use = CHECKS[function]
    try:
        problem = "" if use(tmp_path) else "it now gives another result"
    except (AttributeError, ImportError, TypeError) as error:
        problem = f"{type(error).__name__}: {error}"
    if problem:
        pytest.fail(
            f"{name} of {library} {compat.CHECKED[library]} is not there in the installed "
            f"{library} {version(library)} ({problem}): update {function.__name__}() in "
            "src/harness/compat.py",
            pytrace=False,
        )


@pytest.mark.parametrize("function", CHECKS, ids=lambda function: function.__name__)
def test_each_private_name_is_in_the_installed_library(function, tmp_path):
    check(function, tmp_path)


def test_every_function_of_the_compat_module_is_checked():
    functions = {
        value
        for name, value in vars(compat).items()
        if callable(value) and getattr(value, "__module__", "") == compat.__name__
    }
    assert functions - {compat._with_prefix} == set(CHECKS)
    assert {library for library, _, _ in CHECKS.values()} == set(compat.CHECKED)


def test_a_name_gone_fails_naming_the_library_both_versions_and_the_file(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import LearningRateMonitor

    monkeypatch.delattr(LearningRateMonitor, "_add_prefix")
    message = (
        f"LearningRateMonitor._add_prefix of lightning {compat.CHECKED['lightning']} is not "
        f"there in the installed lightning {version('lightning')} "
        r"\(AttributeError: .*\): update prefix_rate_keys\(\) in src/harness/compat.py"
    )
    with pytest.raises(pytest.fail.Exception, match=message):
        check(compat.prefix_rate_keys, tmp_path)


def private_uses(text: str) -> list[str]:
    """``owner._name`` where the owner is not the project's own object (``self``, ``cls``);
    ``os._exit`` is documented, and ``_target_``-like keys are Hydra's public config keys."""
    return [
        f"{owner}.{name}"
        for owner, name in re.findall(r"(\w+|\))\.(_[a-z]\w*)", text)
        if owner not in ("self", "cls", "os") and not name.endswith("_")
    ]


def test_no_other_file_reaches_into_a_private_name():
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    files += (ROOT / "scripts").rglob("*.py")
    found = {
        str(path.relative_to(ROOT)): uses
        for path in files
        if path != ROOT / "src/harness/compat.py" and (uses := private_uses(path.read_text()))
    }
    assert found == {}, "use them through src/harness/compat.py, which names the version"
    assert private_uses("super()._add_prefix(x); hydra._internal; cfg.model._target_") == [
        ")._add_prefix",
        "hydra._internal",
    ]
