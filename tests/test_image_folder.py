"""Image folders and the per-sample path: train, evaluate and predict with class names; the
same splits, statistics and batches in memory and from disk; one message per bad folder."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from src.data.base import TensorBatches
from src.data.samples import Normalized, fits_in_memory
from src.eval import evaluate
from src.harness.allowlist import spec_class
from src.harness.errors import ConfigError
from src.harness.raw_inputs import preprocessing_state
from src.predict import predict
from src.train import train
from tests.conftest import (
    QUIET,
    SHAPES,
    TINY_TRAINING,
    compose_config,
    run_in_process,
    write_image_folder,
)
from tests.test_bad_input import run_expecting_exit

FLIP = "data.train_transforms=[{_target_:torchvision.transforms.v2.RandomHorizontalFlip}]"


def datamodule(make_cfg, root: Path, *overrides: str):
    """The image folder's data module, set up as training sets it up."""
    cfg = make_cfg("data=image_folder", f"data.root={root}", *overrides)
    module = instantiate(cfg.data)
    module.setup("fit")
    return module


def test_train_eval_and_predict_through_the_cli_with_class_names(image_folder, tmp_path):
    logs = tmp_path / "logs"
    args = ["model=lenet", "data=image_folder", f"data.root={image_folder}", "data.batch_size=8"]
    result = run_in_process(
        *args, "trainer.max_epochs=4", f"paths.log_dir={logs}", *QUIET, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = logs.glob("train/runs/*")
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["test/acc"] > 0.6  # three classes: chance is 1/3
    ckpt = run / "checkpoints" / "best.ckpt"
    state = preprocessing_state(torch.load(ckpt, weights_only=True))
    assert state["label_names"] == list(SHAPES)

    evaluated = evaluate(compose_config([*QUIET, f"ckpt_path={ckpt}"], tmp_path / "eval", "eval"))
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"])

    cfg = [*QUIET, f"ckpt_path={ckpt}", f"input={image_folder / 'cross'}"]
    rows = list(csv.DictReader(predict(compose_config(cfg, tmp_path / "out", "predict")).open()))
    assert len(rows) == 20 and set(rows[0]) == {"input", "class", *(f"prob_{s}" for s in SHAPES)}
    assert {row["class"] for row in rows} <= set(SHAPES)
    assert sum(row["class"] == "cross" for row in rows) > 10


def test_both_paths_save_the_same_statistics_and_eval_reads_the_per_sample_one(
    image_folder, tmp_path
):
    states = {}
    for path in ("true", "false"):
        run = tmp_path / path
        overrides = ["model=lenet", "data=image_folder", f"data.root={image_folder}"]
        trained = train(compose_config([*TINY_TRAINING, *overrides, f"data.in_memory={path}"], run))
        ckpt = run / "checkpoints" / "best.ckpt"
        states[path] = preprocessing_state(torch.load(ckpt, weights_only=True))
    evaluated = evaluate(compose_config([*QUIET, f"ckpt_path={ckpt}"], tmp_path / "eval", "eval"))
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"])
    torch.testing.assert_close(states["false"]["mean"], states["true"]["mean"])
    torch.testing.assert_close(states["false"]["std"], states["true"]["std"])
    assert states["false"]["label_names"] == states["true"]["label_names"] == list(SHAPES)


def write_bad(root: Path, case: str) -> tuple[list[str], str]:
    """An image folder with one problem; the overrides and what the message must name."""
    write_image_folder(root, per_class=4)
    if case == "missing":
        return [f"data.root={root / 'nowhere'}"], f"{root / 'nowhere'} does not exist"
    if case == "no-classes":
        (root / "empty").mkdir()
        return [f"data.root={root / 'empty'}"], f"{root / 'empty'} has no class subfolders"
    if case == "empty-class":
        (root / "dots").mkdir()
        return [f"data.root={root}"], f"the class folder {root / 'dots'} holds no image"
    if case == "unreadable":
        (root / "bar" / "broken.png").write_text("not an image")
        return [f"data.root={root}"], f"{root / 'bar' / 'broken.png'} is not a readable image"
    Image.new("L", (32, 32)).save(root / "column" / "big.png")  # mixed sizes
    return [f"data.root={root}", "data.resize=false"], f"{root / 'column' / 'big.png'} is 32x32"


@pytest.mark.parametrize("case", ["missing", "no-classes", "empty-class", "unreadable", "mixed"])
def test_each_bad_folder_stops_before_training_with_one_message(make_cfg, tmp_path, case):
    overrides, named = write_bad(tmp_path / "images", case)
    message = run_expecting_exit(make_cfg("model=lenet", "data=image_folder", *overrides))
    assert named in message
    assert message.count("\n") <= 1 and "Traceback" not in message  # one problem, one line


def test_in_memory_auto_decides_by_the_decoded_size():
    assert fits_in_memory(1000, [1, 28, 28], 0.5, available=2 * 1000 * 784 * 4)
    assert not fits_in_memory(1001, [1, 28, 28], 0.5, available=2 * 1000 * 784 * 4)
    assert not fits_in_memory(10, [3, 64, 64], 1.0, available=10 * 3 * 64 * 64 * 4 - 1)


@pytest.mark.parametrize(
    ("overrides", "served"),
    [
        ([], TensorBatches),  # auto: 60 small images fit
        (["data.in_memory=true"], TensorBatches),
        (["data.in_memory=false"], Normalized),
        (["data.memory_fraction=1e-12"], Normalized),  # auto: they do not fit
        ([FLIP], Normalized),  # auto: transforms for training run per sample
    ],
)
def test_in_memory_chooses_the_path(make_cfg, image_folder, overrides, served):
    module = datamodule(make_cfg, image_folder, *overrides)
    assert all(type(split) is served for split in module.datasets.values())


def test_data_read_whole_cannot_stay_on_disk(make_cfg):
    with pytest.raises(
        ConfigError, match=r"data: in_memory=False cannot hold for DigitsDataModule"
    ):
        train(make_cfg("data=digits", "data.in_memory=false"))


def test_training_transforms_cannot_be_forced_into_memory(make_cfg, image_folder):
    cfg = make_cfg("data=image_folder", f"data.root={image_folder}", FLIP, "data.in_memory=true")
    with pytest.raises(ConfigError, match="data: data.train_transforms run on each example"):
        train(cfg)


def test_both_paths_serve_the_same_batches_from_training_statistics(make_cfg, image_folder):
    memory = datamodule(make_cfg, image_folder, "data.in_memory=true", "data.batch_size=16")
    disk = datamodule(
        make_cfg, image_folder, "data.in_memory=false", "data.num_workers=2", "data.batch_size=16"
    )
    train = disk.datasets["train"].dataset  # the training split's raw images, per sample
    pixels = torch.stack([train[i][0] for i in range(len(train))]).float()
    assert disk.mean.item() == pytest.approx(pixels.mean().item(), rel=1e-5)
    assert disk.std.item() == pytest.approx(pixels.std().item(), rel=1e-5)
    everything = torch.stack([image for image, _ in train.dataset]).float()
    assert abs(everything.mean() - pixels.mean()) > 1e-3  # the other splits are left out
    torch.manual_seed(3)
    for name in ("train", "val", "test"):
        for (x, y), (x_disk, y_disk) in zip(
            memory.make_loader(name), disk.make_loader(name), strict=True
        ):
            torch.testing.assert_close(x_disk, x, rtol=0, atol=1e-5)
            assert torch.equal(y_disk, y)


def test_cross_validation_folds_are_disjoint_and_cover_the_pool(make_cfg, image_folder):
    folds = [
        datamodule(
            make_cfg, image_folder, "data.in_memory=false", "data.num_folds=3", f"data.fold={k}"
        )
        for k in range(3)
    ]
    val = [set(module.datasets["val"].dataset.indices) for module in folds]
    test = {tuple(module.datasets["test"].dataset.indices) for module in folds}
    assert len(test) == 1  # one held-out test set, whatever the fold
    assert not (val[0] & val[1] or val[0] & val[2] or val[1] & val[2])
    pool = set(range(60)) - set(next(iter(test)))
    assert set().union(*val) == pool
    for module, held_out in zip(folds, val, strict=True):
        assert set(module.datasets["train"].dataset.indices) == pool - held_out


def test_train_val_and_test_folders_are_the_splits(make_cfg, tmp_path):
    for split, count in (("train", 10), ("val", 3), ("test", 4)):
        write_image_folder(tmp_path / "images" / split, per_class=count)
    module = datamodule(make_cfg, tmp_path / "images")
    assert [len(module.datasets[s]) for s in ("train", "val", "test")] == [30, 9, 12]


def test_colour_images_train_and_predict(make_cfg, tmp_path):
    root = tmp_path / "images"
    for target, colour in enumerate(("red", "green", "blue")):
        (root / colour).mkdir(parents=True)
        for n in range(6):
            pixels = np.zeros((12, 12, 3), np.uint8)
            pixels[..., target] = 150 + 10 * n
            Image.fromarray(pixels).save(root / colour / f"{n}.jpg")
    cfg = make_cfg(
        "model=mlp",
        "data=image_folder",
        f"data.root={root}",
        "data.channels=3",
        "data.image_size=8",
        "trainer.max_epochs=1",
    )
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    overrides = [*QUIET, f"ckpt_path={ckpt}", f"input={root / 'green'}"]
    rows = list(
        csv.DictReader(predict(compose_config(overrides, tmp_path / "out", "predict")).open())
    )
    assert len(rows) == 6 and "prob_green" in rows[0]


def test_a_recorded_data_config_with_transforms_is_admitted_and_foreign_code_refused():
    data = {
        "_target_": "src.data.folders.ImageFolderDataModule",
        "train_transforms": [
            {"_target_": "torchvision.transforms.v2.RandomRotation", "degrees": 5}
        ],
    }
    spec_class(data, "data")
    data["eval_transforms"] = [{"_target_": "os.system", "command": "true"}]
    with pytest.raises(ConfigError, match=r"transform._target_='os.system' is not allowed"):
        spec_class(data, "data")


def write_real_digits(root: Path, digits: Path, count: int) -> None:
    """The first ``count`` real MNIST test digits as ``root/<train|test>/<digit>/<n>.png``."""
    from src.data.images import read_idx

    images = read_idx(digits / "t10k-images-idx3-ubyte.gz").numpy()
    labels = read_idx(digits / "t10k-labels-idx1-ubyte.gz").numpy()
    for n in range(count):
        split = "test" if n % 6 == 0 else "train"
        folder = root / split / str(labels[n])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[n]).save(folder / f"{n}.png")


@pytest.mark.slow
def test_lenet_learns_real_digits_from_a_folder_read_per_sample(make_cfg, shared_data, tmp_path):
    write_real_digits(tmp_path / "digits", shared_data / "MNIST" / "raw", 3000)
    cfg = make_cfg(
        "model=lenet",
        "data=image_folder",
        f"data.root={tmp_path / 'digits'}",
        "data.in_memory=false",
        "data.num_workers=2",
        "data.batch_size=32",
        "trainer.max_epochs=4",
    )
    assert train(cfg)["test/acc"] > 0.9


class SeenByRank(L.Callback):
    """Writes a digest of each input a rank trained on to ``folder/rank<N>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder, self.seen = folder, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen += [hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in batch[0]]

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


@pytest.mark.slow
def test_ddp_ranks_read_distinct_samples_from_disk_into_one_run_folder(image_folder, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    overrides = [*TINY_TRAINING, "model=lenet", "data=image_folder", f"data.root={image_folder}"]
    overrides += ["data.in_memory=false", "data.num_workers=1", "data.batch_size=8"]
    overrides += ["data.val_fraction=0.125"]  # 60 images: 12 test, 6 validation, 42 training
    overrides += ["trainer=ddp_sim", "trainer.limit_train_batches=null", "test=false"]
    overrides += ["+callbacks.seen._target_=tests.test_image_folder.SeenByRank"]
    train(compose_config([*overrides, f"+callbacks.seen.folder={seen}"], tmp_path / "run"))
    ranks = [json.loads((seen / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 21  # 42 training images, half a rank
    assert not set(ranks[0]) & set(ranks[1]) and len(set(ranks[0])) == len(ranks[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "run", "seen"]
