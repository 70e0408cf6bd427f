"""A training loader that resumes mid-epoch at the next batch, without loading the ones before.

Lightning saves a training loader's ``state_dict()`` in every checkpoint and hands it back
to ``load_state_dict()`` on a resume, when the loader has both. The training order here is
a function of (seed, epoch) (``EpochShuffle``), so the whole state is two numbers: the
epoch and how many batches the loader handed out in it. A resumed loader skips that many
batches of the batch sampler, which yields indices only: nothing is read or decoded for
them, in the main process or in a worker. The count is of batches the main process
yielded, never of what workers have prefetched; and Lightning fetches no batch ahead from
a loader that has a length, so what was yielded is what trained.

torchdata's ``StatefulDataLoader`` does the same for any sampler, but replaces the
DataLoader's iterators with its own and stores its workers' states; for an order that is
a function of (seed, epoch) that is machinery without a use, and one more library whose
iterators must track torch's. Under DDP, Lightning rebuilds the batch sampler around its
``DistributedSampler`` (same class and arguments), so the skip holds there too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler


class SkippingBatches(BatchSampler):
    """A ``BatchSampler`` that leaves out the first ``skip`` batches of each pass (set by the
    loader for each pass: a worker iterator starts its pass twice)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(super().__iter__(), self.skip, None)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`SkippingBatches` whose position Lightning checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch, self.served = self.sampler_epoch(), 0
        self.restored: dict[str, int] | None = None
        self.seed = self.generator.initial_seed() if self.generator is not None else None

    @property
    def sampler(self) -> Sampler[int] | None:
        """The order's sampler (``EpochShuffle``), inside the batch sampler: what Lightning
        looks at to see a shuffled loader (``overfit_batches`` turns it off, DDP shuffles its
        share the same way), as for a DataLoader given ``sampler=``."""
        return getattr(self.batch_sampler, "sampler", None)

    @sampler.setter
    def sampler(self, unused: Sampler[int]) -> None:
        """DataLoader sets a default ``SequentialSampler`` that a batch sampler leaves unused."""

    def sampler_epoch(self) -> int:
        """The epoch the shuffling sampler is set to (Lightning's ``set_epoch``)."""
        return int(getattr(self.sampler, "epoch", 0))

    def __iter__(self) -> Iterator[Any]:
        # A generator: it starts at the first batch asked for, after Lightning's set_epoch.
        self.epoch, self.served = self.sampler_epoch(), 0
        if self.seed is not None:  # the workers' seeds, drawn as each pass starts
            self.generator.manual_seed((self.seed * 100_003 + self.epoch + 1) % 2**63)
        restored, self.restored = self.restored, None
        if restored and restored["epoch"] == self.epoch:  # else that epoch had ended
            self.served = restored["batches"]
        self.batch_sampler.skip = self.served
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.served}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.restored = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}


def resumable_loader(
    dataset: Dataset, sampler: Sampler[int], batch_size: int, seed: int, **kwargs: Any
) -> ResumableLoader:
    """A training loader over ``sampler``'s order in batches of ``batch_size``, the last one
    possibly shorter (as ``DataLoader(sampler=..., batch_size=...)``), that resumes mid-epoch.

    A plain DataLoader draws its workers' base seed from torch's global generator as each
    pass starts, even with no workers: a pass started by a resume would draw it at another
    point of that stream than the uninterrupted run, and shift every random draw after it
    (dropout). Here it comes from a generator of the loader's own, seeded from ``seed`` and
    the epoch, so the global stream is the model's alone."""
    batches = SkippingBatches(sampler, batch_size, drop_last=False)
    generator = torch.Generator().manual_seed(seed)
    return ResumableLoader(dataset, batch_sampler=batches, generator=generator, **kwargs)


def loader_states(checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """The training loaders' states a checkpoint holds (Lightning's fit loop stores them);
    none in a checkpoint written before the loaders had any."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    return list(fit_loop.get("state_dict", {}).get("combined_loader", []))


class RestoreLoaderPosition(Callback):
    """Hands the training loader its checkpointed position when Lightning does not.

    Lightning loads a loader's state only if it builds the loader after restoring the
    checkpoint; a module that reads ``trainer.estimated_stepping_batches`` in
    ``configure_optimizers`` (a OneCycle schedule) has it built before, and the state is
    dropped (Lightning issue #20550): the resumed epoch would start over from its first
    batch. Given here again before the first batch; given twice, it is the same state.
    """

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.states = loader_states(checkpoint)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states, self.states = self.states, []
        loader = trainer.train_dataloader
        if states and isinstance(loader, ResumableLoader):
            loader.load_state_dict(states[0])
