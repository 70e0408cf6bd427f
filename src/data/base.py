"""The in-memory data module every data family builds on.

All supported data sets fit in RAM, so each is decoded once into two tensors,
normalized once, and served by indexing those tensors with a whole batch of indices.
That removes the per-sample Python call and collate that dominate a classic
``Dataset``/``DataLoader`` epoch on small models.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from src.harness.errors import ConfigError
from src.harness.resumable_loader import resumable_loader
from src.tasks import TASKS


def split_indices(
    num_examples: int,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    fold: int | None = None,
    num_folds: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Split ``range(num_examples)`` into train/val/test index tensors, the single way every
    module splits.

    The test part is always the same for a given seed, whatever the fold, so k-fold
    cross-validation (fold i of k is the validation part, the rest of the non-test pool
    trains) and the plain split (``val_fraction`` of the pool validates) are compared on
    one held-out set. ``test_fraction=0`` leaves the test part empty, for data sets that
    ship their own test split.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_examples, generator=generator)
    num_test = round(num_examples * test_fraction)
    test, pool = order[:num_test], order[num_test:]
    if num_folds is None:
        num_val = round(len(pool) * val_fraction)
        return pool[num_val:], pool[:num_val], test
    folds = torch.tensor_split(pool, num_folds)
    train = torch.cat([part for i, part in enumerate(folds) if i != fold])
    return train, folds[fold], test


class TensorBatches(Dataset):
    """A dataset whose ``__getitems__`` returns a whole batch by tensor indexing.

    ``DataLoader`` calls ``__getitems__`` with the sampler's batch of indices, so shuffling,
    distributed sampling and ``drop_last`` keep working exactly as users know them.
    """

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int | Tensor) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        return self[torch.as_tensor(indices)]

    def to(self, device: torch.device) -> None:
        self.inputs, self.targets = self.inputs.to(device), self.targets.to(device)


class EpochShuffle(RandomSampler):
    """Shuffles each epoch into an order that is a pure function of (seed, epoch).

    A run resumed from a checkpoint therefore sees the same batches as an uninterrupted
    one. Lightning calls ``set_epoch`` as it does for a ``DistributedSampler``, and, this
    being a ``RandomSampler``, swaps in a ``DistributedSampler`` (seeded the same way) for DDP.
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) % 2**64)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


def random_shift(images: Tensor, max_shift: int, fill: float = 0.0) -> Tensor:
    """Translate each image of a ``(N, C, H, W)`` batch by its own random offset.

    Offsets are drawn uniformly in ``[-max_shift, max_shift]`` along each axis; uncovered
    pixels take ``fill``. One padding and one gather for the whole batch: no per-image loop.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=fill)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n, 1), device=images.device)
    rows = offsets[0] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[1] + torch.arange(w, device=images.device)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for batches that ``TensorBatches`` already assembled."""
    return batch


def value_problems(**checks: tuple[Any, bool, str]) -> None:
    """Raise one ``ValueError`` naming every ``name=(value, ok, requirement)`` not ok."""
    problems = [f"{name}={value!r} {need}" for name, (value, ok, need) in checks.items() if not ok]
    if problems:
        raise ValueError("; ".join(problems))


class InMemoryDataModule(L.LightningDataModule):
    """Loads a data set once, splits it by (seed, fold) and serves batches from tensors.

    A data set implements :meth:`load`, returning the decoded examples; everything else
    is shared. Inputs are standardized with statistics of the training split only, per
    feature for feature rows (``input_shape=[F]``) and per channel for images
    (``[C, H, W]``): one statistic over a whole table would drown small features in
    large ones. ``normalize=false`` keeps inputs as they are (synthetic data, already
    standard). The statistics are saved in checkpoints for ``predict.py``.
    """

    def __init__(
        self,
        *,
        task: str,
        input_shape: list[int],
        num_outputs: int | None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 42,
        fold: int | None = None,
        num_folds: int | None = None,
        pin_memory: bool | None = None,
        device_resident: bool = False,
        augment_shift: int = 0,
        normalize: bool = True,
        in_memory: bool | Literal["auto"] = "auto",
        memory_fraction: float = 0.5,
        num_workers: int = 0,
        monitor: str = "val/loss",
        monitor_mode: Literal["min", "max"] = "min",
    ) -> None:
        super().__init__()
        reads_whole = type(self).setup is InMemoryDataModule.setup  # load(): no per-sample path
        value_problems(
            task=(task, task in TASKS, f"must be one of {tuple(TASKS)} (src/tasks.py)"),
            batch_size=(batch_size, batch_size > 0, "must be positive"),
            eval_batch_size=(
                eval_batch_size,
                eval_batch_size is None or eval_batch_size > 0,
                "must be positive",
            ),
            val_fraction=(val_fraction, 0 <= val_fraction < 1, "must be in [0, 1)"),
            test_fraction=(test_fraction, 0 <= test_fraction < 1, "must be in [0, 1)"),
            num_folds=(num_folds, num_folds is None or num_folds >= 2, "must be null or >= 2"),
            fold=(
                fold,
                (fold is None) == (num_folds is None) and (fold is None or 0 <= fold < num_folds),
                "must be in 0..num_folds-1, given with num_folds",
            ),
            augment_shift=(
                augment_shift,
                augment_shift >= 0 and (not augment_shift or len(input_shape) == 3),
                "shifts images [C, H, W] only, by a number of pixels >= 0",
            ),
            in_memory=(
                in_memory,
                not (reads_whole and in_memory is False),
                f"cannot hold for {type(self).__name__}: it reads its data whole (load); data "
                "read per sample (image_folder, src/data/samples.py) can stay on disk",
            ),
            memory_fraction=(memory_fraction, 0 < memory_fraction <= 1, "must be in (0, 1]"),
            num_workers=(num_workers, num_workers >= 0, "must be >= 0"),
        )
        self.task = TASKS[task]
        self.input_shape = list(input_shape)
        self.num_outputs = num_outputs
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.fold = fold
        self.num_folds = num_folds
        self.pin_memory = pin_memory
        self.device_resident = device_resident
        self.augment_shift = augment_shift
        self.normalize = normalize
        self.in_memory, self.memory_fraction = in_memory, memory_fraction
        self.num_workers = num_workers
        # Declared here, read by the configs: the metric that picks best.ckpt.
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.datasets: dict[str, TensorBatches] = {}
        self.steps_per_call = 1

    def serve_groups(self, steps: int) -> None:
        """Serve training batches in groups of ``steps`` consecutive batches of the same
        shuffled order, each group one tensor indexing (``trainer.steps_per_call``); an epoch
        whose batch count ``steps`` does not divide ends with a shorter group."""
        if self.augment_shift:  # drawn per group, the shifts would differ from K=1's
            raise ConfigError(
                f"data.augment_shift={self.augment_shift} draws its shifts batch by batch: it "
                "cannot be combined with trainer.steps_per_call > 1; leave one of them out"
            )
        self.steps_per_call = steps

    def load(self) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Return ``(inputs, targets, own_test)``; ``own_test`` is a shipped test split."""
        raise NotImplementedError

    def fit_normalization(self, train_inputs: Tensor) -> None:
        """Mean and std per feature or channel (the first input axis), training split only."""
        others = [axis for axis in range(train_inputs.dim()) if axis != 1]
        shape = [train_inputs.shape[1]] + [1] * (train_inputs.dim() - 2)  # one example
        if self.normalize:
            self.mean = train_inputs.mean(dim=others).reshape(shape)
            self.std = train_inputs.std(dim=others).clamp_min(1e-8).reshape(shape)
        else:
            self.mean, self.std = torch.zeros(shape), torch.ones(shape)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        inputs, targets, own_test = self.load()
        train, val, test = self.split(len(targets), own_test is not None)
        test_inputs, test_targets = (
            own_test if own_test is not None else (inputs[test], targets[test])
        )
        parts = {
            "train": (inputs[train].float(), targets[train]),
            "val": (inputs[val], targets[val]),
            "test": (test_inputs, test_targets),
        }
        del inputs, test_inputs  # the splits are copies: at most two copies exist at once
        self.serve_from_memory(parts)

    def split(
        self, num_examples: int, own_test: bool, own_val: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`split_indices` by this module's fractions, seed and fold; no test (or
        validation) part where the data ships its own."""
        return split_indices(
            num_examples,
            val_fraction=0.0 if own_val else self.val_fraction,
            test_fraction=0.0 if own_test else self.test_fraction,
            seed=self.split_seed,
            fold=self.fold,
            num_folds=self.num_folds,
        )

    def check_sizes(self, sizes: list[int]) -> None:
        """Refuse splits too small to train, validate and test on."""
        least = self.task.least_examples(self.num_outputs)
        if sizes[0] < least or 0 in sizes:
            raise ConfigError(
                f"data: the train/validation/test sets hold {'/'.join(map(str, sizes))} examples:"
                f" too few to train ({least} at least) and to validate and test (1 each). Use "
                "more data (data.num_samples for synthetic data), or change data.val_fraction "
                "and data.test_fraction."
            )

    def serve_from_memory(self, parts: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Normalize the decoded splits (statistics of ``train``) into :class:`TensorBatches`,
        in place: the splits are copies the caller hands over."""
        self.check_sizes([len(part[1]) for part in parts.values()])
        self.fit_normalization(parts["train"][0].float())
        self.datasets = {
            name: TensorBatches(x.float().sub_(self.mean).div_(self.std), self.task.targets(y))
            for name, (x, y) in parts.items()
        }

    def place_data(self) -> bool:
        """Move every split to the model's device when asked; say whether to pin batches.

        With the whole data set on the GPU a batch is one indexing kernel and no copy;
        otherwise batches are pinned (``pin_memory=null``: whenever the model is on a GPU)
        so that their copy to the device overlaps with compute.
        """
        # where the model trains: the trainer's device once attached, else the CPU
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        if self.device_resident:
            for dataset in self.datasets.values():
                dataset.to(device)
            return False
        return device.type == "cuda" if self.pin_memory is None else self.pin_memory

    def make_loader(self, name: str) -> DataLoader:
        """Training batches shuffled by :class:`EpochShuffle` (resumable mid-epoch), evaluation
        ones in order: from tensors a batch is one indexing; read per sample, batches are read
        by ``num_workers`` processes (kept from epoch to epoch) and collated."""
        pin_memory = self.place_data()
        dataset = self.datasets[name]
        if isinstance(dataset, TensorBatches):
            reading = {"collate_fn": keep_batch}
        else:
            workers = self.num_workers
            reading = {"num_workers": workers, "persistent_workers": workers > 0}
        if name != "train":
            batch_size = self.evaluation_batch_size(name)
            return DataLoader(dataset, batch_size, pin_memory=pin_memory, **reading)
        # torch.initial_seed() is the run's seed once seed_everything has set it. The loader's
        # position goes into checkpoints: a run stopped mid-epoch resumes at the next batch.
        seed = torch.initial_seed()
        batch_size = self.batch_size * self.steps_per_call
        sampler = EpochShuffle(dataset, seed)
        return resumable_loader(
            dataset, sampler, batch_size, seed, pin_memory=pin_memory, **reading
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on the device, the whole batch at once."""
        if not (self.augment_shift and self.trainer and self.trainer.training):
            return batch
        inputs, targets = batch
        background = float(((0.0 - self.mean) / self.std).mean())  # a black pixel, normalized
        return random_shift(inputs, self.augment_shift, background), targets

    def evaluation_batch_size(self, name: str) -> int:
        """``eval_batch_size``, or smaller where the trainer evaluates a fraction of the split.

        Lightning counts ``limit_val_batches=0.1`` in batches, and one batch of 1,024 holds a
        whole small validation set: a tenth of one batch is none, and Lightning refuses the
        run. Batches of that fraction of the split make the fraction mean what it says.
        """
        limit = getattr(self.trainer, f"limit_{name}_batches", 1.0) if self.trainer else 1.0
        if isinstance(limit, float) and 0 < limit < 1:
            wanted = max(1, int(len(self.datasets[name]) * limit))
            return min(self.eval_batch_size, wanted)
        return self.eval_batch_size

    def train_dataloader(self) -> DataLoader:
        return self.make_loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.make_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.make_loader("test")

    def state_dict(self) -> dict:
        """What a checkpoint needs to preprocess new inputs: plain values and tensors only.

        ``src/predict.py`` reads it back, so predicting needs neither the data nor this
        class. Feature rows name their columns (``feature_names``, ``x0``, ``x1``, ... unless
        ``load`` set them); ``label_names``, where ``load`` sets them, name the outputs (a
        multi-label task's labels, an image folder's classes) in predict.py's columns; image
        modules add ``pixel_max``, the value a white pixel has in ``load``.
        """
        state = {"mean": self.mean, "std": self.std, "input_shape": self.input_shape}
        if getattr(self, "label_names", None):
            state["label_names"] = list(self.label_names)
        state["task"] = self.task.name  # how predict.py reads a module's outputs
        if len(self.input_shape) == 1:
            names = getattr(self, "feature_names", None)
            state["feature_names"] = names or [f"x{i}" for i in range(self.input_shape[0])]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.std = state["mean"], state["std"]
