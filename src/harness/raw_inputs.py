"""New inputs for prediction, preprocessed exactly as training preprocessed its data.

Everything needed comes from the data module's state saved in the checkpoint
(``InMemoryDataModule.state_dict``): the normalization statistics, the input shape,
the feature names of tabular data and, for images, ``pixel_max``, the value a white
pixel had when training normalized it (255 for the MNIST family's uint8 pixels, 1 for
digits' 0..16 values divided by 16). Inputs given here follow one convention:

- feature rows: a CSV whose header names every feature once (and may name the training
  data's target column, which is ignored), each row holding one decimal number per column;
- images: image files, PNG, JPEG... (any size, converted to greyscale, or to RGB for a
  model of colour images; 16-bit ones scaled to 0..255) or
  an ``.npy`` array of shape ``(N, H, W)`` or ``(N, 1, H, W)``, with pixel values 0..255
  and, as in MNIST, light strokes on a dark background. They are scaled to
  ``0..pixel_max``, resized (bilinear) to the trained size, then normalized.

What cannot be read as such numbers (NaN or infinite values, an ``.npy`` of complex,
boolean or text values, pixels outside 0..255, a column named twice) is refused with the
inputs it concerns: a model given it would still write predictions, and they would mean
nothing.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from src.harness.allowlist import plain_value_problem
from src.harness.errors import ConfigError
from src.harness.file_kinds import not_a_file

PREPROCESSING_KEYS = {"mean", "std", "input_shape"}
# Rows parsed at a time: a CSV of any length takes little more memory than its tensor.
ROWS_PER_CHUNK = 10_000


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
    shape = list(state["input_shape"])
    problem = None if len(shape) > 1 and path.is_dir() else not_a_file(path)
    if problem:
        raise ConfigError(f"input={path} {problem}. {expected_inputs(state)}")
    if len(shape) == 1:
        if path.suffix.lower() != ".csv":
            raise ConfigError(f"input={path} is not a CSV file. {expected_inputs(state)}")
        names, inputs = read_feature_rows(path, state)
    elif path.is_dir():
        names, images = read_image_folder(path, shape[0])
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


def read_feature_rows(path: Path, state: dict[str, Any]) -> tuple[list[str], Tensor]:
    """The feature columns of a CSV, parsed ``ROWS_PER_CHUNK`` rows at a time; a row with
    more or fewer cells than the header is refused by its line number."""
    chunks = []
    with path.open(newline="") as handle:
        rows = csv.reader(handle)
        try:
            header = next(rows, [])
            columns = feature_columns(path, header, state)
            cells, lines = [], []
            for row in rows:
                if len(row) != len(header):
                    raise ConfigError(
                        f"input={path} line {rows.line_num} has {len(row)} cells, its header "
                        f"{len(header)} columns: every row needs one value per column."
                    )
                cells.append([row[i] for i in columns])
                lines.append(rows.line_num)
                if len(cells) == ROWS_PER_CHUNK:
                    chunks.append(numbers(path, cells, lines, state["feature_names"]))
                    cells, lines = [], []
        except (csv.Error, UnicodeDecodeError) as error:
            raise ConfigError(
                f"input={path} is not a readable CSV file (line {rows.line_num}: {error})."
            ) from error
    if cells:
        chunks.append(numbers(path, cells, lines, state["feature_names"]))
    if not chunks:
        raise ConfigError(f"input={path} has a header but no rows to predict.")
    inputs = torch.cat(chunks)
    refuse_non_finite(path, inputs, "data rows")
    return [str(i) for i in range(len(inputs))], inputs


def feature_columns(path: Path, header: list[str], state: dict[str, Any]) -> list[int]:
    """Where each feature is in ``header``. A column named twice is refused (which copy would
    be the feature?), and so is one the model does not take, the target column excepted."""
    features = state["feature_names"]
    problems = [
        f"{what} {names}"
        for what, names in (
            ("lacks the feature columns", [name for name in features if name not in header]),
            (
                "names more than once the columns",
                [n for n, count in Counter(header).items() if count > 1],
            ),
            (
                "has columns the model does not take:",
                [name for name in header if name not in {*features, state.get("target")}],
            ),
        )
        if names
    ]
    if problems:
        target = (
            f", and may name the target column {state['target']!r}" if "target" in state else ""
        )
        raise ConfigError(
            f"input={path} {'; '.join(problems)} (its columns: {header}). The header must name "
            f"{','.join(features)} once each{target}."
        )
    return [header.index(name) for name in features]


def numbers(path: Path, cells: list[list[str]], lines: list[int], names: list[str]) -> Tensor:
    """``cells`` as float32, or the first cell that is not a plain decimal number refused.

    numpy, like Python's ``float``, also reads ``1_000`` and non-ASCII digits; spreadsheets and
    other programs do not, so such a cell is more likely a mistake than a number.
    """
    text = "".join(itertools.chain.from_iterable(cells))
    if "_" not in text and text.isascii():
        try:
            with np.errstate(over="ignore"):  # beyond float32: inf, refused with its row
                return torch.from_numpy(np.array(cells, dtype=np.float32))
        except ValueError:
            pass
    line, name, cell = next(
        (line, name, cell)
        for row, line in zip(cells, lines, strict=True)
        for name, cell in zip(names, row, strict=True)
        if not plain_number(cell)
    )
    raise ConfigError(
        f"input={path} line {line}, column {name}: {cell!r} is not a number. Write decimal "
        "numbers such as 1000, -2.5 or 1e-3 (no digit separators)."
    )


def plain_number(cell: str) -> bool:
    """Whether numpy reads ``cell`` as a number, written in ASCII without ``_`` separators."""
    try:
        float(cell)
    except ValueError:
        return False
    return cell.isascii() and "_" not in cell


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
    if not array.size:
        raise ConfigError(f"input={path} has shape {array.shape}: it holds nothing to predict.")
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


def read_image_folder(folder: Path, channels: int) -> tuple[list[str], list[Tensor]]:
    """0..255 images (``channels`` 1: grey, 3: colour) of the folder's image files (PNG, JPEG,
    BMP, TIFF, WebP...), in name order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
    if not paths:
        raise ConfigError(f"input={folder} holds no image files ({', '.join(IMG_EXTENSIONS)}).")
    images = []
    for path in paths:
        if problem := not_a_file(path):
            raise ConfigError(f"input={path} {problem}: give image files only.")
        pixels = png_pixels(path, f"input={path}", "L" if channels == 1 else "RGB")
        images.append(torch.from_numpy(pixels).reshape(*pixels.shape[:2], -1).permute(2, 0, 1))
    return [p.name for p in paths], images


def png_pixels(source: Path | BinaryIO, name: str, mode: str = "L") -> np.ndarray:
    """The 0..255 pixels of one image (a file, or its bytes from a request), greyscale
    (``mode="L"``, ``[H, W]``) or colour (``"RGB"``, ``[H, W, 3]``)."""
    from PIL import Image

    try:
        with Image.open(source) as image:
            if image.mode.startswith("I") and mode == "L":  # 16-bit: convert("L") would clip
                pixels = np.asarray(image, dtype=np.float32) * (255 / 65535)
            else:
                pixels = np.asarray(image.convert(mode), dtype=np.float32)
    except OSError as error:  # not an image, or a truncated one
        raise ConfigError(f"{name} is not a readable image: {error}.") from error
    except Image.DecompressionBombError as error:  # decoding it could exhaust the memory
        raise ConfigError(
            f"{name} is too large to read safely: {error} Shrink it first (it is "
            "resized to the trained size anyway)."
        ) from error
    return pixels.copy()


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


def spreadsheet_safe(cell: str) -> str:
    """``cell`` as text that a spreadsheet shows rather than runs: a file named
    ``=HYPERLINK(...).png`` would be a live formula in predictions.csv. A cell that starts as a
    formula can (``=``, ``+``, ``-``, ``@``, a tab or a carriage return: OWASP's list) gets a
    leading ``'``, which spreadsheets read as "text follows"."""
    return f"'{cell}" if cell.startswith(("=", "+", "-", "@", "\t", "\r")) else cell
