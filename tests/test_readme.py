"""Every ``python src/...`` command shown in the README and docs/ runs, shrunk to a fast_dev_run.

A renamed option or config breaks this test instead of a user's first try. Only ``bash``
blocks are run: a ``console`` block shows a command that must not run here (a server that
keeps running, a SLURM submission, a path of the reader's own), as docs/testing.md says.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from src.eval import evaluate
from src.export import export_model
from src.harness.errors import ConfigError
from src.harness.serving import serving_source
from src.predict import predict
from src.tasks import TASKS
from src.train import train
from tests.conftest import QUIET, ROOT, SHARED_DATA, compose_config
from tests.test_template import CONTINUATIONS

ENTRY_POINTS = {
    "src/train.py": "train",
    "src/eval.py": "eval",
    "src/predict.py": "predict",
    "src/export.py": "export",
    "src/serve.py": "serve",
}
# export and serve have no trainer to shrink, nor its quiet settings
WITHOUT_TRAINER = {"export", "serve"}
TINY = ["trainer.fast_dev_run=true"]
# Trains the checkpoint a `ckpt_path=` command starts from (fast_dev_run saves none).
FEW_BATCHES = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_text() -> str:
    """README and docs/ pages; "Add your own" and its continuation run in a fork instead
    (test_template.py)."""
    text = "\n".join(path.read_text() for path in DOCUMENTS if path not in CONTINUATIONS)
    return re.sub(r"## Add your own .*?(?=\n## )", "", text, flags=re.S)


def readme_blocks() -> list[list[str]]:
    """The commands of each bash block."""
    return [
        [
            part.strip()
            for line in block.splitlines()
            for part in line.split("&&")
            if part.strip().startswith("python src/")
        ]
        for block in re.findall(r"```bash\n(.*?)```", documented_text(), flags=re.S)
    ]


def readme_commands() -> list[str]:
    commands = list(dict.fromkeys(command for block in readme_blocks() for command in block))
    assert commands, "the README and docs/ show no python src/ command"
    return commands


def training_before(command: str) -> list[str]:
    """Arguments of the training shown before ``command`` in its block: what it starts from."""
    block = next(block for block in readme_blocks() if command in block)
    earlier = [
        shlex.split(c)[2:]
        for c in block[: block.index(command)]
        if c.startswith("python src/train.py") and "ckpt_path=" not in c
    ]
    assert earlier, f"no training command precedes {command!r} in its block"
    return earlier[-1]


@pytest.fixture(scope="module")
def trained_log_dir(tmp_path_factory) -> Callable[[list[str]], Path]:
    """A log folder holding one short training run of the given arguments (made once)."""
    made: dict[tuple[str, ...], Path] = {}

    def log_dir_for(training: list[str]) -> Path:
        if tuple(training) not in made:
            log_dir = tmp_path_factory.mktemp("logs")
            overrides = [*QUIET, *training, *FEW_BATCHES, f"paths.log_dir={log_dir}"]
            train(compose_config(overrides, log_dir / "train" / "runs" / "first"))
            made[tuple(training)] = log_dir
        return made[tuple(training)]

    return log_dir_for


def sample_images_for_missing_input(argument: str, folder: Path) -> str:
    """``input=`` naming a user's own images: stand in two PNGs of digits for them."""
    if not argument.startswith("input=") or Path(argument.split("=", 1)[1]).exists():
        return argument
    from sklearn.datasets import load_digits

    folder.mkdir()
    for i, image in enumerate(load_digits().images[:2]):
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    return f"input={folder}"


def first_of_each_sweep(arguments: list[str]) -> list[str]:
    """A multirun's first job: ``a=1,2`` becomes ``a=1``."""
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(
    command: str, make_cfg, monkeypatch, trained_log_dir, tmp_path
) -> None:
    script, *arguments = shlex.split(command)[1:]
    config_name = ENTRY_POINTS[script]
    arguments = [a for a in arguments if a not in ("-m", "--multirun")]
    if "../shared/data" in command and not SHARED_DATA.is_dir():
        pytest.skip(f"needs the reference data in {SHARED_DATA}")
    monkeypatch.chdir(ROOT)
    prints_only = "--cfg" in arguments
    arguments = [a for a in arguments if a not in ("--cfg", "job")]
    if any(a.startswith("ckpt_path=") for a in arguments):
        log_dir = trained_log_dir(training_before(command))
        arguments = [sample_images_for_missing_input(a, tmp_path / "images") for a in arguments]
        arguments.append(f"paths.log_dir={log_dir}")
    if config_name in WITHOUT_TRAINER:
        cfg = make_cfg(*arguments, quiet=False, config_name=config_name)
    else:
        cfg = make_cfg(*first_of_each_sweep(arguments), *TINY, config_name=config_name)
    if prints_only:
        return
    if config_name in WITHOUT_TRAINER:  # the README's quick start installs no serve extra
        pytest.importorskip("litserve" if config_name == "serve" else "onnxscript")
    # serve: what it checks and loads before serving (a server would not return)
    run = {
        "train": train,
        "eval": evaluate,
        "predict": predict,
        "export": export_model,
        "serve": lambda cfg: Path(serving_source(cfg, TASKS)[0]),
    }[config_name]
    gpu = config_name not in WITHOUT_TRAINER and cfg.trainer.accelerator in ("gpu", "cuda")
    if gpu and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer=cpu"):
            run(cfg)
        return
    result = run(cfg)
    if config_name in ("predict", *WITHOUT_TRAINER):
        assert result.is_file()
    else:
        assert "test/loss" in result or cfg.get("test") is False
