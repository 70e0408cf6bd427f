"""``serve.py``'s steps: the model to serve and its card, checked before any work; then the
LitServe server, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from src.harness.errors import ConfigError
from src.harness.exporting import model_card
from src.harness.file_kinds import not_a_file
from src.harness.loggers import require
from src.harness.run import trained_model

# What LitServe binds to (server.run refuses any other host), and its ports.
HOSTS = ("127.0.0.1", "0.0.0.0", "::")
PORTS = range(1024, 65536)

log = logging.getLogger(__name__)


def serving_source(cfg: DictConfig, tasks: Collection[str]) -> tuple[str, dict[str, Any]]:
    """The checkpoint or ONNX file to serve and its card (whose task must be one of
    ``tasks``), with the server's settings checked."""
    require("litserve", extra="serve")
    if cfg.host not in HOSTS or cfg.port not in PORTS:
        raise ConfigError(
            f"host={cfg.host} port={cfg.port}: the server binds to host 127.0.0.1 (this "
            f"machine only), 0.0.0.0 or :: (every network), on a port from 1024 to 65535."
        )
    with socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET) as probe:
        try:
            probe.bind((cfg.host, cfg.port))
        except OSError as error:
            raise ConfigError(
                f"port={cfg.port} cannot be served on {cfg.host} ({error.strerror}): another "
                "server holds it? Choose another with port=N."
            ) from None
    if (cfg.ckpt_path is None) == (cfg.model_file is None):
        raise ConfigError(
            "give either ckpt_path=PATH (a checkpoint, or last) or model_file=FILE (an ONNX "
            "file written by python src/export.py), not both or neither."
        )
    if cfg.ckpt_path is not None:
        path, checkpoint, _ = trained_model(cfg)  # rebuilt here too: a bad one fails now
        return str(path), model_card(checkpoint, path)
    require("onnxruntime", extra="serve")
    path = Path(cfg.model_file).expanduser().resolve()
    return str(path), exported_card(path, tasks)


def exported_card(path: Path, tasks: Collection[str]) -> dict[str, Any]:
    """The card ``export.py`` wrote beside an ONNX file, checked for what serving reads."""
    card_path = path.with_name(f"{path.name}.json")
    problem = not_a_file(path) or (path.suffix != ".onnx" and "is not an .onnx file")
    problem = problem or (not_a_file(card_path) and f"has no card {card_path.name} beside it")
    if problem:
        raise ConfigError(
            f"model_file={path} {problem}: give an ONNX file written by python src/export.py, "
            "with the .json card it writes beside it."
        )
    try:
        card = json.loads(card_path.read_text())
        shape, task = card["input_shape"], card["task"]
        valid = all(isinstance(size, int) and size > 0 for size in shape) and task in tasks
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ConfigError(f"{card_path} is not a card written by python src/export.py.")
    return card


def run_server(source: str, card: dict[str, Any], task: Any, cfg: DictConfig) -> None:
    """Serve ``POST /predict`` and ``GET /health`` until stopped; ``task`` (``src/tasks.py``)
    reads the model's outputs and names predict.py's columns."""
    import litserve as ls

    from src.harness.prediction_api import PredictionAPI, RefuseBadRequests

    api = PredictionAPI(
        source, card, task, max_batch_size=cfg.max_batch_size, batch_timeout=cfg.batch_timeout
    )
    middleware = (RefuseBadRequests, {"card": card, "max_body_bytes": cfg.max_body_bytes})
    server = ls.LitServer(api, accelerator="cpu", timeout=cfg.timeout, middlewares=[middleware])
    with stopping_on_sigterm():
        server.run(host=cfg.host, port=cfg.port, generate_client_file=False)


@contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the server as Ctrl-C does: LitServe shuts its workers down and returns."""

    server = os.getpid()

    def interrupt(signum: int, frame: Any) -> None:
        if os.getpid() != server:  # a process LitServe forked, which it stops with SIGTERM
            raise SystemExit(128 + signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt:  # before LitServe's own shutdown began
        log.info("Stopped.")
    finally:
        signal.signal(signal.SIGTERM, previous)
