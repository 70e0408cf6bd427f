"""Training through the same ``train(cfg)`` the CLI calls: every pair, learning, checkpoints."""

from __future__ import annotations

import csv
import functools
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from src.harness.best_score import BestScore
from src.harness.errors import ConfigError
from src.harness.validation import paired_class, supported
from src.train import train
from tests.conftest import CONFIG_DIR, ROOT, compose_config, write_image_folder

IMAGE_SETS = ["mnist", "fashion_mnist", "kmnist"]


def data_overrides(data: str, idx_root: Path, housing_csv: Path) -> list[str]:
    """What makes a data set that downloads train offline; others need nothing."""
    if data in IMAGE_SETS:
        return [f"data={data}", f"data.data_dir={idx_root}", "data.download=false"]
    if data == "california":
        return ["data=california", f"data.csv_path={housing_csv}"]
    if data == "image_folder":
        images = idx_root.parent / "image_folder"
        if not images.exists():
            write_image_folder(images)
        return ["data=image_folder", f"data.root={images}"]
    return [f"data={data}"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if p.stem[0] != "_")


@functools.cache
def paired_class_of(model: str) -> type:
    return paired_class(compose_config([f"model={model}"], Path("unused")).model)


@functools.cache
def task_and_shape(data: str) -> tuple[str, list[int]]:
    cfg = compose_config([f"data={data}"], Path("unused"))
    return cfg.data.task, list(cfg.data.input_shape)


def supports(model: str, data: str) -> bool:
    """What the net of ``model=`` (or its own module) declares about the data of ``data=``:
    a model's class and a data set's task and shape do not depend on each other, so each is
    composed once."""
    return supported(paired_class_of(model), *task_and_shape(data))


# Every model config x data config, split by what the nets declare: a new net or data
# set is tested the moment its config exists.
# data=streaming trains from chunks written first: tests/test_streaming.py pairs it.
PAIRS = [(m, d) for m in options("model") for d in options("data") if d != "streaming"]
SUPPORTED = [pair for pair in PAIRS if supports(*pair)]
UNSUPPORTED = [pair for pair in PAIRS if pair not in SUPPORTED]


@pytest.mark.parametrize(("model", "data"), SUPPORTED, ids=[f"{m}-{d}" for m, d in SUPPORTED])
def test_fast_dev_run_trains_and_tests_every_supported_pair(
    model, data, make_cfg, tiny_idx_root, tiny_housing_csv
):
    cfg = make_cfg(
        f"model={model}",
        *data_overrides(data, tiny_idx_root, tiny_housing_csv),
        "trainer.fast_dev_run=true",
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    assert ("test/acc" in metrics) == (cfg.data.task == "classification")
    assert ("test/r2" in metrics) == (cfg.data.task == "regression")


@pytest.mark.parametrize(("model", "data"), UNSUPPORTED, ids=[f"{m}-{d}" for m, d in UNSUPPORTED])
def test_every_unsupported_pair_is_refused_naming_the_nets_that_fit(model, data, make_cfg):
    with pytest.raises(ConfigError, match=r"cannot train on this data .* On this data train "):
        train(make_cfg(f"model={model}", f"data={data}"))


def test_the_readme_pair_table_is_what_the_nets_declare(make_cfg):
    """Over the data sets the README's group table lists (a fork's own ones are not in it)."""
    text = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"`(\w+)`", re.search(r"^\| `data` \| (.*) \|$", text, re.M)[1]))
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (.*) \|$", text, flags=re.M)
    assert {"lenet", "linreg", "mlp"} <= {model for model, _, _ in rows}
    for model, alone, rest in rows:
        also = listed if rest.startswith("every data set") else set(re.findall(r"`(\w+)`", rest))
        assert make_cfg(f"model={model}").data == make_cfg(f"data={alone}").data
        assert {alone, *also} == {d for m, d in SUPPORTED if m == model and d in listed}


def test_model_alone_selects_its_natural_data(make_cfg):
    assert make_cfg("model=mlp").data.input_shape == [20]
    assert make_cfg("model=lenet").data.name == "MNIST"
    assert make_cfg("model=linreg").data.loader.endswith("fetch_california_housing")
    assert make_cfg("model=lenet", "data=digits").data._target_.endswith("DigitsDataModule")


def test_full_run_writes_checkpoints_config_and_metrics_and_tests_the_best(make_cfg, tmp_path):
    logs = f"paths.log_dir={tmp_path}"
    cfg = make_cfg("trainer.max_epochs=2", "data.num_samples=2000", "logger=tensorboard", logs)
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert {"best.ckpt", "last.ckpt"} <= {p.name for p in (run / "checkpoints").iterdir()}
    assert list((tmp_path / "mlp-synthetic" / run.name).glob("events.out.tfevents.*"))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test/acc"] == pytest.approx(metrics["test/acc"])
    assert saved["best_model_path"] == str(run / "checkpoints" / "best.ckpt")
    assert saved["wall_time_s"] > 0
    assert "${" not in (run / "config.yaml").read_text()
    info = json.loads((run / "run_info.json").read_text())
    assert info["packages"]["torch"] == torch.__version__.split("+")[0]
    # Checkpoints hold plain values only: they load under torch's safe default.
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["net"]["_target_"] == "src.models.nets.MLP"
    assert checkpoint["module_class"] == "src.models.module.SupervisedModule"


class ForgetAfterFirstEpoch(Callback):
    """Zeroes the weights before each validation after epoch 0: the later epochs validate
    (and save) a model that predicts one class, so epoch 0 stays the best."""

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= 1:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.zero_()


def test_metrics_report_the_best_checkpoints_epoch_and_score_and_test_it(make_cfg):
    forget = "+callbacks.forget._target_=tests.test_train.ForgetAfterFirstEpoch"
    cfg = make_cfg(
        "trainer.max_epochs=3", "data.num_samples=2000", "optimizer.lr=0.01", "logger=csv", forget
    )
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    (state,) = [s for s in best["callbacks"].values() if s.get("monitor") == "val/acc"]
    assert metrics["best_epoch"] == best["epoch"] == 0
    assert metrics["val/acc_best"] == pytest.approx(float(state["best_model_score"]))
    assert metrics["val/acc"] < 0.5 < 0.85 < metrics["val/acc_best"]  # the last epoch's is not
    assert metrics["test/acc"] > 0.85  # testing the best weights, not the last ones
    assert json.loads((run / "metrics.json").read_text()) == metrics
    with (run / "csv" / "metrics.csv").open() as file:  # the loggers get it, by the same name
        logged = [row["val/acc_best"] for row in csv.DictReader(file) if row["val/acc_best"]]
    assert [float(value) for value in logged] == [pytest.approx(metrics["val/acc_best"])]


def test_a_run_that_keeps_its_final_weights_reports_their_score_as_its_best(make_cfg):
    forget = "+callbacks.forget._target_=tests.test_train.ForgetAfterFirstEpoch"
    # as the experiments do that test their final weights (configs/experiment/)
    final = ["callbacks.model_checkpoint.monitor=step", "callbacks.model_checkpoint.mode=max"]
    metrics = train(make_cfg("trainer.max_epochs=2", "data.num_samples=2000", forget, *final))
    assert metrics["best_epoch"] == 1
    assert metrics["val/acc_best"] == metrics["val/acc"] < 0.5  # the final, forgetful epoch's


def test_a_run_without_a_checkpoint_callback_reports_its_best_validation(make_cfg):
    forget = "+callbacks.forget._target_=tests.test_train.ForgetAfterFirstEpoch"
    quiet = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    cfg = make_cfg(
        "callbacks=none",
        forget,
        *quiet,
        "trainer.max_epochs=2",
        "data.num_samples=2000",
        "optimizer.lr=0.01",
        "logger=csv",
        quiet=False,
    )
    metrics = train(cfg)
    assert metrics["best_model_path"] is None  # no checkpoint: the final weights are tested
    assert metrics["best_epoch"] == 0
    assert metrics["val/acc"] < 0.5 < 0.85 < metrics["val/acc_best"]  # epoch 0's, by max
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as file:
        logged = [row["val/acc_best"] for row in csv.DictReader(file) if row["val/acc_best"]]
    assert [float(value) for value in logged] == [pytest.approx(metrics["val/acc_best"])]


def test_the_sanity_check_before_training_does_not_count_as_a_validation(make_cfg):
    # Ranked by the lowest accuracy, the untrained sanity check would be the best validation.
    quiet = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    one_epoch = ["trainer.max_epochs=1", "data.num_samples=2000", "optimizer.lr=0.01"]
    cfg = make_cfg("callbacks=none", "data.monitor_mode=min", *quiet, *one_epoch, quiet=False)
    metrics = train(cfg)
    assert metrics["val/acc_best"] == metrics["val/acc"] > 0.85  # the one epoch's


def test_a_validation_scoring_nan_is_never_the_best():
    tracker = BestScore("val/loss", "min")
    for epoch, loss in enumerate([float("nan"), 0.7, float("nan"), 0.9]):
        metrics = {"val/loss": torch.tensor(loss)}
        trainer = SimpleNamespace(
            sanity_checking=False,
            checkpoint_callback=None,
            current_epoch=epoch,
            global_step=10 * epoch,
            callback_metrics=metrics,
        )
        tracker.on_validation_end(trainer, None)
    assert tracker.best == {"val/loss_best": pytest.approx(0.7), "best_epoch": 1}


def test_mlp_learns_synthetic_classification_well_above_chance(make_cfg):
    metrics = train(make_cfg("trainer.max_epochs=3", "data.num_samples=3000", "optimizer.lr=0.01"))
    assert metrics["test/acc"] > 0.85  # 4 classes: chance is 0.25


def test_linreg_recovers_the_teacher_weights(make_cfg):
    cfg = make_cfg(
        "model=linreg",
        "data=synthetic_regression",
        "data.num_samples=2000",
        "data.noise=0.05",
        "trainer.max_epochs=8",
        "optimizer.lr=0.05",
    )
    metrics = train(cfg)
    state = torch.load(metrics["best_model_path"], weights_only=True)["state_dict"]
    from src.data.synthetic import SyntheticDataModule

    teacher = SyntheticDataModule(**{k: v for k, v in cfg.data.items() if k != "_target_"})
    assert torch.allclose(state["net.linear.weight"], teacher.true_weight.T, atol=0.02)
    assert torch.allclose(state["net.linear.bias"], teacher.true_bias, atol=0.02)
    assert metrics["test/mse"] < 2 * 0.05**2


def test_seed_makes_runs_repeatable(make_cfg):
    first = train(make_cfg("trainer.max_epochs=1", "data.num_samples=1000", "seed=7"))
    second = train(make_cfg("trainer.max_epochs=1", "data.num_samples=1000", "seed=7"))
    assert first["test/acc"] == second["test/acc"]
    assert first["train/loss"] == second["train/loss"]


def test_test_false_skips_testing(make_cfg):
    metrics = train(make_cfg("trainer.fast_dev_run=true", "test=false"))
    assert "val/acc" in metrics and not any(name.startswith("test/") for name in metrics)


def test_real_california_housing_csv(make_cfg, shared_data):
    cfg = make_cfg(
        "model=linreg",
        f"data.csv_path={shared_data / 'california_housing.csv'}",
        "trainer.max_epochs=1",
    )
    metrics = train(cfg)
    assert metrics["test/mse"] < 1.0  # predicting the mean gives about 1.3


def test_real_mnist_test_split(make_cfg, shared_data):
    cfg = make_cfg(
        "model=lenet",
        f"data.data_dir={shared_data}",
        "data.train_from=test",
        "data.download=false",
        "trainer.limit_train_batches=40",
        "trainer.max_epochs=1",
    )
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.6  # 40 batches of real digits; chance is 0.1
