"""Checkpoints found and checked before any other work, and models rebuilt from them safely.

``ckpt_path`` is checked up front (it exists, it is a checkpoint of this project, it names
no code) so a typo costs a one-line message, not a data load followed by a traceback from
deep inside Lightning. Checkpoints may come from anywhere: they are read with torch's
``weights_only=True`` and rebuilt only through the allow-list (``src/harness/allowlist.py``).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from src.harness.allowlist import plain_value_problem, spec_class
from src.harness.errors import ConfigError
from src.harness.file_kinds import not_a_file
from src.harness.paths import LAST

log = logging.getLogger(__name__)

EXAMPLE = "logs/train/runs/<timestamp>/checkpoints/last.ckpt"
# Where a checkpoint names the class of its module; one written before it did holds the default.
MODULE_CLASS = "module_class"
DEFAULT_MODULE = "src.models.module.SupervisedModule"


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class RecordModuleClass(Callback):
    """Writes the module's class path into each checkpoint, so that eval, predict and resume
    rebuild the user's own module from it (with its recorded plain arguments)."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[MODULE_CLASS] = class_path(type(pl_module))


def resolve_ckpt_path(ckpt_path: str | None, search_dir: Path) -> Path | None:
    """``None``, an existing file, or for ``last`` the newest ``last.ckpt`` under
    ``search_dir`` (single runs and multirun jobs alike)."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == LAST:
        found = sorted(search_dir.rglob("last.ckpt"), key=lambda path: path.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"ckpt_path=last found no last.ckpt under {search_dir}. Train first, or give "
                f"the path of a checkpoint: ckpt_path={EXAMPLE}"
            )
        return found[-1]
    path = Path(ckpt_path).expanduser().resolve()
    if problem := not_a_file(path):
        raise ConfigError(
            f"ckpt_path={ckpt_path} {problem} (relative paths start from the folder the command "
            "runs in). Give the path of a .ckpt file written by training (for example "
            f"{EXAMPLE}), or ckpt_path=last for the newest last.ckpt under {search_dir}."
        )
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with torch's safe loader; refuse anything that is not one of ours."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a non-checkpoint
        detail = (  # torch's own text is pages of advice to load it unsafely
            "torch's safe loader refuses it: not a checkpoint, or Python objects whose "
            "loading could run code"
            if isinstance(error, pickle.UnpicklingError)
            else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else '-'}"
        )
        raise ConfigError(
            f"ckpt_path={path} is not a readable checkpoint ({detail}). Give a .ckpt file "
            "written by training."
        ) from error
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= {*checkpoint}:
        raise ConfigError(
            f"ckpt_path={path} is a torch file but not a Lightning checkpoint of this project "
            "(it has no state_dict and hyper_parameters). Give a .ckpt file written by training."
        )
    return checkpoint


def restore_model(checkpoint: dict[str, Any], path: Path) -> L.LightningModule:
    """The trained model, rebuilt from a checkpoint already read by :func:`load_checkpoint`.

    The allow-list admits only a LightningModule class of this project, with plain values as
    its arguments (specs only as its net, optimizer and scheduler, of their own kinds).
    """
    hparams = checkpoint["hyper_parameters"]
    try:
        problem = plain_value_problem({name: None for name in hparams}, "hyper_parameters")
        if problem:  # a planted _target_ or _partial_ beside the module's arguments
            raise ConfigError(problem)
        target = checkpoint.get(MODULE_CLASS, DEFAULT_MODULE)
        cls, arguments = spec_class({**hparams, "_target_": target}, "module")
        model = cls(**arguments)
    except (ConfigError, TypeError, ValueError) as error:
        raise ConfigError(
            f"ckpt_path={path} was refused: its hyper_parameters are not what training with "
            f"this project writes ({error}). Loading a checkpoint runs no code it names; use "
            "a checkpoint written by this project's training."
        ) from None
    model.load_state_dict(checkpoint["state_dict"])
    return model


def trained_checkpoint(cfg: DictConfig) -> Path:
    """The checkpoint ``eval.py`` and ``predict.py`` use; they cannot run without one."""
    path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.log_dir) / cfg.trained_task)
    if path is None:
        raise ConfigError(
            "no checkpoint given: pass ckpt_path=PATH (a .ckpt file written by training, for "
            f"example {EXAMPLE}) or ckpt_path=last."
        )
    if not path.resolve().is_relative_to(Path(cfg.paths.log_dir).resolve()):
        log.warning(
            "Checkpoint %s is not under %s: it does not come from one of this project's runs. "
            "It is loaded with weights_only=True and runs no code it names.",
            path,
            cfg.paths.log_dir,
        )
    recorded = path.parent.parent / "config.yaml"  # <run>/checkpoints/<name>.ckpt
    with open_dict(cfg):  # recorded in this run's config.yaml and metrics.json
        cfg.ckpt_path = str(path)
        if cfg.get("run_name") is None and recorded.is_file():
            cfg.run_name = OmegaConf.load(recorded).get("run_name")
    log.info("Checkpoint: %s%s", path, f" (run {cfg.run_name})" if cfg.run_name else "")
    return path


def checkpoint_epoch(path: Path) -> int:
    """The epoch a checkpoint file ends; mapped, so only its small pickled part is read."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]
