"""MNIST-like image sets: the torchvision family (MNIST, FashionMNIST, KMNIST) and digits.

Images are decoded once from the IDX files into one uint8 tensor, then normalized as a
whole; no per-sample transform runs in the training loop.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from src.data.base import InMemoryDataModule
from src.harness.errors import DataUnavailableError

# torchvision class name -> folder under data_dir, as torchvision lays it out.
TORCHVISION_SETS = ("MNIST", "FashionMNIST", "KMNIST")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> Tensor:
    """Decode an IDX file (optionally gzipped) into a tensor of its declared shape."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    num_dims = raw[3]
    shape = np.frombuffer(raw, dtype=">i4", count=num_dims, offset=4)
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * num_dims)
    return torch.from_numpy(values.reshape(shape.tolist()).copy())


def find_idx(raw_dir: Path, stem: str) -> Path | None:
    candidates = (raw_dir / stem, raw_dir / f"{stem}.gz")
    return next((candidate for candidate in candidates if candidate.is_file()), None)


class TorchvisionImagesDataModule(InMemoryDataModule):
    """MNIST, FashionMNIST or KMNIST from ``data_dir/<name>/raw``, downloaded when missing.

    ``train_from`` picks which shipped split feeds training and validation: ``train``
    (the usual 60,000 images) or ``test`` (the 10,000 test images, split into train, val
    and test by ``test_fraction``; for machines that only hold the test files).
    """

    def __init__(
        self,
        *,
        name: str,
        data_dir: str,
        download: bool = True,
        train_from: str = "train",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if name not in TORCHVISION_SETS:
            raise ValueError(f"name must be one of {TORCHVISION_SETS}, got {name!r}")
        self.name = name
        self.raw_dir = Path(data_dir) / name / "raw"
        self.data_dir = Path(data_dir)
        self.download = download
        self.train_from = train_from

    def missing_files(self) -> list[str]:
        needed_splits = ("test",) if self.train_from == "test" else ("train", "test")
        return [
            stem
            for split in needed_splits
            for stem in IDX_FILES[split]
            if find_idx(self.raw_dir, stem) is None
        ]

    def prepare_data(self) -> None:
        if not self.missing_files():
            return
        if self.download:
            import torchvision.datasets

            dataset_class = getattr(torchvision.datasets, self.name)
            try:
                for train in (True, False):
                    dataset_class(str(self.data_dir), train=train, download=True)
            except Exception as error:  # noqa: BLE001 - any download failure means offline
                raise self.unavailable(f"the download failed ({error})") from error
        if self.missing_files():
            raise self.unavailable("download=false")

    def unavailable(self, reason: str) -> DataUnavailableError:
        files = ", ".join(self.missing_files())
        return DataUnavailableError(
            f"{self.name} is not on disk and {reason}. Place the IDX files ({files}, "
            f"optionally .gz) in {self.raw_dir}/, or run once with a network so "
            f"torchvision downloads them there; to train offline now, use data=digits "
            "(scikit-learn's bundled 8x8 digits, resized to 28x28)."
        )

    def read_split(self, split: str) -> tuple[Tensor, Tensor]:
        images, labels = (read_idx(find_idx(self.raw_dir, stem)) for stem in IDX_FILES[split])
        return images.unsqueeze(1), labels

    def state_dict(self) -> dict:
        return {**super().state_dict(), "pixel_max": 255.0}  # uint8 pixels, as in the IDX files

    def load(self) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        self.prepare_data()
        if self.train_from == "test":
            return *self.read_split("test"), None
        return *self.read_split("train"), self.read_split("test")


class DigitsDataModule(InMemoryDataModule):
    """scikit-learn's bundled 1,797 8x8 digits, upsampled to 1x28x28: images with no download."""

    def __init__(self, *, image_size: int = 28, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size

    def load(self) -> tuple[Tensor, Tensor, None]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
        images = F.interpolate(
            images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        return images, torch.from_numpy(digits.target), None

    def state_dict(self) -> dict:
        return {**super().state_dict(), "pixel_max": 1.0}  # the 0..16 values divided by 16
