"""Toy models for the injection tests: each exercises one kind of layer."""

import torch
import torch.nn.functional as F
from torch import nn


class PaperCNN(nn.Module):
    """The papers' MNIST CNN (no activations), M = 6,690."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 12, 5)
        self.fc1 = nn.Linear(192, 20)
        self.fc2 = nn.Linear(20, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(self.fc1(x.flatten(1)))


class ConvZoo(nn.Module):
    """Conv1d/2d with padding, stride, dilation, groups; Linear without bias; F.relu."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1, stride=2)
        self.c2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.c3 = nn.Conv1d(4, 3, 3, padding="same")
        self.head = nn.Linear(3, 5, bias=False)

    def forward(self, x):  # (B, 2, 8, 8)
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))  # (B, 4, 4, 4)
        x = self.c3(x.flatten(2))  # (B, 3, 16)
        return self.head(x.mean(-1))


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(F.relu(self.bn(self.fc(x))))


class RecurrentNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.gru = nn.GRU(5, 3, batch_first=True)
        self.out = nn.Linear(3, 2)

    def forward(self, tokens):
        h, _ = self.lstm(self.emb(tokens))
        h, _ = self.gru(h)
        return self.out(h[:, -1])


class ResidualMLP(nn.Module):
    def __init__(self, width=6):
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(2)])
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.norm(h))


class TiedNet(nn.Module):
    """An encoder/decoder sharing one embedding matrix."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(9, 4)
        self.mid = nn.Linear(4, 4)
        self.dec = nn.Linear(4, 9, bias=False)
        self.dec.weight = self.emb.weight

    def forward(self, tokens):
        return self.dec(torch.tanh(self.mid(self.emb(tokens))))


class FrozenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(5, 6)
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(F.relu(self.backbone(x)))


def _img(b=3):
    return torch.randn(b, 2, 8, 8)


ZOO = {
    "conv": (ConvZoo, lambda: (_img(),)),
    "batchnorm": (BatchNormNet, lambda: (torch.randn(4, 6),)),
    "recurrent": (RecurrentNet, lambda: (torch.randint(0, 11, (3, 5)),)),
    "residual": (ResidualMLP, lambda: (torch.randn(3, 4),)),
    "tied": (TiedNet, lambda: (torch.randint(0, 9, (3, 4)),)),
    "frozen": (FrozenNet, lambda: (torch.randn(3, 5),)),
    "paper-cnn": (PaperCNN, lambda: (torch.randn(2, 1, 28, 28),)),
}
