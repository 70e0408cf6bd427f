"""The prediction server as a user runs it, a subprocess on a free local port (slow): single,
batched and concurrent requests answered with predict.py's rows, every bad input refused with
a one-line reason while it goes on serving, and SIGTERM ending it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, assert_same_predictions
from tests.test_export import export_file, predict_csv_rows, write_raw_inputs
from tests.test_serve_checks import BAD_INPUTS, png


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(model: str, log_dir: Path) -> Iterator[str]:
    """``python src/serve.py`` on a free local port, once its health route answers; stopped
    by SIGTERM to its pid, which must end it cleanly."""
    port = free_port()
    command = [sys.executable, str(ROOT / "src" / "serve.py"), model, f"port={port}"]
    server = subprocess.Popen(
        [*command, f"paths.log_dir={log_dir}", "max_batch_size=8", "max_body_bytes=100000"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(url):
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the server's health route never answered"
            time.sleep(0.5)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def post(url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    # no Content-Type: urllib, like curl -d, says a form; the server reads JSON all the same
    request = urllib.request.Request(f"{url}/predict", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def assert_served_as_predict_py(url: str, inputs: list[Any], expected: list[dict]) -> None:
    """One request, one batch of all inputs, and 16 clients at once: predict.py's rows."""
    status, single = post(url, {"inputs": inputs[:1]})
    assert status == 200
    assert_same_predictions(single["predictions"], expected[:1])
    status, batched = post(url, {"inputs": inputs})
    assert status == 200
    assert [row["input"] for row in batched["predictions"]] == [row["input"] for row in expected]
    assert_same_predictions(batched["predictions"], expected)
    with ThreadPoolExecutor(16) as clients:
        answers = list(
            clients.map(lambda i: post(url, {"inputs": [inputs[i % len(inputs)]]}), range(32))
        )
    for i, (status, answer) in enumerate(answers):
        assert status == 200
        assert_same_predictions(answer["predictions"], [expected[i % len(inputs)]])


@pytest.mark.slow
def test_a_served_checkpoint_answers_as_predict_py_and_survives_bad_input(
    lenet_digits_ckpt, tmp_path
):
    source, pixels = write_raw_inputs(lenet_digits_ckpt, tmp_path / "inputs")
    expected = predict_csv_rows(lenet_digits_ckpt, source, tmp_path / "predict")
    images = pixels[:, 0].tolist()
    with running_server(f"ckpt_path={lenet_digits_ckpt}", tmp_path / "logs") as url:
        assert_served_as_predict_py(url, images, expected)
        status, answer = post(url, {"inputs": [png(pixels[0, 0])]})
        assert status == 200
        assert_same_predictions(answer["predictions"], expected[:1])
        bad = [json.dumps(payload).encode() for _, payload, *_ in BAD_INPUTS[:10]]
        for body in [*bad, b"not json", b'{"inputs": [' + b"0," * 60000 + b"0]}"]:
            status, answer = post(url, body)
            assert status in (400, 413) and "\n" not in answer["detail"], answer
            assert post(url, {"inputs": images[:1]})[0] == 200  # still serving


@pytest.mark.slow
def test_a_served_onnx_model_answers_as_predict_py(mlp_housing_ckpt, tmp_path):
    source, rows = write_raw_inputs(mlp_housing_ckpt, tmp_path / "inputs")
    expected = predict_csv_rows(mlp_housing_ckpt, source, tmp_path / "predict")
    model_file = export_file(
        mlp_housing_ckpt, "onnx", tmp_path / "export", f"output={tmp_path / 'model.onnx'}"
    )
    with running_server(f"model_file={model_file}", tmp_path / "logs") as url:
        assert_served_as_predict_py(url, rows.tolist(), expected)
        status, answer = post(url, {"inputs": [[1.0] * 7]})
        assert status == 400 and "8 numbers: MedInc, HouseAge" in answer["detail"]
