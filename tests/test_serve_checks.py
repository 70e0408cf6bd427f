"""Requests and settings the prediction server refuses, checked in-process: each bad input
with its one-line reason, the middleware's HTTP answers, a bad config before any work."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
from typing import Any

import numpy as np
import pytest
from PIL import Image

from src.harness.errors import ConfigError
from src.harness.serving import serving_source
from src.tasks import TASKS
from tests.conftest import compose_config

pytest.importorskip("litserve", reason="the serve extra is not installed")
from src.harness.prediction_api import RefuseBadRequests, decode  # noqa: E402

IMAGES = {"input_shape": [1, 28, 28], "task": "classification", "labels": None}
ROWS = {"input_shape": [3], "feature_names": ["a", "b", "c"], "task": "regression"}


def png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_decode_from_pixel_lists_and_png_to_the_trained_size():
    pixels = np.random.default_rng(0).integers(0, 256, size=(28, 28))
    batch = decode({"inputs": [pixels.tolist(), [pixels.tolist()], png(pixels)]}, IMAGES)
    assert batch.shape == (3, 1, 28, 28) and batch.dtype == np.float32
    assert (batch == pixels).all()
    assert decode({"inputs": [np.zeros((8, 8)).tolist()]}, IMAGES).shape == (1, 1, 28, 28)


BAD_INPUTS = [
    (IMAGES, [1, 2], "not a list", "must be a JSON object"),
    (IMAGES, {"inputs": []}, "no inputs", "at least one input"),
    (IMAGES, {"inputs": [[[1, 2], [3]]]}, "ragged", r"inputs\[0\] is not a rectangular array"),
    (IMAGES, {"inputs": [[["a", "b"]]]}, "text", r"inputs\[0\] holds <U1 values"),
    (IMAGES, {"inputs": [[[True, False]]]}, "booleans", r"inputs\[0\] holds bool values"),
    (IMAGES, {"inputs": [[1, 2, 3]]}, "wrong shape", r"inputs\[0\] has shape \[3\]"),
    (IMAGES, {"inputs": [[[300.0]]]}, "pixel range", r"inputs\[0\] has pixel values outside"),
    (IMAGES, {"inputs": [[[float("nan")]]]}, "NaN", r"inputs \[0\] .* NaN or infinite"),
    (IMAGES, {"inputs": ["bm90IGEgcG5n"]}, "not a PNG", r"inputs\[0\] is not a base64-encoded"),
    (IMAGES, {"inputs": ["%%%"]}, "not base64", r"inputs\[0\] is not a base64-encoded"),
    (ROWS, {"inputs": [[1, 2]]}, "too few features", r"shape \[1, 2\].* 3 numbers: a, b, c"),
    (ROWS, {"inputs": [1, 2, 3]}, "not rows", r"shape \[3\]"),
    (ROWS, {"inputs": [[1, "2", 3]]}, "a string", "holds <U21 values"),
    (ROWS, {"inputs": [[1, 2, 3], [1, float("inf"), 3]]}, "inf", r"inputs \[1\] .* infinite"),
]


@pytest.mark.parametrize(
    ("card", "payload", "match"),
    [(card, payload, match) for card, payload, _, match in BAD_INPUTS],
    ids=[name for *_, name, _ in BAD_INPUTS],
)
def test_each_bad_input_is_refused_with_its_reason(card, payload, match):
    with pytest.raises(ValueError, match=match):
        decode(payload, card)


def guarded_post(body: bytes) -> tuple[int, Any]:
    """POST ``body`` through the middleware to a stand-in for the model, which echoes what
    reaches it, as JSON; sent in two chunks, as a client may."""

    async def echo(scope: dict, receive: Any, send: Any) -> None:
        assert dict(scope["headers"])[b"content-type"] == b"application/json"
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    chunks = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.request", "body": body[10:], "more_body": False},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return chunks.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    form = [(b"content-type", b"application/x-www-form-urlencoded")]  # what curl -d sends
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": form}
    middleware = RefuseBadRequests(echo, card=ROWS, max_body_bytes=200)
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_the_middleware_passes_good_requests_on_decoded_and_refuses_bad_ones():
    assert guarded_post(b'{"inputs": [[1, 2, 3]]}') == (200, {"inputs": [[1.0, 2.0, 3.0]]})
    for body, status, reason in [
        (b'{"inputs": [[1, 2]]}', 400, "each input must be a list of 3 numbers"),
        (b"[[1, 2, 3", 400, "the body is not JSON"),
        (b'{"inputs": [[1, 2, 3]]}' + b" " * 200, 413, "over max_body_bytes=200"),
    ]:
        answer = guarded_post(body)
        assert answer[0] == status and reason in answer[1]["detail"]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ([], "give either ckpt_path=PATH .* or model_file=FILE"),
        (["ckpt_path=a.ckpt", "model_file=a.onnx"], "not both or neither"),
        (["model_file=a.onnx", "host=example.com"], "host=example.com port=8000: the server"),
        (["model_file=a.onnx", "port=80"], "on a port from 1024 to 65535"),
        (["model_file=missing.onnx"], "missing.onnx does not exist: give an ONNX file"),
    ],
)
def test_serve_refuses_a_bad_config_before_any_work(overrides, match, tmp_path):
    cfg = compose_config(overrides, tmp_path / "run", "serve")
    with pytest.raises(ConfigError, match=match):
        serving_source(cfg, TASKS)
    assert not (tmp_path / "run").exists()


def test_a_port_in_use_is_refused_before_any_work(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = compose_config(["ckpt_path=a.ckpt", f"port={port}"], tmp_path / "run", "serve")
        with pytest.raises(ConfigError, match=f"port={port} cannot be served on 127.0.0.1"):
            serving_source(cfg, TASKS)


def test_an_onnx_file_without_its_card_is_refused(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    cfg = compose_config([f"model_file={tmp_path / 'model.onnx'}"], tmp_path / "run", "serve")
    with pytest.raises(ConfigError, match="has no card model.onnx.json beside it"):
        serving_source(cfg, TASKS)
