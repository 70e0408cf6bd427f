"""Bad input: a clear message before any work, and no run folder that looks like a result."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torchvision.datasets
from hydra.errors import ConfigCompositionException

from src.harness.errors import ConfigError, DataUnavailableError
from src.harness.failures import run_reporting_errors
from src.train import train


def run_expecting_exit(cfg) -> str:
    """Run as the CLI does; return the message it exits with, check the folder is gone."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True)
    (output_dir / ".hydra").mkdir()  # what Hydra writes before the job starts
    with pytest.raises(SystemExit) as excinfo:
        run_reporting_errors(train, cfg)
    assert not output_dir.exists()
    return str(excinfo.value.code)


def test_unknown_option_is_refused_by_hydra(make_cfg):
    with pytest.raises(ConfigCompositionException, match="optimizer.lrate"):
        make_cfg("optimizer.lrate=0.1")


def test_unsupported_pair_names_the_pairs_that_work(make_cfg, tiny_housing_csv):
    message = run_expecting_exit(
        make_cfg("model=lenet", "data=california", f"data.csv_path={tiny_housing_csv}")
    )
    assert "LeNet5 cannot train on this data" in message
    assert "On this data train model=linreg, model=mlp" in message


def test_linreg_on_classification_data_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="regression data"):
        train(make_cfg("model=linreg", "data=synthetic"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.batch_size=0", "data: batch_size=0 must be positive"),
        ("optimizer.lr=-0.1", "optimizer: Invalid learning rate: -0.1"),
        ("model.net.activation=swish", "model.net: activation must be one of ['elu', 'gelu'"),
        ("model.net.hidden_sizes=[64,0]", "hidden_sizes must be positive integers"),
        ("model.net.hidden_sizes=[0]", "model.net: hidden_sizes must be positive integers"),
        ("data.val_fraction=1.5", "data: val_fraction=1.5 must be in [0, 1)"),
        ("data.batch_size=abc", "data.batch_size='abc' must be int"),
        ("+optimizer.lrr=0.1", "optimizer.lrr is not an argument of Adam (it takes: params, lr,"),
        ("model.net.dropout=1.5", "dropout in [0, 1), got [128, 64] and 1.5"),
        ("optimizer.lr=inf", "optimizer.lr=inf must be a finite number"),
        ("seed=abc", "seed='abc' must be an integer from 0 to 4294967295"),
        ("seed=-1", "seed=-1 must be an integer from 0 to 4294967295"),
        ("seed=1e20", "seed=1e+20 must be an integer from 0 to 4294967295"),
    ],
)
def test_bad_values_are_reported_before_training(make_cfg, override, expected):
    assert expected in run_expecting_exit(make_cfg(override))


def test_an_mlp_without_hidden_layers_says_it_is_linear(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="src.models.nets"):
        train(make_cfg("model.net.hidden_sizes=[]", "trainer.fast_dev_run=true"))
    assert "This MLP has no hidden layer (hidden_sizes=[]): it is a linear model" in caplog.text


def test_every_problem_is_listed_at_once(make_cfg):
    message = run_expecting_exit(make_cfg("data.batch_size=-1", "optimizer.lr=-1"))
    assert "data: batch_size=-1" in message and "optimizer: Invalid learning rate: -1" in message


def test_missing_mnist_offline_names_folder_files_and_alternative(make_cfg, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    message = run_expecting_exit(make_cfg("model=lenet", f"data.data_dir={tmp_path / 'empty'}"))
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "data=digits" in message


def test_download_false_with_missing_files(make_cfg, tmp_path):
    with pytest.raises(DataUnavailableError, match="t10k-labels-idx1-ubyte"):
        train(make_cfg("data=kmnist", f"data.data_dir={tmp_path}", "data.download=false"))


def test_csv_with_wrong_columns_names_them(make_cfg, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("MedInc,HouseAge,Rooms,MedHouseVal\n1,2,3,4\n")
    message = run_expecting_exit(make_cfg("model=linreg", f"data.csv_path={bad}"))
    assert "gives 3 features (['MedInc', 'HouseAge', 'Rooms'])" in message
    assert "data.input_shape is [8]" in message


def test_csv_path_that_does_not_exist(make_cfg, tmp_path):
    message = run_expecting_exit(make_cfg("model=linreg", f"data.csv_path={tmp_path / 'no.csv'}"))
    assert "no.csv does not exist" in message


def test_gpu_trainer_without_gpu_suggests_cpu(make_cfg):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    message = run_expecting_exit(make_cfg("trainer=gpu"))
    assert "trainer=cpu" in message


@pytest.mark.parametrize(
    "override",
    ["trainer.precision=64", "trainer.precision=bf16", "trainer.enable_progress_bar=false"],
)
def test_what_lightning_accepts_is_accepted(make_cfg, override):
    # quiet=False: the default callbacks, progress bar included, with the flag that drops it
    metrics = train(make_cfg(override, "trainer.fast_dev_run=true", "logger=none", quiet=False))
    assert "test/acc" in metrics


def test_train_false_tests_the_checkpoint_given(make_cfg, tmp_path):
    trained = train(make_cfg("trainer.max_epochs=2", "data.num_samples=600", "test=false"))
    best = trained["best_model_path"]
    tested = train(make_cfg("train=false", f"ckpt_path={best}", "data.num_samples=600"))
    untrained = train(make_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=0"))
    assert tested["best_model_path"] == best
    assert tested["test/acc"] > untrained["test/acc"] + 0.2


def test_train_false_without_a_checkpoint_is_refused(make_cfg):
    assert "train=false tests a trained checkpoint" in run_expecting_exit(make_cfg("train=false"))
