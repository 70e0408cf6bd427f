"""What runs show in TensorBoard, read with TensorBoard's own reader and a real server.

One logdir (module-scoped) holds what a person opens with ``tensorboard --logdir logs``:
a LeNet-on-digits run, an MLP on California housing and a two-job sweep over the learning
rate. Its event files and a real ``tensorboard`` process queried over HTTP show the run
names, the HParams experiment across both tasks, the scalars and the pictures' sizes; the
screenshot script (slow) opens it in Chromium. Pictures' texts are checked on the figures.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from scripts.dashboard_screenshots import tensorboard
from src.callbacks.classification import ConfusionMatrix
from src.callbacks.regression import RegressionPlots
from src.callbacks.tensorboard import CARD_TEXT
from src.harness.sweeps import brief
from src.models.nets import LeNet5
from src.train import train
from tests.conftest import HOUSING_HEADER, QUIET, ROOT, compose_config, run_in_process

# QUIET without logger=none: these runs log to TensorBoard (the default logger).
TENSORBOARD_RUN = [o for o in QUIET if not o.startswith("logger=")]
# 4 steps an epoch: a curve only if train/loss_step follows the epoch's length, not 50 steps
SHORT = ["trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.limit_test_batches=1"]
LENET, HOUSING = "2026-01-31_12-00-00_000001", "2026-01-31_12-00-00_000002"  # run folders
RUNS = {
    f"lenet-digits/{LENET}",
    f"mlp-california/{HOUSING}",
    "mlp-digits lr=0.01/sweep/0",
    "mlp-digits lr=0.001/sweep/1",
}
CLASSIFICATION_SCALARS = {
    "train/acc",
    "train/loss",
    "train/loss_step",
    "train/lr-Adam",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "test/loss",
    "test/acc",
    "time/epoch_s",
    "time/train_samples_per_s",
}
CARD_PIXELS = 215  # the height of a picture in TensorBoard's Time Series


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``paths.log_dir`` of the three runs; the LeNet run draws its matrix every epoch."""
    logs = tmp_path_factory.mktemp("logs")
    runs = logs / "train" / "runs"
    common = [*TENSORBOARD_RUN, *SHORT, f"paths.log_dir={logs}"]
    lenet = ["model=lenet", "data=digits", "callbacks.confusion_matrix.every_n_epochs=1"]
    train(compose_config([*common, *lenet], runs / LENET))
    rows = np.random.default_rng(0).normal(size=(300, 9)) + 3.0
    housing = logs / "housing.csv"
    housing.write_text(HOUSING_HEADER + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
    regression = ["model=mlp", "data=california", f"data.csv_path={housing}"]
    train(compose_config([*common, *regression], runs / HOUSING))
    sweep = ["-m", "model=mlp", "data=digits", "optimizer.lr=0.01,0.001"]
    sweep += [*common, f"hydra.sweep.dir={logs / 'train' / 'multiruns' / 'sweep'}"]
    swept = run_in_process(*sweep, cwd=ROOT)
    assert swept.returncode == 0, swept.stderr
    return logs


def read_events(logs: Path, run: str) -> EventAccumulator:
    events = EventAccumulator(str(logs / run), size_guidance={"images": 0})
    events.Reload()
    return events


def last_images(events: EventAccumulator) -> dict[str, Image.Image]:
    images = {}
    for tag in events.Tags()["images"]:
        images[tag] = Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string))
        assert images[tag].format == "PNG"
    return images


def test_runs_are_named_for_what_tells_them_apart_then_their_folder(logs: Path) -> None:
    folders = {str(p.parent.relative_to(logs)) for p in logs.rglob("events.out.tfevents.*")}
    assert folders == RUNS
    jobs = sorted((logs / "train" / "multiruns" / "sweep").glob("*/metrics.json"))
    names = [json.loads(path.read_text())["run_name"] for path in jobs]
    assert names == ["mlp-digits lr=0.01", "mlp-digits lr=0.001"]


def test_a_search_s_drawn_numbers_are_shortened_in_run_names() -> None:
    assert brief("0.0007695588054416491") == "0.0007696"  # an Optuna draw
    assert [brief(v) for v in ("0.01", "1e-5", "[256,128,64]")] == ["0.01", "1e-5", "[256,128,64]"]


def test_scalars_follow_the_naming_convention_without_an_epoch_chart(logs: Path) -> None:
    events = read_events(logs, f"lenet-digits/{LENET}")
    assert set(events.Tags()["scalars"]) == CLASSIFICATION_SCALARS
    # 2 epochs of 4 steps: the step loss every step, the learning rate as each epoch starts
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(1, 9))
    assert [e.step for e in events.Scalars("train/lr-Adam")] == [0, 4]
    assert len(events.Scalars("time/epoch_s")) == 2
    assert all(e.value > 0 for e in events.Scalars("time/train_samples_per_s"))


def test_pictures_are_drawn_at_the_size_tensorboard_shows_them(logs: Path) -> None:
    events = read_events(logs, f"lenet-digits/{LENET}")
    images = last_images(events)
    assert set(images) == {"val/confusion_matrix", "val/predictions", "train/inputs"}
    # every_n_epochs=1: one matrix per epoch; the samples only at the end of training
    assert len(events.Images("val/confusion_matrix")) == 2
    assert len(events.Images("val/predictions")) == 1
    regression = last_images(read_events(logs, f"mlp-california/{HOUSING}"))
    assert set(regression) == {"val/pred_vs_true", "val/residuals"}
    for tag, image in {**images, **regression}.items():
        assert image.height == CARD_PIXELS and 300 <= image.width <= 370, (tag, image.size)


def drawn(callback, trainer: SimpleNamespace) -> list:
    """The figures ``callback`` draws, taken before they are logged."""
    from matplotlib import rc_context

    figures = []
    experiment = SimpleNamespace(add_figure=lambda tag, figure, **kwargs: figures.append(figure))
    with rc_context(CARD_TEXT):
        callback.draw(trainer, SimpleNamespace(name="mlp-cifar lr=0.01", experiment=experiment), 0)
    return figures


@pytest.mark.parametrize("num_classes", [10, 100])
def test_confusion_matrix_reads_at_card_size_for_10_and_100_classes(num_classes: int) -> None:
    callback, targets = ConfusionMatrix(), torch.arange(1000) % num_classes
    callback.collect(targets, targets, torch.eye(num_classes)[targets], 0)
    callback.collected_epoch = 3
    (figure,) = drawn(callback, SimpleNamespace(is_global_zero=True, datamodule=None))
    axes = figure.axes[0]
    assert figure.get_suptitle() == "mlp-cifar lr=0.01\nvalidation, epoch 3: accuracy 1.000"
    ticks = [label.get_text() for label in axes.get_xticklabels()]
    assert ticks == [str(c) for c in range(0, num_classes, 1 if num_classes == 10 else 20)]
    assert all(label.get_rotation() == 0 for label in axes.get_xticklabels())
    assert len(axes.texts) == (num_classes**2 if num_classes == 10 else 0)  # % in each cell
    assert figure.get_size_inches()[1] * figure.dpi == CARD_PIXELS


def test_confusion_matrix_names_the_classes_an_image_folder_names() -> None:
    callback, targets = ConfusionMatrix(), torch.arange(30) % 3
    callback.collect(targets, targets, torch.eye(3)[targets], 0)
    callback.collected_epoch = 0
    folder = SimpleNamespace(label_names=["bar", "column", "cross"])
    (figure,) = drawn(callback, SimpleNamespace(is_global_zero=True, datamodule=folder))
    for labels in (figure.axes[0].get_xticklabels(), figure.axes[0].get_yticklabels()):
        assert [label.get_text() for label in labels] == ["bar", "column", "cross"]


def test_regression_plots_name_the_target_and_its_units() -> None:
    callback = RegressionPlots()
    callback.collect(torch.zeros(4, 8), torch.rand(4, 1), torch.rand(4, 1), 0)
    callback.collected_epoch = 0
    target = SimpleNamespace(target_label="median house value (100,000 USD)")
    scatter, residuals = drawn(callback, SimpleNamespace(is_global_zero=True, datamodule=target))
    assert scatter.axes[0].get_xlabel() == "true median house value (100,000 USD)"
    assert residuals.axes[0].get_xlabel() == "predicted - true median house value (100,000 USD)"


def test_hparams_sessions_hold_values_as_typed_and_no_experiment(logs: Path) -> None:
    content = read_events(logs, f"lenet-digits/{LENET}").PluginTagToContent("hparams")
    # one run's experiment summary would stand for every run under the logdir
    assert set(content) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {name: value.string_value for name, value in start.session_start_info.hparams.items()}
    assert values["model"] == "lenet" and values["data"] == "digits"
    assert values["optimizer.lr"] == "0.001" and values["data.batch_size"] == "64"
    assert values["seed"] == "12345" and values["trainer.max_epochs"] == "2"
    assert values["tags"] == "dev"
    assert values["scheduler"] == "none"  # the group chosen; unset values are left out:
    assert not {"net", "run_name", "data.fold", "trainer.gradient_clip_val"} & set(values)
    assert not any("${" in value for value in values.values())


def test_pictures_off_write_no_image_and_opt_in_graph_and_histograms_appear(
    make_cfg, tmp_path: Path
) -> None:
    cfg = make_cfg(
        *TENSORBOARD_RUN,
        "model=lenet",
        "data=digits",
        *SHORT,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "test=false",
        "callbacks=[default,model_graph,histograms]",
        "callbacks/images=none",
        f"paths.log_dir={tmp_path}",
        quiet=False,
    )
    train(cfg)
    events = read_events(tmp_path, f"lenet-digits/{Path(cfg.paths.output_dir).name}")
    assert events.Tags()["images"] == []
    assert set(events.Tags()["scalars"]) >= {"val/acc", "train/loss_step"}
    assert events.Tags()["graph"]
    names = [f"net.{name}" for name, _ in LeNet5([1, 28, 28], 10).named_parameters()]
    assert set(events.Tags()["histograms"]) == {
        f"{kind}/{name}" for kind in ("weights", "gradients") for name in names
    }


@pytest.fixture(scope="module")
def server(logs: Path):
    """A real ``tensorboard`` on the logdir, once it lists every run; always stopped."""
    with tensorboard(logs) as address:
        deadline = time.monotonic() + 60
        while set(runs := get_json(address, "data/runs")) != RUNS:
            assert time.monotonic() < deadline, f"the runs never all appeared: {runs}"
            time.sleep(0.2)
        yield address


def get_json(address: str, path: str, **query: str):
    url = f"{address}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post_json(address: str, path: str, body: dict):
    request = urllib.request.Request(
        f"{address}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_a_real_tensorboard_serves_the_runs_scalars_and_images(logs: Path, server: str) -> None:
    tags = get_json(server, "data/plugin/scalars/tags")
    lenet, housing = f"lenet-digits/{LENET}", f"mlp-california/{HOUSING}"
    assert set(tags[lenet]) == CLASSIFICATION_SCALARS
    assert {"val/rmse", "val/r2", "test/rmse", "train/lr-Adam"} <= set(tags[housing])
    assert not any("epoch" in run_tags for run_tags in tags.values())

    metrics = json.loads((logs / "train" / "runs" / LENET / "metrics.json").read_text())
    for tag in ("val/acc", "val/acc_best", "val/loss", "train/loss", "test/acc", "test/loss"):
        *_, (_, _, last_value) = get_json(server, "data/plugin/scalars/scalars", run=lenet, tag=tag)
        assert last_value == pytest.approx(metrics[tag], rel=1e-6), tag

    images = get_json(server, "data/plugin/images/tags")
    assert {"val/confusion_matrix", "val/predictions", "train/inputs"} <= set(images[lenet])


def test_hparams_show_the_settings_that_differ_and_every_tasks_metrics(
    logs: Path, server: str
) -> None:
    experiment = post_json(server, "data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = [(info["name"], info.get("differs", False)) for info in experiment["hparamInfos"]]
    # TensorBoard ticks the first five columns: those that differ between the runs come first
    differ = [name for name, differs in hparams if differs]
    assert differ == ["data", "model", "optimizer.lr"] == [name for name, _ in hparams[:3]]
    metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"val/acc", "test/acc", "val/rmse", "test/rmse", "test/r2", "train/loss"} <= metric_tags

    query = {"experimentName": "", "startIndex": 0, "sliceSize": 10}
    query["allowedStatuses"] = ["STATUS_SUCCESS"]
    query["colParams"] = [{"hparam": "optimizer.lr"}]
    query["colParams"] += [{"metric": {"tag": tag}} for tag in ("test/acc", "test/rmse")]
    groups = post_json(server, "data/plugin/hparams/session_groups", query)["sessionGroups"]
    by_name = {group["name"]: group for group in groups}
    assert set(by_name) == RUNS  # each row's trial id is its run's name
    for folder, name, tag in (
        (LENET, "lenet-digits", "test/acc"),
        (HOUSING, "mlp-california", "test/rmse"),
    ):
        values = {m["name"]["tag"]: m["value"] for m in by_name[f"{name}/{folder}"]["metricValues"]}
        expected = json.loads((logs / "train" / "runs" / folder / "metrics.json").read_text())
        assert values[tag] == pytest.approx(expected[tag], rel=1e-6)
    assert {group["hparams"]["optimizer.lr"] for group in groups} == {"0.001", "0.01"}


@pytest.mark.slow
def test_screenshot_script_saves_each_view_as_a_small_png(logs: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
    command = [sys.executable, "scripts/dashboard_screenshots.py", str(logs), str(tmp_path)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    for view in ("scalars", "images", "samples", "hparams"):
        path = tmp_path / f"{view}.png"
        image = Image.open(path)
        assert image.size == (1400, 1000) and path.stat().st_size < 200_000, view
        assert len(image.convert("RGB").getcolors(256) or []) > 50, f"{view} looks blank"
