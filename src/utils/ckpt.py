"""Finding and checking the checkpoint a run starts from, before any other work is done.

``ckpt_path`` is checked up front (it exists, it is a Lightning checkpoint written by this
project, its model fits the data) so a typo costs a one-line message, not a data load
followed by a traceback from deep inside Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError
from src.models.module import SupervisedModule
from src.utils.interrupts import command_line

LAST = "last"


def find_last_checkpoint(search_dir: Path) -> Path:
    """The newest ``last.ckpt`` under ``search_dir`` (single runs and multirun jobs alike)."""
    candidates = sorted(search_dir.rglob("last.ckpt"), key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise ConfigError(
            f"ckpt_path=last found no last.ckpt under {search_dir}. Train first, or give the "
            "path of a checkpoint: ckpt_path=logs/train/runs/<timestamp>/checkpoints/last.ckpt"
        )
    return candidates[-1]


def resolve_ckpt_path(ckpt_path: str | None, search_dir: Path) -> Path | None:
    """``None``, ``last`` (see :func:`find_last_checkpoint`) or an existing file's path."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == LAST:
        return find_last_checkpoint(search_dir)
    path = Path(ckpt_path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not exist. Give the path of a .ckpt file written by "
            "training (for example logs/train/runs/<timestamp>/checkpoints/last.ckpt), or "
            f"ckpt_path=last for the newest last.ckpt under {search_dir}."
        )
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with torch's safe loader; refuse anything that is not one of ours."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a non-checkpoint
        raise ConfigError(
            f"ckpt_path={path} is not a readable checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}). Give a .ckpt file "
            "written by training."
        ) from error
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(
        checkpoint
    ):
        raise ConfigError(
            f"ckpt_path={path} is a torch file but not a Lightning checkpoint of this project "
            "(it has no state_dict and hyper_parameters). Give a .ckpt file written by training."
        )
    return checkpoint


def restore_model(checkpoint: dict[str, Any]) -> SupervisedModule:
    """The trained model, rebuilt from a checkpoint already read by :func:`load_checkpoint`.

    Its hyperparameters are the plain constructor arguments, so no second read of the
    file (as ``load_from_checkpoint`` would do) is needed.
    """
    model = SupervisedModule(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    return model


def model_data_mismatch(hparams: dict[str, Any], data: Any) -> str | None:
    """Why a checkpoint's model cannot run on ``data`` (a data config), or ``None`` if it can."""
    data = OmegaConf.to_container(data, resolve=True) if OmegaConf.is_config(data) else data
    net = hparams["net"]
    trained = (hparams["task"], list(net["input_shape"]), hparams["num_outputs"])
    given = (data["task"], list(data["input_shape"]), data["num_outputs"])
    if trained == given:
        return None
    net_name = get_class(net["_target_"]).__name__
    return (
        f"the checkpoint's model ({net_name}, {trained[0]} on input shape {trained[1]} with "
        f"{trained[2]} outputs) does not match the data ({given[0]}, input shape {given[1]}, "
        f"{given[2]} outputs). Choose data of the same kind, or leave data unset to use the "
        "data the model was trained on."
    )


def run_folder(checkpoint_path: Path) -> Path:
    """The run folder of ``<run>/checkpoints/<name>.ckpt``."""
    return checkpoint_path.parent.parent


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint ``train`` resumes from, checked against the model the config builds.

    Lightning would fail on a different net only after loading the data, with a long
    state-dict diff; here the message names the overrides the checkpoint's run used.
    """
    path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.log_dir) / cfg.task_name)
    if path is None:
        return None
    trained_net = load_checkpoint(path)["hyper_parameters"]["net"]
    if trained_net != OmegaConf.to_container(cfg.model.net, resolve=True):
        overrides = run_folder(path) / ".hydra" / "overrides.yaml"
        used = command_line(OmegaConf.load(overrides)) if overrides.is_file() else "unknown"
        raise ConfigError(
            f"ckpt_path={path} holds a different model than this config builds: trained "
            f"{trained_net}, configured {OmegaConf.to_container(cfg.model.net, resolve=True)}. "
            f"Resume with the overrides of that run ({used}) and change only what training "
            "may change (trainer.max_epochs, for example)."
        )
    return str(path)
