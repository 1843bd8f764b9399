"""The CUDA path equals the CPU path (runs where a GPU is present; this suite's CPU CI skips it)."""

import pytest
import torch

from models import BatchNormNet
from qtrain import QNN, QTConfig, QuantumTrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

ANSATZE = ["u3-cu3-ring", "ry-cnot-ring", "ry-cnot-chain", "ry-rz-cz"]


@pytest.mark.parametrize("method", ["adjoint", "autograd"])
@pytest.mark.parametrize("ansatz", ANSATZE)
def test_qnn_on_cuda_matches_cpu(ansatz, method):
    cpu = QNN(6, 3, ansatz, dtype=torch.float64, seed=0, method=method)
    gpu = QNN(6, 3, ansatz, dtype=torch.float64, seed=0, method=method, device="cuda")
    v = torch.randn(64, dtype=torch.float64)
    (cpu() @ v).backward()
    (gpu() @ v.cuda()).backward()
    torch.testing.assert_close(gpu.probabilities().cpu(), cpu.probabilities(), atol=1e-12, rtol=0)
    torch.testing.assert_close(gpu.weights.grad.cpu(), cpu.weights.grad, atol=1e-10, rtol=0)


def test_quantum_train_on_cuda_matches_cpu_and_merges():
    torch.manual_seed(0)
    cpu = QuantumTrain(BatchNormNet(), QTConfig(depth=2, dtype="float64")).eval()
    torch.manual_seed(0)
    gpu = QuantumTrain(BatchNormNet(), QTConfig(depth=2, dtype="float64", device="cuda")).eval()
    x = torch.randn(5, 6)
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), atol=1e-5, rtol=0)
    plain = gpu.merge_and_unload()
    assert next(plain.parameters()).is_cuda
    torch.testing.assert_close(plain(x.cuda()), gpu(x.cuda()), atol=1e-6, rtol=0)


def test_shots_and_parameter_shift_run_on_cuda():
    qnn = QNN(4, 2, "ry-cnot-ring", dtype=torch.float64, device="cuda", shots=1000, diff_method="parameter-shift")
    p = qnn()
    assert p.is_cuda and abs(float(p.sum()) - 1) < 1e-9
    (p @ torch.arange(16.0, dtype=torch.float64, device="cuda")).backward()
    assert qnn.weights.grad.is_cuda


@pytest.mark.parametrize("mapping", ["mlp", "paper"])  # the hand-written chunked MLP; the two bit tables
def test_chunked_generation_on_cuda_matches_cpu(mapping):
    gens = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(20, 14), torch.nn.Linear(14, 5))  # M = 369, N = 9
        qt = QuantumTrain(net, QTConfig(depth=2, mapping=mapping, dtype="float64", seed=3, device=device))
        qt.generator.chunk_rows = 64  # six chunks, the last partial
        gens.append(qt.generator)
    probe = torch.linspace(-1, 1, 369, dtype=torch.float64)
    out = []
    for gen in gens:
        w = gen()
        params = [p for p in gen.parameters() if p.requires_grad]
        out.append((w.detach().cpu(), [g.cpu() for g in torch.autograd.grad(w @ probe.to(w.device), params)]))
    torch.testing.assert_close(out[1][0], out[0][0], atol=1e-12, rtol=0)
    for a, b in zip(out[1][1], out[0][1]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_fit_on_cuda_runs_its_steps_without_a_host_synchronisation(monkeypatch):
    """The trainer keeps the training set on the GPU: each step only queues work (a host
    round trip per batch would make every step wait for the GPU). The first step builds and
    caches the circuit's index tables, so the check starts at the second."""
    from qtrain import train as train_mod
    from qtrain.data import Dataset

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    data = Dataset("synthetic", x[:32], y[:32], x[32:], y[32:], 3, "test")
    qt = QuantumTrain(BatchNormNet(), QTConfig(depth=2, device="cuda"))
    steps = []
    original = train_mod.train_step

    def checked(net, opt, xs, ys, idx, device):
        assert xs.is_cuda and idx.is_cuda
        if not steps:
            out = original(net, opt, xs, ys, idx, device)
        else:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                out = original(net, opt, xs, ys, idx, device)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        steps.append(out)
        return out

    monkeypatch.setattr(train_mod, "train_step", checked)
    history = train_mod.fit(qt, data, train_mod.TrainConfig(epochs=1, batch_size=8, device="cuda"), progress=False)
    assert len(steps) == 4 and len(history) == 1
