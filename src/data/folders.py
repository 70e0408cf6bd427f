"""A folder of images in class subfolders, as ``torchvision.datasets.ImageFolder`` reads it.

``root/<class>/*.png`` (or jpg, bmp, gif, webp, tiff...): the classes are the subfolder
names, sorted, and saved in checkpoints for ``predict.py``'s CSV and the confusion matrix.
Where ``root/train`` exists, it holds the classes, and ``root/val`` and ``root/test`` (each
optional) are the validation and test splits; else one folder is split by
``(split_seed, fold)``. Every file is checked before training: one that is not an image, a
class with no image, a size that differs from ``image_size`` when ``resize=false``, each
stops the run with one message naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from src.data.samples import SampleDataModule
from src.harness.errors import ConfigError

SPLIT_FOLDERS = ("train", "val", "test")


def open_image(path: str):  # noqa: ANN201 - a PIL image; PIL is imported only here
    """The image at ``path``, its header read (the pixels are decoded on first use)."""
    from PIL import Image

    try:
        return Image.open(path)
    except (OSError, Image.DecompressionBombError) as error:
        raise ConfigError(f"data: {path} is not a readable image ({error}).") from None


class ImageFiles(Dataset):
    """``(path, class)`` pairs read as ``uint8`` tensors ``[channels, size, size]``."""

    def __init__(self, files: list[tuple[str, int]], channels: int, size: int) -> None:
        self.files, self.mode, self.size = files, "L" if channels == 1 else "RGB", size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, target = self.files[index]
        with open_image(path) as image:
            try:
                image = image.convert(self.mode)
                if image.size != (self.size, self.size):
                    image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8).reshape(self.size, self.size, -1)
            except OSError as error:  # a truncated file
                raise ConfigError(f"data: {path} is not a readable image ({error}).") from None
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1), target


class ImageFolderDataModule(SampleDataModule):
    """Images in class subfolders of ``root``, resized to ``image_size`` (unless ``resize``
    is false: then every image must have that size), grey (``channels=1``) or colour (3)."""

    def __init__(
        self,
        *,
        root: str | None = None,
        image_size: int = 28,
        channels: int = 1,
        resize: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if channels not in (1, 3) or self.input_shape != [channels, image_size, image_size]:
            raise ValueError(
                f"channels={channels} must be 1 or 3 and input_shape={self.input_shape} "
                "[channels, image_size, image_size]"
            )
        if root is None:
            raise ConfigError("data.root: give the image folder (data.root=DIR)")
        self.root, self.image_size, self.channels = Path(root), image_size, channels
        self.resize = resize
        self.folders = {"train": self.root}  # one folder to split, unless root/train exists
        if (self.root / "train").is_dir():
            folders = {split: self.root / split for split in SPLIT_FOLDERS}
            self.folders = {split: path for split, path in folders.items() if path.is_dir()}
        self.label_names = self.classes(self.folders["train"])
        self.num_outputs = len(self.label_names)

    def classes(self, folder: Path) -> list[str]:
        """The class subfolders of ``folder``, sorted as torchvision sorts them."""
        if not folder.is_dir():
            raise ConfigError(f"data.root: {folder} does not exist (or is not a folder).")
        try:
            return find_classes(str(folder))[0]
        except FileNotFoundError:
            raise ConfigError(
                f"data.root: {folder} has no class subfolders: put each class's images in "
                f"{folder}/<class name>/."
            ) from None

    def files(self, folder: Path) -> ImageFiles:
        """The images of ``folder``'s classes, each file's header checked."""
        classes = self.classes(folder)
        if classes != self.label_names:
            raise ConfigError(
                f"data.root: {folder} has the classes {classes}, {self.folders['train']} "
                f"has {self.label_names}: every split needs the same class folders."
            )
        indices = {name: index for index, name in enumerate(classes)}
        files = make_dataset(str(folder), indices, IMG_EXTENSIONS, allow_empty=True)
        empty = sorted(set(classes) - {classes[target] for _, target in files})
        if empty:
            raise ConfigError(
                f"data.root: the class folder {folder / empty[0]} holds no image "
                f"({', '.join(IMG_EXTENSIONS)}): remove it or add its images."
            )
        size = (self.image_size, self.image_size)
        for path, _ in files:
            with open_image(path) as image:
                if not self.resize and image.size != size:
                    raise ConfigError(
                        f"data: {path} is {image.size[0]}x{image.size[1]} pixels, not "
                        f"data.image_size={self.image_size}: with data.resize=false every "
                        "image must have that size (or set data.resize=true)."
                    )
        return ImageFiles(files, self.channels, self.image_size)

    def samples(self) -> tuple[Dataset, Dataset | None, Dataset | None]:
        own = {split: self.files(folder) for split, folder in self.folders.items()}
        return own["train"], own.get("val"), own.get("test")
