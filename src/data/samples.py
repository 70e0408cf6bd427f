"""Data read one example at a time: in memory when it fits, from disk by workers when not.

A per-sample data set is any ``Dataset`` with ``__len__`` and ``__getitem__`` returning
``(input tensor, target)``. :class:`SampleDataModule` splits it by ``(split_seed, fold)``
like every module, then, as ``data.in_memory`` says (``auto``: whatever fits a fraction of
the memory available now), either decodes each split once into the fast in-memory tensors
of :class:`~src.data.base.InMemoryDataModule`, or serves it per sample through
``DataLoader`` workers. Either way the normalization statistics come from the training split
only and are saved in checkpoints for ``eval.py`` and ``predict.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from src.data.base import InMemoryDataModule
from src.harness.errors import ConfigError
from src.tasks import Task

MEMINFO = Path("/proc/meminfo")
BYTES_PER_VALUE = 4  # float32, as the in-memory path holds the inputs


def available_memory() -> int:
    """Bytes the machine can give now without swapping: Linux's ``MemAvailable``; where
    there is no /proc/meminfo (macOS, Windows), the total physical memory."""
    if MEMINFO.is_file():
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits_in_memory(
    num_examples: int, input_shape: list[int], fraction: float, available: int | None = None
) -> bool:
    """Whether ``num_examples`` decoded float32 inputs take at most ``fraction`` of the
    available memory (``available`` bytes, by default :func:`available_memory`)."""
    needed = num_examples * math.prod(input_shape) * BYTES_PER_VALUE
    return needed <= fraction * (available_memory() if available is None else available)


class Transformed(Dataset):
    """Examples of ``dataset`` with ``transform`` applied to each input as it is read."""

    def __init__(self, dataset: Dataset, transform: Callable[[Tensor], Tensor] | None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        inputs, target = self.dataset[index]
        return (self.transform(inputs) if self.transform else inputs), target


class Normalized(Transformed):
    """Examples standardized with the training split's statistics, targets in the task's
    dtype: what a batch of the in-memory path holds, one example at a time."""

    def __init__(
        self, dataset: Dataset, transform: Callable | None, mean: Tensor, std: Tensor, task: Task
    ) -> None:
        super().__init__(dataset, transform)
        self.mean, self.std, self.task = mean, std, task

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        inputs, target = super().__getitem__(index)
        normalized = (torch.as_tensor(inputs).float() - self.mean) / self.std
        return normalized, self.task.targets(torch.as_tensor(target).unsqueeze(0))[0]


def batches(dataset: Dataset, workers: int) -> DataLoader:
    """``dataset`` in order, 256 examples a batch, read by ``workers`` processes."""
    return DataLoader(dataset, batch_size=256, num_workers=workers)


class SampleDataModule(InMemoryDataModule):
    """A per-sample data set, trained in memory or read from disk (``data.in_memory``).

    ``dataset`` is the whole data set and ``test_dataset`` (optional) a test split it ships;
    ``train_transforms`` run on each training example every time it is read (so they need
    the per-sample path), ``eval_transforms`` on each validation and test example. A
    subclass may build its data sets in :meth:`samples` instead (``image_folder``).
    """

    def __init__(
        self,
        *,
        dataset: Dataset | None = None,
        test_dataset: Dataset | None = None,
        train_transforms: list[Callable] | None = None,
        eval_transforms: list[Callable] | None = None,
        pixel_max: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset, self.test_dataset = dataset, test_dataset
        self.train_transforms = composed(train_transforms)
        self.eval_transforms = composed(eval_transforms)
        if self.train_transforms and self.in_memory is True:
            raise ConfigError(
                "data.train_transforms run on each example every time it is read: they need "
                "data.in_memory=auto or false (data.augment_shift shifts batches in memory)"
            )
        if len(self.input_shape) == 3 and pixel_max is None:
            raise ConfigError(
                "data.pixel_max: give the value a white pixel has in your images (255 for "
                "uint8 pixels, 1 for 0..1 floats): predict.py scales 0..255 images to it"
            )
        self.pixel_max = pixel_max

    def samples(self) -> tuple[Dataset, Dataset | None, Dataset | None]:
        """The data set to split, and the validation and test splits it ships (or ``None``)."""
        if self.dataset is None:
            raise ConfigError("data.dataset: name your Dataset class with _target_")
        return self.dataset, None, self.test_dataset

    def reads_from_disk(self, num_examples: int) -> bool:
        """``data.in_memory``: false, or auto when the data does not fit or training
        transforms must run per sample."""
        if self.in_memory == "auto":
            fits = fits_in_memory(num_examples, self.input_shape, self.memory_fraction)
            return bool(self.train_transforms) or not fits
        return not self.in_memory

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        whole, own_val, own_test = self.samples()
        train, val, test = self.split(len(whole), own_test is not None, own_val is not None)
        splits = {
            "train": Subset(whole, train.tolist()),
            "val": own_val if own_val is not None else Subset(whole, val.tolist()),
            "test": own_test if own_test is not None else Subset(whole, test.tolist()),
        }
        if not self.reads_from_disk(len(whole) + sum(len(s or ()) for s in (own_val, own_test))):
            self.serve_from_memory(
                {name: self.decode(name, split) for name, split in splits.items()}
            )
            return
        if self.device_resident:
            raise ConfigError("data.device_resident=true needs the data in memory (in_memory)")
        self.check_sizes([len(split) for split in splits.values()])
        self.mean, self.std = self.statistics(splits["train"])
        self.datasets = {
            name: Normalized(split, self.transform(name), self.mean, self.std, self.task)
            for name, split in splits.items()
        }

    def transform(self, name: str) -> Callable | None:
        return self.train_transforms if name == "train" else self.eval_transforms

    def decode(self, name: str, split: Dataset) -> tuple[Tensor, Tensor]:
        """One split as two tensors, read once by ``num_workers`` processes."""
        inputs, targets = [], []
        for x, y in batches(Transformed(split, self.transform(name)), self.num_workers):
            inputs.append(x)
            targets.append(y)
        return torch.cat(inputs), torch.cat(targets)

    def statistics(self, train: Dataset) -> tuple[Tensor, Tensor]:
        """Mean and std per channel (images) or feature (rows) in one pass over the training
        split, holding only running sums: the memory does not grow with the data."""
        shape = [self.input_shape[0]] + [1] * (len(self.input_shape) - 1)
        if not self.normalize:
            return torch.zeros(shape), torch.ones(shape)
        total = squares = 0
        count = 0
        for x, _ in batches(train, self.num_workers):
            x = x.double().transpose(0, 1).reshape(x.shape[1], -1)  # per channel or feature
            total = total + x.sum(dim=1)
            squares = squares + (x * x).sum(dim=1)
            count += x.shape[1]
        mean = total / count
        std = ((squares - count * mean * mean) / max(count - 1, 1)).clamp_min(0).sqrt()
        return mean.float().reshape(shape), std.float().clamp_min(1e-8).reshape(shape)

    def state_dict(self) -> dict:
        state = super().state_dict()
        return state if self.pixel_max is None else {**state, "pixel_max": self.pixel_max}


def composed(transforms: list[Callable] | None) -> Callable | None:
    """The transforms a config lists, applied in order (``None`` for none)."""
    if not transforms:
        return None
    from torchvision.transforms import v2

    return v2.Compose(list(transforms))
