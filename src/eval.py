"""Test a trained checkpoint: ``python src/eval.py ckpt_path=PATH [data=NAME]``.

The same straight line as train.py without fit: checkpoint -> data -> model (rebuilt
from the checkpoint alone) -> Trainer -> test -> metrics.json. Without ``data=...`` the
data config is the one the checkpoint's run recorded in its ``config.yaml``, so the test
split is the very one that run tested on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import src  # noqa: F401 - sets PROJECT_ROOT for the configs
from src.errors import ConfigError
from src.models.module import spec_class
from src.train import build_trainer, collect_metrics, run_identity, run_reporting_errors
from src.utils.checkpoint_io import warn_if_foreign
from src.utils.ckpt import (
    load_checkpoint,
    model_data_mismatch,
    resolve_ckpt_path,
    restore_model,
    run_folder,
)
from src.utils.paths import absolute_paths
from src.utils.run_files import print_config_tree, record_run, write_metrics
from src.utils.validate import raise_if


def checkpoint_path(cfg: DictConfig) -> Path:
    """The checkpoint that ``ckpt_path`` names; eval and predict cannot run without one."""
    path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.log_dir) / cfg.trained_task)
    if path is None:
        raise ConfigError(
            "no checkpoint given: pass ckpt_path=PATH (a .ckpt file written by training, for "
            "example logs/train/runs/<timestamp>/checkpoints/best.ckpt) or ckpt_path=last."
        )
    warn_if_foreign(path, cfg.paths.log_dir)
    return path


def data_config(cfg: DictConfig, ckpt_path: Path) -> DictConfig:
    """``data=...`` when given, else the data config recorded by the checkpoint's run."""
    if cfg.get("data") is not None:
        return cfg.data
    recorded = run_folder(ckpt_path) / "config.yaml"
    if not recorded.is_file():
        raise ConfigError(
            f"no data to test on: {recorded} (the config of the run that wrote the checkpoint) "
            "does not exist. Name the data: data=NAME (for example data=digits)."
        )
    data = OmegaConf.load(recorded).data
    try:  # the file sits beside a checkpoint that may come from anywhere
        spec_class(OmegaConf.to_container(data), "data")
    except ConfigError as error:
        raise ConfigError(
            f"{recorded} was refused as the data config ({error}). Name the data: data=NAME."
        ) from None
    return data


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint ``cfg.ckpt_path``; return its metrics (also in metrics.json)."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    absolute_paths(cfg)
    ckpt_path = checkpoint_path(cfg)
    checkpoint = load_checkpoint(ckpt_path)
    model = restore_model(checkpoint, ckpt_path)
    data = data_config(cfg, ckpt_path)
    problem = model_data_mismatch(checkpoint["hyper_parameters"], data)
    if problem:
        raise ConfigError(f"cannot evaluate {ckpt_path}: {problem}")
    with open_dict(cfg):
        cfg.data = data
        cfg.ckpt_path = str(ckpt_path)

    problems: list[str] = []
    trainer = build_trainer(cfg, problems)
    raise_if(problems)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    record_run(cfg, output_dir)

    trainer.test(model, datamodule=datamodule)
    metrics = {**run_identity(cfg), **collect_metrics(trainer), "ckpt_path": str(ckpt_path)}
    metrics["wall_time_s"] = time.perf_counter() - started
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    print_config_tree(cfg)
    run_reporting_errors(evaluate, cfg)


if __name__ == "__main__":
    main()
