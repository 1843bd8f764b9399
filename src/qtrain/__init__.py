"""qtrain: Quantum-Train for any PyTorch model.

A QNN and a small mapping model generate every weight of an ordinary ``nn.Module``;
only the circuit angles and the mapping are trained, and what comes out
(``merge_and_unload()``) is the plain model.

>>> import torch, qtrain
>>> qt = qtrain.QuantumTrain(torch.nn.Linear(10, 2), qtrain.QTConfig(depth=3))
>>> qt(torch.randn(4, 10)).shape
torch.Size([4, 2])
"""

from ._version import __version__
from .circuits import QNN
from .config import QTConfig
from .model import QuantumTrain

__all__ = ["QNN", "QTConfig", "QuantumTrain", "__version__"]
