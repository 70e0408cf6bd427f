"""How fast a trained model answers once deployed: ``python scripts/benchmark_serving.py``.

For LeNet on digits and the MLP on California housing (each trained briefly: speed does not
depend on accuracy; California from ``--housing-csv``, by default the reference copy beside
the repository, else scikit-learn's download), it measures requests/s and the p50/p99 latency
of one-input requests from 1 and 16 concurrent clients to ``python src/serve.py`` serving the
checkpoint and the exported ONNX model, and ``python src/predict.py`` over the same inputs as
one file (its latency: the whole command, start-up included). Each measurement lasts
``--seconds``; the table goes to docs/deploy.md. Figures from a shared machine are noisy:
compare ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HOUSING = ROOT.parent / "shared" / "data" / "california_housing.csv"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def script(name: str, *args: str, logs: Path) -> None:
    command = [sys.executable, str(ROOT / "src" / f"{name}.py"), *args, f"paths.log_dir={logs}"]
    subprocess.run(command, env=ENV, check=True, capture_output=True, timeout=600)


def trained(logs: Path, *overrides: str) -> Path:
    """A model trained one short epoch; its checkpoint."""
    tiny = ["trainer.max_epochs=1", "trainer.limit_train_batches=20", "logger=none"]
    script("train", *overrides, *tiny, "trainer.enable_progress_bar=false", logs=logs)
    return max(logs.glob("train/runs/*/checkpoints/last.ckpt"), key=os.path.getmtime)


@contextmanager
def server(argument: str, logs: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, str(ROOT / "src" / "serve.py"), argument, f"port={port}"]
    process = subprocess.Popen(
        [*command, f"paths.log_dir={logs}"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not answers(f"{url}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server for {argument} did not start")
            time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def answers(url: str, body: bytes | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as reply:
            return reply.status == 200
    except OSError:
        return False


def load(url: str, inputs: list, clients: int, seconds: float) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 latency (ms) of ``clients`` sending one input at a time."""
    stop = time.monotonic() + seconds

    def client(k: int) -> list[float]:
        latencies = []
        while time.monotonic() < stop:
            body = json.dumps({"inputs": [inputs[(k + len(latencies)) % len(inputs)]]}).encode()
            started = time.perf_counter()
            if not answers(f"{url}/predict", body):
                raise RuntimeError("a request failed")
            latencies.append(time.perf_counter() - started)
        return latencies

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(sum(pool.map(client, range(clients)), []))
    elapsed = time.monotonic() - started
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return len(latencies) / elapsed, statistics.median(latencies) * 1e3, p99 * 1e3


def predict_file(ckpt: Path, source: Path, count: int, logs: Path) -> tuple[float, float]:
    """Inputs/s of predict.py over the file, and its whole run's time (ms)."""
    started = time.perf_counter()
    script("predict", f"ckpt_path={ckpt}", f"input={source}", logs=logs)
    elapsed = time.perf_counter() - started
    return count / elapsed, elapsed * 1e3


def raw_inputs(ckpt: Path, folder: Path, count: int) -> tuple[Path, list]:
    """``count`` raw inputs of the checkpoint's kind, as predict.py's file and as JSON."""
    import torch

    state = next(
        value
        for value in torch.load(ckpt, weights_only=True).values()
        if isinstance(value, dict) and "input_shape" in value
    )
    shape, rng = list(state["input_shape"]), np.random.default_rng(0)
    if len(shape) > 1:
        pixels = rng.integers(0, 256, size=(count, *shape[1:])).astype(np.float32)
        np.save(folder / "images.npy", pixels)
        return folder / "images.npy", pixels.tolist()
    rows = rng.normal(3.0, 1.0, size=(count, shape[0])).round(4).tolist()
    with (folder / "rows.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([state["feature_names"], *rows])
    return folder / "rows.csv", rows


def row(*cells: object) -> None:
    print(f"| {' | '.join(map(str, cells))} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="per measurement")
    parser.add_argument("--inputs", type=int, default=1000, help="in predict.py's file")
    parser.add_argument("--housing-csv", type=Path, default=HOUSING, help="offline: its CSV")
    parser.add_argument("--models", nargs="+", choices=["lenet", "mlp"], default=["lenet", "mlp"])
    args = parser.parse_args()
    housing = [f"data.csv_path={args.housing_csv}"] if args.housing_csv.is_file() else []
    pairs = {
        "lenet": ("LeNet, digits", ["data=digits"]),
        "mlp": ("MLP, California", ["data=california", *housing]),
    }
    row("model, data", "served", "clients", "requests/s", "p50 ms", "p99 ms")
    row(*["---"] * 6)
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            name, data = pairs[model]
            logs = Path(folder) / model
            ckpt = trained(logs, f"model={model}", *data)
            script("export", f"ckpt_path={ckpt}", "format=onnx", logs=logs)
            source, inputs = raw_inputs(ckpt, logs, args.inputs)
            for served, argument in (
                ("checkpoint", f"ckpt_path={ckpt}"),
                ("ONNX", f"model_file={ckpt.with_suffix('.onnx')}"),
            ):
                with server(argument, logs) as url:
                    for clients in (1, 16):
                        rate, p50, p99 = load(url, inputs, clients, args.seconds)
                        row(name, served, clients, f"{rate:.0f}", f"{p50:.1f}", f"{p99:.1f}")
            rate, elapsed = predict_file(ckpt, source, args.inputs, logs)
            served = f"predict.py, {args.inputs} inputs in a file"
            row(name, served, "-", f"{rate:.0f} inputs/s", f"{elapsed:.0f} (whole run)", "-")


if __name__ == "__main__":
    main()
