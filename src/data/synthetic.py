"""Random tensors labelled by a fixed random teacher: a data set with a known answer."""

from __future__ import annotations

import torch
from torch import Tensor

from src.data.base import InMemoryDataModule


class SyntheticDataModule(InMemoryDataModule):
    """Normal features; labels from a random linear teacher that does not depend on the seed.

    The teacher's outputs ``X @ W + b + noise`` become targets as the task reads a net's
    outputs (``src/tasks.py``): their argmax over ``num_outputs`` classes, each of
    ``num_outputs`` labels on where positive, or the values themselves (regression, with
    ``true_weight``/``true_bias`` exposed so tests and users can check that a linear model
    recovers them). ``teacher_seed`` fixes the teacher,
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
        targets = self.task.decide(self.task.predictions(noisy))  # the teacher's answers
        return inputs, targets, None
