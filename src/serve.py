"""Serve a trained model over HTTP: ``python src/serve.py ckpt_path=PATH`` (or
``model_file=FILE.onnx``) [host=127.0.0.1] [port=8000].

prepare (the checkpoint, or the exported ONNX file and its card, checked; the run recorded) ->
a LitServe server: ``POST /predict`` with ``{"inputs": [...]}`` (feature rows, or images as
pixel lists or base64 PNG) answers with predict.py's columns, requests batched across clients;
``GET /health`` answers while it runs -> stopped by Ctrl-C or SIGTERM. docs/deploy.md shows it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.harness.failures import run_reporting_errors
from src.harness.provenance import record_run
from src.harness.serving import run_server, serving_source
from src.tasks import TASKS


def serve(cfg: DictConfig) -> None:
    """Serve the model ``cfg`` names until stopped."""
    source, card = serving_source(cfg, TASKS)
    record_run(cfg, Path(cfg.paths.output_dir))
    run_server(source, card, TASKS[card["task"]], cfg)


@hydra.main(version_base="1.3", config_path="../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(serve, cfg)


if __name__ == "__main__":
    main()
