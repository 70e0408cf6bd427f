"""Write a configured data set into LitData's optimized chunks, for ``data=streaming``.

    python scripts/optimize_data.py data=digits output_dir=data/digits-chunks
    python scripts/optimize_data.py data=mnist data.data_dir=DIR output_dir=s3://bucket/mnist

The data module is built from ``configs/data/`` as training builds it (``data.KEY=VALUE``
overrides included) and set up: its train/val/test splits, made by ``(split_seed, fold)``
and normalized with the training split's statistics, are written sample by sample into
``output_dir/{train,val,test}``, and ``output_dir/metadata.json`` records the task, shapes,
outputs, monitored metric and the preprocessing state that predict needs
(``src/data/streaming.py`` reads them back). A local output is written beside its place and
renamed into it when whole; an object store's gets ``metadata.json`` last, so a reader never
takes a half-uploaded data set for one. Nothing is read before the output is checked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src  # noqa: E402, F401 - sets PROJECT_ROOT for the configs
from src.data.streaming import (  # noqa: E402
    DESCRIBED,
    METADATA,
    SPLITS,
    is_url,
    object_store,
    object_store_problem,
    plain_state,
    require_litdata,
)
from src.harness.build import build_data  # noqa: E402
from src.harness.errors import ConfigError  # noqa: E402
from src.harness.failures import run_reporting_errors  # noqa: E402
from src.harness.paths import absolute_paths  # noqa: E402
from src.harness.problems import Problems  # noqa: E402
from src.harness.provenance import plain  # noqa: E402

log = logging.getLogger(__name__)


def checked_output(output_dir: str | None) -> str:
    """``output_dir`` if chunks can be written there: an empty or new folder, or an object
    store URL under which nothing is stored; else one message saying why."""
    if not output_dir:
        raise ConfigError("give the folder or s3:// URL to write the chunks to: output_dir=...")
    if is_url(output_dir):
        import botocore.exceptions

        try:
            empty = object_store(output_dir).is_empty(output_dir)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise object_store_problem(error, output_dir) from None
        if not empty:
            raise ConfigError(f"output_dir={output_dir} already holds files: choose a new prefix.")
        return output_dir.rstrip("/")
    path = Path(os.path.abspath(os.path.expanduser(output_dir)))
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise ConfigError(
            f"output_dir={path} already exists and is not an empty folder: choose a new one."
        )
    return str(path)


def write_split(dataset: Dataset, folder: Path, chunk_bytes: str, num_workers: int) -> int:
    """Write ``dataset``'s ``(input, target)`` pairs into chunks in ``folder``; their number."""
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(folder), chunk_bytes=chunk_bytes)
    count = 0
    # batch_size=None: one sample at a time, read in the workers, in order
    for count, (inputs, target) in enumerate(
        DataLoader(dataset, batch_size=None, num_workers=num_workers), start=1
    ):
        writer[count - 1] = (inputs, target)
    writer.done()
    writer.merge()
    return count


def metadata(cfg: DictConfig, datamodule: Any, sizes: dict[str, int]) -> dict[str, Any]:
    """What ``data=streaming`` needs besides the samples, in plain JSON values."""
    data = plain(cfg.data)
    state, tensors = plain_state(datamodule.state_dict())
    return {
        **{key: data[key] for key in DESCRIBED},
        "state": state,
        "tensors": tensors,
        "sizes": sizes,
        "source": data,
        "litdata": version("litdata"),
    }


def publish(staging: Path, output_dir: str) -> None:
    """Move the finished chunks to ``output_dir``: one rename for a folder, an upload with
    ``metadata.json`` last for an object store."""
    if not is_url(output_dir):
        Path(output_dir).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, output_dir)  # over an empty folder too
        return
    store = object_store(output_dir)
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != METADATA)
    for path in [*files, staging / METADATA]:
        store.upload_file(str(path), f"{output_dir}/{path.relative_to(staging).as_posix()}")


def staging_folder(output_dir: str) -> Path:
    """A new folder to write into: beside a local ``output_dir`` (the same file system, so it
    is renamed into place), else a temporary one."""
    if is_url(output_dir):
        return Path(tempfile.mkdtemp(prefix="optimize_data-"))
    staging = Path(output_dir).with_name(f".{Path(output_dir).name}.{uuid.uuid4().hex[:12]}.tmp")
    staging.mkdir(parents=True)
    return staging


def optimize_data(cfg: DictConfig) -> str:
    """Write ``cfg.data``'s splits and metadata to ``cfg.output_dir``; return where."""
    started = time.perf_counter()
    if cfg.get("data") is None:
        raise ConfigError("name the data set to write: data=NAME (a config in configs/data/).")
    require_litdata()
    output_dir = checked_output(cfg.get("output_dir"))
    absolute_paths(cfg)
    [datamodule] = Problems().build_all(cfg, build_data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    staging = staging_folder(output_dir)
    try:
        sizes = {
            name: write_split(
                datamodule.datasets[name], staging / name, cfg.chunk_bytes, cfg.num_workers
            )
            for name in SPLITS
        }
        text = json.dumps(metadata(cfg, datamodule, sizes), indent=2)
        (staging / METADATA).write_text(text + "\n")
        publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = ", ".join(f"{size:,} {name}" for name, size in sizes.items())
    log.info("%s: %s samples (%.1f s)", output_dir, counts, time.perf_counter() - started)
    return output_dir


@hydra.main(version_base="1.3", config_path="../configs", config_name="optimize_data")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(optimize_data, cfg)


if __name__ == "__main__":
    main()
