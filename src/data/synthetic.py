"""Random tensors labelled by a fixed random teacher: a data set with a known answer."""

from __future__ import annotations

import torch
from torch import Tensor

from src.data.base import InMemoryDataModule


class SyntheticDataModule(InMemoryDataModule):
    """Normal features; labels from a random linear teacher that does not depend on the seed.

    Classification: ``argmax(X @ W + noise)`` over ``num_outputs`` classes. Regression:
    ``X @ w + b + noise`` with ``true_weight``/``true_bias`` exposed so tests and users
    can check that a linear model recovers them. ``teacher_seed`` fixes the teacher,
    ``sample_seed`` the draws, so different training seeds see the same problem.
    """

    def __init__(
        self,
        *,
        num_samples: int = 10_000,
        noise: float = 0.1,
        teacher_seed: int = 0,
        sample_seed: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_samples = num_samples
        self.noise = noise
        generator = torch.Generator().manual_seed(teacher_seed)
        (num_features,) = self.input_shape
        self.true_weight = torch.randn(num_features, self.num_outputs, generator=generator)
        self.true_bias = torch.randn(self.num_outputs, generator=generator)
        self.sample_seed = sample_seed

    def load(self) -> tuple[Tensor, Tensor, None]:
        generator = torch.Generator().manual_seed(self.sample_seed)
        inputs = torch.randn(self.num_samples, *self.input_shape, generator=generator)
        clean = inputs @ self.true_weight + self.true_bias
        noisy = clean + self.noise * torch.randn(clean.shape, generator=generator)
        targets = noisy.argmax(dim=1) if self.task == "classification" else noisy
        return inputs, targets, None
