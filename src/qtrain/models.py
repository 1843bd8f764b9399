"""The papers' target models, and modern variants with activations.

Each is a plain ``nn.Module`` with nothing of qtrain in it, so a trained one can be
loaded from its safetensors file by anyone who has this class.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MODELS", "PaperCNN", "PaperCIFARCNN", "IrisMLP", "DigitsCNN", "build_model"]


class PaperCNN(nn.Module):
    """The papers' MNIST / FashionMNIST CNN, M = 6,690 weights:
    Conv(1->8, k5) -> MaxPool2 -> Conv(8->12, k5) -> MaxPool2 -> Linear(192->20) -> Linear(20->10).

    With ``activation=None`` (the papers') max-pooling is the only non-linearity;
    ``activation="relu"`` adds a ReLU after every layer but the last.
    """

    def __init__(self, activation: str | None = None, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 12, 5)
        self.fc1 = nn.Linear(192, 20)
        self.fc2 = nn.Linear(20, n_classes)
        self.activation = activation

    def _act(self, x: Tensor) -> Tensor:
        return F.relu(x) if self.activation == "relu" else x

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 28, 28)
        x = F.max_pool2d(self._act(self.conv1(x)), 2)  # (B, 8, 12, 12)
        x = F.max_pool2d(self._act(self.conv2(x)), 2)  # (B, 12, 4, 4)
        return self.fc2(self._act(self.fc1(x.flatten(1))))


class PaperCIFARCNN(nn.Module):
    """The papers' CIFAR-10 CNN, M = 285,226 weights: Conv(3->16, k5, pad 2) -> MaxPool2 ->
    Conv(16->32, k5, pad 2) -> MaxPool2 -> Linear(2048->128) -> Linear(128->64) -> Linear(64->10).
    ``activation="relu"`` adds ReLUs after every layer but the last."""

    def __init__(self, activation: str | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(2048, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)
        self.activation = activation

    def _act(self, x: Tensor) -> Tensor:
        return F.relu(x) if self.activation == "relu" else x

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 32, 32)
        x = F.max_pool2d(self._act(self.conv1(x)), 2)  # (B, 16, 16, 16)
        x = F.max_pool2d(self._act(self.conv2(x)), 2)  # (B, 32, 8, 8)
        x = self._act(self.fc1(x.flatten(1)))
        return self.fc3(self._act(self.fc2(x)))


class IrisMLP(nn.Module):
    """A small MLP for Iris (4 features, 3 classes)."""

    def __init__(self, hidden: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class DigitsCNN(nn.Module):
    """A small CNN for the 8x8 scikit-learn digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 8, 8)
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "paper-cnn": lambda: PaperCNN(),
    "paper-cnn-relu": lambda: PaperCNN(activation="relu"),
    "paper-cifar-cnn": lambda: PaperCIFARCNN(),
    "paper-cifar-cnn-relu": lambda: PaperCIFARCNN(activation="relu"),
    "iris-mlp": lambda: IrisMLP(),
    "digits-cnn": lambda: DigitsCNN(),
}
"""Model constructors by name."""


def build_model(name: str) -> nn.Module:
    """A fresh model by name (initialised from the global RNG; seed it first).

    Raises:
        ValueError: unknown name (the valid ones are listed).
    """
    if name not in MODELS:
        raise ValueError(f"Invalid model {name!r}. Must be one of {sorted(MODELS)}.")
    return MODELS[name]()
