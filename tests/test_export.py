"""Exported models (ONNX run by onnxruntime, torch.export programs) give predict.py's
predictions from the same raw inputs; what cannot be exported is refused by name."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from src.export import export_model
from src.harness.checkpoints import load_checkpoint
from src.harness.errors import ConfigError
from src.harness.exporting import FromRawInputs, export
from src.harness.raw_inputs import preprocessing_state
from src.predict import predict
from src.tasks import TASKS
from tests.conftest import QUIET, assert_same_predictions, compose_config, train_tiny
from tests.test_train import SUPPORTED, data_overrides

pytest.importorskip("onnxruntime", reason="the serve extra is not installed")


def write_raw_inputs(ckpt: Path, folder: Path, count: int = 5) -> tuple[Path, np.ndarray]:
    """Random raw inputs for ``ckpt``'s model, as a file predict.py reads and as the array
    an exported model takes."""
    state = preprocessing_state(load_checkpoint(ckpt))
    shape = list(state["input_shape"])
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    if len(shape) == 1:
        values = rng.normal(3.0, 1.0, size=(count, *shape)).astype(np.float32)
        path = folder / "rows.csv"
        rows = [state["feature_names"], *(map(repr, map(float, row)) for row in values)]
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
        return path, values
    pixels = rng.integers(0, 256, size=(count, *shape[1:])).astype(np.float32)
    np.save(folder / "images.npy", pixels)
    return folder / "images.npy", pixels[:, None]


def predict_csv_rows(ckpt: Path, source: Path, output_dir: Path) -> list[dict[str, str]]:
    cfg = compose_config([*QUIET, f"ckpt_path={ckpt}", f"input={source}"], output_dir, "predict")
    with predict(cfg).open() as handle:
        return list(csv.DictReader(handle))


def run_exported(model_file: Path, inputs: np.ndarray) -> np.ndarray:
    if model_file.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(model_file, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: inputs})[0]
    return torch.export.load(model_file).module()(torch.from_numpy(inputs)).detach().numpy()


def as_rows(outputs: np.ndarray, card: dict[str, Any]) -> list[dict[str, Any]]:
    columns, rows = TASKS[card["task"]].table(torch.from_numpy(outputs), card["labels"])
    return [dict(zip(columns, row, strict=True)) for row in rows]


def export_file(ckpt: Path, kind: str, output_dir: Path, *overrides: str) -> Path:
    cfg = compose_config([f"ckpt_path={ckpt}", f"format={kind}", *overrides], output_dir, "export")
    return export_model(cfg)


def assert_exports_predict_as_predict_py(ckpt: Path, folder: Path, kinds: list[str]) -> None:
    source, inputs = write_raw_inputs(ckpt, folder / "inputs")
    expected = predict_csv_rows(ckpt, source, folder / "predict")
    for kind in kinds:
        model_file = export_file(ckpt, kind, folder / kind, f"output={folder / f'model.{kind}'}")
        card = json.loads(Path(f"{model_file}.json").read_text())
        # a batch size the export never saw: the batch dimension is dynamic
        assert_same_predictions(as_rows(run_exported(model_file, inputs), card), expected)


def test_a_pt2_export_gives_predict_py_predictions_on_raw_images(lenet_digits_ckpt, tmp_path):
    """ONNX's exporter costs 2 s more: every pair's ONNX export is checked in the slow tier
    (below), and the README's ``format=onnx`` command runs in this one."""
    assert_exports_predict_as_predict_py(lenet_digits_ckpt, tmp_path, ["pt2"])


@pytest.mark.slow
@pytest.mark.parametrize(("model", "data"), SUPPORTED, ids=[f"{m}-{d}" for m, d in SUPPORTED])
def test_every_supported_pair_exports_to_predict_py_predictions(
    model, data, tmp_path, tiny_idx_root, tiny_housing_csv
):
    overrides = data_overrides(data, tiny_idx_root, tiny_housing_csv)
    ckpt = train_tiny(tmp_path / "run", f"model={model}", *overrides)
    assert_exports_predict_as_predict_py(ckpt, tmp_path, ["onnx", "pt2"])


def test_export_writes_beside_the_checkpoint_with_a_card_of_its_origin(mlp_housing_ckpt, tmp_path):
    model_file = export_file(mlp_housing_ckpt, "pt2", tmp_path / "export")
    assert model_file == mlp_housing_ckpt.with_suffix(".pt2")
    card = json.loads(Path(f"{model_file}.json").read_text())
    assert card["input_shape"] == [8] and card["dtype"] == "float32"
    assert card["task"] == "regression" and card["target"] == "MedHouseVal"
    assert card["feature_names"][:2] == ["MedInc", "HouseAge"]
    assert card["run_folder"] == str(mlp_housing_ckpt.parent.parent)
    assert card["config"]["model"]["net"]["_target_"] == "src.models.nets.MLP"
    assert "commit" in card


class OwnModule(L.LightningModule):
    """A module of a user's own, with a predict_step of its own: its answer is exported."""

    def __init__(self, data_dependent: bool = False) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)
        self.data_dependent = data_dependent

    def forward(self, x: Tensor) -> Tensor:
        if self.data_dependent and x.sum() > 0:  # a branch on the values: not exportable
            return x
        return self.layer(x)

    def predict_step(self, batch: Tensor, batch_idx: int = 0) -> Tensor:
        return self(batch).tanh()


STATE = {"input_shape": [3], "mean": torch.tensor([1.0, 2, 3]), "std": torch.tensor([2.0, 2, 2])}
CARD = {"input_shape": [3], "checkpoint": "own.ckpt"}


def test_a_module_of_ones_own_exports_with_its_predict_step_and_the_normalization(tmp_path):
    module = OwnModule()
    model_file = export(
        FromRawInputs(module, STATE, TASKS["regression"]), CARD, tmp_path / "m.pt2", "pt2"
    )
    raw = torch.randn(7, 3)
    with torch.no_grad():
        expected = module.predict_step((raw - STATE["mean"]) / STATE["std"])
    assert torch.allclose(torch.export.load(model_file).module()(raw), expected, atol=1e-6)


def test_a_module_that_cannot_be_exported_is_named_and_nothing_is_written(tmp_path):
    wrapped = FromRawInputs(OwnModule(data_dependent=True), STATE, TASKS["regression"])
    with pytest.raises(
        ConfigError,
        match=r"ckpt_path=own.ckpt cannot be exported: .*test_export.py:\d+, in forward",
    ):
        export(wrapped, CARD, tmp_path / "m.onnx", "onnx")
    assert not list(tmp_path.iterdir())


def test_bad_format_and_missing_extra_are_refused_before_any_work(monkeypatch, tmp_path):
    wrapped = FromRawInputs(OwnModule(), STATE, TASKS["regression"])
    with pytest.raises(ConfigError, match=r"format=tflite is not an export format"):
        export(wrapped, CARD, tmp_path / "m", "tflite")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(
        ConfigError, match=r'onnxscript is not installed.*pip install -e "\.\[serve\]"'
    ):
        export(wrapped, CARD, tmp_path / "m.onnx", "onnx")
    assert not list(tmp_path.iterdir())
