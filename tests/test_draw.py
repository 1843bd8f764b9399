"""Circuit drawings: the text drawing is exact, the figure is written, `qtrain info --draw` uses them."""

import pytest
import torch

import qtrain
from qtrain import cli
from qtrain.circuits.ansatze import Op
from qtrain.circuits.draw import draw_text


def _qnn(ansatz, n, depth, angles):
    qnn = qtrain.QNN(n, depth=depth, ansatz=ansatz)
    with torch.no_grad():
        qnn.weights.copy_(torch.as_tensor(angles, dtype=qnn.weights.dtype).reshape(qnn.weights.shape))
    return qnn


def test_text_drawing_of_a_3_qubit_ring_equals_the_expected_string():
    qnn = _qnn("ry-cnot-ring", 3, 2, [0.1, -0.25, 3.14159, 1.0, 0.0, -0.004])
    assert qnn.draw() == (
        "0: ─RY(0.10)──╭●────╭X─RY(1.00)─╭●────╭X─\n"
        "1: ─RY(-0.25)─╰X─╭●─│──RY(0.00)─╰X─╭●─│──\n"
        "2: ─RY(3.14)─────╰X─╰●─RY(0.00)────╰X─╰●─"  # -0.004 is drawn 0.00, never -0.00
    )


def test_text_drawing_of_the_papers_3_qubit_block_shows_every_u3_angle():
    # weights (1, 2, 3, 3): [0, 0, k] the U3 on wire k, [0, 1, k] the CU3 controlled by wire k
    qnn = _qnn("u3-cu3-ring", 3, 1, torch.arange(18, dtype=torch.float64) / 10 - 0.85)
    assert qnn.draw() == (
        "0: ─U3(-0.85,-0.75,-0.65)─╭●──────────────────────────────────────╭U3(0.65,0.75,0.85)─\n"
        "1: ─U3(-0.55,-0.45,-0.35)─╰U3(0.05,0.15,0.25)─╭●──────────────────│───────────────────\n"
        "2: ─U3(-0.25,-0.15,-0.05)─────────────────────╰U3(0.35,0.45,0.55)─╰●──────────────────"
    )


def test_decimals_rounds_every_angle():
    qnn = _qnn("ry-cnot-chain", 2, 1, [0.123456, -2.0])
    assert qnn.draw(decimals=0) == "0: ─RY(0)──╭●─\n1: ─RY(-2)─╰X─"
    assert "RY(0.1235)" in qnn.draw(decimals=4)
    with pytest.raises(ValueError, match="decimals"):
        qnn.draw(decimals=-1)


def test_hadamards_cz_and_controls_below_their_target():
    ops = [Op("H", (0,)), Op("CZ", (0, 2)), Op("CRY", (2, 0), (0,)), Op("X", (1,))]
    assert draw_text(ops, [0.5], 3) == (
        "0: ─H─╭●─╭RY(0.50)───\n"
        "1: ───│──│─────────X─\n"
        "2: ───╰Z─╰●──────────"
    )


def test_max_width_wraps_into_segments_with_the_same_wires():
    qnn = _qnn("ry-cnot-ring", 3, 4, torch.zeros(12))
    whole, wrapped = qnn.draw(), qnn.draw(max_width=30)
    blocks = wrapped.split("\n\n")
    assert len(blocks) > 1
    for block in blocks:
        rows = block.split("\n")
        assert [r[:3] for r in rows] == ["0: ", "1: ", "2: "]
        assert all(len(r) <= 30 for r in rows)
    # gluing the segments back gives the unwrapped drawing
    glued = ["".join(b.split("\n")[k][3:] if i == 0 else b.split("\n")[k][4:] for i, b in enumerate(blocks))
             for k in range(3)]
    assert [r[3:] for r in whole.split("\n")] == glued


def test_path_writes_a_figure(tmp_path):
    pytest.importorskip("matplotlib")
    qnn = _qnn("u3-cu3-ring", 3, 1, torch.zeros(18))
    text = qnn.draw(path=tmp_path / "circuit.png")
    assert text == qnn.draw()
    assert (tmp_path / "circuit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_draw_prints_the_circuit_and_writes_the_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "c.png"
    args = ["info", "--model", "iris-mlp", "--depth", "1", "--ansatz", "ry-cnot-ring"]
    assert cli.main([*args, "--draw", str(path)]) == 0
    out = capsys.readouterr().out
    assert "qubits N" in out and "0: ─RY(" in out and "6: ─RY(" in out and path.exists()
    assert cli.main([*args, "--draw", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["drawing"].startswith("0: ─RY(")
    assert cli.main(args) == 0
    assert "─RY(" not in capsys.readouterr().out  # no drawing unless asked
