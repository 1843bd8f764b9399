"""Small compiled kernels for qtrain's circuits on the CPU, with the pure-PyTorch
simulator as the fallback.

The fused-block simulator (:mod:`qtrain.circuits.fast`) spends its time in library calls
(at small N) and in passes over memory (at large N: six GEMM windows per layer, each
reading and writing the whole state). Two kernels avoid both (see the comments at the top
of each source):

- ``native/_ryring.c``: ``"ry-cnot-ring"`` and ``"ry-cnot-chain"``, N >= 8. Each layer is two
  cache-resident passes, rotations as vectorised butterflies and the CNOT chain as one
  permuted copy; the adjoint backward runs in the same passes.
- ``native/_u3ring.c``: ``"u3-cu3-ring"`` for 8 <= N <= :data:`U3_MAX_QUBITS`, where the complex
  state fits in cache as one block. The U3 / CU3 matrices are built and differentiated by
  PyTorch; the kernel applies them and returns their gradients.

They are built, cached and loaded by :mod:`qtrain.native` (the system's C compiler, on
first use; ``QTRAIN_KERNEL=0`` turns them off). Without a compiler, or if the build
fails, a warning says why once and :func:`available` returns ``False``: every circuit
then runs on the PyTorch path, which gives the same values (tests check the two against
each other and against the reference simulator).

>>> import torch
>>> from qtrain.circuits import QNN
>>> qnn = QNN(10, depth=3, ansatz="ry-cnot-ring", seed=0)
>>> p = qnn().detach()   # the kernel when it is available, else the PyTorch path
>>> round(float(p.sum()), 5)
1.0
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

import torch
from torch import Tensor

from .. import native
from ..native import available
from .ansatze import Op

__all__ = ["MIN_QUBITS", "U3_MAX_QUBITS", "available", "kernel_probabilities", "match", "match_layers",
           "match_u3_layers", "runs"]

MIN_QUBITS = 8
"""Smallest circuit the kernel takes (below it the PyTorch path is used; both are fast)."""

_LOW_BITS = {torch.float32: 15, torch.float64: 14}  # block: 128 KiB of amplitudes (x2 in the backward)
U3_MAX_QUBITS = {torch.float32: 14, torch.float64: 14}
"""Largest u3-cu3-ring circuit the kernel takes: its state is one cache-resident block
(at N = 14, psi and lambda together: 256 KiB in complex64, 512 KiB in complex128); larger
ones take the PyTorch path."""


def match_layers(ops: list[Op], n_qubits: int) -> tuple[list[list[int]], bool] | None:
    """``(angle index per layer and wire, ring)`` when ``ops`` is layers of "RY on wires
    0..N-1 in order, then CNOT(k, k + 1) for k = 0..N-2, then CNOT(N-1, 0) (ring) or not
    (chain)", the same form in every layer; ``None`` otherwise.

    >>> from qtrain.circuits import get_ansatz
    >>> layers, ring = match_layers(get_ansatz("ry-cnot-ring").operations(3, 2), 3)
    >>> layers, ring
    ([[0, 1, 2], [3, 4, 5]], True)
    >>> match_layers(get_ansatz("u3-cu3-ring").operations(3, 2), 3) is None
    True
    """
    n = n_qubits
    if n < 2 or not ops:
        return None
    chain = [("CNOT", (k, k + 1)) for k in range(n - 1)]
    for ring in (True, False):
        width = n + len(chain) + ring
        if len(ops) % width:
            continue
        gates = chain + ([("CNOT", (n - 1, 0))] if ring else [])
        layers = []
        for lo in range(0, len(ops), width):
            rot, fixed = ops[lo : lo + n], ops[lo + n : lo + width]
            if any(op.gate != "RY" or op.wires != (k,) or len(op.params) != 1 for k, op in enumerate(rot)):
                break
            if any((op.gate, op.wires) != g or op.params for op, g in zip(fixed, gates)):
                break
            layers.append([op.params[0] for op in rot])
        else:
            return layers, ring
    return None


def match_u3_layers(ops: list[Op], n_qubits: int) -> tuple[list, list] | None:
    """``(U3 angle indices, CU3 angle indices)``, each ``(L, N, 3)``, when ``ops`` is layers
    of "U3 on wires 0..N-1 in order, then CU3(k, (k + 1) mod N) for k = 0..N-1"
    (``"u3-cu3-ring"``); ``None`` otherwise.

    >>> from qtrain.circuits import get_ansatz
    >>> u, c = match_u3_layers(get_ansatz("u3-cu3-ring").operations(3, 1), 3)
    >>> u[0][1], c[0][2]
    ([3, 4, 5], [15, 16, 17])
    """
    n = n_qubits
    if n < 2 or not ops or len(ops) % (2 * n):
        return None
    us, cs = [], []
    for lo in range(0, len(ops), 2 * n):
        rot, ctrl = ops[lo : lo + n], ops[lo + n : lo + 2 * n]
        if any(op.gate != "U3" or op.wires != (k,) or len(op.params) != 3 for k, op in enumerate(rot)):
            return None
        if any(op.gate != "CU3" or op.wires != (k, (k + 1) % n) or len(op.params) != 3 for k, op in enumerate(ctrl)):
            return None
        us.append([list(op.params) for op in rot])
        cs.append([list(op.params) for op in ctrl])
    return us, cs


def match(ops: list[Op], n_qubits: int) -> tuple | None:
    """What a kernel can run of ``ops``: ``("ry", (L, N) indices, ring)`` or ``("u3", U3
    indices, CU3 indices)`` as long tensors, or ``None``."""
    if n_qubits < MIN_QUBITS:
        return None
    ry = match_layers(ops, n_qubits)
    if ry is not None:
        return "ry", torch.tensor(ry[0], dtype=torch.long), ry[1]
    u3 = match_u3_layers(ops, n_qubits)
    if u3 is not None:
        return "u3", torch.tensor(u3[0], dtype=torch.long), torch.tensor(u3[1], dtype=torch.long)
    return None


def runs(matched: tuple | None, n_qubits: int, dtype: torch.dtype, device=None) -> bool:
    """True when a kernel runs the :func:`match` result at this size, dtype and device."""
    if matched is None or dtype not in _LOW_BITS or torch.device(device if device is not None else "cpu").type != "cpu":
        return False
    if matched[0] == "u3" and n_qubits > U3_MAX_QUBITS[dtype]:
        return False
    return available(dtype, matched[0])


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _first_derivatives_only() -> None:
    if torch.is_grad_enabled():
        raise RuntimeError("the compiled circuit kernel's backward gives first derivatives only; build the QNN "
                           "with method='autograd' for higher-order derivatives")


def _keep(ctx, psi: Tensor, run) -> None:
    """Keep the forward's final state for the backward, and how to make it again: the
    backward un-computes it in place, so a second backward of a retained graph re-runs."""
    ctx.psi, ctx.rerun = psi, run
    ctx.lock = threading.Lock()  # two threads' backwards of one retained graph must not share psi


@contextlib.contextmanager
def _final_state(ctx):
    """The kept final state (re-run when an earlier backward used it up), for one backward."""
    _first_derivatives_only()
    with ctx.lock:
        psi = ctx.psi if ctx.psi is not None else ctx.rerun()[0]
        ctx.psi = None
        yield psi


def _check(code: int) -> None:
    native.check(code, "circuit", ": N or the block size too small")


class _KernelProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, angles: Tensor, n: int, ring: bool, lib: ctypes.CDLL) -> Tensor:
        theta = angles.detach().to(torch.float64).contiguous()
        dtype = angles.dtype
        low = _LOW_BITS[dtype]
        # one block (N <= low) is one thread's work: a thread team for it would only leave its
        # threads spinning beside torch's afterwards (measured: a slower training step)
        args = (n, theta.shape[0], int(ring), low, torch.get_num_threads() if n > low else 1)

        def run() -> tuple[Tensor, Tensor]:  # (psi, probs); the tensors are held while C writes them
            psi, probs = torch.empty(2**n, dtype=dtype), torch.empty(2**n, dtype=dtype)
            _check(lib.qt_forward(*args, _ptr(theta), _ptr(psi), _ptr(probs)))
            return psi, probs

        psi, probs = run()
        _keep(ctx, psi, run)
        ctx.args, ctx.lib, ctx.theta = args, lib, theta
        return probs

    @staticmethod
    def backward(ctx, grad_p: Tensor):
        with _final_state(ctx) as psi:
            grad_p = grad_p.to(psi.dtype).contiguous()
            lam = torch.empty_like(psi)
            grad = torch.empty_like(ctx.theta)
            _check(ctx.lib.qt_backward(*ctx.args, _ptr(ctx.theta), _ptr(psi), _ptr(grad_p), _ptr(lam), _ptr(grad)))
        return grad.to(grad_p.dtype), None, None, None


class _KernelU3Probs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, us: Tensor, cs: Tensor, n: int, lib: ctypes.CDLL) -> Tensor:
        real = torch.float64 if us.dtype == torch.complex128 else torch.float32
        u = torch.view_as_real(us.detach().resolve_conj()).to(torch.float64).contiguous()  # (L, N, 2, 2, 2)
        c = torch.view_as_real(cs.detach().resolve_conj()).to(torch.float64).contiguous()

        def run() -> tuple[Tensor, Tensor]:  # (psi, probs); the tensors are held while C writes them
            psi, probs = torch.empty(2 * 2**n, dtype=real), torch.empty(2**n, dtype=real)
            _check(lib.qt_u3_forward(n, u.shape[0], _ptr(u), _ptr(c), _ptr(psi), _ptr(probs)))
            return psi, probs

        psi, probs = run()
        _keep(ctx, psi, run)
        ctx.n, ctx.lib, ctx.u, ctx.c, ctx.real, ctx.cdtype = n, lib, u, c, real, us.dtype
        return probs

    @staticmethod
    def backward(ctx, grad_p: Tensor):
        with _final_state(ctx) as psi:
            grad_p = grad_p.to(ctx.real).contiguous()
            lam = torch.empty_like(psi)
            gu, gc = torch.empty_like(ctx.u), torch.empty_like(ctx.c)
            _check(ctx.lib.qt_u3_backward(ctx.n, ctx.u.shape[0], _ptr(ctx.u), _ptr(ctx.c), _ptr(psi), _ptr(grad_p),
                                          _ptr(lam), _ptr(gu), _ptr(gc)))
        return torch.view_as_complex(gu).to(ctx.cdtype), torch.view_as_complex(gc).to(ctx.cdtype), None, None


def kernel_probabilities(matched: tuple, n_qubits: int, weights: Tensor) -> Tensor:
    """The ``2^N`` probabilities of a circuit :func:`match` recognised, at angles
    ``weights`` (flattened), differentiable in them.

    Raises:
        RuntimeError: no kernel runs it here (:func:`runs`), with the reason.
    """
    if not runs(matched, n_qubits, weights.dtype, weights.device):
        if weights.dtype in _LOW_BITS and not available(weights.dtype, matched[0]):
            raise RuntimeError("the compiled circuit kernel is unavailable" + (f": {native.why()}" if native.why() else ""))
        raise RuntimeError(f"no compiled circuit kernel runs this circuit here (N = {n_qubits}, {weights.dtype}, "
                           f"{weights.device})")
    flat = weights.reshape(-1)
    if matched[0] == "ry":
        # (L, N) angles gathered under autograd, so the gradient scatters back
        return _KernelProbs.apply(flat[matched[1]], n_qubits, matched[2], native.library(weights.dtype, "ry"))
    from .fast import _u3  # the matrices (and their backward to the angles) stay in PyTorch

    return _KernelU3Probs.apply(_u3(flat[matched[1]]), _u3(flat[matched[2]]), n_qubits, native.library(weights.dtype, "u3"))
