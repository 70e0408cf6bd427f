"""Finding and checking the checkpoint a run starts from, before any other work is done.

``ckpt_path`` is checked up front (it exists, it is a Lightning checkpoint written by this
project, its model fits the data) so a typo costs a one-line message, not a data load
followed by a traceback from deep inside Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
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


def restore_model(checkpoint: dict[str, Any], path: Path) -> SupervisedModule:
    """The trained model, rebuilt from a checkpoint already read by :func:`load_checkpoint`.

    Its hyperparameters are the plain constructor arguments, so no second read of the
    file (as ``load_from_checkpoint`` would do) is needed. ``SupervisedModule`` refuses
    hyperparameters that name anything but this project's nets and torch's optimizers.
    """
    try:
        model = SupervisedModule(**checkpoint["hyper_parameters"])
    except (ConfigError, TypeError) as error:
        raise ConfigError(
            f"ckpt_path={path} was refused: its hyper_parameters are not what training with "
            f"this project writes ({error}). Loading a checkpoint runs no code it names; use "
            "a checkpoint written by this project's training."
        ) from None
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
    net_name = str(net["_target_"]).rpartition(".")[2]
    return (
        f"the checkpoint's model ({net_name}, {trained[0]} on input shape {trained[1]} with "
        f"{trained[2]} outputs) does not match the data ({given[0]}, input shape {given[1]}, "
        f"{given[2]} outputs). Choose data of the same kind, or leave data unset to use the "
        "data the model was trained on."
    )


def run_folder(checkpoint_path: Path) -> Path:
    """The run folder of ``<run>/checkpoints/<name>.ckpt``."""
    return checkpoint_path.parent.parent


# Where each hyperparameter comes from in the config, for messages.
HPARAM_KEYS = {
    "net": "model.net",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "task": "data.task",
    "num_outputs": "data.num_outputs",
    "monitor": "data.monitor",
}


def differences(trained: Any, configured: Any, key: str) -> list[str]:
    """``key: <trained> in the checkpoint, <configured> here`` for each value that differs."""
    if isinstance(trained, dict) and isinstance(configured, dict):
        return [
            line
            for name in dict.fromkeys([*trained, *configured])
            for line in differences(trained.get(name), configured.get(name), f"{key}.{name}")
        ]
    if trained == configured:
        return []
    return [f"{key}: {trained!r} in the checkpoint, {configured!r} here"]


def resume_checkpoint(cfg: DictConfig, hparams: dict[str, Any]) -> str | None:
    """The checkpoint ``train`` resumes from, checked against the model the config builds.

    A resume takes the model and the optimizer's and scheduler's state (their settings
    included) from the checkpoint, whatever the config says. So a config that differs in
    any of ``hparams`` (the module's arguments) is refused before any work, with every
    difference and the overrides of the checkpoint's run: the run's ``config.yaml`` then
    never records a value that did not run.
    """
    path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.log_dir) / cfg.task_name)
    if path is None:
        return None
    trained = restore_model(load_checkpoint(path), path).hparams
    changed = [
        line
        for name, key in HPARAM_KEYS.items()
        for line in differences(trained.get(name), hparams[name], key)
    ]
    if changed:
        overrides = run_folder(path) / ".hydra" / "overrides.yaml"
        used = command_line(OmegaConf.load(overrides)) if overrides.is_file() else "unknown"
        raise ConfigError(
            f"ckpt_path={path} was trained with other settings than this command gives, and a "
            f"resume would silently take the checkpoint's: {'; '.join(changed)}. Resume with "
            f"the overrides of that run ({used}) and change only what training may change "
            "(trainer.max_epochs, for example), or start a new run without ckpt_path."
        )
    return str(path)
