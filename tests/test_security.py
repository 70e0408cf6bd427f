"""Security: a checkpoint's callback state reads no file outside the resumed checkpoint's
folder, and no name a user gives writes outside the log folder."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

import src.harness.run
from src.harness.errors import ConfigError
from src.harness.names import unsafe_names
from src.harness.sweeps import brief
from src.train import train
from tests.conftest import QUIET, compose_config, run_in_process

TINY = [*QUIET, "data.num_samples=200", "trainer.limit_train_batches=2"]
TINY += ["trainer.limit_val_batches=1", "trainer.max_epochs=1"]
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny epoch of the MLP: a run folder with checkpoints/best.ckpt and last.ckpt."""
    folder = tmp_path_factory.mktemp("logs") / "train" / "runs" / "one"
    train(compose_config(TINY, folder))
    return folder


def best_state(checkpoint: dict) -> dict:
    """The callback state of the RunCheckpoint that keeps best.ckpt."""
    return next(s for k, s in checkpoint["callbacks"].items() if "'monitor': 'val/acc'" in k)


def crafted(run: Path, tmp_path: Path, edit: Callable[[dict, Path], None]) -> Path:
    """A copy of the run's checkpoints/ whose last.ckpt has its best-checkpoint record edited
    by ``edit(state, folder)``; only plain values, so it loads with weights_only=True."""
    folder = tmp_path / "earlier" / "checkpoints"
    shutil.copytree(run / "checkpoints", folder)
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    edit(best_state(checkpoint), folder)
    torch.save(checkpoint, folder / "last.ckpt")
    torch.load(folder / "last.ckpt", weights_only=True)  # the safe loader lets it through
    return folder / "last.ckpt"


def name(state: dict, path: str | Path, dirpath: str | Path | None = None) -> None:
    """Make ``path`` the state's best checkpoint (and ``dirpath`` its folder)."""
    score = state["best_model_score"]
    state.update(best_model_path=str(path), kth_best_model_path=str(path))
    state.update(best_k_models={str(path): score}, dirpath=str(dirpath or Path(path).parent))


def secret(folder: Path) -> Path:
    key = folder.parent.parent / "home" / ".ssh" / "id_rsa"
    key.parent.mkdir(parents=True)
    key.write_bytes(SECRET)
    return key


def a_key_in_another_folder(state: dict, folder: Path) -> None:
    name(state, secret(folder))


def a_path_climbing_out(state: dict, folder: Path) -> None:
    key = secret(folder)
    name(state, f"{folder}/../../home/.ssh/{key.name}", folder)


def a_checkpoint_in_another_folder(state: dict, folder: Path) -> None:
    other = folder.parent.parent / "other" / "model.ckpt"
    other.parent.mkdir()
    shutil.copy(folder / "best.ckpt", other)
    name(state, other)


def a_link_out_of_the_folder(state: dict, folder: Path) -> None:
    other = folder.parent.parent / "other.ckpt"
    shutil.copy(folder / "best.ckpt", other)
    (folder / "best.ckpt").unlink()
    (folder / "best.ckpt").symlink_to(other)
    name(state, folder / "best.ckpt")


def a_file_that_is_not_a_checkpoint(state: dict, folder: Path) -> None:
    (folder / "notes.ckpt").write_bytes(SECRET)
    name(state, folder / "notes.ckpt")


CRAFTS = [
    a_key_in_another_folder,
    a_path_climbing_out,
    a_checkpoint_in_another_folder,
    a_link_out_of_the_folder,
    a_file_that_is_not_a_checkpoint,
]


def copies_of_the_secret(folder: Path) -> list[Path]:
    files = folder.rglob("*") if folder.exists() else []
    return [f for f in files if f.is_file() and f.read_bytes() == SECRET]


@pytest.mark.parametrize("craft", CRAFTS)
def test_a_resume_refuses_a_callback_state_naming_files_outside_its_folder(run, tmp_path, craft):
    ckpt = crafted(run, tmp_path, craft)
    output_dir = tmp_path / "resumed"
    with pytest.raises(ConfigError, match="callback state names"):
        train(compose_config([*TINY, "trainer.max_epochs=2", f"ckpt_path={ckpt}"], output_dir))
    assert not output_dir.exists()


@pytest.mark.parametrize("craft", CRAFTS)
def test_the_run_checkpoint_itself_copies_nothing_from_outside_the_resumed_folder(
    run, tmp_path, craft, monkeypatch
):
    """Where a checkpoint reaches the trainer unchecked, the callback refuses it itself."""
    ckpt = crafted(run, tmp_path, craft)
    monkeypatch.setattr(src.harness.run, "resume_checkpoint", lambda cfg, model: cfg.ckpt_path)
    output_dir = tmp_path / "resumed"
    with pytest.raises(ConfigError, match="callback state names"):
        train(compose_config([*TINY, "trainer.max_epochs=2", f"ckpt_path={ckpt}"], output_dir))
    assert copies_of_the_secret(output_dir) == []
    assert not (output_dir / "checkpoints").exists()


def test_a_run_folder_moved_elsewhere_resumes_with_its_best_checkpoint(run, tmp_path):
    """The record names its checkpoints in the folder the run was in; they are found by
    name beside the resumed one."""

    def moved(state: dict, folder: Path) -> None:
        name(state, tmp_path / "gone" / "checkpoints" / "best.ckpt")

    ckpt = crafted(run, tmp_path, moved)
    output_dir = tmp_path / "resumed"
    metrics = train(compose_config([*TINY, f"ckpt_path={ckpt}"], output_dir))
    assert metrics["best_model_path"] == str(output_dir / "checkpoints" / "best.ckpt")
    best = (output_dir / "checkpoints" / "best.ckpt").read_bytes()
    assert best == (ckpt.parent / "best.ckpt").read_bytes()


def test_the_crafted_resume_ends_in_one_line_and_leaves_no_run_folder(run, tmp_path):
    ckpt = crafted(run, tmp_path, a_key_in_another_folder)
    logs = tmp_path / "logs"
    result = run_in_process(*TINY, f"ckpt_path={ckpt}", f"paths.log_dir={logs}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ckpt_path=") and "id_rsa" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (logs / "train" / "runs").exists() or not any((logs / "train" / "runs").iterdir())
    assert copies_of_the_secret(logs) == []


@pytest.mark.parametrize(
    ("script", "overrides", "key"),
    [
        ("train", ["run_name=../../../escape"], "run_name"),
        ("train", ["task_name=../../escape"], "task_name"),
        ("train", ["-m", "run_name=fine,../../../escape", "optimizer.lr=0.1,0.2"], "run_name"),
        ("eval", ["run_name=../../../escape", "ckpt_path=last"], "run_name"),
        ("predict", ["trained_task=..", "ckpt_path=last", "input=x.csv"], "trained_task"),
    ],
)
def test_a_name_that_would_leave_the_log_folder_is_refused_before_any_folder_is_made(
    tmp_path, script, overrides, key
):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    result = run_in_process(*overrides, f"paths.log_dir={work / 'logs'}", cwd=work, script=script)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {key}=") and "not / or \\" in result.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "a",
        "a/b",
        "a/b/c",
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("run_name", "/absolute"),
        ("run_name", "x" * 201),
        ("run_name", "a\tb"),
        ("task_name", ".."),
        ("tags", ["ok", "a\\b"]),
        ("logger.csv.version", "../v"),
    ],
)
def test_a_name_that_is_not_one_folder_name_is_refused(key, value):
    assert unsafe_names([(key, value)]).startswith(f"{key}=")


def test_names_with_spaces_equals_signs_and_any_letters_are_folder_names():
    names = [("run_name", "mlp-digits lr=0.01 activation=tanh"), ("tags", ["ünï", "日本"])]
    assert unsafe_names([*names, ("run_name", "x" * 200), ("logger.csv.version", "")]) is None


def test_tensorboard_refuses_a_run_name_recorded_in_a_checkpoint_folder(make_cfg, tmp_path):
    """eval.py takes the run name from the checkpoint's run folder, after Hydra's checks."""
    cfg = make_cfg("trainer.fast_dev_run=true", quiet=False)
    with open_dict(cfg):
        cfg.run_name = "../../../escape"
    with pytest.raises(ConfigError, match="logger.tensorboard: name='../../../escape'"):
        train(cfg)
    assert not (tmp_path.parent / "escape").exists()


def test_a_swept_path_names_a_run_by_its_last_part():
    assert brief("/data/mnist_v2/") == "mnist_v2"
    assert brief("../../x.csv") == "x.csv"
    assert brief("0.000769612") == "0.0007696"
