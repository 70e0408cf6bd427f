"""New inputs for prediction, preprocessed exactly as training preprocessed its data.

Everything needed comes from the data module's state saved in the checkpoint
(``InMemoryDataModule.state_dict``): the normalization statistics, the input shape,
the feature names of tabular data and, for images, ``pixel_max``, the value a white
pixel had when training normalized it (255 for the MNIST family's uint8 pixels, 1 for
digits' 0..16 values divided by 16). Inputs given here follow one convention:

- feature rows: a CSV with a header naming every feature (extra columns are ignored);
- images: PNG files (any size, converted to greyscale; 16-bit ones scaled to 0..255) or
  an ``.npy`` array of shape ``(N, H, W)`` or ``(N, 1, H, W)``, with pixel values 0..255
  and, as in MNIST, light strokes on a dark background. They are scaled to
  ``0..pixel_max``, resized (bilinear) to the trained size, then normalized.

What cannot be read as such numbers (NaN or infinite values, an ``.npy`` of complex,
boolean or text values, pixels outside 0..255) is refused with the inputs it concerns:
a model given it would still write predictions, and they would mean nothing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from src.harness.allowlist import plain_value_problem
from src.harness.errors import ConfigError

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
        names, inputs = read_image_array(path)
        inputs = resize(inputs, shape)
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
    inputs = torch.tensor(values, dtype=torch.float32)
    refuse_non_finite(path, inputs, "data rows")
    return [str(i) for i in range(len(values))], inputs


def read_image_array(path: Path) -> tuple[list[str], Tensor]:
    """``(N, 1, H, W)`` images of an ``.npy`` array of real pixel values 0..255."""
    try:
        with path.open("rb") as handle:
            array = np.lib.format.read_array(handle, allow_pickle=False)
    except ValueError as error:  # not an .npy file, or Python objects that need unpickling
        raise ConfigError(
            f"input={path} is not a readable .npy array of numbers: {error}."
        ) from error
    if array.dtype.kind not in "iuf":
        raise ConfigError(
            f"input={path} holds {array.dtype} values; an image array must hold real numbers "
            "(integers or floats), pixel values 0..255."
        )
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ConfigError(
            f"input={path} has shape {array.shape}; an image array must have shape "
            "(N, H, W) or (N, 1, H, W)."
        )
    images = torch.from_numpy(array.astype(np.float32)).unsqueeze(1)
    refuse_non_finite(path, images, "images")
    if images.numel() and (images.min() < 0 or images.max() > 255):
        raise ConfigError(
            f"input={path} has pixel values from {images.min():g} to {images.max():g}; image "
            "arrays must hold 0..255 (16-bit images: multiply by 255/65535 first)."
        )
    return [str(i) for i in range(len(array))], images


def refuse_non_finite(path: Path, inputs: Tensor, kind: str) -> None:
    """Refuse NaN or inf inputs, naming the first few: the model would output NaN or inf."""
    bad = (~torch.isfinite(inputs.flatten(1))).any(dim=1).nonzero()[:, 0].tolist()
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ConfigError(
            f"input={path} holds NaN or infinite values (or numbers beyond float32's range) "
            f"in {kind} {', '.join(map(str, bad[:5]))}{more} (counted from 0, as in the input "
            "column of predictions.csv). Fix or remove them: their predictions would be NaN "
            "or infinite."
        )


def read_png_folder(folder: Path) -> tuple[list[str], list[Tensor]]:
    """Greyscale 0..255 images of the folder's ``*.png`` files, in name order."""
    from PIL import Image

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not paths:
        raise ConfigError(f"input={folder} holds no .png files.")
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                if image.mode.startswith("I"):  # 16-bit greyscale: convert("L") would clip it
                    pixels = np.asarray(image, dtype=np.float32) * (255 / 65535)
                else:
                    pixels = np.asarray(image.convert("L"), dtype=np.float32)
        except OSError as error:  # not an image, or a truncated one
            raise ConfigError(f"input={path} is not a readable PNG image: {error}.") from error
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
