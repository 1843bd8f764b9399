"""Circuit drawings: a text drawing of an op list, and a matplotlib figure of it.

Gates are packed into columns: each gate goes in the first column after the last one
that touches any wire between its top and bottom wire, so a controlled gate's vertical
line never crosses another gate. Wire 0 (the most significant bit) is the top row.

>>> import torch
>>> from qtrain.circuits.ansatze import Op
>>> ops = [Op("RY", (0,), (0,)), Op("RY", (1,), (1,)), Op("CNOT", (0, 1))]
>>> print(draw_text(ops, torch.tensor([0.5, -1.25]), 2))
0: ─RY(0.50)──╭●─
1: ─RY(-1.25)─╰X─

matplotlib is imported only when a figure is asked for (``pip install 'qtrain[plot]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .ansatze import Op
from .gates import GATES

if TYPE_CHECKING:
    from .qnn import QNN

__all__ = ["draw_text", "draw_figure", "draw_qnn"]

_CONTROL = "●"


def _angle(value: float, decimals: int) -> str:
    return f"{round(value, decimals) + 0.0:.{decimals}f}"  # + 0.0: no "-0.00"


def _labels(op: Op, angles: Sequence[float], decimals: int) -> tuple[str, str]:
    """(control label, target label) for a 2-wire gate; ("", label) for a 1-wire gate."""
    spec = GATES[op.gate]
    args = ",".join(_angle(angles[i], decimals) for i in op.params)
    if spec.n_wires == 1:
        return "", f"{op.gate}({args})" if args else op.gate
    if op.gate == "CNOT":
        return _CONTROL, "X"
    if op.gate == "CZ":
        return _CONTROL, "Z"
    name = op.gate[1:] if spec.controlled and op.gate.startswith("C") else op.gate
    return _CONTROL, f"{name}({args})" if args else name


def _columns(ops: Sequence[Op], n_qubits: int) -> list[list[Op]]:
    """Pack ops into columns; an op occupies every wire from its top to its bottom wire."""
    last = [-1] * n_qubits
    columns: list[list[Op]] = []
    for op in ops:
        lo, hi = min(op.wires), max(op.wires)
        col = max(last[lo : hi + 1]) + 1
        if col == len(columns):
            columns.append([])
        columns[col].append(op)
        for w in range(lo, hi + 1):
            last[w] = col
    return columns


def _cells(column: list[Op], n_qubits: int, angles: Sequence[float], decimals: int) -> list[str]:
    cells = [""] * n_qubits
    for op in column:
        control, target = _labels(op, angles, decimals)
        if len(op.wires) == 1:
            cells[op.wires[0]] = target
            continue
        c, t = op.wires
        lo, hi = min(c, t), max(c, t)
        for w in range(lo + 1, hi):
            cells[w] = "│"
        cells[c] = ("╭" if c == lo else "╰") + control
        cells[t] = ("╭" if t == lo else "╰") + target
    return cells


def _flat_angles(angles: torch.Tensor | Sequence[float]) -> list[float]:
    if isinstance(angles, torch.Tensor):
        return angles.detach().flatten().cpu().double().tolist()
    return [float(a) for a in angles]


def draw_text(
    ops: Sequence[Op],
    angles: torch.Tensor | Sequence[float],
    n_qubits: int,
    *,
    decimals: int = 2,
    max_width: int | None = None,
) -> str:
    """A text drawing of a circuit: one row per wire, gates with their angles rounded.

    Args:
        ops: the circuit's gates, in order (an ansatz's :meth:`~qtrain.circuits.Ansatz.operations`).
        angles: the angles ``op.params`` index into (flattened row-major when a tensor).
        n_qubits: the number of wires.

    Keyword args:
        decimals: digits after the point of every angle (radians).
        max_width: wrap into segments of at most this many characters per row
            (segments separated by a blank line); ``None`` draws one segment.

    Returns:
        The drawing, rows joined by newlines, no trailing newline. Wire ``k`` is the
        row ``"k: "``; a controlled gate draws ``╭●`` on its control, its target gate
        (``X`` for CNOT, ``Z`` for CZ, ``U3(θ,φ,λ)`` for CU3) and ``│`` on the wires between.

    >>> from qtrain.circuits import get_ansatz
    >>> ops = get_ansatz("ry-cnot-chain").operations(3, 1)
    >>> print(draw_text(ops, [0.1, 0.2, 0.3], 3))
    0: ─RY(0.10)─╭●────
    1: ─RY(0.20)─╰X─╭●─
    2: ─RY(0.30)────╰X─
    """
    if decimals < 0:
        raise ValueError(f"`decimals` must be >= 0, got {decimals}")
    flat = _flat_angles(angles)
    cols = [_cells(col, n_qubits, flat, decimals) for col in _columns(ops, n_qubits)]
    widths = [max(len(c) for c in col) for col in cols]
    prefix = [f"{k}: ".rjust(len(f"{n_qubits - 1}: ")) for k in range(n_qubits)]
    # split the columns into segments that fit max_width
    segments: list[list[int]] = [[]]
    used = len(prefix[0]) + 1
    for j, w in enumerate(widths):
        if max_width is not None and segments[-1] and used + w + 1 > max_width:
            segments.append([])
            used = len(prefix[0]) + 1
        segments[-1].append(j)
        used += w + 1
    blocks = []
    for seg in segments:
        rows = []
        for k in range(n_qubits):
            cells = [cols[j][k].ljust(widths[j], "─") for j in seg]
            rows.append(prefix[k] + "─" + "─".join(cells) + "─")
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def draw_figure(
    ops: Sequence[Op],
    angles: torch.Tensor | Sequence[float],
    n_qubits: int,
    path: str | Path,
    *,
    decimals: int = 2,
    title: str | None = None,
) -> None:
    """Write a matplotlib drawing of the circuit to ``path`` (format from the suffix).

    Same layout as :func:`draw_text`: wire 0 on top, one column per packed gate layer,
    gates as labelled boxes, controls as dots joined to their target by a vertical line.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'qtrain[plot]'``).

    >>> import tempfile, os
    >>> from qtrain.circuits import get_ansatz
    >>> ops = get_ansatz("ry-cnot-ring").operations(3, 1)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     draw_figure(ops, [0.1, 0.2, 0.3], 3, os.path.join(d, "c.png"))
    ...     os.path.getsize(os.path.join(d, "c.png")) > 0
    True
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle, FancyBboxPatch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("drawing a circuit figure needs matplotlib: pip install 'qtrain[plot]'") from e
    flat = _flat_angles(angles)
    columns = _columns(ops, n_qubits)
    cells = [_cells(col, n_qubits, flat, decimals) for col in columns]
    # column widths in data units, from the longest label
    char = 0.11
    widths = [max(0.6, char * max((len(c) for c in col), default=1) + 0.3) for col in cells]
    xs, x = [], 0.6
    for w in widths:
        xs.append(x + w / 2)
        x += w + 0.15
    total = x + 0.3
    width_in, height_in = max(3.0, total * 0.9), max(1.5, 0.55 * n_qubits + 0.6)
    dpi = min(150.0, 30000.0 / width_in)
    fig = Figure(figsize=(width_in, height_in))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, total)
    ax.set_ylim(-n_qubits + 0.3, 0.9 if title else 0.7)
    ax.axis("off")
    y = lambda k: -k  # noqa: E731  (wire 0 on top)
    for k in range(n_qubits):
        ax.plot([0.45, total - 0.1], [y(k), y(k)], color="black", lw=0.8, zorder=0)
        ax.text(0.4, y(k), f"{k}", ha="right", va="center", fontsize=9)
    box = dict(boxstyle="round,pad=0.02,rounding_size=0.05", fc="#dbe9f6", ec="#1f4e79", lw=0.8)

    def gate_box(xc: float, yc: float, label: str) -> None:
        w = char * len(label) + 0.15
        ax.add_patch(FancyBboxPatch((xc - w / 2, yc - 0.2), w, 0.4, zorder=2, **box))
        ax.text(xc, yc, label, ha="center", va="center", fontsize=7, zorder=3, family="monospace")

    for xc, col in zip(xs, columns):
        for op in col:
            control, target = _labels(op, flat, decimals)
            if len(op.wires) == 1:
                gate_box(xc, y(op.wires[0]), target)
                continue
            c, t = op.wires
            ax.plot([xc, xc], [y(c), y(t)], color="black", lw=0.9, zorder=1)
            ax.add_patch(Circle((xc, y(c)), 0.07, color="black", zorder=3))
            if op.gate == "CNOT":
                ax.add_patch(Circle((xc, y(t)), 0.15, fc="white", ec="black", lw=0.9, zorder=2))
                ax.plot([xc - 0.15, xc + 0.15], [y(t), y(t)], color="black", lw=0.9, zorder=3)
                ax.plot([xc, xc], [y(t) - 0.15, y(t) + 0.15], color="black", lw=0.9, zorder=3)
            elif op.gate == "CZ":
                ax.add_patch(Circle((xc, y(t)), 0.07, color="black", zorder=3))
            else:
                gate_box(xc, y(t), target)
    if title:
        ax.text(total / 2, 0.55, title, ha="center", va="center", fontsize=9)
    fig.savefig(path, dpi=dpi)


def draw_qnn(qnn: QNN, path: str | Path | None = None, decimals: int = 2, *, max_width: int | None = None) -> str:
    """The text drawing of ``qnn`` with its current angles; with ``path``, also a figure.

    What :meth:`qtrain.QNN.draw` returns.
    """
    ops, angles = qnn._ops, qnn.weights
    if path is not None:
        draw_figure(ops, angles, qnn.n_qubits, path, decimals=decimals,
                    title=f"{qnn.ansatz.name}, N = {qnn.n_qubits}, L = {qnn.depth}")
    return draw_text(ops, angles, qnn.n_qubits, decimals=decimals, max_width=max_width)
