"""New inputs for prediction, preprocessed exactly as training preprocessed its data.

Everything needed comes from the data module's state saved in the checkpoint
(``InMemoryDataModule.state_dict``): the normalization statistics, the input shape,
the feature names of tabular data and, for images, ``pixel_max``, the value a white
pixel had when training normalized it (255 for the MNIST family's uint8 pixels, 1 for
digits' 0..16 values divided by 16). Inputs given here follow one convention:

- feature rows: a CSV with a header naming every feature (extra columns are ignored);
- images: PNG files (any size, converted to greyscale) or an ``.npy`` array of shape
  ``(N, H, W)`` or ``(N, 1, H, W)``, with pixel values 0..255 and, as in MNIST, light
  strokes on a dark background. They are scaled to ``0..pixel_max``, resized
  (bilinear) to the trained size, then normalized.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from src.errors import ConfigError
from src.models.module import plain_value_problem

PREPROCESSING_KEYS = {"mean", "std", "input_shape"}


def preprocessing_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The data module's state that Lightning saved in the checkpoint under its class name."""
    for value in checkpoint.values():
        if isinstance(value, dict) and set(value) >= PREPROCESSING_KEYS:
            problems = (
                plain_value_problem(item, f"preprocessing state {key}")
                for key, item in value.items()
                if not isinstance(item, Tensor)
            )
            problem = next((problem for problem in problems if problem), None)
            if problem:
                raise ConfigError(f"the checkpoint was refused: {problem}.")
            return value
    raise ConfigError(
        "the checkpoint holds no preprocessing state (normalization statistics, input shape): "
        "it was not written by training with this project's data modules. Retrain and "
        "predict with the new checkpoint."
    )


def read_inputs(path: Path, state: dict[str, Any]) -> tuple[list[str], Tensor]:
    """Names for the output rows and the model-ready input tensor, one row per input."""
    if not path.exists():
        raise ConfigError(f"input={path} does not exist. {expected_inputs(state)}")
    shape = list(state["input_shape"])
    if len(shape) == 1:
        if path.suffix.lower() != ".csv":
            raise ConfigError(f"input={path} is not a CSV file. {expected_inputs(state)}")
        names, inputs = read_feature_rows(path, state["feature_names"])
    elif path.is_dir():
        names, images = read_png_folder(path)
        inputs = torch.stack([resize(image, shape) for image in images])
    elif path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3:
            raise ConfigError(
                f"input={path} has shape {array.shape}; an image array must have shape "
                "(N, H, W) or (N, 1, H, W)."
            )
        names = [str(i) for i in range(len(array))]
        inputs = resize(torch.from_numpy(array.astype(np.float32)).unsqueeze(1), shape)
    else:
        raise ConfigError(
            f"input={path} is neither a folder nor an .npy file. {expected_inputs(state)}"
        )
    if len(shape) > 1:
        inputs = inputs / 255.0 * state["pixel_max"]
    return names, (inputs - state["mean"]) / state["std"]


def expected_inputs(state: dict[str, Any]) -> str:
    shape = list(state["input_shape"])
    if len(shape) == 1:
        features = ",".join(state["feature_names"])
        return f"This model takes a CSV whose header names the features {features}."
    return (
        "This model takes a folder of PNG images or an .npy array of images "
        f"(trained size {shape[1:]})."
    )


def read_feature_rows(path: Path, features: list[str]) -> tuple[list[str], Tensor]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    missing = [name for name in features if name not in header]
    if missing:
        raise ConfigError(
            f"input={path} lacks the feature columns {missing} (its columns: {header}). "
            f"The header must name {','.join(features)}; other columns are ignored."
        )
    columns = [header.index(name) for name in features]
    try:
        values = [[float(row[i]) for i in columns] for row in body]
    except (ValueError, IndexError) as error:
        raise ConfigError(f"input={path} has a row that is not all numbers: {error}") from error
    if not values:
        raise ConfigError(f"input={path} has a header but no rows to predict.")
    return [str(i) for i in range(len(values))], torch.tensor(values, dtype=torch.float32)


def read_png_folder(folder: Path) -> tuple[list[str], list[Tensor]]:
    """Greyscale 0..255 images of the folder's ``*.png`` files, in name order."""
    from PIL import Image

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not paths:
        raise ConfigError(f"input={folder} holds no .png files.")
    images = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        images.append(torch.from_numpy(pixels.copy()).unsqueeze(0))
    return [p.name for p in paths], images


def resize(images: Tensor, shape: list[int]) -> Tensor:
    """Bilinear resize of ``(C, H, W)`` or ``(N, C, H, W)`` images to ``shape[1:]``.

    Upsampling matches digits' own 8x8 -> 28x28 resize; antialiasing only changes
    downsampling, where it keeps large images from aliasing.
    """
    batch = images if images.dim() == 4 else images.unsqueeze(0)
    if list(batch.shape[-2:]) != list(shape[1:]):
        batch = F.interpolate(
            batch, size=shape[1:], mode="bilinear", align_corners=False, antialias=True
        )
    return batch if images.dim() == 4 else batch[0]
