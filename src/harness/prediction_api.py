"""The LitServe API behind ``serve.py``: ``POST /predict`` answers with predict.py's columns.

A request is JSON, ``{"inputs": [...]}``: feature rows (lists of numbers in the card's
``feature_names`` order), or images (nested lists of pixel values 0..255, or base64-encoded
PNG files), resized to the trained size as predict.py resizes them. Bad input is refused in
the HTTP process, before it reaches the model: LitServe fails a whole batch when one of its
requests fails, so a client's bad request must never join a batch of other clients' good ones.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
import torch
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.harness.checkpoints import load_checkpoint, restore_model
from src.harness.errors import ConfigError
from src.harness.exporting import raw_input_model
from src.harness.raw_inputs import png_pixels, resize

ROUTE = "/predict"
REWRITTEN_HEADERS = (b"content-type", b"content-length")


def decode(payload: Any, card: dict[str, Any]) -> np.ndarray:
    """The raw inputs of a request as a float32 batch of the trained shape, or a ValueError
    whose text is the one-line reason the client gets."""
    items = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError('the body must be a JSON object {"inputs": [...]} with at least one input')
    shape = card["input_shape"]
    if len(shape) == 1:
        batch = numbers(items, "inputs")
        if batch.ndim != 2 or batch.shape[1] != shape[0]:
            features = ", ".join(card["feature_names"] or [])
            raise ValueError(
                f"inputs has shape {list(batch.shape)}; each input must be a list of "
                f"{shape[0]} numbers: {features}"
            )
    else:
        batch = np.stack([image(item, f"inputs[{i}]", shape) for i, item in enumerate(items)])
    bad = np.flatnonzero(~np.isfinite(batch.reshape(len(batch), -1)).all(axis=1))
    if bad.size:
        raise ValueError(f"inputs {bad[:5].tolist()} (counted from 0) hold NaN or infinite values")
    return batch


def numbers(value: Any, where: str) -> np.ndarray:
    """``value`` as a float32 array, refused if it is ragged or holds anything but numbers
    (numpy would read ``true`` as 1)."""
    try:
        array = np.array(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{where} is not a rectangular array of numbers ({error})") from None
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{where} holds {array.dtype} values, not only numbers")
    return array.astype(np.float32)


def image(item: Any, where: str, shape: list[int]) -> np.ndarray:
    """One image at the trained size: base64 PNG or pixel values 0..255 of shape (H, W) or
    (1, H, W)."""
    if isinstance(item, str):
        try:
            pixels = png_pixels(io.BytesIO(base64.b64decode(item, validate=True)), where)
        except (binascii.Error, ConfigError) as error:
            raise ValueError(f"{where} is not a base64-encoded PNG image ({error})") from None
    else:
        pixels = numbers(item, where)
        if pixels.ndim == 3 and pixels.shape[0] == 1:
            pixels = pixels[0]
        if pixels.ndim != 2 or not pixels.size:
            raise ValueError(
                f"{where} has shape {list(pixels.shape)}; an image is (H, W) or (1, H, W) pixels"
            )
        if np.isfinite(pixels).all() and (pixels.min() < 0 or pixels.max() > 255):
            raise ValueError(f"{where} has pixel values outside 0..255")
    return resize(torch.from_numpy(pixels).unsqueeze(0), shape).numpy()


class RefuseBadRequests:
    """ASGI middleware: a request to ``/predict`` that is too large, not JSON or not inputs
    this model takes gets a 4xx with its reason; a good one goes on as the decoded array."""

    def __init__(self, app: ASGIApp, card: dict[str, Any], max_body_bytes: int) -> None:
        self.app, self.card, self.max_body_bytes = app, card, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != ROUTE or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        size, more = 0, True
        while more:  # read to the end, so that the client reads the answer, not a reset
            message = await receive()
            chunk, more = message.get("body", b""), message.get("more_body", False)
            size += len(chunk)
            if size <= self.max_body_bytes:
                chunks.append(chunk)
        if size > self.max_body_bytes:
            reason = f"the request body is over max_body_bytes={self.max_body_bytes}"
            return await JSONResponse({"detail": reason}, 413)(scope, receive, send)
        try:
            payload = json.loads(b"".join(chunks))
        except (ValueError, RecursionError) as error:
            reason = f"the body is not JSON ({error})"
            return await JSONResponse({"detail": reason}, 400)(scope, receive, send)
        try:
            inputs = decode(payload, self.card)
        except ValueError as error:
            return await JSONResponse({"detail": str(error)}, 400)(scope, receive, send)
        decoded = json.dumps({"inputs": inputs.tolist()}).encode()
        # as JSON, whatever the client said (curl -d says a form, which LitServe would parse)
        headers = [(k, v) for k, v in scope["headers"] if k not in REWRITTEN_HEADERS]
        length = str(len(decoded)).encode()
        headers += [(b"content-type", b"application/json"), (b"content-length", length)]
        scope = {**scope, "headers": headers}

        async def receive_decoded() -> Message:
            return {"type": "http.request", "body": decoded, "more_body": False}

        await self.app(scope, receive_decoded, send)


class PredictionAPI(ls.LitAPI):
    """The model (a checkpoint run by torch, or an ONNX file run by onnxruntime) behind
    ``/predict``; requests batched across clients by LitServe."""

    def __init__(self, source: str, card: dict[str, Any], task: Any, **batching: Any) -> None:
        super().__init__(api_path=ROUTE, **batching)
        self.source, self.card, self.task = source, card, task

    def setup(self, device: str) -> None:
        if self.source.endswith(".onnx"):
            import onnxruntime

            session = onnxruntime.InferenceSession(self.source, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self.model = lambda x: session.run(None, {name: x})[0]
        else:
            checkpoint = load_checkpoint(Path(self.source))
            model = restore_model(checkpoint, Path(self.source))
            wrapped = raw_input_model(checkpoint, model, self.task)

            @torch.inference_mode()
            def model(x: np.ndarray) -> np.ndarray:
                return wrapped(torch.from_numpy(x)).numpy()

            self.model = model

    def decode_request(self, request):  # unannotated: LitServe reads the request's type from it
        return np.asarray(request["inputs"], dtype=np.float32)  # checked by RefuseBadRequests

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return inputs  # requests hold any number of inputs: predict joins them

    def predict(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        requests = x if self.max_batch_size > 1 else [x]
        ends = np.cumsum([len(request) for request in requests])[:-1]
        outputs = np.split(self.model(np.concatenate(requests)), ends)
        return outputs if self.max_batch_size > 1 else outputs[0]

    def encode_response(self, output: np.ndarray) -> dict[str, list[dict[str, Any]]]:
        """predict.py's CSV row for each input, as ``{column: value}``."""
        columns, rows = self.task.table(torch.from_numpy(output), self.card["labels"])
        return {
            "predictions": [
                dict(zip(["input", *columns], [str(i), *row], strict=True))
                for i, row in enumerate(rows)
            ]
        }
