"""The distributed ansatz: K independent sub-circuits, distributions multiplied."""

import pytest
import torch

import qtrain
from qtrain.circuits import Op, get_ansatz
from qtrain.circuits.distributed import DistributedQNN, split_qubits
from qtrain.circuits.measure import exact_probs
from qtrain.circuits.statevector import compile_ops, run


@pytest.mark.parametrize("ansatz", ["u3-cu3-ring", "ry-cnot-ring", "ry-rz-cz"])
@pytest.mark.parametrize("sizes", [(2, 3), (3, 1, 2)])
def test_equals_one_circuit_of_the_parts_on_disjoint_wires(ansatz, sizes):
    dq = DistributedQNN(sizes, 2, ansatz, seed=1, dtype=torch.float64)
    joint, offset, first_param = [], 0, 0
    for part in dq.parts:  # the same gates on wires offset .. offset + N_k - 1 of one register
        for op in part.ansatz.operations(part.n_qubits, 2):
            joint.append(Op(op.gate, tuple(w + offset for w in op.wires), tuple(i + first_param for i in op.params)))
        offset += part.n_qubits
        first_param += part.weights.numel()
    weights = torch.cat([p.weights.detach().reshape(-1) for p in dq.parts])
    reference = exact_probs(run(compile_ops(joint, sum(sizes), weights.numel()), weights))
    torch.testing.assert_close(dq().detach(), reference, rtol=0, atol=1e-12)


def test_gradient_matches_finite_differences():
    dq = DistributedQNN((2, 2), 1, "u3-cu3-ring", seed=0, dtype=torch.float64)
    proj = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    names = [n for n, _ in dq.named_parameters()]

    def f(*values):
        return torch.func.functional_call(dq, dict(zip(names, values)), ()) @ proj

    assert torch.autograd.gradcheck(f, tuple(p.detach().clone().requires_grad_() for p in dq.parameters()))


def test_split_and_its_errors():
    assert split_qubits(7, 2) == (4, 3) and split_qubits(7, 7) == (1,) * 7
    with pytest.raises(ValueError, match="sum to 6"):
        split_qubits(7, (3, 3))
    with pytest.raises(ValueError, match="into 8 sub-circuits"):
        split_qubits(7, 8)
    with pytest.raises(ValueError, match="subcircuits"):
        qtrain.QTConfig(subcircuits=(3, 0))


def test_qt_with_subcircuits_counts_devices_and_costs():
    net = torch.nn.Linear(30, 10)  # M = 310, N = 9
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=2, ansatz="ry-cnot-ring", subcircuits=(5, 4),
                                                  shots=1000, diff_method="parameter-shift"))
    assert isinstance(qt.qnn, DistributedQNN) and qt.qnn.sizes == (5, 4)
    assert qt.trainable_parameter_counts()["qnn"] == 2 * 9  # ry-cnot-ring: N angles per block, whatever the split
    parts = [qtrain.QNN(k, 2, "ry-cnot-ring", shots=1000, diff_method="parameter-shift") for k in (5, 4)]
    assert qt.qnn.executions_per_step() == sum(p.executions_per_step() for p in parts)
    assert len(qt.qnn.to_qasm()) == 2
    loss = qt(torch.randn(3, 30)).pow(2).sum()
    loss.backward()
    assert all(p.weights.grad is not None and p.weights.grad.abs().sum() > 0 for p in qt.qnn.parts)
    baseline = qtrain.QuantumTrain(torch.nn.Linear(30, 10), qtrain.QTConfig(depth=2, ansatz="ry-cnot-ring",
                                                                           subcircuits=2, generator="low-rank"))
    assert baseline.n_trainable > 0
