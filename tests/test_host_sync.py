"""A QT step's forward and backward dispatch no operation that would make a GPU wait for
the host: traced on the CPU, so that CI catches what only a GPU run would show."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from qtrain import QTConfig, QuantumTrain

aten = torch.ops.aten


class _HostSyncs(TorchDispatchMode):
    """Records the ops that synchronise on CUDA: reading a value on the host (``item``,
    ``float(t)``, ``bool(t)``), copying a host scalar or list into a tensor (``t[i] = 1``,
    ``torch.tensor([...])``), and ops whose output size depends on the data."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in (aten._local_scalar_dense, aten.lift_fresh, aten.nonzero, aten.masked_select):
            self.found.append(str(func))
        elif packet is aten.repeat_interleave and kwargs.get("output_size", args[3] if len(args) > 3 else None) is None:
            self.found.append(f"{func} without output_size")
        return func(*args, **kwargs)


@pytest.mark.parametrize(("width", "ansatz", "kernel"), [
    (12, "u3-cu3-ring", "0"), (12, "u3-cu3-ring", "1"), (12, "ry-cnot-ring", "0"), (12, "ry-cnot-ring", "1"),
    (160, "u3-cu3-ring", "1")])
def test_a_training_step_has_no_host_synchronisation(width, ansatz, kernel, monkeypatch):
    """width 12: ~200 weights, N = 8 (the stored-state backward with QTRAIN_KERNEL=0, as on a
    GPU; the compiled CPU kernels otherwise); width 160: ~26k weights, N = 15 (the
    un-computing backward and the chunked mapping). The first step builds the caches."""
    monkeypatch.setenv("QTRAIN_KERNEL", kernel)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 3))
    qt = QuantumTrain(net, QTConfig(depth=2, ansatz=ansatz))
    x, y = torch.randn(8, width), torch.randint(0, 3, (8,))
    F.cross_entropy(qt(x), y).backward()
    with _HostSyncs() as trace:
        F.cross_entropy(qt(x), y).backward()
    assert not trace.found, trace.found
    if width == 160:
        assert qt.n_qubits > 14 and qt.generator.n_rows > qt.generator.chunk_rows


def test_the_trace_sees_what_it_looks_for():
    t = torch.zeros(3)
    with _HostSyncs() as trace:
        t[0] = 1
        float(t.sum())
        torch.repeat_interleave(torch.ones(2), torch.tensor([1, 2]))
    assert len(trace.found) >= 3, trace.found
