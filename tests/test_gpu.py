"""Training on a CUDA GPU: the paths no CPU run takes (data resident on the device, pinned
host memory, mixed precision, torch.compile with Triton, DDP on two GPUs), each trained,
and checked by what it learns, resumes, evaluates and predicts.

Skipped where torch sees no CUDA GPU; ``bash scripts/gpu_check.sh`` runs them on one, and
says so where there is none.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from src.eval import evaluate
from src.models.module import SupervisedModule
from src.predict import predict
from src.train import train
from tests.conftest import QUIET, ROOT, compose_config, run_script

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: torch sees none on this machine"
)

# An MLP on 2,000 synthetic samples of 4 classes (chance: 0.25), three epochs.
SMALL = [*QUIET, "data.num_samples=2000", "trainer.max_epochs=3"]
GPU = [*SMALL, "trainer=gpu"]
WHERE_THE_DATA_LIVES = ["data.device_resident=true", "data.pin_memory=true"]


def learned(metrics: dict[str, float]) -> None:
    """Finite losses and an accuracy far above chance, in training, validation and test."""
    assert all(math.isfinite(metrics[name]) for name in ("train/loss", "val/loss", "test/loss"))
    assert metrics["val/acc"] > 0.6 and metrics["test/acc"] > 0.6


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@needs_cuda
@pytest.mark.parametrize("placement", WHERE_THE_DATA_LIVES)
def test_train_resume_evaluate_and_predict_on_the_gpu(placement, tmp_path):
    common = [*GPU, placement, "model.net.dropout=0.2", "trainer.deterministic=true"]
    straight = train(compose_config(common, tmp_path / "straight"))
    learned(straight)

    # Stopped after two epochs and resumed: the same weights (dropout's CUDA RNG resumed too).
    train(compose_config([*common, "trainer.max_epochs=2", "test=false"], tmp_path / "first"))
    resume = f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"
    train(compose_config([*common, resume], tmp_path / "rest"))
    expected, actual = weights(tmp_path / "straight"), weights(tmp_path / "rest")
    assert all(torch.equal(expected[name], actual[name]) for name in expected)

    best = tmp_path / "straight" / "checkpoints" / "best.ckpt"
    on_gpu = [*QUIET, "trainer=gpu", f"ckpt_path={best}"]
    evaluated = evaluate(compose_config(on_gpu, tmp_path / "eval", "eval"))
    assert evaluated["test/acc"] == pytest.approx(straight["test/acc"], abs=1e-6)

    rows = np.random.default_rng(0).normal(size=(50, 20))
    source = tmp_path / "rows.csv"
    np.savetxt(
        source, rows, delimiter=",", header=",".join(f"x{i}" for i in range(20)), comments=""
    )
    predict_cfg = compose_config([*on_gpu, f"input={source}"], tmp_path / "p", "predict")
    with predict(predict_cfg).open() as handle:
        written = [int(row["class"]) for row in csv.DictReader(handle)]
    model = SupervisedModule.load_from_checkpoint(best, weights_only=True, map_location="cpu")
    checkpoint = torch.load(best, weights_only=True)["SyntheticDataModule"]
    inputs = (torch.tensor(rows, dtype=torch.float32) - checkpoint["mean"]) / checkpoint["std"]
    with torch.no_grad():
        assert written == model.eval()(inputs).argmax(dim=1).tolist()


@needs_cuda
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_learns(precision, tmp_path):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bfloat16")
    overrides = [*GPU, "data.device_resident=true", f"trainer.precision={precision}"]
    learned(train(compose_config(overrides, tmp_path)))


@needs_cuda
def test_compiled_net_learns_and_its_checkpoint_evaluates(tmp_path):
    overrides = [*GPU, "data.device_resident=true", "model.compile=true"]
    trained = train(compose_config(overrides, tmp_path / "run"))
    learned(trained)
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    on_gpu = [*QUIET, "trainer=gpu", f"ckpt_path={best}"]
    evaluated = evaluate(compose_config(on_gpu, tmp_path / "eval", "eval"))
    # The eager net rounds otherwise than the compiled kernels: a test sample (1/400 of the
    # accuracy) that sits on a tie between two classes may change its answer.
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=0.01)


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="trainer=ddp needs two GPUs")
def test_ddp_on_two_gpus_writes_one_run_that_learned(tmp_path):
    """The CLI: trainer=ddp starts its second process by re-running the command."""
    result = run_script(*SMALL, "trainer=ddp", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = (tmp_path / "train" / "runs").iterdir()
    learned(json.loads((run / "metrics.json").read_text()))
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]


@pytest.mark.slow  # a torch import in a subprocess: seconds, for one error line
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_the_gpu_check_without_a_gpu_says_so_and_fails():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == "error: torch sees no CUDA GPU on this machine; run this check where one is.\n"
    )
