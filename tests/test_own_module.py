"""A LightningModule of the user's own, configured by ``model._target_``: built by its
signature, checkpointed with its class, rebuilt by eval, predict and resume.

The modules here live in ``tests/``, which the allow-list admits only while a test says so
(``own_modules``); the README's modules, under ``src/models/``, are trained in a fork by
tests/test_template.py.
"""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.eval import evaluate
from src.harness import allowlist
from src.harness.checkpoints import class_path, load_checkpoint, restore_model
from src.harness.errors import ConfigError
from src.predict import predict
from src.train import train
from tests.conftest import QUIET, compose_config

TINY = [*QUIET, "data.num_samples=200", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]


class Smoothed(L.LightningModule):
    """A linear classifier with a label-smoothed loss and an optimizer of its own."""

    def __init__(
        self, input_shape: list[int], num_outputs: int, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(math.prod(input_shape), num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x.flatten(1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluate(batch, "test")

    def evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y))
        self.log(f"{stage}/acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Unrecorded(Smoothed):
    """Forgets to record its arguments: its checkpoints could not rebuild it."""

    def __init__(self, input_shape: list[int], num_outputs: int) -> None:
        L.LightningModule.__init__(self)
        self.layer = nn.Linear(math.prod(input_shape), num_outputs)


def own(name: str, *arguments: str) -> list[str]:
    """Overrides that swap the MLP's module for ``name`` (a class of this file)."""
    sizes = ["+model.input_shape=${data.input_shape}", "+model.num_outputs=${data.num_outputs}"]
    return [f"model._target_=tests.test_own_module.{name}", "~model.net", *sizes, *arguments]


@pytest.fixture
def own_modules(monkeypatch) -> None:
    bases, prefixes = allowlist.SPEC_KINDS["module"]
    monkeypatch.setitem(allowlist.SPEC_KINDS, "module", (bases, (*prefixes, "tests.")))


def test_an_own_module_trains_on_its_arguments_and_is_rebuilt_from_its_checkpoint(
    own_modules, tmp_path
):
    log_dir = tmp_path / "logs"
    run = log_dir / "train" / "runs" / "own"
    overrides = [*TINY, f"paths.log_dir={log_dir}", *own("Smoothed", "+model.label_smoothing=0.3")]
    metrics = train(compose_config(overrides, run))
    best = run / "checkpoints" / "best.ckpt"
    model = restore_model(load_checkpoint(best), best)
    assert class_path(type(model)) == "tests.test_own_module.Smoothed"
    assert model.hparams.label_smoothing == 0.3

    tested = evaluate(compose_config([*QUIET, f"ckpt_path={best}"], tmp_path / "eval", "eval"))
    assert tested["test/acc"] == pytest.approx(metrics["test/acc"])
    for overrides, refusal in [
        (["model=mlp"], "holds a tests.test_own_module.Smoothed, not the src.models.module.Supe"),
        (["data=synthetic", "data.num_outputs=3"], r"\(Smoothed, trained on input shape \[20\] "),
    ]:
        with pytest.raises(ConfigError, match=refusal):
            evaluate(compose_config([f"ckpt_path={best}", *overrides], tmp_path / "no", "eval"))

    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(f"x{i}" for i in range(20)) + "\n" + ",".join(["0.5"] * 20) + "\n")
    overrides = [*QUIET, f"ckpt_path={best}", f"input={rows}"]
    with predict(compose_config(overrides, tmp_path / "predict", "predict")).open() as file:
        (row,) = list(csv.DictReader(file))
    probabilities = [float(row[f"prob_{k}"]) for k in range(4)]  # its logits, read by the task
    assert sum(probabilities) == pytest.approx(1.0)
    assert int(row["class"]) == probabilities.index(max(probabilities))

    resumed = [*TINY, f"paths.log_dir={log_dir}", f"ckpt_path={best}"]
    changed = [*resumed, *own("Smoothed", "+model.label_smoothing=0.5")]
    with pytest.raises(
        ConfigError, match=r"model.label_smoothing: 0.3 in the checkpoint, 0.5 here"
    ):
        train(compose_config(changed, tmp_path / "resumed"))
    with pytest.raises(ConfigError, match=r"model._target_: 'tests.test_own_module.Smoothed' in"):
        train(compose_config(resumed, tmp_path / "resumed"))


def test_a_module_that_records_no_arguments_is_refused_before_any_data(own_modules, make_cfg):
    with pytest.raises(ConfigError, match="model.num_outputs: Unrecorded does not record it"):
        train(make_cfg(*own("Unrecorded")))


def test_a_module_argument_it_does_not_take_is_refused_before_any_data(make_cfg):
    with pytest.raises(ConfigError, match="model.label_smoothing is not an argument of Supervised"):
        train(make_cfg("+model.label_smoothing=0.3"))


@pytest.mark.parametrize(
    "target",
    ["lightning.pytorch.demos.boring_classes.BoringModel", "src.models.nets.MLP", "os.system"],
)
def test_a_module_class_outside_the_project_is_refused(make_cfg, target):
    with pytest.raises(ConfigError, match=rf"'{target}' is not allowed: it must name a Lightning"):
        train(make_cfg(f"model._target_={target}"))


def test_a_checkpoint_that_names_no_module_holds_the_default_one(tmp_path):
    """Checkpoints written before they recorded their module's class still load."""
    train(compose_config(TINY, tmp_path / "run"))
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    del checkpoint["module_class"]
    model = restore_model(checkpoint, tmp_path)
    assert class_path(type(model)) == "src.models.module.SupervisedModule"
