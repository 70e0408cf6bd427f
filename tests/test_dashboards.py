"""What a short run shows in TensorBoard, read with TensorBoard's own reader and server.

One LeNet-on-digits run (module-scoped) serves the event-file checks and a real
``tensorboard`` process queried over HTTP; a linear regression run checks the
regression pictures; a run with the pictures off checks that none is written.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from src.models.nets import LeNet5
from src.train import train
from tests.conftest import QUIET, compose_config

# QUIET without logger=none: these runs log to TensorBoard (the default logger).
TENSORBOARD_RUN = [o for o in QUIET if not o.startswith("logger=")]
SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=2",
]
CLASSIFICATION_SCALARS = {
    "train/loss",
    "train/loss_step",
    "val/loss",
    "val/acc",
    "test/loss",
    "test/acc",
    "lr-Adam",
    "time/epoch_s",
    "time/train_samples_per_s",
}


def read_events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return events


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def last_images(events: EventAccumulator) -> dict[str, Image.Image]:
    return {
        tag: decode_png(events.Images(tag)[-1].encoded_image_string) for tag in image_tags(events)
    }


def image_tags(events: EventAccumulator) -> set[str]:
    return set(events.Tags()["images"])


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short epochs of LeNet on digits; the confusion matrix drawn every epoch."""
    run_dir = tmp_path_factory.mktemp("lenet") / "run"
    overrides = [
        *TENSORBOARD_RUN,
        "model=lenet",
        "data=digits",
        *SHORT,
        "callbacks.confusion_matrix.every_n_epochs=1",
    ]
    train(compose_config(overrides, run_dir))
    return run_dir


def test_classification_run_writes_the_scalars_of_the_naming_convention(lenet_run: Path) -> None:
    events = read_events(lenet_run)
    assert set(events.Tags()["scalars"]) >= CLASSIFICATION_SCALARS
    # 2 epochs x 4 batches, every 2nd step: one host read per logging step, no more
    assert [e.step for e in events.Scalars("train/loss_step")] == [2, 4, 6, 8]
    assert len(events.Scalars("time/epoch_s")) == 2
    assert all(e.value > 0 for e in events.Scalars("time/train_samples_per_s"))


def test_classification_run_draws_confusion_matrix_and_sample_grids(lenet_run: Path) -> None:
    events = read_events(lenet_run)
    images = last_images(events)
    assert set(images) == {"val/confusion_matrix", "val/predictions", "train/inputs"}
    for tag, image in images.items():
        assert image.width >= 200 and image.height >= 200, tag
    # every_n_epochs=1: one matrix per epoch; the samples only at the end of training
    assert len(events.Images("val/confusion_matrix")) == 2
    assert len(events.Images("val/predictions")) == 1
    # 64 images of 28x28 in rows of 8 with 2-pixel padding: 8 x 30 + 2 pixels square
    assert images["train/inputs"].size == (242, 242)


def test_hparams_tab_links_resolved_config_values_to_final_metrics(lenet_run: Path) -> None:
    events = read_events(lenet_run)
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info.hparams
    assert session["model"].string_value == "lenet"
    assert session["data"].string_value == "digits"
    assert session["net"].string_value == "LeNet5"
    assert session["optimizer"].string_value == "adam"
    assert session["optimizer.lr"].number_value == pytest.approx(1e-3)
    assert session["data.batch_size"].number_value == 64
    assert session["seed"].number_value == 12345
    assert session["trainer.max_epochs"].number_value == 2
    assert not any("${" in value.string_value for value in session.values())
    metric_tags = {info.name.tag for info in experiment.experiment.metric_infos}
    assert {"val/acc", "val/loss", "test/acc", "test/loss", "train/loss"} <= metric_tags
    assert metric_tags <= set(events.Tags()["scalars"])
    assert "_hparams_/session_end_info" in content


def test_regression_run_draws_scatter_and_residuals(make_cfg, tiny_housing_csv: Path) -> None:
    cfg = make_cfg(
        *TENSORBOARD_RUN, "model=linreg", f"data.csv_path={tiny_housing_csv}", *SHORT, quiet=False
    )
    train(cfg)
    events = read_events(Path(cfg.paths.output_dir))
    assert {"val/rmse", "val/r2", "test/rmse", "lr-Adam"} <= set(events.Tags()["scalars"])
    images = last_images(events)
    assert set(images) == {"val/pred_vs_true", "val/residuals"}
    assert all(image.width >= 300 and image.height >= 200 for image in images.values())


def test_pictures_off_write_no_image_and_opt_in_graph_and_histograms_appear(make_cfg) -> None:
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
        quiet=False,
    )
    train(cfg)
    events = read_events(Path(cfg.paths.output_dir))
    assert image_tags(events) == set()
    assert set(events.Tags()["scalars"]) >= {"val/acc", "train/loss_step"}
    assert events.Tags()["graph"]
    names = [f"net.{name}" for name, _ in LeNet5([1, 28, 28], 10).named_parameters()]
    assert set(events.Tags()["histograms"]) == {
        f"{kind}/{name}" for kind in ("weights", "gradients") for name in names
    }


@pytest.fixture
def tensorboard_server(lenet_run: Path, tmp_path: Path):
    """A real ``tensorboard`` process on the LeNet run, on a port the OS picks; always stopped."""
    stderr = tmp_path / "tensorboard.log"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(lenet_run)]
    command += ["--host", "127.0.0.1", "--port", "0", "--load_fast", "false"]
    with stderr.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"http://127\.0\.0\.1:(\d+)/", stderr.read_text())):
            assert process.poll() is None, f"tensorboard exited: {stderr.read_text()}"
            assert time.monotonic() < deadline, f"tensorboard did not start: {stderr.read_text()}"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def get_json(url: str, path: str, **query: str):
    full = f"{url}{path}?{urllib.parse.urlencode(query)}" if query else f"{url}{path}"
    with urllib.request.urlopen(full, timeout=10) as response:
        return json.load(response)


def post_json(url: str, path: str, body: dict):
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_a_real_tensorboard_serves_the_runs_scalars_images_and_hparams(
    lenet_run: Path, tensorboard_server: str
) -> None:
    deadline = time.monotonic() + 60
    while "tensorboard" not in (tags := get_json(tensorboard_server, "/data/plugin/scalars/tags")):
        assert time.monotonic() < deadline, f"the run never appeared: {tags}"
        time.sleep(0.2)
    assert set(tags["tensorboard"]) >= CLASSIFICATION_SCALARS

    metrics = json.loads((lenet_run / "metrics.json").read_text())
    for tag in ("val/acc", "val/loss", "train/loss", "test/acc", "test/loss"):
        points = get_json(
            tensorboard_server, "/data/plugin/scalars/scalars", run="tensorboard", tag=tag
        )
        _, _, last_value = points[-1]
        assert last_value == pytest.approx(metrics[tag], rel=1e-6), tag

    images = get_json(tensorboard_server, "/data/plugin/images/tags")["tensorboard"]
    assert {"val/confusion_matrix", "val/predictions", "train/inputs"} <= set(images)

    query = {"experimentName": "", "startIndex": 0, "sliceSize": 10}
    query["allowedStatuses"] = ["STATUS_SUCCESS"]
    query["colParams"] = [{"hparam": "model"}, {"metric": {"tag": "val/acc"}}]
    groups = post_json(tensorboard_server, "/data/plugin/hparams/session_groups", query)
    (group,) = groups["sessionGroups"]
    assert group["hparams"]["model"] == "lenet"
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert values["val/acc"] == pytest.approx(metrics["val/acc"], rel=1e-6)
