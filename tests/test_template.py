"""Forking the template as the README's "Add your own model or data set" says, and
docs/own-module.md and docs/own-data.md, which continue it with LightningModules and
per-sample data sets of one's own.

The section's files are written into a copy of the project, with no other edit: the pair
tests there must find and train the new net and data sets (and refuse what they do not
support), and the section's commands must train models that learn.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import FORKS, ROOT, run_in_process, wait_for_exit

SECTION = "## Add your own model or data set"
# the section goes on there
CONTINUATIONS = (ROOT / "docs" / "own-module.md", ROOT / "docs" / "own-data.md")
# What each of the section's commands must reach: chance accuracy is 0.1, 1/3 and 1/2; on
# topics, turning every label on scores an F1 of 0.55 and a logistic regression 0.71.
LEARNS = {
    "model=cnn": ("test/acc", 0.5),
    "data=wine": ("test/acc", 0.9),
    "data=moons": ("test/acc", 0.85),
    "data=topics": ("test/f1", 0.68),
    "model=smoothed": ("test/acc", 0.85),
    "model=adversarial": ("test/acc", 0.8),
    "data=rings": ("test/acc", 0.9),
}


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    pages = "".join(page.read_text() for page in CONTINUATIONS)
    return text[start : text.index("\n## ", start + len(SECTION))] + pages


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
    """``python COMMAND`` in the fork. A pytest runs in a subprocess; an entry point runs in
    a process of ``FORKS`` that imports the fork's ``src`` in place of this checkout's:
    torch and Lightning are already imported, a second instead of six."""
    if command[0] == "-m":
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
    result_file = fork / f".result-{uuid.uuid4().hex}.json"
    process = FORKS.Process(target=run_in_the_fork, args=(fork, command, result_file))
    process.start()
    assert wait_for_exit(process, timeout=600) == 0
    returncode, stdout, stderr = json.loads(result_file.read_text())
    return subprocess.CompletedProcess(command, returncode, stdout, stderr)


def run_in_the_fork(fork: Path, command: tuple[str, ...], result_file: Path) -> None:
    """An entry point of the fork, run in this process with the fork's ``src`` imported."""
    for name in [name for name in sys.modules if name.split(".")[0] == "src"]:
        del sys.modules[name]
    sys.path.insert(0, str(fork))
    os.environ.pop("PROJECT_ROOT", None)  # set anew by the fork's src/__init__.py
    result = run_in_process(*command[1:], cwd=fork, script=Path(command[0]).stem, root=fork)
    result_file.write_text(json.dumps([result.returncode, result.stdout, result.stderr]))


def test_the_section_adds_a_net_data_modules_and_a_loader_config():
    assert set(section_files()) == {
        "src/models/cnn.py",
        "configs/model/cnn.yaml",
        "configs/data/wine.yaml",
        "src/data/moons.py",
        "configs/data/moons.yaml",
        "src/data/topics.py",
        "configs/data/topics.yaml",
        "src/models/smoothed.py",
        "configs/model/smoothed.yaml",
        "src/models/adversarial.py",
        "configs/model/adversarial.yaml",
        "src/data/rings.py",
        "configs/data/rings.yaml",
    }
    assert {next(key for key in LEARNS if key in c) for c in section_commands()} == set(LEARNS)


@pytest.mark.slow  # a pytest of the fork in a subprocess: about 25 s
def test_the_pair_tests_find_the_new_net_and_data_sets(fork):
    # -n 0: in one process, as two workers would each import torch and Lightning again
    command = ["-m", "pytest", "-v", "-n", "0", "-p", "no:cacheprovider", "tests/test_train.py"]
    result = run(fork, *command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = set(re.findall(r"::(\w+)\[([\w-]+)\] PASSED", result.stdout))
    trained = {pair for test, pair in passed if test.startswith("test_fast_dev_run")}
    refused = {pair for test, pair in passed if test.startswith("test_every_unsupported")}
    images = ["digits", "fashion_mnist", "kmnist", "mnist"]
    assert {f"cnn-{data}" for data in images} | {"mlp-wine", "mlp-moons", "mlp-topics"} <= trained
    assert {"cnn-wine", "cnn-moons", "cnn-california", "lenet-wine", "linreg-moons"} <= refused
    assert {"cnn-topics", "linreg-topics"} <= refused
    assert "mlp-rings" in trained and {"cnn-rings", "lenet-rings"} <= refused
    own = [f"{module}-{data}" for module in ("smoothed", "adversarial") for data in images]
    assert {*own, "smoothed-wine", "adversarial-moons"} <= trained
    assert {"smoothed-california", "adversarial-synthetic_regression"} <= refused


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


def trained(fork: Path, logs: Path, *overrides: str) -> Path:
    """The run folder of ``python src/train.py OVERRIDES`` in the fork."""
    before = set(logs.glob("train/runs/*"))
    result = run(fork, "src/train.py", *overrides, f"paths.log_dir={logs}", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = set(logs.glob("train/runs/*")) - before
    return folder


def state(ckpt: Path) -> dict:
    return torch.load(ckpt, weights_only=True)


@pytest.mark.slow
def test_the_own_module_resumes_exactly_evaluates_and_predicts(fork, tmp_path):
    logs, epochs = tmp_path / "logs", "trainer.max_epochs=2"
    straight = trained(fork, logs, "model=smoothed", epochs)
    first = trained(fork, logs, "model=smoothed", "trainer.max_epochs=1")
    resumed = trained(
        fork, logs, "model=smoothed", epochs, f"ckpt_path={first}/checkpoints/last.ckpt"
    )
    weights, again = (state(f"{run}/checkpoints/last.ckpt") for run in (straight, resumed))
    assert again["module_class"] == "src.models.smoothed.SmoothedClassifier"
    assert again["hyper_parameters"]["label_smoothing"] == 0.1
    assert all(torch.equal(weights["state_dict"][k], v) for k, v in again["state_dict"].items())

    best = straight / "checkpoints" / "best.ckpt"
    result = run(fork, "src/eval.py", f"ckpt_path={best}", f"paths.log_dir={logs}")
    assert result.returncode == 0, result.stderr[-3000:]
    (evaluated,) = logs.glob("eval/runs/*/metrics.json")
    tested = json.loads((straight / "metrics.json").read_text())["test/acc"]
    assert json.loads(evaluated.read_text())["test/acc"] == pytest.approx(tested)

    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32))
    predicted = run(
        fork, "src/predict.py", f"ckpt_path={best}", f"input={inputs}", f"paths.log_dir={logs}"
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    (predictions,) = logs.glob("predict/runs/*/predictions.csv")
    rows = list(csv.DictReader(predictions.open()))
    assert len(rows) == 5
    for row in rows:  # its logits, read by the task as probabilities
        probabilities = [float(row[f"prob_{k}"]) for k in range(10)]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert int(row["class"]) == probabilities.index(max(probabilities))


@pytest.mark.slow
def test_the_module_with_two_optimizers_trains_and_resumes(fork, tmp_path):
    logs = tmp_path / "logs"
    first = trained(fork, logs, "model=adversarial", "trainer.max_epochs=1")
    last = f"ckpt_path={first}/checkpoints/last.ckpt"
    resumed = trained(fork, logs, "model=adversarial", "trainer.max_epochs=2", last)
    before, after = (state(f"{run}/checkpoints/last.ckpt") for run in (first, resumed))
    assert after["module_class"] == "src.models.adversarial.AdversarialClassifier"
    assert after["epoch"] == 1
    steps = [[int(s["state"][0]["step"]) for s in c["optimizer_states"]] for c in (before, after)]
    assert len(steps[0]) == 2  # the critic's and the generator's Adam, each resumed
    assert steps[1] == [2 * n for n in steps[0]]
