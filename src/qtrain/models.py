"""The papers' target models, and modern variants with activations.

Each is a plain ``nn.Module`` with nothing of qtrain in it, so a trained one can be
loaded from its safetensors file by anyone who has this class.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MODELS", "PaperCNN", "PaperCIFARCNN", "IrisMLP", "DigitsCNN", "ResNet18", "build_model", "count_parameters",
           "widest_within"]


def _scaled(width: float, *sizes: int) -> tuple[int, ...]:
    # widths scale every hidden size by the same factor (at least one unit each)
    return tuple(max(1, round(width * s)) for s in sizes)


class PaperCNN(nn.Module):
    """The papers' MNIST / FashionMNIST CNN, M = 6,690 weights:
    Conv(1->8, k5) -> MaxPool2 -> Conv(8->12, k5) -> MaxPool2 -> Linear(192->20) -> Linear(20->10).

    With ``activation=None`` (the papers') max-pooling is the only non-linearity;
    ``activation="relu"`` adds a ReLU after every layer but the last.
    """

    def __init__(self, activation: str | None = None, n_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, h = _scaled(width, 8, 12, 20)
        self.conv1 = nn.Conv2d(1, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc1 = nn.Linear(16 * c2, h)
        self.fc2 = nn.Linear(h, n_classes)
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

    def __init__(self, activation: str | None = None, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, h1, h2 = _scaled(width, 16, 32, 128, 64)
        self.conv1 = nn.Conv2d(3, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = nn.Linear(64 * c2, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, 10)
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

    def __init__(self, hidden: int = 10, width: float = 1.0) -> None:
        super().__init__()
        (hidden,) = _scaled(width, hidden)
        self.fc1 = nn.Linear(4, hidden)
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class DigitsCNN(nn.Module):
    """A small CNN for the 8x8 scikit-learn digits (ReLU, or tanh: the ``-tanh`` variant
    cannot lose every unit the way a ReLU layer can under QT; README, "Known problem")."""

    def __init__(self, width: float = 1.0, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"Invalid `activation` {activation!r}. Must be 'relu' or 'tanh'.")
        (c,) = _scaled(width, 8)
        self.conv = nn.Conv2d(1, c, 3, padding=1)
        self.fc = nn.Linear(c * 4 * 4, 10)
        self.act = F.relu if activation == "relu" else torch.tanh

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 8, 8)
        return self.fc(F.max_pool2d(self.act(self.conv(x)), 2).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 images (3x3 stem, no max-pool; the usual CIFAR variant):
    11,173,962 weights at width 1 — the million-weight target of chunked generation."""

    def __init__(self, n_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        c = _scaled(width, 64, 128, 256, 512)
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        blocks, c_in = [], c[0]
        for i, c_out in enumerate(c):
            for j in range(2):
                blocks.append(_BasicBlock(c_in, c_out, 2 if i > 0 and j == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 32, 32)
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "paper-cnn": lambda width=1.0: PaperCNN(width=width),
    "paper-cnn-relu": lambda width=1.0: PaperCNN(activation="relu", width=width),
    "paper-cifar-cnn": lambda width=1.0: PaperCIFARCNN(width=width),
    "paper-cifar-cnn-relu": lambda width=1.0: PaperCIFARCNN(activation="relu", width=width),
    "iris-mlp": lambda width=1.0: IrisMLP(width=width),
    "digits-cnn": lambda width=1.0: DigitsCNN(width=width),
    "digits-cnn-tanh": lambda width=1.0: DigitsCNN(width=width, activation="tanh"),
    "resnet18": lambda width=1.0: ResNet18(width=width),
}
"""Model constructors by name; ``width`` scales every hidden size (the model's family)."""


def build_model(name: str, width: float = 1.0) -> nn.Module:
    """A fresh model by name (initialised from the global RNG; seed it first).

    Raises:
        ValueError: unknown name (the valid ones are listed), non-positive width.
    """
    if name not in MODELS:
        raise ValueError(f"Invalid model {name!r}. Must be one of {sorted(MODELS)}.")
    if not width > 0:
        raise ValueError(f"`width` must be positive, got {width}")
    return MODELS[name](width=width)


def count_parameters(model: nn.Module) -> int:
    """Trainable scalars of a plain model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def widest_within(name: str, budget: int) -> tuple[float, int]:
    """The largest width (a multiple of 1/1000) of model ``name`` whose trainable count is
    at most ``budget``: the ``small-classical`` baseline. Returns ``(width, count)``.

    >>> widest_within("iris-mlp", 40)      # a 4-h-3 MLP has 8h + 3 weights: h = 4
    (0.45, 35)

    Raises:
        ValueError: even the narrowest member (one unit per hidden layer) exceeds ``budget``.
    """
    def count(w: float) -> int:
        return count_parameters(build_model(name, w))

    lo = 0.001
    if count(lo) > budget:
        raise ValueError(f"the narrowest {name} has {count(lo):,} parameters, more than the budget {budget:,}")
    hi = 1.0
    while count(hi) <= budget:
        hi *= 2
    while hi - lo > 0.001:  # count is monotone in width
        mid = round((lo + hi) / 2, 3)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid)
    return lo, count(lo)
