"""Checkpoints: found and checked before any other work, written complete or not at all,
and carried across a resume.

``ckpt_path`` is checked up front (it exists, it is a checkpoint of this project, it names
no code, it fits the config) so a typo costs a one-line message, not a data load followed
by a traceback from deep inside Lightning. Lightning's own writer stages a checkpoint in
the system temporary folder and moves it, which is a copy when that folder is on another
file system: a kill during the copy leaves a truncated file. Here it is written beside
its target and renamed.
"""

from __future__ import annotations

import logging
import os
import pickle
import shlex
import shutil
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from src.errors import ConfigError
from src.models.module import SupervisedModule, spec_class
from src.runs import (
    LAST,
    eval_command,
    job_overrides,
    log_file_only,
    override_key,
    plain,
    replaced_atomically,
)

log = logging.getLogger(__name__)
EXAMPLE = "logs/train/runs/<timestamp>/checkpoints/last.ckpt"


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
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path} {'is a folder' if path.is_dir() else 'does not exist'} "
            "(relative paths start from the folder the command runs in). Give the path of a "
            ".ckpt file written by "
            f"training (for example {EXAMPLE}), or ckpt_path=last for the newest last.ckpt "
            f"under {search_dir}."
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


def restore_model(checkpoint: dict[str, Any], path: Path) -> SupervisedModule:
    """The trained model, rebuilt from a checkpoint already read by :func:`load_checkpoint`.

    ``SupervisedModule`` refuses hyperparameters that name anything but this project's
    nets and torch's optimizers, or hold anything but plain values.
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


# Where each hyperparameter comes from in the config, for messages.
HPARAM_KEYS = {"net": "model.net", "optimizer": "optimizer", "scheduler": "scheduler"}
HPARAM_KEYS |= {"task": "data.task", "num_outputs": "data.num_outputs", "monitor": "data.monitor"}


def differences(trained: Any, configured: Any, key: str) -> list[str]:
    """``key: <trained> in the checkpoint, <configured> here`` for each value that differs."""
    if isinstance(trained, dict) and isinstance(configured, dict):
        names = dict.fromkeys([*trained, *configured])
        return [
            line
            for n in names
            for line in differences(trained.get(n), configured.get(n), f"{key}.{n}")
        ]
    return (
        []
        if trained == configured
        else [f"{key}: {trained!r} in the checkpoint, {configured!r} here"]
    )


def resume_checkpoint(cfg: DictConfig, hparams: dict[str, Any]) -> str | None:
    """The checkpoint ``train`` resumes from, checked against the module the config builds.

    A resume takes the model and the optimizer's and scheduler's state (their settings
    included) from the checkpoint, whatever the config says. So a config that differs in
    any of ``hparams`` (the module's arguments) is refused before any work, with every
    difference and the overrides of the checkpoint's run: the run's ``config.yaml`` then
    never records a value that did not run.
    """
    path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.log_dir) / cfg.task_name)
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    trained = restore_model(checkpoint, path).hparams
    epoch, max_epochs = checkpoint.get("epoch", 0), cfg.trainer.get("max_epochs")
    if cfg.get("train") and max_epochs not in (None, -1) and epoch > max_epochs:
        raise ConfigError(
            f"ckpt_path={path} has trained {epoch + 1} epochs, more than trainer.max_epochs="
            f"{max_epochs}. Resume with trainer.max_epochs above {epoch + 1} to train on, or "
            f"test it: {eval_command(path)}"
        )
    changed = [
        line
        for name, key in HPARAM_KEYS.items()
        for line in differences(trained.get(name), hparams[name], key)
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
    return str(path)


def best_metrics(trainer: Any, monitor: str) -> dict[str, float | int]:
    """The data's validation score (``monitor``) of the checkpoint the run keeps as best, as
    ``<monitor>_best``, and its epoch (from 0, as the console's ``Epoch N:`` lines count) as
    ``best_epoch``.

    The run's result is the checkpoint it keeps and tests, not its last epoch, so these come
    from the checkpoint callback (which carries the best across a resume) and the epoch from
    the file itself. A checkpoint chosen by another value (``monitor: step``, in experiments
    that test their final weights) is the last epoch's, whose score the trainer still holds.
    Empty when the run kept no best checkpoint (``trainer.fast_dev_run``, or no checkpoint
    callback with a monitor).
    """
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "")
    if not (path and callback.monitor and callback.best_model_score is not None):
        return {}
    epoch = checkpoint_epoch(Path(path))
    if callback.monitor == monitor:
        score = callback.best_model_score
    elif epoch == trainer.current_epoch - 1 and monitor in trainer.callback_metrics:
        score = trainer.callback_metrics[monitor]
    else:
        return {}
    return {f"{monitor}_best": float(score), "best_epoch": epoch}


def checkpoint_epoch(path: Path) -> int:
    """The epoch a checkpoint file ends; mapped, so only its small pickled part is read."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``path`` through a temporary file in the same folder, fsync and a rename."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        with replaced_atomically(Path(path)) as file:
            torch.save(checkpoint, file)
        log_file_only.info("Saved %s (epoch %s)", path, checkpoint.get("epoch"))


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose record of the best checkpoints survives a resume.

    A resumed run writes into a new folder of its own. Lightning then drops the best
    score so far and keeps only a path into the old folder, so the resumed run's
    ``best.ckpt`` and test metrics would weigh only the epochs after the resume. Here the
    files the record names are copied into the new folder and the record carried over:
    a stopped-and-resumed run ends with the same ``best.ckpt`` as an uninterrupted one.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir, new_dir = state_dict.get("dirpath"), self.dirpath
        files = {*state_dict.get("best_k_models", {}), state_dict.get("best_model_path")} - {""}
        if old_dir and new_dir and old_dir != new_dir and all(map(os.path.isfile, files)):
            moved = {old: str(Path(new_dir) / Path(old).name) for old in files}
            # Files already there are newer: trainer.test(ckpt_path=...) restores this
            # state again from the run's own best.ckpt, after this run's epochs.
            for old, new in moved.items():
                if not os.path.exists(new):
                    with open(old, "rb") as source, replaced_atomically(Path(new)) as target:
                        shutil.copyfileobj(source, target)
            state_dict = {
                **state_dict,
                "dirpath": new_dir,
                "best_k_models": {moved[p]: v for p, v in state_dict["best_k_models"].items()},
                "best_model_path": moved.get(state_dict["best_model_path"], ""),
                "kth_best_model_path": moved.get(state_dict.get("kth_best_model_path"), ""),
                "last_model_path": "",
            }
        super().load_state_dict(state_dict)
