"""The checkpoint a training run resumes from, refused when the command would train
something else than the checkpoint holds.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from src.harness.build import config_key
from src.harness.checkpoints import class_path, load_checkpoint, resolve_ckpt_path, restore_model
from src.harness.errors import ConfigError
from src.harness.overrides import eval_command, override_key
from src.harness.run_checkpoint import recorded_checkpoints


def differences(trained: Any, configured: Any, key: str) -> list[str]:
    """``key: <trained> in the checkpoint, <configured> here`` for each value that differs."""
    if isinstance(trained, dict) and isinstance(configured, dict):
        names = dict.fromkeys([*trained, *configured])
        return [
            line
            for n in names
            for line in differences(trained.get(n), configured.get(n), f"{key}.{n}")
        ]
    if trained == configured:
        return []
    return [f"{key}: {trained!r} in the checkpoint, {configured!r} here"]


def resume_checkpoint(cfg: DictConfig, model: L.LightningModule) -> str | None:
    """The checkpoint ``train`` resumes from, checked against the module the config builds.

    A resume takes the model and the optimizer's and scheduler's state (their settings
    included) from the checkpoint, whatever the config says. So a config that differs in
    the module's class or any of its recorded arguments is refused before any work, with every
    difference and the overrides of the checkpoint's run: the run's ``config.yaml`` then
    never records a value that did not run. The checkpoints its callbacks' state names
    must be the resumed one's neighbours, checked here too.
    """
    path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.log_dir) / cfg.task_name)
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    trained = restore_model(checkpoint, path)
    epoch, max_epochs = checkpoint.get("epoch", 0), cfg.trainer.get("max_epochs")
    if cfg.get("train") and max_epochs not in (None, -1) and epoch > max_epochs:
        raise ConfigError(
            f"ckpt_path={path} has trained {epoch + 1} epochs, more than trainer.max_epochs="
            f"{max_epochs}. Resume with trainer.max_epochs above {epoch + 1} to train on, or "
            f"test it: {eval_command(path)}"
        )
    classes = differences(class_path(type(trained)), class_path(type(model)), "model._target_")
    changed = classes or [
        line
        for name in dict.fromkeys([*trained.hparams, *model.hparams])
        for line in differences(
            trained.hparams.get(name), model.hparams.get(name), config_key(name, cfg.model)
        )
    ]
    if changed:
        overrides = path.parent.parent / ".hydra" / "overrides.yaml"
        given = OmegaConf.load(overrides) if overrides.is_file() else ["unknown"]
        used = shlex.join([item for item in given if override_key(item) != "ckpt_path"])
        raise ConfigError(
            f"ckpt_path={path} was trained with other settings than this command gives, and a "
            f"resume would silently take the checkpoint's: {'; '.join(changed)}. Resume with "
            f"the overrides of that run ({used}) and change only what training may change "
            "(trainer.max_epochs, for example), or start a new run without ckpt_path."
        )
    for state in checkpoint.get("callbacks", {}).values():
        if isinstance(state, dict) and "best_k_models" in state:  # a ModelCheckpoint's
            recorded_checkpoints(state, path)  # RunCheckpoint carries them into the new run
    return str(path)
