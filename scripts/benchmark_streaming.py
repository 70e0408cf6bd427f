"""Streaming from LitData's chunks against the in-memory path, on the same data: the samples
per second of a training epoch, and the peak memory as the data set grows.

    python scripts/benchmark_streaming.py                      # 20,000 and 80,000 images
    python scripts/benchmark_streaming.py --images 60000 --multiples 1 4 --epochs 2

The data: MNIST-format IDX files of ``--images`` training images (the real MNIST test digits
of ``../shared/data`` repeated, or random ones without them) times each of ``--multiples``,
read by ``data=mnist`` into memory, and the same data set written into chunks in a local
folder by ``scripts/optimize_data.py`` for ``data=streaming``. Both train ``model=mlp`` with
batches of 64 through ``train(cfg)``, as ``python src/train.py`` does.

Each measurement is a fresh process, so its peak memory is its own: one warm-up epoch, then
the median of the timed epochs' training part (from an epoch's start to its validation, as
``scripts/benchmark.py`` times it), in wall time and in the process's CPU time (steadier on a
machine shared with other work). Memory is measured from just before ``train(cfg)``: the
process's peak resident memory (``VmHWM``), and the peaks of its parts (sampled every 10 ms):
``RssAnon``, the memory the process allocated; ``RssFile``, pages of files it maps, such as
memory-mapped chunks, which the kernel reclaims when it needs the memory; ``RssShmem``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.benchmark import (  # noqa: E402
    base_overrides,
    compose_train_config,
    make_mnist_dir,
    memory_mb,
    project_epochs,
    reset_peak_memory,
)

PATHS = ("memory", "streaming")


# The parts of the resident memory (/proc/self/status): what the process allocated, pages of
# files it maps, shared memory.
PARTS = ("RssAnon", "RssFile", "RssShmem")


def sample_peaks(stop: threading.Event, peaks: dict[str, float]) -> None:
    """Sample :data:`PARTS` every 10 ms until ``stop`` is set; keep each one's largest."""
    while not stop.wait(0.01):
        for part in PARTS:
            peaks[part] = max(peaks[part], memory_mb(part))


def child(args: argparse.Namespace) -> None:
    """One path on one data set, in this fresh process: its epoch time and peak memory."""
    data = Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="benchmark-"))
    try:
        selection = (
            ["data=mnist", f"data.data_dir={data}", "data.download=false"]
            if args.child == "memory"
            else ["data=streaming", f"data.input_dir={data}"]
        )
        cfg = compose_train_config(["model=mlp", *selection, *base_overrides(work, "cpu")])
        reset_peak_memory()
        before, stop = memory_mb("VmRSS"), threading.Event()
        peaks = {part: memory_mb(part) for part in PARTS}
        sampler = threading.Thread(target=sample_peaks, args=(stop, peaks), daemon=True)
        sampler.start()
        try:
            times = project_epochs(cfg, args.epochs)[0]
        finally:
            stop.set()
            sampler.join()
        print(
            json.dumps(
                {
                    "path": args.child,
                    "epoch_s": statistics.median(t[0] for t in times),
                    "epoch_cpu_s": statistics.median(t[1] for t in times),
                    "rss_before_mb": before,
                    "peak_rss_mb": memory_mb("VmHWM"),
                    **{f"peak_{part}_mb": peak for part, peak in peaks.items()},
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def optimized(mnist: Path, output_dir: Path) -> None:
    """``python scripts/optimize_data.py data=mnist ... output_dir=...``, in a process of its
    own (the parent's memory stays small and unmeasured anyway)."""
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "optimize_data.py"),
            "data=mnist",
            f"data.data_dir={mnist}",
            "data.download=false",
            f"output_dir={output_dir}",
            f"paths.log_dir={output_dir.parent / 'logs'}",
        ],
        check=True,
        capture_output=True,
    )


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    work = Path(tempfile.mkdtemp(prefix="benchmark-streaming-"))
    try:
        for multiple in args.multiples:
            images = args.images * multiple
            mnist = work / f"mnist-{multiple}"
            source = make_mnist_dir(mnist, images)
            optimized(mnist, work / f"chunks-{multiple}")
            for path in PATHS:
                data = mnist if path == "memory" else work / f"chunks-{multiple}"
                command = [sys.executable, __file__, f"--child={path}", f"--data={data}"]
                result = subprocess.run(
                    [*command, f"--epochs={args.epochs}"],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                row = json.loads(result.stdout.strip().splitlines()[-1])
                train_images = round(images * 0.9)  # data=mnist validates on a tenth
                row.update(images=images, data_source=source, train_images=train_images)
                row["samples_per_s"] = train_images / row["epoch_s"]
                row["samples_per_cpu_s"] = train_images / row["epoch_cpu_s"]
                rows.append(row)
                print(
                    f"{path:>9} x{multiple}: {images:>7,} images  {row['samples_per_s']:8,.0f} "
                    f"samples/s ({row['samples_per_cpu_s']:,.0f} per CPU second)  peak RSS "
                    f"{row['peak_rss_mb']:7.1f} MB (before training "
                    f"{row['rss_before_mb']:.1f} MB); peaks: allocated {row['peak_RssAnon_mb']:.1f}"
                    f" MB, mapped files {row['peak_RssFile_mb']:.1f} MB, shared memory "
                    f"{row['peak_RssShmem_mb']:.1f} MB",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="training images at 1x")
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up")
    parser.add_argument("--threads", type=int, help="torch CPU threads (OMP_NUM_THREADS)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the children's, which train() keeps
    if args.child:
        child(args)
        return []
    rows = measure(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
