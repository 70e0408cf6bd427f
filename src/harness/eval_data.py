"""The data ``eval.py`` tests a checkpoint on, checked to fit the checkpoint's model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from src.harness.allowlist import spec_class
from src.harness.errors import ConfigError
from src.harness.overrides import job_overrides, override_key
from src.harness.provenance import plain
from src.harness.resume import differences

log = logging.getLogger(__name__)
log_file_only = logging.getLogger("log_file_only")  # not on the console (configs/hydra)


def choose_test_data(cfg: DictConfig, ckpt_path: Path, hparams: dict[str, Any]) -> None:
    """Set ``cfg.data`` to what ``eval.py`` tests the checkpoint on, checked to fit its model.

    Only ``data=NAME`` on the command line picks the data (``model=NAME`` brings its own data
    set in training, configs/model/, not here); without it, the data config that the
    checkpoint's run recorded, checked to name no foreign code. ``model=NAME`` checks that the
    checkpoint holds the net that model config sets up.
    """
    choices = HydraConfig.get().runtime.choices
    source = f"data={choices.get('data')}"
    if "data" not in map(override_key, job_overrides()):
        source = ckpt_path.parent.parent / "config.yaml"  # <run>/checkpoints/<name>.ckpt
        if not source.is_file():
            raise ConfigError(
                f"no data to test on: {source} (the config of the run that wrote the checkpoint)"
                " does not exist. Name the data: data=NAME (for example data=digits)."
            )
        data = OmegaConf.load(source).data
        try:  # the file sits beside a checkpoint that may come from anywhere
            spec_class(OmegaConf.to_container(data), "data")
        except ConfigError as error:
            raise ConfigError(
                f"{source} was refused as the data config ({error}). Name the data: data=NAME."
            ) from None
        with open_dict(cfg):
            cfg.data = data
    log.info("Data: %s, from %s", cfg.data._target_.rpartition(".")[2], source)
    problem = model_data_mismatch(hparams, cfg.data)
    if choices.get("model") and not problem:
        problem = net_mismatch(hparams["net"], plain(cfg.model.net), choices.get("model"))
    if problem:
        raise ConfigError(f"cannot evaluate {ckpt_path}: {problem}")


def model_data_mismatch(hparams: dict[str, Any], data: Any) -> str | None:
    """Why a checkpoint's model cannot run on ``data`` (a data config), or ``None`` if it can."""
    net = hparams["net"]
    trained = (hparams["task"], list(net["input_shape"]), hparams["num_outputs"])
    given = (data["task"], list(data["input_shape"]), data["num_outputs"])
    if trained == given:
        return None
    return (
        f"the checkpoint's model ({net['_target_'].rpartition('.')[2]}, {trained[0]} on input "
        f"shape {trained[1]} with {trained[2]} outputs) does not match the data ({given[0]}, "
        f"input shape {given[1]}, {given[2]} outputs). Choose data of the same kind, or leave "
        "data unset to use the data the model was trained on."
    )


def net_mismatch(trained: dict[str, Any], chosen: dict[str, Any], name: str) -> str | None:
    """Why a checkpoint's net is not the one ``model=NAME`` sets up, or ``None`` if it is.

    Only the arguments the model config gives are compared (one it leaves to the net's
    default is no difference), and those of another net not at all.
    """
    keys = ["_target_"] if trained["_target_"] != chosen.get("_target_") else list(chosen)
    changed = [
        line
        for key in keys
        for line in differences(trained.get(key), chosen[key], f"model.net.{key}")
    ]
    if not changed:
        return None
    return (
        f"the checkpoint does not hold the net that model={name} sets up ({'; '.join(changed)}). "
        "The model comes from the checkpoint: leave model= out, or name the model config "
        "(and model.net.KEY=VALUE overrides) it was trained with."
    )
