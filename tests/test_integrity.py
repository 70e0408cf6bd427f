"""Integrity: a checkpoint never runs code, runs never share a folder, a resume keeps what
the run knew (its best checkpoint) and refuses settings it would silently ignore."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf, open_dict, read_write

from src.eval import evaluate
from src.export import export_model
from src.harness.checkpoints import load_checkpoint, restore_model
from src.harness.errors import ConfigError, TrainingDiverged
from src.harness.serving import serving_source
from src.models.module import SupervisedModule
from src.predict import predict
from src.tasks import TASKS
from src.train import train
from tests.conftest import QUIET, ROOT, compose_config, run_in_forks

TINY = [*QUIET, "data.num_samples=200"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One epoch of the MLP on 200 synthetic rows, as a run folder in a log folder."""
    folder = tmp_path_factory.mktemp("logs") / "train" / "runs" / "one"
    train(compose_config([*TINY, "trainer.max_epochs=1"], folder))
    return folder


def payload(marker: Path) -> dict[str, Any]:
    """What Hydra's ``instantiate`` would turn into ``Path(marker).write_text("x")``."""
    write = {"_target_": "pathlib.Path.write_text", "_args_": [{"_target_": "pathlib.Path"}, "x"]}
    write["_args_"][0]["_args_"] = [str(marker)]
    return {"_target_": "builtins.min", "_args_": [write, 10]}


def plant_in_net_argument(hparams: dict, evil: dict) -> None:
    hparams["net"]["num_outputs"] = evil


def plant_in_list(hparams: dict, evil: dict) -> None:
    hparams["net"]["hidden_sizes"] = [8, evil]


def plant_as_net(hparams: dict, evil: dict) -> None:
    hparams["net"] = {**evil, "input_shape": [20], "num_outputs": 4}


def plant_as_optimizer(hparams: dict, evil: dict) -> None:
    hparams["optimizer"] = evil


def plant_in_optimizer(hparams: dict, evil: dict) -> None:
    hparams["optimizer"]["lr"] = evil


def plant_as_scheduler(hparams: dict, evil: dict) -> None:
    hparams["scheduler"] = evil


PLANTS = [
    plant_in_net_argument,
    plant_in_list,
    plant_as_net,
    plant_as_optimizer,
    plant_in_optimizer,
    plant_as_scheduler,
]


def load_with_lightning(ckpt: Path, tmp_path: Path) -> None:
    try:
        SupervisedModule.load_from_checkpoint(ckpt, weights_only=True)
    except ConfigError as error:
        raise ConfigError(f"{ckpt}: {error}") from None


def evaluate_it(ckpt: Path, tmp_path: Path) -> None:
    evaluate(compose_config([*QUIET, f"ckpt_path={ckpt}"], tmp_path / "eval", "eval"))


def predict_with_it(ckpt: Path, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(f"x{i}" for i in range(20)) + "\n" + ",".join(["0.5"] * 20) + "\n")
    overrides = [*QUIET, f"ckpt_path={ckpt}", f"input={rows}"]
    predict(compose_config(overrides, tmp_path / "predict", "predict"))


def resume_from_it(ckpt: Path, tmp_path: Path) -> None:
    train(compose_config([*TINY, "trainer.max_epochs=2", f"ckpt_path={ckpt}"], tmp_path / "r"))


def export_it(ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript", reason="the serve extra is not installed")
    export_model(compose_config([f"ckpt_path={ckpt}"], tmp_path / "export", "export"))


def serve_it(ckpt: Path, tmp_path: Path) -> None:
    """What serve.py loads and checks before its server starts."""
    pytest.importorskip("litserve", reason="the serve extra is not installed")
    serving_source(compose_config([f"ckpt_path={ckpt}"], tmp_path / "serve", "serve"), TASKS)


ENTRY_POINTS = [
    load_with_lightning,
    evaluate_it,
    predict_with_it,
    resume_from_it,
    export_it,
    serve_it,
]


def crafted(run: Path, tmp_path: Path, plant: Callable[[dict, dict], None]) -> tuple[Path, Path]:
    """A copy of the run's best.ckpt with ``payload`` planted; it loads with weights_only."""
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    marker = tmp_path / "PWNED"
    plant(checkpoint["hyper_parameters"], payload(marker))
    folder = tmp_path / "evil" / "checkpoints"
    folder.mkdir(parents=True)
    (folder.parent / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    torch.save(checkpoint, folder / "evil.ckpt")
    torch.load(folder / "evil.ckpt", weights_only=True)  # the safe loader lets it through
    return folder / "evil.ckpt", marker


@pytest.mark.parametrize("plant", PLANTS)
@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_a_checkpoint_naming_code_is_refused_and_nothing_runs(run, tmp_path, plant, entry_point):
    ckpt, marker = crafted(run, tmp_path, plant)
    with pytest.raises(ConfigError, match=str(ckpt)):
        entry_point(ckpt, tmp_path)
    assert not marker.exists()


def restore_it(ckpt: Path, tmp_path: Path) -> None:
    """What eval, predict and resume do to rebuild a checkpoint's module."""
    restore_model(load_checkpoint(ckpt), ckpt)


def name_module(target: str) -> Callable[[dict, dict], None]:
    return lambda checkpoint, evil: checkpoint.update(module_class=target)


def plant_as_module_argument(checkpoint: dict, evil: dict) -> None:
    checkpoint["hyper_parameters"]["label_smoothing"] = evil


def plant_beside_module_arguments(checkpoint: dict, evil: dict) -> None:
    checkpoint["hyper_parameters"].update(evil)


MODULE_PLANTS = {
    "lightning-demo-module": name_module("lightning.pytorch.demos.boring_classes.BoringModel"),
    "torch-module": name_module("torch.nn.Linear"),
    "project-net": name_module("src.models.nets.MLP"),
    "code": name_module("os.system"),
    "module-argument": plant_as_module_argument,
    "beside-module-arguments": plant_beside_module_arguments,
}


@pytest.mark.parametrize("plant", MODULE_PLANTS.values(), ids=MODULE_PLANTS)
@pytest.mark.parametrize("entry_point", [restore_it, evaluate_it, predict_with_it, resume_from_it])
def test_a_checkpoint_naming_a_module_outside_the_project_is_refused(
    run, tmp_path, plant, entry_point
):
    ckpt, marker = crafted(run, tmp_path, lambda hparams, evil: None)
    checkpoint = torch.load(ckpt, weights_only=True)
    plant(checkpoint, payload(marker))
    torch.save(checkpoint, ckpt)
    with pytest.raises(ConfigError, match=rf"{ckpt} was refused: .*(not allowed|holds the key)"):
        entry_point(ckpt, tmp_path)
    assert not marker.exists()


def test_code_in_the_data_state_is_refused_by_predict(run, tmp_path):
    ckpt, marker = crafted(run, tmp_path, lambda hparams, evil: None)
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["SyntheticDataModule"]["feature_names"] = [payload(marker)]
    torch.save(checkpoint, ckpt)
    with pytest.raises(ConfigError, match="feature_names"):
        predict_with_it(ckpt, tmp_path)
    assert not marker.exists()


def test_code_in_the_recorded_data_config_is_refused_by_eval(run, tmp_path):
    ckpt, marker = crafted(run, tmp_path, lambda hparams, evil: None)
    recorded = ckpt.parent.parent / "config.yaml"
    config = OmegaConf.load(recorded)
    config.data = payload(marker)
    OmegaConf.save(config, recorded)
    with pytest.raises(ConfigError, match="refused as the data config"):
        evaluate_it(ckpt, tmp_path)
    assert not marker.exists()


@pytest.mark.slow  # three processes training at once
def test_runs_started_together_each_get_their_own_complete_folder(tmp_path):
    """Three runs started at once into one log folder, each with a net of its own width."""
    widths = [8, 16, 32]
    common = [*TINY, "trainer.max_epochs=1", f"paths.log_dir={tmp_path}"]
    lists = [[*common, f"model.net.hidden_sizes=[{width}]"] for width in widths]
    for result in run_in_forks(*lists, cwd=ROOT):
        assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 3
    found = []
    for folder in runs:
        width = OmegaConf.load(folder / "config.yaml").model.net.hidden_sizes[0]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["best_model_path"] == str(folder / "checkpoints" / "best.ckpt")
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
            "best.ckpt",
            "last.ckpt",
        ]
        for name in ("best.ckpt", "last.ckpt"):
            hparams = torch.load(folder / "checkpoints" / name, weights_only=True)
            assert hparams["hyper_parameters"]["net"]["hidden_sizes"] == [width]
        found.append(width)
    assert sorted(found) == widths


# With mode=min on val/acc the "best" checkpoint is the least accurate epoch: an early one,
# so a resume that forgot the best so far would pick an epoch after the resume instead.
WORST_IS_BEST = [*TINY, "callbacks.model_checkpoint.mode=min", "trainer.deterministic=true"]


def best_epoch(folder: Path) -> int:
    return torch.load(folder / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]


def test_a_resumed_run_keeps_the_best_checkpoint_of_the_epochs_before_it(tmp_path):
    straight = train(compose_config([*WORST_IS_BEST, "trainer.max_epochs=3"], tmp_path / "all"))
    train(compose_config([*WORST_IS_BEST, "trainer.max_epochs=2"], tmp_path / "first"))
    resume = f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"
    overrides = [*WORST_IS_BEST, "trainer.max_epochs=3", resume]
    resumed = train(compose_config(overrides, tmp_path / "rest"))
    assert best_epoch(tmp_path / "rest") == best_epoch(tmp_path / "all") < 2
    assert resumed["best_model_path"] == str(tmp_path / "rest" / "checkpoints" / "best.ckpt")
    assert resumed["best_epoch"] == straight["best_epoch"] == best_epoch(tmp_path / "all")
    for name in ("val/acc_best", "test/acc", "test/loss"):
        assert resumed[name] == straight[name]


def test_a_resume_that_changes_what_the_checkpoint_overrides_is_refused(run, tmp_path):
    last = run / "checkpoints" / "last.ckpt"
    overrides = [*TINY, "trainer.max_epochs=3", "optimizer.lr=1e6", "scheduler=step"]
    output_dir = tmp_path / "resumed"
    with pytest.raises(ConfigError) as excinfo:
        train(compose_config([*overrides, f"ckpt_path={last}"], output_dir))
    message = str(excinfo.value)
    assert "optimizer.lr: 0.001 in the checkpoint, 1000000.0 here" in message
    assert "scheduler: None in the checkpoint" in message
    assert not output_dir.exists()


def as_sweep_job(cfg):
    """Mark a composed config as a job of a multirun, as Hydra's launchers do."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = "MULTIRUN"
    HydraConfig().set_config(cfg)
    return cfg


def test_a_sweep_job_run_again_resumes_its_earlier_attempt_without_a_second_best(tmp_path):
    job = tmp_path / "multiruns" / "sweep" / "0"
    overrides = [*TINY, "trainer.max_epochs=2"]
    train(as_sweep_job(compose_config(overrides, job)))
    (job / "metrics.json").unlink()  # the first attempt was stopped before its end
    metrics = train(as_sweep_job(compose_config(overrides, job)))
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert metrics["best_model_path"] == str(job / "checkpoints" / "best.ckpt")
    assert OmegaConf.load(job / "config.yaml").ckpt_path == str(job / "checkpoints" / "last.ckpt")


def test_checkpoints_of_other_settings_in_a_run_folder_are_set_aside(tmp_path):
    job = tmp_path / "multiruns" / "sweep" / "0"
    train(as_sweep_job(compose_config([*TINY, "trainer.max_epochs=1"], job)))
    earlier = (job / "checkpoints" / "best.ckpt").read_bytes()
    metrics = train(as_sweep_job(compose_config([*TINY, "optimizer.lr=0.01"], job)))
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert metrics["best_model_path"] == str(job / "checkpoints" / "best.ckpt")
    assert (job / "checkpoints-earlier-1" / "best.ckpt").read_bytes() == earlier
    hparams = torch.load(job / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["optimizer"]["lr"] == 0.01


class BlowUpWeights(Callback):
    """From epoch 2 on, multiplies the weights by 1e30 before each step: finite weights
    that drift, then a loss that overflows, as a late divergence does."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch >= 2:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.mul_(1e30)


class InfWeightsAtEpochEnd(Callback):
    """Turns one weight infinite after the last step of epoch 1, when every loss was finite."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("inf")


def test_after_a_late_divergence_the_message_points_to_the_best_weights(make_cfg):
    blow_up = "+callbacks.blow_up._target_=tests.test_integrity.BlowUpWeights"
    cfg = make_cfg("data.num_samples=200", "trainer.max_epochs=4", blow_up)
    with pytest.raises(TrainingDiverged) as excinfo:
        train(cfg)
    best = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    assert f"{best} holds the best weights so far (val/acc " in str(excinfo.value)
    assert f"python src/eval.py ckpt_path={best}" in str(excinfo.value)


def test_infinite_weights_never_reach_last_ckpt(make_cfg):
    poison = "+callbacks.poison._target_=tests.test_integrity.InfWeightsAtEpochEnd"
    cfg = make_cfg("data.num_samples=200", "trainer.max_epochs=3", poison)
    with pytest.raises(TrainingDiverged, match="the weights are inf"):
        train(cfg)
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())
