"""What users of lightning-hydra-template bring: model.compile, train/acc, eval's model=,
fractional limit_*_batches on small data, and a git-ignored configs/local/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from src.eval import evaluate
from src.harness.errors import ConfigError
from src.models.module import SupervisedModule
from src.train import train
from tests.conftest import CONFIG_DIR, QUIET, ROOT, compose_config

FEW_BATCHES = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
]


def trained_lenet(run: Path, *overrides: str) -> tuple[dict, Path]:
    """LeNet on digits for two batches: its metrics and best.ckpt."""
    overrides = (*QUIET, "model=lenet", "data=digits", *FEW_BATCHES, *overrides)
    metrics = train(compose_config(overrides, run))
    return metrics, run / "checkpoints" / "best.ckpt"


def test_model_compile_compiles_the_net_and_its_checkpoints_load_uncompiled(
    tmp_path, monkeypatch
) -> None:
    """Compiled by a recording backend: inductor's first compile takes about 40 s on this
    CPU (the slow test below runs it); what the project does around it is the same."""
    compiled = []

    def backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        compiled.append(graph)
        return graph.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: real_compile(*a, backend=backend, **k))
    assert compose_config([], tmp_path).model.compile is False  # off unless asked
    try:
        metrics, best = trained_lenet(tmp_path / "run", "model.compile=true")
    finally:
        torch._dynamo.reset()
    assert compiled, "the net was not compiled"
    state = torch.load(best, weights_only=True)
    assert not [key for key in state["state_dict"] if "_orig_mod" in key]
    uncompiled = SupervisedModule(**state["hyper_parameters"])
    uncompiled.load_state_dict(state["state_dict"])  # strict: every key matches
    assert metrics["test/loss"] > 0


@pytest.mark.slow
def test_model_compile_trains_with_inductor_on_the_cpu(make_cfg) -> None:
    """torch's default compiler, which on the CPU needs a C compiler (about 40 s cold)."""
    try:
        metrics = train(make_cfg("data=digits", "model.compile=true", "trainer.fast_dev_run=true"))
    finally:
        torch._dynamo.reset()
    assert metrics["test/loss"] > 0


def test_classification_logs_train_acc_and_regression_does_not(make_cfg) -> None:
    metrics = train(make_cfg("data=digits", "trainer.max_epochs=2"))
    assert metrics["train/acc"] > 0.5  # chance is 0.1
    regression = train(make_cfg("model=linreg", "data=synthetic_regression", *FEW_BATCHES))
    assert "train/loss" in regression and "train/acc" not in regression


def test_eval_model_checks_the_checkpoint_net_and_keeps_the_recorded_data(tmp_path) -> None:
    trained, best = trained_lenet(tmp_path / "train")

    def evaluated(model: str) -> dict:
        overrides = [*QUIET, f"ckpt_path={best}", f"model={model}"]
        return evaluate(compose_config(overrides, tmp_path / "eval", "eval"))

    # model=lenet alone would pick MNIST in training; here the data stays digits, as recorded
    assert evaluated("lenet")["test/acc"] == trained["test/acc"]
    with pytest.raises(ConfigError, match=r"model=mlp sets up \(model.net._target_: "):
        evaluated("mlp")


def test_fractional_limits_evaluate_that_fraction_of_a_small_split(make_cfg, monkeypatch) -> None:
    """Digits' 144 validation images fit one batch of eval_batch_size=1024: a tenth of one
    batch is none, which Lightning refuses. A tenth of the images runs instead."""
    seen: dict[str, list[tuple[int, int]]] = {"val": [], "test": []}
    for split, hook in (("val", "validation_step"), ("test", "test_step")):
        original = getattr(SupervisedModule, hook)

        def step(self, batch, batch_idx, split=split, original=original):
            if not self.trainer.sanity_checking:
                seen[split].append((len(batch[1]), len(self.trainer.datamodule.datasets[split])))
            return original(self, batch, batch_idx)

        monkeypatch.setattr(SupervisedModule, hook, step)
    cfg = make_cfg(
        "data=digits",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=0.1",
        "trainer.limit_test_batches=0.25",
    )
    train(cfg)
    val_size, test_size = seen["val"][0][1], seen["test"][0][1]
    assert seen["val"] == [(int(val_size * 0.1), val_size)] * 2  # one batch an epoch
    assert seen["test"] == [(int(test_size * 0.25), test_size)]
    assert val_size < 1024 and test_size < 1024  # one batch each without the fix


def test_a_file_in_configs_local_is_read_and_git_ignores_it(tmp_path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "local" / "default.yaml").write_text(
        "# @package _global_\ntrainer:\n  accelerator: cpu\n  max_epochs: 7\n"
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(configs), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=lenet_digits"])
        assert compose("eval").trainer.max_epochs == 7
    assert cfg.trainer.max_epochs == 7  # over the experiment's 30: the machine's setting
    ignored = subprocess.run(
        ["git", "check-ignore", "configs/local/default.yaml", "configs/local/README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if ignored.returncode == 128:
        pytest.skip(f"not a git checkout: {ignored.stderr.strip()}")
    assert ignored.stdout.split() == ["configs/local/default.yaml"]
