"""How much the template costs over a hand-written PyTorch loop, and how fast it starts.

``python scripts/benchmark.py`` measures, in one process and on the same tensors, net,
batch size and optimizer, one training epoch of

* **plain**: a bare PyTorch loop over pre-shuffled tensors cut into batches by slicing
  (the limit: no framework, no DataLoader, no hooks), and
* **project**: the project's own training, ``train(cfg)`` exactly as ``python src/train.py``
  calls it (default callbacks and logger included), with the config composed by Hydra.

An epoch is timed after a warm-up epoch and the median of the following epochs is kept.
For the project, the time runs from the start of the training epoch to the start of
validation: validation, checkpointing and the end-of-epoch logging are left out, because
the plain loop does none of them. It also compares the data pipeline with the
per-sample torchvision one of lightning-hydra-template, times the start-up of
``python src/train.py trainer.fast_dev_run=true`` against a bare ``import torch, lightning``,
and shows how an epoch and the peak memory grow with the data set size. The ``images``
section trains LeNet on a folder of MNIST-format PNGs (``data=image_folder``) in memory and
per sample, against a plain ``torchvision.datasets.ImageFolder`` + ``DataLoader`` loop,
and measures the per-sample path's peak memory at 1x and 4x the images.

Figures are medians, but a shared machine is noisy: compare ratios, not single numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

import src  # noqa: E402, F401 - sets PROJECT_ROOT for the configs
from src.harness.speed import skip_failing_nvml_probe  # noqa: E402
from src.train import train  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
# (model, data, experiment config giving the default batch size)
PAIRS = [
    ("mlp", "synthetic", "mlp_synthetic"),
    ("lenet", "mnist", "lenet_mnist"),
    ("linreg", "california", "linreg_california"),
    ("mlp", "california", "mlp_california"),
]
HOUSING_COLUMNS = (
    "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude,MedHouseVal"
)


# -- timing the project's own training ------------------------------------------------
Clock = tuple[float, float]  # (wall seconds, CPU seconds of this process)


def clock() -> Clock:
    return time.perf_counter(), time.process_time()


def since(started: Clock) -> Clock:
    wall, cpu = clock()
    return wall - started[0], cpu - started[1]


def median(times: Sequence[Clock]) -> Clock:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


class EpochTimer(L.Callback):
    """Times each epoch twice: its training part, from its start to the start of validation,
    and the whole epoch but its validation, from its start to the next one's (the end-of-epoch
    work included: checkpoints, schedulers, metrics, logging)."""

    epochs: list[Clock] = []
    whole: list[Clock] = []

    def __init__(self) -> None:
        self.started: Clock | None = None  # this epoch's
        self.training = False  # before its validation
        self.validating: Clock = (0.0, 0.0)  # the time its validation took
        self.validation_started: Clock = (0.0, 0.0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close(pl_module)
        self.started, self.training, self.validating = clock(), True, (0.0, 0.0)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close(pl_module)

    def close(self, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        if self.started is not None:
            wall, cpu = since(self.started)
            EpochTimer.whole.append((wall - self.validating[0], cpu - self.validating[1]))

    def end_training_part(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.training and not trainer.sanity_checking:
            synchronize(pl_module.device)
            EpochTimer.epochs.append(since(self.started))
            self.training = False

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end_training_part(trainer, pl_module)
        self.validation_started = clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            synchronize(pl_module.device)
            wall, cpu = since(self.validation_started)
            self.validating = (self.validating[0] + wall, self.validating[1] + cpu)

    on_train_epoch_end = end_training_part


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose_train_config(overrides: Sequence[str]) -> DictConfig:
    """Compose ``configs/train.yaml`` with ``overrides`` as the command line would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


def project_epochs(cfg: DictConfig, epochs: int) -> tuple[list[Clock], list[Clock]]:
    """Seconds per epoch of ``train(cfg)``, the training part and the whole epoch but its
    validation (the warm-up epoch dropped)."""
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs + 1
        cfg.test = False
        # A fresh run folder: a folder holding an earlier run's checkpoint would resume it.
        cfg.paths.output_dir = tempfile.mkdtemp(dir=Path(cfg.paths.output_dir).parent)
        cfg.callbacks["benchmark_epoch_timer"] = {"_target_": f"{__name__}.EpochTimer"}
    EpochTimer.epochs, EpochTimer.whole = [], []
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        train(cfg)
    return EpochTimer.epochs[1:], EpochTimer.whole[1:]


# -- the limit: a plain PyTorch loop ----------------------------------------------------
def plain_epochs(cfg: DictConfig, epochs: int, device: torch.device) -> tuple[list[Clock], int]:
    """Seconds per epoch of a bare loop on the same train tensors, net and optimizer."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    train_set = datamodule.datasets["train"]
    inputs, targets = train_set.inputs.to(device), train_set.targets.to(device)
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model.net).to(device)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    loss_fn = datamodule.task.loss
    batch_size = cfg.data.batch_size
    times = []
    for _ in range(epochs + 1):
        synchronize(device)
        started = clock()
        order = torch.randperm(len(targets), device=device)
        shuffled_inputs, shuffled_targets = inputs[order], targets[order]
        for start in range(0, len(targets), batch_size):
            x = shuffled_inputs[start : start + batch_size]
            y = shuffled_targets[start : start + batch_size]
            loss = loss_fn(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        times.append(since(started))
    return times[1:], len(targets)


# -- data sets in the formats the data modules read -------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def read_idx_array(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    shape = np.frombuffer(raw, dtype=">i4", count=raw[3], offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(shape)


def mnist_test_digits() -> tuple[np.ndarray, np.ndarray, bool]:
    """The 10,000 real MNIST test digits (uint8 images, labels) from ../shared/data, else as
    many random 28x28 images; and whether they are the real ones."""
    real = SHARED_DATA / "MNIST" / "raw"
    if (real / "t10k-images-idx3-ubyte.gz").is_file():
        images = read_idx_array(real / "t10k-images-idx3-ubyte.gz")
        return images, read_idx_array(real / "t10k-labels-idx1-ubyte.gz"), True
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=10_000).astype(np.uint8)
    return rng.integers(0, 256, size=(10_000, 28, 28)).astype(np.uint8), labels, False


def make_mnist_dir(root: Path, num_train: int) -> str:
    """Write uncompressed MNIST IDX files (readable by torchvision too); say what they hold."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels, real = mnist_test_digits()
    source = (
        f"the 10,000 real MNIST test images, repeated to {num_train:,}"
        if real
        else f"{num_train:,} generated random 28x28 images"
    )
    repeats = -(-num_train // len(labels))
    write_idx(raw / "train-images-idx3-ubyte", np.tile(images, (repeats, 1, 1))[:num_train])
    write_idx(raw / "train-labels-idx1-ubyte", np.tile(labels, repeats)[:num_train])
    write_idx(raw / "t10k-images-idx3-ubyte", images[:1000])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:1000])
    return source


def housing_csv(root: Path, num_rows: int | None) -> tuple[Path, str]:
    """The real California housing CSV when present (optionally cut), else a generated one."""
    real = SHARED_DATA / "california_housing.csv"
    if real.is_file() and num_rows is None:
        return real, "real California housing (20,640 rows)"
    rows = 20_640 if num_rows is None else num_rows
    rng = np.random.default_rng(0)
    table = rng.normal(size=(rows, 9)).astype(np.float32) + 3.0
    path = root / "housing.csv"
    np.savetxt(path, table, delimiter=",", header=HOUSING_COLUMNS, comments="", fmt="%.5f")
    return path, f"generated, {rows:,} rows x 9 columns (real file absent or --quick)"


# -- the measurements --------------------------------------------------------------------
def base_overrides(work: Path, device: str) -> list[str]:
    overrides = [f"paths.log_dir={work / 'logs'}", f"paths.output_dir={work / 'run'}"]
    if device == "cuda":
        overrides += ["trainer.accelerator=gpu", "data.device_resident=true"]
    return overrides


def pair_config(
    model: str, data: str, experiment: str, data_overrides: list[str], common: list[str]
) -> tuple[DictConfig, str]:
    """The experiment's config when it exists, else the bare model x data pair."""
    if (ROOT / "configs" / "experiment" / f"{experiment}.yaml").is_file():
        selection, origin = [f"experiment={experiment}"], f"experiment={experiment}"
    else:
        selection, origin = [f"model={model}", f"data={data}"], "data config (no experiment)"
    return compose_train_config([*selection, *data_overrides, *common]), origin


def measure_pairs(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    mnist_source = make_mnist_dir(work / "mnist", args.mnist_images)
    csv_path, housing_source = housing_csv(work, args.housing_rows)
    data_overrides = {
        "synthetic": [f"data.num_samples={args.synthetic_samples}"],
        "mnist": [f"data.data_dir={work / 'mnist'}", "data.download=false"],
        "california": [f"data.csv_path={csv_path}"],
    }
    sources = {
        "synthetic": f"{args.synthetic_samples:,} generated samples",
        "mnist": mnist_source,
        "california": housing_source,
    }
    rows = []
    for model, data, experiment in PAIRS:
        if f"{model}:{data}" not in args.pairs:
            continue
        common = base_overrides(work, args.device)
        cfg, origin = pair_config(model, data, experiment, data_overrides[data], common)
        default_batch = int(cfg.data.batch_size)
        # the experiment's trainer.steps_per_call unless --steps-per-call says otherwise
        steps = args.steps_per_call or int(cfg.trainer.get("steps_per_call", 1))
        for batch_size in sorted({64, default_batch}):
            batch = [*data_overrides[data], f"data.batch_size={batch_size}"]
            runs = {
                k: pair_config(
                    model, data, experiment, [*batch, f"trainer.steps_per_call={k}"], common
                )[0]
                for k in sorted({1, steps})
            }
            plain_times: list[Clock] = []
            project_times: dict[int, tuple[list[Clock], list[Clock]]] = {k: ([], []) for k in runs}
            for _ in range(args.rounds):  # alternated, so a change of load hits all sides
                times, num_train = plain_epochs(runs[1], args.epochs, device)
                plain_times += times
                for k, cfg in runs.items():
                    training, whole = project_epochs(cfg, args.epochs)
                    project_times[k][0].extend(training)
                    project_times[k][1].extend(whole)
            plain = median(plain_times)
            row = {
                "model": model,
                "data": data,
                "config": origin,
                "data_source": sources[data],
                "batch_size": batch_size,
                "is_default_batch": batch_size == default_batch,
                "train_samples": num_train,
                "plain_samples_per_s": num_train / plain[0],
                **ratios("project_", project_times[1], plain, num_train),
                "steps_per_call": steps,
                **(ratios("grouped_", project_times[steps], plain, num_train) if steps > 1 else {}),
            }
            row["ratio"], row["ratio_cpu_time"] = (
                row["project_ratio"],
                row["project_ratio_cpu_time"],
            )
            rows.append(row)
            print_row(row)
    return rows


def ratios(
    prefix: str, times: tuple[list[Clock], list[Clock]], plain: Clock, num_train: int
) -> dict[str, float]:
    """The project's throughput and its times over the plain loop's, wall and CPU, for the
    training part of its epochs and for whole epochs."""
    training, whole = median(times[0]), median(times[1])
    return {
        f"{prefix}samples_per_s": num_train / training[0],
        f"{prefix}ratio": training[0] / plain[0],
        f"{prefix}ratio_cpu_time": training[1] / plain[1],
        f"{prefix}whole_epoch_ratio": whole[0] / plain[0],
        f"{prefix}whole_epoch_ratio_cpu_time": whole[1] / plain[1],
    }


def print_row(row: dict[str, Any]) -> None:
    default = " (default)" if row["is_default_batch"] else ""
    line = (
        f"{row['model']:>6} x {row['data']:<10} batch {row['batch_size']:>4}{default:<10} "
        f"plain {row['plain_samples_per_s']:>9,.0f}/s  "
        f"project {row['project_samples_per_s']:>9,.0f}/s"
        f"  ratio {row['ratio']:.2f} (CPU time {row['ratio_cpu_time']:.2f}), "
        f"whole epoch {row['project_whole_epoch_ratio']:.2f}"
    )
    if "grouped_ratio" in row:
        line += (
            f"; steps_per_call={row['steps_per_call']}: ratio {row['grouped_ratio']:.2f} "
            f"(CPU time {row['grouped_ratio_cpu_time']:.2f}), "
            f"whole epoch {row['grouped_whole_epoch_ratio']:.2f}"
        )
    print(line, flush=True)


def measure_peer(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The same MLP fed by torchvision's per-sample MNIST pipeline, then by this project's."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    device = torch.device(args.device)
    mnist_dir = work / "mnist"
    cfg = compose_train_config(
        [
            "model=mlp",
            "data=mnist",
            f"data.data_dir={mnist_dir}",
            "data.download=false",
            "data.batch_size=128",
            *base_overrides(work, args.device),
        ]
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    normalize = transforms.Normalize((0.1307,), (0.3081,))
    peer_set = datasets.MNIST(
        str(mnist_dir), train=True, transform=transforms.Compose([transforms.ToTensor(), normalize])
    )
    loaders = {
        "project": datamodule.train_dataloader(),
        "peer": DataLoader(peer_set, batch_size=128, shuffle=True),
    }
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model.net).to(device)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())

    def epoch(loader: DataLoader) -> float:
        synchronize(device)
        started, seen = clock(), 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        synchronize(device)
        return seen / since(started)[0]

    epoch(loaders["project"])  # warm-up
    ours = statistics.median(epoch(loaders["project"]) for _ in range(args.epochs))
    peer = statistics.median(epoch(loaders["peer"]) for _ in range(args.peer_epochs))
    result = {
        "data_source": f"{len(peer_set):,} MNIST-format images (see the lenet row)",
        "batch_size": 128,
        "peer_samples_per_s": peer,
        "project_samples_per_s": ours,
        "speedup": ours / peer,
    }
    print(
        f"data pipeline, MLP, batch 128: peer (torchvision MNIST + per-sample ToTensor/Normalize)"
        f" {peer:,.0f}/s, project {ours:,.0f}/s, speed-up {ours / peer:.1f}x",
        flush=True,
    )
    return result


def process_seconds(command: list[str], cwd: Path) -> Clock:
    """Wall time of a child process and the CPU time it used."""

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    started, cpu_started = time.perf_counter(), children_cpu()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started, children_cpu() - cpu_started


def measure_startup(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Whole-process time of a fast_dev_run against importing torch and Lightning only."""
    bare = [sys.executable, "-c", "import torch, lightning"]
    smoke = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "trainer.fast_dev_run=true",
        f"paths.log_dir={work / 'startup_logs'}",
    ]
    times: dict[str, list[Clock]] = {"bare": [], "fast_dev_run": []}
    for _ in range(args.startup_repeats):  # interleaved, so load changes hit both alike
        times["bare"].append(process_seconds(bare, work))
        times["fast_dev_run"].append(process_seconds(smoke, work))
    bare, smoke = median(times["bare"]), median(times["fast_dev_run"])
    print(
        f"start-up: `python src/train.py trainer.fast_dev_run=true` {smoke[0]:.2f} s, "
        f'`python -c "import torch, lightning"` {bare[0]:.2f} s, ratio {smoke[0] / bare[0]:.2f}'
        f" (CPU time {smoke[1]:.2f} s / {bare[1]:.2f} s = {smoke[1] / bare[1]:.2f})",
        flush=True,
    )
    return {
        "fast_dev_run_s": smoke[0],
        "import_s": bare[0],
        "ratio": smoke[0] / bare[0],
        "fast_dev_run_cpu_s": smoke[1],
        "import_cpu_s": bare[1],
        "ratio_cpu_time": smoke[1] / bare[1],
    }


def memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory() -> None:
    """Start the peak (VmHWM) afresh, so import-time peaks do not hide the data's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def scaling_child(args: argparse.Namespace) -> None:
    """One data set size, in a fresh process so that its peak memory is its own."""
    work = Path(tempfile.mkdtemp(prefix="benchmark-"))
    try:
        cfg = compose_train_config(
            [
                "model=mlp",
                "data=synthetic",
                f"data.num_samples={args.scaling_child}",
                f"data.batch_size={args.scaling_batch_size}",
                *base_overrides(work, args.device),
            ]
        )
        reset_peak_memory()
        baseline = memory_mb("VmRSS")
        seconds, cpu_seconds = median(project_epochs(cfg, args.epochs)[0])
        features = int(np.prod(cfg.data.input_shape))
        data_mb = args.scaling_child * (features * 4 + 8) / 2**20  # float32 inputs, int64 labels
        print(
            json.dumps(
                {
                    "num_samples": args.scaling_child,
                    "epoch_s": seconds,
                    "epoch_cpu_s": cpu_seconds,
                    "data_mb": data_mb,
                    "rss_before_data_mb": baseline,
                    "peak_rss_mb": memory_mb("VmHWM"),
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_scaling(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for size in args.scaling_sizes:
        command = [
            sys.executable,
            __file__,
            f"--scaling-child={size}",
            f"--scaling-batch-size={args.scaling_batch_size}",
            f"--epochs={args.scaling_epochs}",
            f"--device={args.device}",
            *([f"--threads={args.threads}"] if args.threads else []),
        ]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        row = json.loads(result.stdout.strip().splitlines()[-1])
        first = rows[0] if rows else row
        row["epoch_ratio_to_smallest"] = row["epoch_s"] / first["epoch_s"]
        row["epoch_cpu_ratio_to_smallest"] = row["epoch_cpu_s"] / first["epoch_cpu_s"]
        row["size_ratio_to_smallest"] = size / args.scaling_sizes[0]
        growth = row["peak_rss_mb"] - row["rss_before_data_mb"]
        row["rss_growth_per_data_mb"] = growth / row["data_mb"]
        rows.append(row)
        print(
            f"scaling: {size:>9,} samples  epoch {row['epoch_s']:7.3f} s "
            f"(x{row['epoch_ratio_to_smallest']:.1f}, "
            f"CPU x{row['epoch_cpu_ratio_to_smallest']:.1f},"
            f" for x{row['size_ratio_to_smallest']:.0f} data)"
            f"  data {row['data_mb']:6.1f} MB  peak RSS {row['peak_rss_mb']:7.1f} MB "
            f"(+{growth:.1f} MB over start, {row['rss_growth_per_data_mb']:.1f}x the data)",
            flush=True,
        )
    return rows


def write_digit_folder(root: Path, count: int) -> str:
    """``count`` MNIST-format PNGs in class folders ``root/<digit>/``; say what they hold."""
    from PIL import Image

    images, labels, real = mnist_test_digits()
    source = (
        f"the real MNIST test digits repeated to {count:,} PNGs"
        if real
        else f"{count:,} generated random 28x28 PNGs"
    )
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
    for n in range(count):
        Image.fromarray(images[n % len(labels)]).save(
            root / str(labels[n % len(labels)]) / f"{n}.png"
        )
    return source


def loop_epochs(loader: Any, epochs: int, seed: int, started: float) -> list[float]:
    """Samples/s of each of ``epochs`` LeNet epochs over ``loader``; the first counts from
    ``started`` (the data's setup, its decoding included)."""
    from src.models.nets import LeNet5

    torch.manual_seed(seed)
    net = LeNet5([1, 28, 28], 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rates = []
    for _ in range(epochs):
        seen = 0
        for x, y in loader:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        rates.append(seen / (time.perf_counter() - started))
        started = time.perf_counter()
    return rates


def folder_loader(root: Path, in_memory: bool, workers: int) -> Any:
    """The project's training loader of ``data=image_folder`` (set up: decoded, or its
    statistics taken), as ``python src/train.py`` builds it."""
    cfg = compose_train_config(
        [
            "model=lenet",
            "data=image_folder",
            f"data.root={root}",
            f"data.in_memory={str(in_memory).lower()}",
            f"data.num_workers={workers}",
        ]
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def measure_images(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """First and later epochs, samples/s: the in-memory and per-sample paths of
    ``data=image_folder`` against ImageFolder + DataLoader(num_workers=2), same LeNet, the
    same resize and normalization; then the per-sample path's peak memory at 1x and 4x."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    root = work / "images"
    source = write_digit_folder(root, args.image_count)
    epochs, result = args.epochs + 1, {"data_source": source, "batch_size": 64}
    plain = datasets.ImageFolder(
        str(root),
        transform=transforms.Compose(
            [
                transforms.Grayscale(),
                transforms.Resize(28),
                transforms.ToTensor(),
                transforms.Normalize((0.1307,), (0.3081,)),
            ]
        ),
    )
    for name, make in (
        ("plain", lambda: DataLoader(plain, batch_size=64, shuffle=True, num_workers=2)),
        ("in_memory", lambda: folder_loader(root, True, 2)),
        ("per_sample", lambda: folder_loader(root, False, 2)),
    ):
        started = time.perf_counter()
        rates = loop_epochs(make(), epochs, 0, started)
        result[name] = {
            "first_epoch_per_s": rates[0],
            "later_epoch_per_s": statistics.median(rates[1:]),
        }
        print(
            f"image folder, LeNet, batch 64, {name}: first epoch {rates[0]:,.0f}/s, "
            f"later {statistics.median(rates[1:]):,.0f}/s",
            flush=True,
        )
    later = {
        name: result[name]["later_epoch_per_s"] for name in ("plain", "in_memory", "per_sample")
    }
    result["in_memory_speedup"] = later["in_memory"] / later["plain"]
    result["per_sample_speedup"] = later["per_sample"] / later["plain"]
    result["memory"] = [images_memory(args, root.parent / f"x{k}", k) for k in (1, 4)]
    return result


def images_memory(args: argparse.Namespace, folder: Path, times: int) -> dict[str, Any]:
    """Peak resident memory of one per-sample epoch on ``times`` x the images, in a fresh
    process (``--images-child``): its own peak and its largest worker's."""
    write_digit_folder(folder, args.image_count * times)
    command = [sys.executable, __file__, f"--images-child={folder}"]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    row = {"images": args.image_count * times, **json.loads(result.stdout.strip().splitlines()[-1])}
    shutil.rmtree(folder, ignore_errors=True)
    print(
        f"image folder, per sample, {row['images']:,} images: peak RSS {row['peak_rss_mb']:.0f} MB"
        f" (largest worker {row['worker_peak_rss_mb']:.0f} MB)",
        flush=True,
    )
    return row


def images_child(folder: Path) -> None:
    """One per-sample epoch of the image folder at ``folder``; its peak memory as JSON."""
    reset_peak_memory()
    loop_epochs(folder_loader(folder, False, 2), 1, 0, time.perf_counter())
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_rss_mb": memory_mb("VmHWM"), "worker_peak_rss_mb": workers}))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Project / plain loop, wall time (CPU time), for K=1 and the chosen steps_per_call K."""
    lines = [
        "| model x data | batch | plain loop (samples/s) | K=1: training | K=1: whole epoch "
        "| K | K: training | K: whole epoch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f} ({row[f'{key}_cpu_time']:.2f})" if key in row else "-"

    for row in rows:
        default = " (default)" if row["is_default_batch"] else ""
        lines.append(
            f"| {row['model']} x {row['data']} | {row['batch_size']}{default} "
            f"| {row['plain_samples_per_s']:,.0f} | {cell(row, 'project_ratio')} "
            f"| {cell(row, 'project_whole_epoch_ratio')} | {row['steps_per_call']} "
            f"| {cell(row, 'grouped_ratio')} | {cell(row, 'grouped_whole_epoch_ratio')} |"
        )
    return "\n".join(lines)


SECTIONS = ("pairs", "peer", "startup", "scaling", "images")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data sets, one epoch each")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    names = [f"{model}:{data}" for model, data, _ in PAIRS]
    parser.add_argument("--pairs", nargs="+", choices=names, default=names)
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="cuda: data on the GPU"
    )
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="plain/project alternations")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--steps-per-call",
        type=int,
        help="trainer.steps_per_call to compare with 1 (default: the experiment's)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--synthetic-samples", type=int, default=100_000)
    parser.add_argument("--mnist-images", type=int, default=60_000)
    parser.add_argument("--housing-rows", type=int, help="generate this many rows instead")
    parser.add_argument("--peer-epochs", type=int, default=2)
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument(
        "--scaling-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument("--scaling-batch-size", type=int, default=64)
    parser.add_argument("--scaling-epochs", type=int, default=1, help="timed, after the warm-up")
    parser.add_argument("--scaling-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--image-count", type=int, default=60_000, help="PNGs in the folder")
    parser.add_argument("--images-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"error: --device cuda, but torch {torch.__version__} sees no CUDA GPU on this "
            "machine. Leave --device out to measure on the CPU."
        )
    if args.quick:
        args.epochs, args.peer_epochs, args.startup_repeats, args.rounds = 1, 1, 1, 1
        args.synthetic_samples, args.mnist_images = 2_000, 2_000
        args.housing_rows = args.housing_rows or 2_000
        args.scaling_sizes = [1_000, 10_000]
        args.image_count = 1_000
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # Without this the plain loop would pay a per-step cost that only importing Lightning
    # causes (see src/harness/speed.py); train() drops it the same way.
    skip_failing_nvml_probe()
    for name in ("lightning.pytorch", "lightning.fabric"):  # no banners at every fit
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(
            args.threads
        )  # which train() keeps (src/harness/speed.py)
    if args.scaling_child:
        scaling_child(args)
        return {}
    if args.images_child:
        images_child(args.images_child)
        return {}
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "device": args.device,
        },
        "measured": "median of the epochs timed after a warm-up epoch, plain loop and project "
        "alternated --rounds times; project epochs exclude validation and checkpointing",
    }
    work = Path(tempfile.mkdtemp(prefix="benchmark-"))
    try:
        if "pairs" in args.only:
            results["pairs"] = measure_pairs(args, work)
            print("\n" + markdown_table(results["pairs"]) + "\n", flush=True)
        if "peer" in args.only:
            if not (work / "mnist").is_dir():
                make_mnist_dir(work / "mnist", args.mnist_images)
            results["peer"] = measure_peer(args, work)
        if "startup" in args.only:
            results["startup"] = measure_startup(args, work)
        if "scaling" in args.only:
            results["scaling"] = measure_scaling(args)
        if "images" in args.only:
            results["images"] = measure_images(args, work)
    finally:
        GlobalHydra.instance().clear()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
