"""Predict on PNGs, .npy arrays and CSV rows from the checkpoint alone; bad input fails clearly."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from src.data.images import DigitsDataModule
from src.eval import evaluate
from src.harness.errors import ConfigError
from src.harness.raw_inputs import read_inputs
from src.models.module import SupervisedModule
from src.predict import predict
from src.train import train
from tests.conftest import HOUSING_HEADER, QUIET, compose_config, write_housing_csv

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


@pytest.fixture(scope="module")
def linreg_ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("linreg")
    csv_path = write_housing_csv(run / "housing.csv")
    train(compose_config([*FEW_BATCHES, "model=linreg", f"data.csv_path={csv_path}"], run))
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


def test_16_bit_png_is_read_on_the_8_bit_scale(lenet_ckpt, tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    pixels = (load_digits().images[0] * 255 / 16).round().astype(np.uint8)
    Image.fromarray(pixels).save(folder / "8-bit.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(folder / "16-bit.png")  # 255 -> 65535
    assert Image.open(folder / "16-bit.png").mode == "I;16"
    eight, sixteen = predict_rows(lenet_ckpt, folder, tmp_path / "run")[::-1]
    for k in range(10):
        assert float(sixteen[f"prob_{k}"]) == pytest.approx(float(eight[f"prob_{k}"]), abs=1e-5)


def test_csv_rows_with_nan_or_inf_are_refused_by_number(tmp_path, tiny_housing_csv):
    run = tmp_path / "linreg"
    train(compose_config([*FEW_BATCHES, "model=linreg", f"data.csv_path={tiny_housing_csv}"], run))
    lines = tiny_housing_csv.read_text().splitlines()[:7]
    lines[2] = lines[2].replace(lines[2].split(",")[0], "nan", 1)  # data row 1
    lines[4] = lines[4].replace(lines[4].split(",")[3], "-inf", 1)  # data row 3
    lines[5] = lines[5].replace(lines[5].split(",")[7], "1e39", 1)  # data row 4: inf in float32
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(lines) + "\n")
    overrides = [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"input={rows}"]
    with pytest.raises(ConfigError, match=r"NaN or infinite values .* in data rows 1, 3, 4 \("):
        predict(compose_config(overrides, tmp_path / "out", "predict"))
    assert not (tmp_path / "out").exists()


def npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array, allow_pickle=True)
    return path


def huge_png(folder: Path) -> Path:
    """A PNG that says it is 20000x20000 pixels: decoded, it would take 400 MB or more."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)  # 8-bit greyscale
    folder.mkdir()
    (folder / "huge.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
    )
    return folder


def not_a_png(path: Path) -> Path:
    path.mkdir()
    (path / "a.png").write_text("not an image")
    return path


# images 1 (NaN), 3 (-inf) and 5 (inf); 8 images of 8x8 pixels
NON_FINITE = np.array([0, np.nan, 0, -np.inf, 0, np.inf, 0, 0])[:, None, None] * np.ones((8, 8))


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: tmp, r"holds no image files \(.jpg, .jpeg, .png"),
        (lambda tmp: tmp / "a.csv", "neither a folder nor an .npy file"),
        (lambda tmp: npy(tmp / "x.npy", NON_FINITE), r"in images 1, 3, 5 \(counted from 0"),
        (lambda tmp: npy(tmp / "x.npy", np.ones((2, 8, 8), complex)), "holds complex128 values"),
        (lambda tmp: npy(tmp / "x.npy", np.ones((2, 8, 8), bool)), "holds bool values"),
        (lambda tmp: npy(tmp / "x.npy", np.full((2, 8, 8), "1")), "holds <U1 values"),
        (lambda tmp: npy(tmp / "x.npy", np.ones((2, 8, 8), object)), "not a readable .npy"),
        (
            lambda tmp: npy(tmp / "x.npy", np.full((2, 8, 8), 65535, np.uint16)),
            "pixel values from 65535 to 65535",
        ),
        (lambda tmp: not_a_png(tmp / "pngs"), "a.png is not a readable image"),
        (
            lambda tmp: npy(tmp / "x.npy", np.zeros((0, 28, 28))),
            r"has shape \(0, 28, 28\): it holds nothing to predict",
        ),
        (lambda tmp: huge_png(tmp / "pngs"), r"huge.png is too large to read safely: Image size"),
    ],
    ids=[
        "missing",
        "empty-folder",
        "csv-for-images",
        "nan-inf",
        "complex",
        "bool",
        "text",
        "objects",
        "16-bit-npy",
        "not-a-png",
        "no-images",
        "decompression-bomb",
    ],
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


def test_multilabel_predictions_give_each_labels_decision_and_probability(tmp_path):
    run = tmp_path / "multilabel"
    overrides = ["data=synthetic", "data.task=multilabel", "data.num_outputs=3"]
    train(compose_config([*FEW_BATCHES, *overrides], run))
    ckpt = run / "checkpoints" / "best.ckpt"
    inputs = torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    rows_csv = tmp_path / "rows.csv"
    np.savetxt(
        rows_csv,
        inputs.numpy(),
        delimiter=",",
        comments="",
        header=",".join(f"x{i}" for i in range(20)),
    )
    rows = predict_rows(ckpt, rows_csv, tmp_path / "run")

    labels = ["label_0", "label_1", "label_2"]
    assert list(rows[0]) == ["input", *labels, *(f"prob_{label}" for label in labels)]
    probabilities = torch.tensor(
        [[float(row[f"prob_{label}"]) for label in labels] for row in rows]
    )
    model = SupervisedModule.load_from_checkpoint(ckpt, weights_only=True).eval()
    with torch.no_grad():
        assert torch.allclose(probabilities, model(inputs).sigmoid(), atol=1e-5)
    decisions = [[int(row[label]) for label in labels] for row in rows]
    assert decisions == (probabilities > 0.5).int().tolist()

    # label names that a data module's load sets are saved with its statistics
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["SyntheticDataModule"]["label_names"] = ["cat", "dog", "bird"]
    torch.save(checkpoint, tmp_path / "named.ckpt")
    named = predict_rows(tmp_path / "named.ckpt", rows_csv, tmp_path / "named")
    assert list(named[0])[1:] == ["cat", "dog", "bird", "prob_cat", "prob_dog", "prob_bird"]
    assert [[int(row[name]) for name in ("cat", "dog", "bird")] for row in named] == decisions


def housing_rows(*rows: str, header: str = HOUSING_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


ROW = "3.1,20,5.2,1.1,900,2.5,34.1,-118.2,2.1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            housing_rows("407," + ROW, header="MedInc," + HOUSING_HEADER),
            r"names more than once the columns \['MedInc'\]",
        ),
        (
            housing_rows(ROW + ",0", header=HOUSING_HEADER + ",Notes"),
            r"has columns the model does not take: \['Notes'\] .* may name the target column "
            "'MedHouseVal'",
        ),
        (housing_rows(ROW, ROW.rsplit(",", 1)[0]), "line 3 has 8 cells, its header 9 columns"),
        (housing_rows(ROW, ROW, ROW + ",1"), "line 4 has 10 cells, its header 9 columns"),
        (
            housing_rows(ROW.replace(",20,", ",1_000,")),
            "line 2, column HouseAge: '1_000' is not a number",
        ),
        (
            housing_rows(ROW, ROW.replace(",20,", ",\u0662\u0660,")),  # Arabic-Indic 20
            "line 3, column HouseAge: '\u0662\u0660' is not a number",
        ),
    ],
    ids=["duplicated", "unknown", "short-row", "long-row", "digit-separator", "non-ascii-digits"],
)
def test_csv_columns_and_rows_are_checked_exactly(linreg_ckpt, tmp_path, text, message):
    rows = tmp_path / "rows.csv"
    rows.write_text(text, encoding="utf-8")
    cfg = compose_config([f"ckpt_path={linreg_ckpt}", f"input={rows}"], tmp_path / "out", "predict")
    with pytest.raises(ConfigError, match=message):
        predict(cfg)
    assert not (tmp_path / "out").exists()


def write_big_csv(path: Path, rows: int) -> np.ndarray:
    values = np.random.default_rng(0).normal(size=(rows, 9)).round(4)
    np.savetxt(path, values, fmt="%.4f", delimiter=",", header=HOUSING_HEADER, comments="")
    return values


def test_a_long_csv_is_read_in_bounded_memory(linreg_ckpt, tmp_path):
    """50,000 rows: read whole, the rows' text took about 40 MB; read in chunks, little more
    than the names and the tensor (3.6 MB together). A bad row far down still gives its line."""
    state = torch.load(linreg_ckpt, weights_only=True)["TabularDataModule"]
    values = write_big_csv(tmp_path / "big.csv", 50_000)
    tracemalloc.start()
    try:
        names, inputs = read_inputs(tmp_path / "big.csv", state)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16e6
    assert names[-1] == "49999"
    expected = (torch.tensor(values[:, :8], dtype=torch.float32) - state["mean"]) / state["std"]
    assert torch.allclose(inputs, expected, atol=1e-5)

    lines = (tmp_path / "big.csv").read_text().splitlines()
    lines[45_000] += ",1"
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="line 45001 has 10 cells"):
        read_inputs(tmp_path / "big.csv", state)


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail, rather than hang, if what it guards blocks: reading a FIFO waits for a writer."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("fifo", "given"),
    [("rows.csv", "rows.csv"), ("images.npy", "images.npy"), ("pngs/a.png", "pngs")],
)
def test_a_fifo_input_is_refused_rather_than_waited_on(
    lenet_ckpt, linreg_ckpt, tmp_path, fifo, given
):
    (tmp_path / fifo).parent.mkdir(exist_ok=True)
    os.mkfifo(tmp_path / fifo)
    ckpt = linreg_ckpt if given.endswith(".csv") else lenet_ckpt
    overrides = [f"ckpt_path={ckpt}", f"input={tmp_path / given}"]
    cfg = compose_config(overrides, tmp_path / "out", "predict")
    with deadline(20), pytest.raises(ConfigError, match=r"is a named pipe \(FIFO\), not a file"):
        predict(cfg)
    assert not (tmp_path / "out").exists()


def test_input_names_that_a_spreadsheet_would_run_are_written_as_text(lenet_ckpt, tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    names = ['=HYPERLINK("http:x","click").png', "+1.png", "-1.png", "@SUM(A1).png", "plain.png"]
    for name in names:
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / name)
    rows = predict_rows(lenet_ckpt, folder, tmp_path / "run")
    assert [row["input"] for row in rows] == [
        "'+1.png",
        "'-1.png",
        '\'=HYPERLINK("http:x","click").png',
        "'@SUM(A1).png",
        "plain.png",
    ]
