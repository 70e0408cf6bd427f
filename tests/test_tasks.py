"""Each task's loss, metrics, predictions and columns, and a multi-label run end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.callbacks.pictures import suited_pictures
from src.data.synthetic import SyntheticDataModule
from src.models.module import SupervisedModule
from src.tasks import TASKS
from src.train import train

LOGITS = torch.tensor([[2.0, -1.0, 1.0], [-3.0, 0.5, 4.0]])


def test_classification_reads_logits_as_before():
    task, targets = TASKS["classification"], torch.tensor([0, 1])
    assert task.loss(LOGITS, targets) == F.cross_entropy(LOGITS, targets)
    assert task.hits(LOGITS, targets).tolist() == [1.0, 0.0]
    probabilities = task.predictions(LOGITS)
    columns, rows = task.table(probabilities, None)
    assert columns == ["class", "prob_0", "prob_1", "prob_2"]
    assert [row[0] for row in rows] == [0, 2]
    assert torch.allclose(torch.tensor([row[1:] for row in rows]), LOGITS.softmax(dim=1))
    assert task.targets(torch.tensor([1.0, 2.0])).dtype == torch.long


def test_regression_predicts_the_outputs_in_one_column_each():
    task = TASKS["regression"]
    assert task.table(LOGITS[:, :1], None) == (["prediction"], [[2.0], [-3.0]])
    columns, rows = task.table(LOGITS, None)
    assert columns == ["prediction_0", "prediction_1", "prediction_2"]
    assert rows == LOGITS.tolist()
    assert task.targets(torch.tensor([1, 2])).tolist() == [[1.0], [2.0]]
    assert task.hits is None and task.continuous


def test_multilabel_turns_each_label_on_above_probability_one_half():
    task = TASKS["multilabel"]
    targets = task.targets(torch.tensor([[1, 0, 0], [0, 1, 1]]))
    assert targets.dtype == torch.float32
    assert task.loss(LOGITS, targets) == F.binary_cross_entropy_with_logits(LOGITS, targets)
    probabilities = task.predictions(LOGITS)
    assert task.decide(probabilities).tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
    assert task.decide(torch.tensor([[0.5, 0.51]])).tolist() == [[0.0, 1.0]]  # as F1 counts
    columns, rows = task.table(probabilities, ["cat", "dog", "bird"])
    assert columns == ["cat", "dog", "bird", "prob_cat", "prob_dog", "prob_bird"]
    assert rows[1][:3] == [0, 1, 1] and rows[1][3:] == pytest.approx(LOGITS[1].sigmoid().tolist())
    assert task.table(probabilities, None)[0][:3] == ["label_0", "label_1", "label_2"]
    (f1,) = task.metrics(3).values()
    f1.update(probabilities, targets)
    # label 0: 1 of 1 right; label 1: right; label 2: one false positive -> F1 2/3
    assert f1.compute() == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_each_task_names_its_monitor_and_pictures_and_only_regression_fits_a_line():
    monitors = {name: (task.monitor, task.monitor_mode) for name, task in TASKS.items()}
    assert monitors == {
        "classification": ("val/acc", "max"),
        "regression": ("val/loss", "min"),
        "multilabel": ("val/f1", "max"),
    }
    assert [name for name, task in TASKS.items() if task.continuous] == ["regression"]
    assert "confusion_matrix" in TASKS["classification"].pictures
    assert TASKS["multilabel"].pictures == frozenset()


def test_a_data_set_declaring_multilabel_trains_on_f1_and_keeps_its_best(make_cfg):
    cfg = make_cfg(
        "data=synthetic",
        "data.task=multilabel",
        "trainer.max_epochs=1",
    )
    assert (cfg.data.monitor, cfg.data.monitor_mode) == ("val/f1", "max")
    metrics = train(cfg)
    assert {"val/f1", "test/f1", "val/f1_best"} <= set(metrics)
    assert "train/acc" not in metrics
    assert metrics["test/f1"] > 0.8  # each label is one side of a linear teacher
    model = SupervisedModule.load_from_checkpoint(metrics["best_model_path"], weights_only=True)
    assert model.hparams.task == "multilabel" and suited_pictures(model) == frozenset()


def test_an_unknown_task_is_named_with_the_tasks_that_exist(make_cfg):
    with pytest.raises(Exception, match="data.task='tags' is not a task; the tasks: classif"):
        make_cfg("data.task=tags").data.monitor  # noqa: B018 - resolving it is the test


def test_label_names_that_a_data_set_sets_are_saved_for_predict():
    datamodule = SyntheticDataModule(
        task="multilabel", input_shape=[4], num_outputs=2, num_samples=50
    )
    datamodule.setup("fit")
    assert "label_names" not in datamodule.state_dict()
    datamodule.label_names = ["spam", "urgent"]
    assert datamodule.state_dict()["label_names"] == ["spam", "urgent"]
