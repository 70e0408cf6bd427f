"""A trained model as one self-contained file: a ``torch.export`` program (``.pt2``) or ONNX.

The exported graph takes the raw values ``predict.py`` reads (feature rows, or pixel values
0..255 at the trained image size) and folds in what predict.py does around the net: the
scaling of pixels to training's ``pixel_max``, the normalization with the checkpoint's
statistics, and the module's ``predict_step`` (or its task's reading of the outputs). So its
outputs are predict.py's predictions, and a JSON card beside the file says how to read them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from src.harness.atomic_files import replaced_atomically, write_atomic
from src.harness.errors import ConfigError
from src.harness.loggers import require
from src.harness.raw_inputs import preprocessing_state

FORMATS = ("onnx", "pt2")
TORCH = str(Path(torch.__file__).parent)


class FromRawInputs(nn.Module):
    """The model as predict.py runs it, from raw inputs to the task's predictions."""

    def __init__(self, model: L.LightningModule, state: dict[str, Any], task: Any) -> None:
        """``task``: the data's task (``src/tasks.py``), which reads a module's outputs."""
        super().__init__()
        self.model = model.eval()
        self.pixel_max = state.get("pixel_max") if len(state["input_shape"]) > 1 else None
        self.register_buffer("mean", torch.as_tensor(state["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(state["std"], dtype=torch.float32))
        self.own_predict_step = type(model).predict_step is not L.LightningModule.predict_step
        self.task = task

    def forward(self, x: Tensor) -> Tensor:
        if self.pixel_max is not None:
            x = x / 255.0 * self.pixel_max
        x = (x - self.mean) / self.std
        if self.own_predict_step:
            return self.model.predict_step(x, 0).float()
        return self.task.predictions(self.model(x).float())


def model_card(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a user of the exported file needs to know, and where it came from: the input
    (shape after the batch dimension, dtype, feature names or pixel range), the task and its
    names, the checkpoint, its run folder, commit and config."""
    state = preprocessing_state(checkpoint)
    run = path.parent.parent  # <run>/checkpoints/<name>.ckpt
    info, config = run / "run_info.json", run / "config.yaml"
    recorded = json.loads(info.read_text()) if info.is_file() else {}
    shape = list(state["input_shape"])
    return {
        "input_shape": shape,
        "dtype": "float32",
        "inputs": "feature rows" if len(shape) == 1 else "greyscale pixel values 0..255",
        "feature_names": state.get("feature_names"),
        "task": state.get("task") or checkpoint["hyper_parameters"].get("task"),
        "labels": state.get("label_names"),
        "target": state.get("target"),
        "checkpoint": str(path),
        "run_folder": str(run) if config.is_file() else None,
        "commit": recorded.get("git", {}).get("commit"),
        "config": OmegaConf.to_container(OmegaConf.load(config)) if config.is_file() else None,
    }


def raw_input_model(
    checkpoint: dict[str, Any], model: L.LightningModule, task: Any
) -> FromRawInputs:
    return FromRawInputs(model, preprocessing_state(checkpoint), task)


def export(wrapped: FromRawInputs, card: dict[str, Any], output: Path, kind: str) -> Path:
    """Write ``output`` (a batch of any size in, predictions out) and its card,
    ``<output>.json``; an operation that cannot be exported is named with the checkpoint."""
    if kind not in FORMATS:
        raise ConfigError(f"format={kind} is not an export format; the formats: {FORMATS}")
    if kind == "onnx":
        require("onnxscript", extra="serve")
    example = torch.rand(2, *card["input_shape"]) * (255 if len(card["input_shape"]) > 1 else 1)
    batch = {"x": {0: torch.export.Dim("batch")}}
    try:
        with torch.no_grad():
            program = torch.export.export(wrapped, (example,), dynamic_shapes=batch, strict=False)
            if kind == "onnx":
                onnx_program = torch.onnx.export(program, dynamo=True, verbose=False)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for what it cannot trace
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        # the line of the model's code that torch stopped at, named in the stack it prints
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
        ours = [f" ({path}:{line}, in {name})" for path, line, name in frames if TORCH not in path]
        raise ConfigError(
            f"ckpt_path={card['checkpoint']} cannot be exported: {reason}{ours[-1] if ours else ''}"
            ". Its module's forward (or predict_step) must be traceable by torch.export."
        ) from None
    with replaced_atomically(output) as file:
        if kind == "onnx":
            file.write(onnx_program.model_proto.SerializeToString())
        else:
            torch.export.save(program, file)
    write_atomic(output.with_name(f"{output.name}.json"), json.dumps(card, indent=2) + "\n")
    return output
