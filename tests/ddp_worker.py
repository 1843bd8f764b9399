"""A torchrun worker for test_distributed.py (also imported there for the single-process
reference): a tiny float64 QT model trained with ``qtrain.train.fit`` on a synthetic set of
43 examples in batches of 7, so that the global batches split 4/3 across two ranks and the
last one (a single example) leaves rank 1 empty.

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_worker.py OUT EPOCHS [--resume]

Rank 0 writes ``OUT/weights.safetensors`` (the generated weights) and ``OUT/history.json``;
the checkpoint is ``OUT/checkpoint.safetensors``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

N_TRAIN, N_TEST, BATCH = 43, 11, 7


def dataset():
    from qtrain.data import Dataset

    g = torch.Generator().manual_seed(7)
    x = torch.randn(N_TRAIN + N_TEST, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()  # three classes
    return Dataset("synthetic", x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], 3, "ddp_worker.py")


def model():
    from qtrain import QTConfig, QuantumTrain

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return QuantumTrain(net, QTConfig(depth=2, dtype="float64", seed=0))


def train(qt, epochs: int, checkpoint=None, resume: bool = False) -> list[dict]:
    from qtrain.train import TrainConfig, fit

    config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=0.05, seed=3)
    return fit(qt, dataset(), config, checkpoint=checkpoint, resume=resume, progress=False)


def main(argv: list[str]) -> None:
    from safetensors.torch import save_file

    from qtrain import distributed

    out, epochs, resume = Path(argv[0]), int(argv[1]), "--resume" in argv
    qt = model()
    history = train(qt, epochs, checkpoint=out / "checkpoint.safetensors", resume=resume)
    assert distributed.get_world_size() == 2, "run me under torchrun with 2 processes"
    if distributed.is_main_process():
        weights = {k: v.detach().contiguous().clone() for k, v in qt.generate_weights().items()}
        save_file(weights, str(out / "weights.safetensors"))
        (out / "history.json").write_text(json.dumps(history))


if __name__ == "__main__":
    main(sys.argv[1:])
