"""The data ``eval.py`` tests a checkpoint on, checked to fit the checkpoint's model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from src.harness.allowlist import spec_class
from src.harness.checkpoints import DEFAULT_MODULE, MODULE_CLASS
from src.harness.errors import ConfigError
from src.harness.overrides import job_overrides, override_key
from src.harness.provenance import plain
from src.harness.resume import differences

log = logging.getLogger(__name__)


def choose_test_data(cfg: DictConfig, ckpt_path: Path, checkpoint: dict[str, Any]) -> None:
    """Set ``cfg.data`` to what ``eval.py`` tests the checkpoint on, checked to fit its model.

    Only ``data=NAME`` on the command line picks the data (``model=NAME`` brings its own data
    set in training, configs/model/, not here); without it, the data config that the
    checkpoint's run recorded, checked to name no foreign code. ``model=NAME`` checks that the
    checkpoint holds the module and net that model config sets up.
    """
    hparams = checkpoint["hyper_parameters"]
    module_class = checkpoint.get(MODULE_CLASS, DEFAULT_MODULE)
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
    problem = model_data_mismatch(hparams, cfg.data, module_class)
    if choices.get("model") and not problem:
        problem = model_mismatch(module_class, hparams, plain(cfg.model), choices.get("model"))
    if problem:
        raise ConfigError(f"cannot evaluate {ckpt_path}: {problem}")


def model_data_mismatch(hparams: dict[str, Any], data: Any, module_class: str) -> str | None:
    """Why a checkpoint's model cannot run on ``data`` (a data config), or ``None`` if it can.

    Compared: what the module records of the task, the input shape (its own or its net's)
    and the number of outputs; a module that records none of them is not checked, nor what
    the data config leaves null.
    """
    net = hparams.get("net") or {}
    recorded = {
        "task": hparams.get("task"),
        "input_shape": hparams.get("input_shape", net.get("input_shape")),
        "num_outputs": hparams.get("num_outputs"),
    }
    given = {key: plain(data[key]) for key in recorded}
    # null in the data config: counted by the data module (an image folder's classes)
    if all(None in (value, given[key]) or value == given[key] for key, value in recorded.items()):
        return None
    name = net.get("_target_", module_class).rpartition(".")[2]
    return (
        f"the checkpoint's model ({name}, {recorded['task'] or 'trained'} on input shape "
        f"{recorded['input_shape']} with {recorded['num_outputs']} outputs) does not match "
        f"the data ({given['task']}, input shape {given['input_shape']}, "
        f"{given['num_outputs']} outputs). Choose data of the same kind, or leave data unset to "
        "use the data the model was trained on."
    )


def model_mismatch(
    module_class: str, hparams: dict[str, Any], chosen: dict[str, Any], name: str
) -> str | None:
    """Why a checkpoint's module is not the one ``model=NAME`` sets up, or ``None`` if it is:
    another module class, or for modules with a net, another net."""
    chosen_class = chosen.get("_target_", DEFAULT_MODULE)
    if chosen_class != module_class:
        return (
            f"the checkpoint holds a {module_class}, not the {chosen_class} that model={name} "
            "sets up. The model comes from the checkpoint: leave model= out, or name the model "
            "config it was trained with."
        )
    if "net" in hparams and "net" in chosen:
        return net_mismatch(hparams["net"], chosen["net"], name)
    return None


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
