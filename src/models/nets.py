"""The networks: plain ``nn.Module``s that know nothing about training.

Each that cannot take every input declares which it can take (``supports``, given the
data's task name and input shape; what a task is, ``src/tasks.py`` says) and says so in
words (``accepts``), so an impossible model x data pair is refused before any work starts.
"""

from __future__ import annotations

import logging
import math

from torch import Tensor, nn

from src.tasks import TASKS

log = logging.getLogger(__name__)

ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


class MLP(nn.Module):
    """Fully connected layers; flattens any input shape, so it trains on every data set (and
    needs no ``supports``)."""

    def __init__(
        self,
        input_shape: list[int],
        num_outputs: int,
        hidden_sizes: list[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not all(size > 0 for size in hidden_sizes) or not 0 <= dropout < 1:
            raise ValueError(
                f"hidden_sizes must be positive integers and dropout in [0, 1), got "
                f"{list(hidden_sizes)} and {dropout}"
            )
        if not hidden_sizes:
            log.warning(
                "This MLP has no hidden layer (hidden_sizes=[]): it is a linear model, one "
                "affine map from the inputs to the outputs."
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) with max-pooling and ReLU, for 1x28x28 or 1x32x32 images.

    28x28 inputs are padded by 2 in the first convolution, as is usual for MNIST, so both
    sizes reach the 16x5x5 feature map the classic fully connected head expects.
    """

    accepts = (
        "single-channel 28x28 or 32x32 images (data=digits, mnist, fashion_mnist, kmnist, "
        "image_folder)"
    )

    def __init__(self, input_shape: list[int], num_outputs: int) -> None:
        super().__init__()
        if not self.supports("classification", input_shape):
            raise ValueError(f"LeNet5 takes {self.accepts}, got input_shape={input_shape}")
        padding = 2 if input_shape[-1] == 28 else 0
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_outputs),
        )

    @staticmethod
    def supports(task: str, input_shape: list[int]) -> bool:
        return list(input_shape) in ([1, 28, 28], [1, 32, 32])

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class LinearRegression(nn.Module):
    """One affine map from the flattened features to the targets."""

    accepts = "regression data (data=california, synthetic_regression)"

    def __init__(self, input_shape: list[int], num_outputs: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(math.prod(input_shape), num_outputs)

    @staticmethod
    def supports(task: str, input_shape: list[int]) -> bool:
        return TASKS[task].continuous

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.flatten(x))
