"""Training from LitData's optimized chunks: data beyond memory, in a folder or an object store.

``python scripts/optimize_data.py data=NAME output_dir=DIR_OR_URL`` writes a configured data
set's train/val/test splits (split by ``(split_seed, fold)`` and normalized then, once) into
LitData's chunks under ``DIR_OR_URL/{train,val,test}``, and ``metadata.json`` beside them: the
task, shapes, outputs and monitored metric, and the preprocessing state a checkpoint keeps for
``predict.py`` (normalization statistics, feature or class names). ``data=streaming
data.input_dir=DIR_OR_URL`` trains from them with LitData's ``StreamingDataset`` and
``StreamingDataLoader``: chunks are read (and, from an object store, downloaded into a bounded
cache) as the epoch goes, so memory does not grow with the data set, and under DDP each rank
reads its own share. The loader's position goes into checkpoints through Lightning.

LitData is the ``stream`` extra (``pip install -e ".[stream]"``); it is imported only here,
when chunks are read, so the rest of the project runs without it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.base import value_problems
from src.harness.compat import download_chunks_with_boto3
from src.harness.errors import ConfigError, DataUnavailableError

METADATA = "metadata.json"
SPLITS = ("train", "val", "test")
# The metadata keys that a data config reads by interpolation (configs/data/streaming.yaml).
DESCRIBED = ("task", "input_shape", "num_outputs", "monitor", "monitor_mode")
# An object store that does not answer is reported after these, rather than retried for
# hours (boto3's default in LitData is 1,000 attempts).
MAX_ATTEMPTS, TIMEOUT_S = 3, 20.0


def require_litdata() -> None:
    """Stop with the command that installs LitData, before any work, where it is missing."""
    if importlib.util.find_spec("litdata") is None:
        raise ConfigError(
            'streaming needs LitData, the project\'s "stream" extra: pip install -e ".[stream]"'
        )


def is_url(location: str) -> bool:
    return "://" in location


def storage_options(max_attempts: int = MAX_ATTEMPTS, timeout_s: float = TIMEOUT_S) -> dict:
    """LitData's S3 client options: a bounded number of attempts, each bounded in time. The
    endpoint and credentials come from boto3's own settings (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``~/.aws/credentials``...)."""
    from botocore.config import Config

    retries = {"max_attempts": max_attempts, "mode": "standard"}
    return {"config": Config(retries=retries, connect_timeout=timeout_s, read_timeout=timeout_s)}


def plain_http(options: dict) -> bool:
    """Whether boto3's endpoint (``AWS_ENDPOINT_URL`` or AWS's) is served over plain HTTP."""
    import boto3

    return boto3.session.Session().client("s3", **options).meta.endpoint_url.startswith("http:")


def object_store(url: str, options: dict | None = None) -> Any:
    """LitData's file operations on ``url``'s object store (S3 and S3-compatible ones)."""
    if not url.startswith("s3://"):
        raise ConfigError(
            f"{url}: streaming reads local folders and s3:// URLs (S3 or an S3-compatible store "
            "such as MinIO, with AWS_ENDPOINT_URL), not this scheme."
        )
    from litdata.streaming.fs_provider import S3FsProvider

    return S3FsProvider(storage_options=options or storage_options())


def object_store_problem(error: Exception, url: str) -> ConfigError:
    """What a failed request to ``url`` means, in one message naming what to check."""
    return ConfigError(
        f"{url} could not be read: {type(error).__name__}: {str(error).splitlines()[0]}. Check "
        "the URL, the endpoint (AWS_ENDPOINT_URL for an S3-compatible store) and the credentials "
        "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials)."
    )


@functools.lru_cache(maxsize=16)
def read_metadata(input_dir: str | None) -> dict[str, Any]:
    """``metadata.json`` of the chunks at ``input_dir``, read once per process."""
    if not input_dir:
        raise ConfigError(
            "data=streaming trains from the chunks that python scripts/optimize_data.py writes: "
            "give their folder or s3:// URL with data.input_dir=DIR_OR_URL."
        )
    require_litdata()
    written_by = "is it a folder written by python scripts/optimize_data.py?"
    if not is_url(input_dir):
        path = Path(input_dir).expanduser()
        if not (path / METADATA).is_file():
            found = "holds no metadata.json" if path.is_dir() else "does not exist"
            raise DataUnavailableError(f"data.input_dir={input_dir} {found}: {written_by}")
        return json.loads((path / METADATA).read_text())
    import botocore.exceptions

    store, url = object_store(input_dir), f"{input_dir.rstrip('/')}/{METADATA}"
    with tempfile.TemporaryDirectory() as folder:
        try:
            store.download_file(url, f"{folder}/{METADATA}")
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchBucket"):
                raise DataUnavailableError(f"{url} does not exist: {written_by}") from None
            raise object_store_problem(error, url) from None
        except botocore.exceptions.BotoCoreError as error:
            raise object_store_problem(error, url) from None
        return json.loads(Path(folder, METADATA).read_text())


def described(input_dir: str | None, key: str) -> Any:
    """One of :data:`DESCRIBED` from the chunks' metadata: the ``${streamed:...}`` resolver."""
    return read_metadata(input_dir)[key]


def plain_state(state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A data module's ``state_dict`` as JSON values, and the keys that were tensors."""
    tensors = [key for key, value in state.items() if isinstance(value, torch.Tensor)]
    return {k: v.tolist() if k in tensors else v for k, v in state.items()}, tensors


class StreamingDataModule(L.LightningDataModule):
    """Batches streamed from the chunks ``scripts/optimize_data.py`` wrote, already split and
    normalized; what predict needs comes from their ``metadata.json``.

    ``task``, ``input_shape``, ``num_outputs`` and the monitored metric are read from the
    metadata by the data config, so models pair with the chunks as with any data set; given
    otherwise, they must agree with it. Training batches are shuffled by LitData (chunks, then
    samples within them), the same order for a seed on every rank; each rank reads its share.
    Chunks from an object store are downloaded into ``cache_dir`` (at most ``max_cache_size``
    on disk, read chunks are evicted).
    """

    def __init__(
        self,
        *,
        input_dir: str | None,
        task: str,
        input_shape: list[int],
        num_outputs: int,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        max_cache_size: str | float | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        timeout_s: float = TIMEOUT_S,
        monitor: str = "val/loss",
        monitor_mode: Literal["min", "max"] = "min",
    ) -> None:
        super().__init__()
        metadata = read_metadata(input_dir)
        given = {"task": task, "input_shape": list(input_shape), "num_outputs": num_outputs}
        value_problems(
            batch_size=(batch_size, batch_size > 0, "must be positive"),
            eval_batch_size=(
                eval_batch_size,
                eval_batch_size is None or eval_batch_size > 0,
                "must be positive",
            ),
            num_workers=(num_workers, num_workers >= 0, "must be >= 0"),
            max_attempts=(max_attempts, max_attempts >= 1, "must be >= 1"),
            timeout_s=(timeout_s, timeout_s > 0, "must be positive"),
            **{
                key: (
                    value,
                    value == metadata[key],
                    f"differs from {metadata[key]!r} in {METADATA}",
                )
                for key, value in given.items()
            },
        )
        from src.tasks import TASKS

        self.input_dir = input_dir
        self.task = TASKS[task]
        self.input_shape, self.num_outputs = list(input_shape), num_outputs
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self.options = {"max_attempts": max_attempts, "timeout_s": timeout_s}
        self.monitor, self.monitor_mode = monitor, monitor_mode
        state = metadata["state"]
        self.preprocessing = {
            key: torch.tensor(value) if key in metadata["tensors"] else value
            for key, value in state.items()
        }
        self.datasets: dict[str, Dataset] = {}

    def split(self, name: str, seed: int = 0) -> Dataset:
        """The ``name`` split's chunks, shuffled (training) by ``seed``. LitData reads the
        process group here: built in each DDP process, a split gives each rank its share."""
        from litdata import StreamingDataset
        from litdata.streaming.serializers import BytesSerializer

        location, options, cache = f"{self.input_dir.rstrip('/')}/{name}", None, None
        if is_url(self.input_dir):
            options = storage_options(**self.options)
            if plain_http(options):
                download_chunks_with_boto3()
            if self.cache_dir:
                cache = str(Path(self.cache_dir) / name)  # LitData adds the URL's hash below it
        return StreamingDataset(
            location,
            cache_dir=cache,
            shuffle=name == "train",
            seed=seed,
            max_cache_size=self.max_cache_size,
            storage_options=options,
            # one sample at a time: LitData 0.2.76's default decodes a window of samples around
            # each one it reads, again for each sample of a shuffled epoch (10x slower here)
            batch_decode=0,
            # Chunks come from wherever a config (an evaluated run's config.yaml) points:
            # values stored pickled are handed over as bytes, never unpickled.
            serializers={"pickle": BytesSerializer(), "graph": BytesSerializer()},
        )

    def setup(self, stage: str | None = None) -> None:
        names = SPLITS if stage in (None, "fit") else ("test",) if stage == "test" else ("val",)
        self.datasets = {name: self.split(name) for name in names}

    def shuffle_seed(self) -> int:
        """The run's seed (``torch.initial_seed()`` once ``seed_everything`` has set it), rank
        0's on every rank: ranks that shuffled differently would read overlapping shares."""
        seed = torch.initial_seed() % 2**32
        return self.trainer.strategy.broadcast(seed) if self.trainer else seed

    def loader(self, name: str, batch_size: int) -> DataLoader:
        """Batches of ``name``; pinned when the model trains on a GPU, so that their copy to it
        overlaps with compute."""
        from litdata import StreamingDataLoader

        gpu = bool(self.trainer) and self.trainer.strategy.root_device.type == "cuda"
        return StreamingDataLoader(
            self.datasets[name], batch_size=batch_size, num_workers=self.num_workers, pin_memory=gpu
        )

    def train_dataloader(self) -> DataLoader:
        self.datasets["train"] = self.split("train", self.shuffle_seed())
        loader = self.loader("train", self.batch_size)
        # LitData shuffles each epoch by (seed, its loader's count of epochs). Lightning restores
        # that count with the loader's state from a mid-epoch checkpoint only: resumed from an
        # epoch's end (last.ckpt) the loader would count from 0 and repeat the first epoch's
        # order. So it starts from the epochs done, as Lightning counts them for a sampler's
        # set_epoch (the loader adds one as an epoch begins; a mid-epoch state overrides it).
        if self.trainer:
            loader.current_epoch = self.trainer.fit_loop.epoch_progress.current.processed
        return loader

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", self.eval_batch_size)

    def state_dict(self) -> dict[str, Any]:
        """What ``predict.py`` needs, as the source data module kept it: the normalization
        statistics, input shape, task and names, from the chunks' metadata."""
        return dict(self.preprocessing)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the statistics travel with the chunks."""
