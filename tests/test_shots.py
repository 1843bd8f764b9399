"""Device-like execution: shots, shift-rule and SPSA gradients, noise, OpenQASM 3 export."""

import math

import numpy as np
import openqasm3
import pytest
import torch
from openqasm3 import ast

import reference
from qtrain.circuits import QNN, Op
from qtrain.circuits.gradients import SPSA, Executor, ParameterShift, executions_per_step
from qtrain.circuits.noise import depolarize, readout_flip
from qtrain.circuits.qasm import to_qasm
from qtrain.circuits.sampling import sample_probs

ANSATZE = ["u3-cu3-ring", "ry-cnot-ring", "ry-cnot-chain", "ry-rz-cz"]


def _executor(qnn, **kw):
    return Executor(qnn.ansatz.operations(qnn.n_qubits, qnn.depth), qnn.n_qubits, qnn.weights.numel(), qnn.depth, **kw)


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_parameter_shift_without_shots_equals_autograd(ansatz):
    qnn = QNN(3, 2, ansatz, dtype=torch.float64, seed=11)
    v = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (qnn() @ v).backward()
    w = qnn.weights.detach().clone().requires_grad_()
    (ParameterShift.apply(w, _executor(qnn)) @ v).backward()
    torch.testing.assert_close(w.grad, qnn.weights.grad, atol=1e-8, rtol=0)


def test_parameter_shift_handles_an_angle_used_twice():
    ops = [Op("RY", (0,), (0,)), Op("CRY", (0, 1), (0,)), Op("RZ", (1,), (1,)), Op("CRX", (1, 0), (1,))]
    from qtrain.circuits.statevector import compile_ops, run
    from qtrain.circuits.measure import exact_probs

    program = compile_ops(ops, 2, 2)
    w = torch.tensor([0.7, -1.3], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64)
    (exact_probs(run(program, w)) @ v).backward()
    w2 = w.detach().clone().requires_grad_()
    (ParameterShift.apply(w2, Executor(ops, 2, 2, 1)) @ v).backward()
    torch.testing.assert_close(w2.grad, w.grad, atol=1e-10, rtol=0)


def test_shot_based_parameter_shift_converges_to_the_exact_gradient():
    # 400 independent 2,000-shot estimates; the mean's error must sit within 5 standard errors
    qnn = QNN(2, 1, "ry-cnot-ring", dtype=torch.float64, seed=4)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    (qnn() @ v).backward()
    exact = qnn.weights.grad.reshape(-1)
    ex = _executor(qnn, shots=2000, generator=torch.Generator().manual_seed(0))
    grads = []
    for _ in range(400):
        w = qnn.weights.detach().clone().requires_grad_()
        (ParameterShift.apply(w, ex) @ v).backward()
        grads.append(w.grad.reshape(-1))
    g = torch.stack(grads)
    stderr = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - exact).abs() < 5 * stderr).all()
    assert (stderr > 0).all() and (stderr < 0.05).all()


def test_spsa_is_unbiased_to_order_c_squared():
    qnn = QNN(2, 1, "ry-cnot-chain", dtype=torch.float64, seed=3)
    v = torch.tensor([0.5, -1.0, 1.5, 0.2], dtype=torch.float64)
    (qnn() @ v).backward()
    ex = _executor(qnn, generator=torch.Generator().manual_seed(1))
    grads = []
    for _ in range(3000):
        w = qnn.weights.detach().clone().requires_grad_()
        (SPSA.apply(w, ex, 1e-3) @ v).backward()
        grads.append(w.grad.reshape(-1))
    g = torch.stack(grads)
    stderr = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - qnn.weights.grad.reshape(-1)).abs() < 5 * stderr + 1e-5).all()
    assert executions_per_step(ex, "spsa") == 3


def test_execution_counts():
    qnn = QNN(4, 3, "u3-cu3-ring")
    assert executions_per_step(_executor(qnn), "parameter-shift") == 1 + 14 * 4 * 3
    assert executions_per_step(_executor(QNN(4, 3, "ry-cnot-ring")), "parameter-shift") == 1 + 2 * 4 * 3


def test_sampling_is_seeded_exactly_normalised_and_multinomial():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    a = sample_probs(p, 10_000, torch.Generator().manual_seed(7))
    b = sample_probs(p, 10_000, torch.Generator().manual_seed(7))
    counts = (a * 10_000).round()
    assert torch.equal(a, b) and float(counts.sum()) == 10_000 and float((a * 10_000 - counts).abs().max()) < 1e-9
    assert (a[4:] == 0).all()  # impossible outcomes are never drawn
    # over many draws: mean p and variance p(1-p)/shots per entry (multinomial moments)
    draws = torch.stack([sample_probs(p, 500, torch.Generator().manual_seed(s)) for s in range(2000)])
    assert ((draws.mean(0) - p).abs() < 5 * (p * (1 - p) / 500 / 2000).sqrt() + 1e-12).all()
    torch.testing.assert_close(draws.var(0)[:4], (p * (1 - p) / 500)[:4], rtol=0.15, atol=0)
    # covariance of two entries is -p_i p_j / shots, as for a multinomial
    cov = float(((draws[:, 0] - p[0]) * (draws[:, 3] - p[3])).mean())
    assert abs(cov - (-0.1 * 0.4 / 500)) < 0.2 * 0.1 * 0.4 / 500
    big = sample_probs(p, 10**12, torch.Generator().manual_seed(0))  # cost does not grow with shots
    assert (big - p).abs().max() < 1e-5
    with pytest.raises(ValueError, match="`shots` must be >= 1"):
        sample_probs(p, 0)


def test_noise_models_match_hand_computed_cases():
    p = torch.tensor([0.7, 0.1, 0.15, 0.05], dtype=torch.float64)
    # two layers of 10% depolarizing: q = 0.81
    torch.testing.assert_close(depolarize(p, 0.1, 2), 0.81 * p + 0.19 / 4)
    # readout: wire 0 flips with 0.2, wire 1 with 0.1 -> confusion kron(M0, M1) (wire 0 = MSB)
    m = lambda e: torch.tensor([[1 - e, e], [e, 1 - e]], dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(readout_flip(p, [0.2, 0.1], 2), torch.kron(m(0.2), m(0.1)) @ p)
    assert float(readout_flip(p, 0.3, 2).sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1 or 2 probabilities"):
        readout_flip(p, [0.1, 0.1, 0.1], 2)


def _interpret(program: str, n: int) -> np.ndarray:
    """Run a parsed OpenQASM 3 program on the dense reference simulator."""
    tree = openqasm3.parse(program)
    U = np.eye(2**n, dtype=complex)
    fixed = {"h": reference.H, "x": reference.X}
    for stmt in tree.statements:
        if not isinstance(stmt, ast.QuantumGate):
            continue
        name = stmt.name.name
        args = [float(openqasm3.dumps(a)) for a in stmt.arguments]
        wires = [int(q.indices[0][0].value) for q in stmt.qubits]
        single = {"ry": lambda t: reference.ry(t), "rz": lambda t: reference.rz(t), "u3": reference.u3}
        if name in fixed:
            g = reference.embed({wires[0]: fixed[name]}, n)
        elif name in single:
            g = reference.embed({wires[0]: single[name](*args)}, n)
        elif name == "cx":
            g = reference.controlled(reference.X, *wires, n)
        elif name == "cz":
            g = reference.controlled(reference.Z, *wires, n)
        elif name == "cu":
            assert args[3] == 0.0
            g = reference.controlled(reference.u3(*args[:3]), *wires, n)
        else:
            raise AssertionError(name)
        U = g @ U
    return np.abs(U[:, 0]) ** 2


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_qasm_export_parses_and_reproduces_the_probabilities(ansatz):
    qnn = QNN(3, 2, ansatz, dtype=torch.float64, seed=5)
    text = to_qasm(qnn.ansatz.operations(3, 2), qnn.weights, 3)
    assert text.startswith("OPENQASM 3.0;") and "c = measure q;" in text
    np.testing.assert_allclose(_interpret(text, 3), qnn().detach().numpy(), atol=1e-12)


def test_with_shots_every_generation_is_a_fresh_sample():
    from qtrain import QTConfig, QuantumTrain
    from torch import nn

    qt = QuantumTrain(nn.Linear(6, 2), QTConfig(depth=2, shots=200, seed=1))
    exact = qt.qnn.probabilities().detach()
    sampled = qt.qnn().detach()
    assert not torch.equal(sampled, exact)
    assert torch.equal((sampled * 200).round(), sampled * 200)  # frequencies of 200 shots
    a, b = qt.generated_state_dict(), qt.generated_state_dict()
    assert not torch.equal(a["weight"], b["weight"])  # merge / export sample too, as a device would
    x = torch.randn(3, 6)
    qt(x).sum().backward()  # the surrogate: sampled forward, exact backward
    assert qt.qnn.weights.grad.abs().sum() > 0


@pytest.mark.parametrize("diff_method", ["parameter-shift", "spsa", "backprop"])
def test_shot_training_resumes_bit_for_bit(tmp_path, diff_method):
    from qtrain import QTConfig
    from qtrain.experiment import run_job
    from qtrain.train import TrainConfig
    from safetensors.torch import load_file

    def run(out, epochs, resume=False):
        run_job(out, dataset="iris", model="iris-mlp", qt=QTConfig(depth=1, ansatz="ry-cnot-ring", shots=500,
                diff_method=diff_method, readout_error=0.01), train=TrainConfig(epochs=epochs, batch_size=40, lr=0.01),
                runs=("qt",), resume=resume, progress=False)

    run(tmp_path / "full", 3)
    run(tmp_path / "cut", 2)
    run(tmp_path / "cut", 3, resume=True)
    a = load_file(str(tmp_path / "full" / "checkpoint-qt.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoint-qt.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_device_settings_are_validated_and_costed():
    from qtrain import QTConfig, QuantumTrain
    from torch import nn

    with pytest.raises(ValueError, match="Invalid `diff_method` 'adjoint'"):
        QTConfig(diff_method="adjoint")
    with pytest.raises(ValueError, match="`shots` must be None or a positive int"):
        QTConfig(shots=0)
    with pytest.raises(ValueError, match="apply to circuits"):
        QTConfig(shots=100, generator="tensor-train")
    with pytest.raises(ValueError, match="`depolarizing` must be a probability"):
        QTConfig(depolarizing=1.5)
    with pytest.raises(ValueError, match="`spsa_epsilon` must be a positive number"):
        QTConfig(spsa_epsilon=0)
    with pytest.raises(ValueError, match="`readout_error` must be one probability or 3"):
        QNN(3, 1, readout_error=[0.1, 0.2])
    with pytest.raises(ValueError, match="`readout_error` must be one probability or 3"):
        QNN(3, 1, readout_error=1.7)
    per_wire = QTConfig(readout_error=[0.01, 0.02, 0.0])
    assert per_wire.readout_error == (0.01, 0.02, 0.0) and QTConfig.from_json(per_wire.to_json()) == per_wire
    qt_ro = QuantumTrain(nn.Linear(2, 2), QTConfig(depth=1, readout_error=[0.2, 0.0, 0.0]))
    p = qt_ro.qnn().detach()
    torch.testing.assert_close(p, readout_flip(qt_ro.qnn.probabilities().detach(), [0.2, 0.0, 0.0], 3))
    qt = QuantumTrain(nn.Linear(6, 2), QTConfig(depth=2, diff_method="parameter-shift", ansatz="ry-cnot-ring"))
    assert qt.qnn.executions_per_step() == 1 + 2 * qt.n_qubits * 2
    text = qt.qnn.to_qasm()
    assert text.count("ry(") == 2 * qt.n_qubits and "qtrain ry-cnot-ring" in text


def test_with_shots_the_reported_accuracy_is_the_saved_models(tmp_path):
    import json

    from safetensors.torch import load_file

    from qtrain import QTConfig, cli, data
    from qtrain.experiment import run_job
    from qtrain.models import IrisMLP
    from qtrain.train import TrainConfig

    out = tmp_path / "run"
    run_job(out, dataset="iris", model="iris-mlp", qt=QTConfig(depth=1, shots=100), runs=("qt",), progress=False,
            train=TrainConfig(epochs=2, batch_size=40, lr=0.01))
    reported = json.loads((out / "results.json").read_text())["qt"]
    ds = data.load_dataset("iris", seed=0)
    for name in ("model.safetensors", "export/model.safetensors"):
        if name.startswith("export"):
            assert cli.main(["export", str(out), "--no-onnx"]) == 0
        plain = IrisMLP()
        plain.load_state_dict(load_file(str(out / name)))
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(plain(ds.x_test), ds.y_test).item()
        assert abs(loss - reported["test_loss"]) < 1e-6, name
