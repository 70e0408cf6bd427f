"""Predict on PNGs, .npy arrays and CSV rows from the checkpoint alone; bad input fails clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from src.data.images import DigitsDataModule
from src.errors import ConfigError
from src.eval import evaluate
from src.models.module import SupervisedModule
from src.predict import predict
from src.train import train
from tests.conftest import QUIET, compose_config

FEW_BATCHES = [
    *QUIET,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


@pytest.fixture(scope="module")
def lenet_ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("lenet")
    train(compose_config([*FEW_BATCHES, "model=lenet", "data=digits"], run))
    return run / "checkpoints" / "best.ckpt"


def predict_rows(ckpt: Path, source: Path, output_dir: Path) -> list[dict[str, str]]:
    cfg = compose_config([*QUIET, f"ckpt_path={ckpt}", f"input={source}"], output_dir, "predict")
    with predict(cfg).open() as handle:
        return list(csv.DictReader(handle))


def test_predict_on_pngs_writes_one_row_per_image(lenet_ckpt, tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(load_digits().images[:3]):
        pixels = (image * 255 / 16).round().astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").resize((40, 40)).save(folder / f"digit{i}.png")
    (folder / "notes.txt").write_text("not an image")
    rows = predict_rows(lenet_ckpt, folder, tmp_path / "run")
    assert [row["input"] for row in rows] == ["digit0.png", "digit1.png", "digit2.png"]
    probabilities = torch.tensor([[float(row[f"prob_{k}"]) for k in range(10)] for row in rows])
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(3), atol=1e-5)
    assert [int(row["class"]) for row in rows] == probabilities.argmax(dim=1).tolist()


def test_npy_images_are_preprocessed_exactly_as_training_data(lenet_ckpt, tmp_path):
    """Digits as 0..255 pixels give the probabilities of the data module's own tensors."""
    raw = load_digits().images[:5]
    np.save(tmp_path / "digits.npy", raw * 255 / 16)
    rows = predict_rows(lenet_ckpt, tmp_path / "digits.npy", tmp_path / "run")

    checkpoint = torch.load(lenet_ckpt, weights_only=True)
    datamodule = DigitsDataModule(task="classification", input_shape=[1, 28, 28], num_outputs=10)
    datamodule.load_state_dict(checkpoint["DigitsDataModule"])
    inputs = (datamodule.load()[0][:5] - datamodule.mean) / datamodule.std
    model = SupervisedModule.load_from_checkpoint(lenet_ckpt, weights_only=True).eval()
    with torch.no_grad():
        expected = model(inputs).softmax(dim=1)
    predicted = torch.tensor([[float(row[f"prob_{k}"]) for k in range(10)] for row in rows])
    assert torch.allclose(predicted, expected, atol=1e-5)


def test_predict_on_csv_rows_ignores_extra_columns_and_names_missing_ones(
    tmp_path, tiny_housing_csv
):
    run = tmp_path / "linreg"
    train(compose_config([*FEW_BATCHES, "model=linreg", f"data.csv_path={tiny_housing_csv}"], run))
    ckpt = run / "checkpoints" / "best.ckpt"
    rows = predict_rows(ckpt, tiny_housing_csv, tmp_path / "run")
    assert len(rows) == 200  # the MedHouseVal target column is ignored
    assert set(rows[0]) == {"input", "prediction"}
    assert all(np.isfinite(float(row["prediction"])) for row in rows)

    wrong = tmp_path / "rows.csv"
    wrong.write_text("MedInc,HouseAge,Rooms\n1,2,3\n")
    cfg = compose_config([f"ckpt_path={ckpt}", f"input={wrong}"], tmp_path / "out", "predict")
    with pytest.raises(ConfigError, match=r"lacks the feature columns \['AveRooms', 'AveBedrms'"):
        predict(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: tmp, "holds no .png files"),
        (lambda tmp: tmp / "a.csv", "neither a folder nor an .npy file"),
    ],
    ids=["missing", "empty-folder", "csv-for-images"],
)
def test_bad_image_input_is_refused_before_any_output(lenet_ckpt, tmp_path, make_input, message):
    (tmp_path / "a.csv").write_text("x0\n1\n")
    source = make_input(tmp_path)
    overrides = [f"ckpt_path={lenet_ckpt}", f"input={source}"]
    cfg = compose_config(overrides, tmp_path / "out", "predict")
    with pytest.raises(ConfigError, match=message):
        predict(cfg)
    assert not (tmp_path / "out").exists()


def test_eval_of_lenet_on_tabular_data_is_refused(lenet_ckpt, tmp_path, tiny_housing_csv):
    overrides = [f"ckpt_path={lenet_ckpt}", "data=california", f"data.csv_path={tiny_housing_csv}"]
    with pytest.raises(ConfigError, match=r"LeNet5, classification on input shape \[1, 28, 28\]"):
        evaluate(compose_config(overrides, tmp_path / "run", "eval"))
