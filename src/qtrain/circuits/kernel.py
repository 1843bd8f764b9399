"""A small compiled kernel for the real RY + CNOT circuits (``"ry-cnot-ring"``,
``"ry-cnot-chain"``) on the CPU, with the pure-PyTorch simulator as the fallback.

The fused-block simulator (:mod:`qtrain.circuits.fast`) spends its time in library calls
(at small N) and in passes over memory (at large N: six GEMM windows per layer, each
reading and writing the whole state). ``_ryring.c`` instead applies each layer in two
cache-resident passes, rotations as vectorised butterflies and the CNOT chain as one
permuted copy, and computes the adjoint backward in the same passes (see the comments at
its top). It is compiled on first use with the system's C compiler and cached:

- compiler: ``$CC`` or ``cc`` (GCC: the code uses GCC's vector extensions), flags
  ``-O3 -march=native -fopenmp``;
- cache: ``$QTRAIN_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/qtrain`` (``~/.cache/qtrain``),
  one library per source, compiler and CPU (when the cache cannot be written, a private
  temporary folder for the process);
- ``QTRAIN_KERNEL=0`` turns it off. Without a compiler, or if the build fails, a warning
  says why once and :func:`available` returns ``False``: every circuit then runs on the
  PyTorch path, which gives the same values (tests check the two against each other and
  against the reference simulator).

>>> import torch
>>> from qtrain.circuits import QNN
>>> qnn = QNN(10, depth=3, ansatz="ry-cnot-ring", seed=0)
>>> p = qnn().detach()   # the kernel when it is available, else the PyTorch path
>>> round(float(p.sum()), 5)
1.0
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .ansatze import Op

__all__ = ["MIN_QUBITS", "available", "kernel_probabilities", "match_layers"]

MIN_QUBITS = 8
"""Smallest circuit the kernel takes (below it the PyTorch path is used; both are fast)."""

_SOURCE = Path(__file__).with_name("_ryring.c")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-strict-aliasing", "-shared", "-fPIC"]
_LOW_BITS = {torch.float32: 15, torch.float64: 14}  # block: 128 KiB of amplitudes (x2 in the backward)
_lock = threading.Lock()
_libs: dict[torch.dtype, ctypes.CDLL | None] = {}
_why: list[str] = []


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


def _cache_dir() -> Path:
    if os.environ.get("QTRAIN_KERNEL_CACHE"):
        return Path(os.environ["QTRAIN_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qtrain"


def _cpu_id() -> str:
    # -march=native code only runs on CPUs with the same features: key the cache on them
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(cc: str, flags: list[str], dest: Path) -> None:
    """Build into a temporary folder beside ``dest``, then move the library into place
    (atomic: processes building at once leave one complete file)."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        out = Path(tmp) / dest.name
        res = subprocess.run([cc, *flags, str(_SOURCE), "-o", str(out), "-lm"], capture_output=True, text=True, check=False)
        if res.returncode:
            raise RuntimeError(f"`{cc}` failed to build {_SOURCE.name}:\n{res.stderr.strip()[-2000:]}")
        os.replace(out, dest)


def _build(double: bool) -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (set $CC, or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    flags = [*_FLAGS, f"-DQT_DOUBLE={int(double)}"]
    key = hashlib.sha256("\0".join([_SOURCE.read_text(), cc, version, *flags, _cpu_id()]).encode()).hexdigest()[:16]
    name = f"ryring-{key}-{'f64' if double else 'f32'}.so"
    path = _cache_dir() / name
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _compile(cc, flags, path)
        except OSError:
            # the cache cannot be written (a read-only home): build for this process alone, in
            # a fresh private folder (mkdtemp: mode 0700), never in a shared, predictable one
            # where another user could plant a library first
            private = tempfile.mkdtemp(prefix="qtrain-kernel-")
            atexit.register(shutil.rmtree, private, True)
            path = Path(private) / name
            _compile(cc, flags, path)
    lib = ctypes.CDLL(str(path))
    ptr, i = ctypes.c_void_p, ctypes.c_int
    lib.qt_forward.argtypes = [i, i, i, i, i, ptr, ptr, ptr]
    lib.qt_backward.argtypes = [i, i, i, i, i, ptr, ptr, ptr, ptr, ptr]
    lib.qt_forward.restype = lib.qt_backward.restype = i
    return lib


def _library(dtype: torch.dtype) -> ctypes.CDLL | None:
    if dtype not in _LOW_BITS or os.environ.get("QTRAIN_KERNEL", "1") == "0":
        return None
    with _lock:
        if dtype in _libs:
            return _libs[dtype]
        try:
            _libs[dtype] = _build(dtype == torch.float64)
            return _libs[dtype]
        except (OSError, RuntimeError) as err:
            _libs[dtype] = None
            first = not _why
            if first:
                _why.append(str(err))
    if first:  # warned outside the handler: with warnings as errors, the fallback still holds next time
        warnings.warn(f"qtrain's compiled circuit kernel is unavailable, using the PyTorch path: {_why[0]}",
                      RuntimeWarning, stacklevel=3)
    return None


def available(dtype: torch.dtype = torch.float32) -> bool:
    """True when the kernel is built (or builds now) for ``dtype`` (float32 / float64)."""
    return _library(dtype) is not None


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _check(code: int) -> None:
    if code == 1:
        raise MemoryError("the circuit kernel could not allocate its scratch buffers")
    if code:
        raise ValueError(f"the circuit kernel refused its arguments (code {code}): N or the block size too small")


class _KernelProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, angles: Tensor, n: int, ring: bool, lib: ctypes.CDLL) -> Tensor:
        theta = angles.detach().to(torch.float64).contiguous()
        dtype = angles.dtype
        psi = torch.empty(2**n, dtype=dtype)
        probs = torch.empty(2**n, dtype=dtype)
        low = _LOW_BITS[dtype]
        # one block (N <= low) is one thread's work: a thread team for it would only leave its
        # threads spinning beside torch's afterwards (measured: a slower training step)
        args = (n, theta.shape[0], int(ring), low, torch.get_num_threads() if n > low else 1)
        _check(lib.qt_forward(*args, _ptr(theta), _ptr(psi), _ptr(probs)))
        ctx.args, ctx.lib, ctx.theta, ctx.psi, ctx.dtype = args, lib, theta, psi, dtype
        ctx.lock = threading.Lock()  # two threads' backwards of one retained graph must not share psi
        return probs

    @staticmethod
    def backward(ctx, grad_p: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError("the compiled circuit kernel's backward gives first derivatives only; build the QNN "
                               "with method='autograd' for higher-order derivatives")
        with ctx.lock:
            return _KernelProbs._backward(ctx, grad_p)

    @staticmethod
    def _backward(ctx, grad_p: Tensor):
        psi = ctx.psi
        if psi is None:  # an earlier backward (retain_graph) un-computed it: run the forward again
            psi = torch.empty(2 ** ctx.args[0], dtype=ctx.dtype)
            probs = torch.empty_like(psi)  # (held: ctypes takes a raw pointer)
            _check(ctx.lib.qt_forward(*ctx.args, _ptr(ctx.theta), _ptr(psi), _ptr(probs)))
        ctx.psi = None
        grad_p = grad_p.to(psi.dtype).contiguous()
        lam = torch.empty_like(psi)
        grad = torch.empty_like(ctx.theta)
        _check(ctx.lib.qt_backward(*ctx.args, _ptr(ctx.theta), _ptr(psi), _ptr(grad_p), _ptr(lam), _ptr(grad)))
        return grad.to(grad_p.dtype), None, None, None


def kernel_probabilities(layers: Tensor, ring: bool, n_qubits: int, weights: Tensor) -> Tensor:
    """The ``2^N`` probabilities of the matched circuit (:func:`match_layers`) at angles
    ``weights`` (flattened), differentiable in them.

    Args:
        layers: ``(L, N)`` long tensor, the angle index of each layer's RY on each wire.
        ring: the layers end with CNOT(N-1, 0).
        n_qubits: N (at least :data:`MIN_QUBITS`).
        weights: CPU float32 / float64 angles.

    Raises:
        RuntimeError: the kernel is unavailable, or the inputs are not what it takes.
    """
    lib = _library(weights.dtype)
    if lib is None:
        raise RuntimeError(f"the compiled circuit kernel is unavailable for {weights.dtype}"
                           + (f": {_why[0]}" if _why else ""))
    if weights.device.type != "cpu" or n_qubits < MIN_QUBITS:
        raise RuntimeError(f"the kernel runs on the CPU with N >= {MIN_QUBITS}, got {weights.device} and N = {n_qubits}")
    angles = weights.reshape(-1)[layers]  # (L, N): gathered under autograd, so the gradient scatters back
    return _KernelProbs.apply(angles, n_qubits, ring, lib)
