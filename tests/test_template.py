"""Forking the template as the README's "Add your own model or data set" says.

The section's files are written into a copy of the project, with no other edit: the pair
tests there must find and train the new net and data sets (and refuse what they do not
support), and the section's commands must train models that learn.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SECTION = "## Add your own model or data set"
# What each of the section's commands must reach: chance accuracy is 0.1, 1/3 and 1/2; on
# topics, turning every label on scores an F1 of 0.55 and a logistic regression 0.71.
LEARNS = {
    "model=cnn": ("test/acc", 0.5),
    "data=wine": ("test/acc", 0.9),
    "data=moons": ("test/acc", 0.85),
    "data=topics": ("test/f1", 0.68),
}


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n## ", start + len(SECTION))]


def section_files() -> dict[str, str]:
    """``{path: content}`` of the section's code blocks that name their file."""
    blocks = re.findall(r"```(?:python|yaml)\n(.*?)```", section(), flags=re.S)
    return {
        match.group(1): block
        for block in blocks
        if (match := re.search(r"^# file: (\S+)$", block, flags=re.M))
    }


def section_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", section(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python")]


@pytest.fixture(scope="module")
def fork(tmp_path_factory) -> Path:
    """A copy of the project with the section's files added, as a user would add them."""
    copy = tmp_path_factory.mktemp("fork")
    for folder in ("src", "configs", "tests"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    shutil.copy(ROOT / "README.md", copy)
    for path, content in section_files().items():
        (copy / path).write_text(content)
    return copy


def run(fork: Path, *command: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "PROJECT_ROOT"}
    environment.update(PYTHONPATH=str(fork), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *command],
        cwd=fork,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_section_adds_a_net_data_modules_and_a_loader_config():
    assert set(section_files()) == {
        "src/models/cnn.py",
        "configs/model/cnn.yaml",
        "configs/data/wine.yaml",
        "src/data/moons.py",
        "configs/data/moons.yaml",
        "src/data/topics.py",
        "configs/data/topics.yaml",
    }
    assert {next(key for key in LEARNS if key in c) for c in section_commands()} == set(LEARNS)


@pytest.mark.slow  # a pytest of the fork in a subprocess: about 25 s
def test_the_pair_tests_find_the_new_net_and_data_sets(fork):
    result = run(fork, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/test_train.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = set(re.findall(r"::(\w+)\[([\w-]+)\] PASSED", result.stdout))
    trained = {pair for test, pair in passed if test.startswith("test_fast_dev_run")}
    refused = {pair for test, pair in passed if test.startswith("test_every_unsupported")}
    images = ["digits", "fashion_mnist", "kmnist", "mnist"]
    assert {f"cnn-{data}" for data in images} | {"mlp-wine", "mlp-moons", "mlp-topics"} <= trained
    assert {"cnn-wine", "cnn-moons", "cnn-california", "lenet-wine", "linreg-moons"} <= refused
    assert {"cnn-topics", "linreg-topics"} <= refused


@pytest.mark.slow
@pytest.mark.parametrize("command", section_commands())
def test_the_new_model_and_data_sets_learn(fork, command, tmp_path):
    logs = tmp_path / "logs"
    arguments = shlex.split(command)[1:]
    result = run(fork, *arguments, f"paths.log_dir={logs}", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = logs.glob("train/runs/*/metrics.json")
    metric, least = next(value for key, value in LEARNS.items() if key in command)
    assert json.loads(metrics_file.read_text())[metric] > least


@pytest.mark.slow
def test_a_bad_argument_of_the_new_net_is_one_clear_message(fork, tmp_path):
    result = run(
        fork, "src/train.py", "model=cnn", "model.net.channels=0", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 1
    assert "model.net: channels must be at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
