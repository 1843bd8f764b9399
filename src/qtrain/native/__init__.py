"""qtrain's small compiled kernels: their C sources, and how they are built, cached and
loaded. What each computes is documented where it is used
(:mod:`qtrain.circuits.kernel` for the circuits, :mod:`qtrain.generator` for the
mapping MLP) and at the top of each source:

- ``_ryring.c``: ``"ry-cnot-ring"`` / ``"ry-cnot-chain"`` probabilities and their adjoint backward;
- ``_u3ring.c``: ``"u3-cu3-ring"`` (one cache-resident block);
- ``_mlp.c``: a generator's mapping MLP over all its rows, forward and backward.

Each is compiled on first use with the system's C compiler and cached:

- compiler: ``$CC`` or ``cc`` (GCC: the code uses GCC's vector extensions), flags
  ``-O3 -march=native -fopenmp``;
- cache: ``$QTRAIN_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/qtrain`` (``~/.cache/qtrain``),
  one library per source, dtype, compiler and CPU (when the cache cannot be written, a
  private temporary folder for the process);
- ``QTRAIN_KERNEL=0`` turns them all off. Without a compiler, or if a build fails, a
  warning says why once and :func:`available` returns ``False``: everything then runs on
  the PyTorch path, which gives the same values (the tests check one against the other).

>>> import torch
>>> from qtrain import native
>>> isinstance(native.available(torch.float32, "mlp"), bool)
True
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

__all__ = ["KINDS", "available", "check", "library", "why"]

_HERE = Path(__file__).parent
_SOURCES = {"ry": _HERE / "_ryring.c", "u3": _HERE / "_u3ring.c", "mlp": _HERE / "_mlp.c"}
KINDS = tuple(_SOURCES)
"""The kernels, by name."""
_HEADER = _HERE / "_vectors.h"  # included by all
# -Wno-psabi: GCC notes that vector arguments' ABI changed in GCC 4.x; nothing crosses a library boundary
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-strict-aliasing", "-Wno-psabi", "-shared", "-fPIC"]
_DTYPES = (torch.float32, torch.float64)
_lock = threading.Lock()
_libs: dict[tuple[str, torch.dtype], ctypes.CDLL | None] = {}
_why: list[str] = []


def _argtypes(lib: ctypes.CDLL, kind: str) -> None:
    ptr, i, n = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    signatures = {
        "ry": {"qt_forward": [i, i, i, i, i, ptr, ptr, ptr], "qt_backward": [i, i, i, i, i, ptr, ptr, ptr, ptr, ptr]},
        "u3": {"qt_u3_forward": [i, i, ptr, ptr, ptr, ptr], "qt_u3_backward": [i, i, ptr, ptr, ptr, ptr, ptr, ptr, ptr]},
        "mlp": {"qt_mlp_forward": [i, ptr, i, n, i, i, ptr, ptr, ptr, ptr],
                "qt_mlp_backward": [i, ptr, i, n, i, i, ptr, ptr, ptr, ptr, ptr, ptr, ptr]},
    }[kind]
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, i


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


def _compile(cc: str, flags: list[str], source: Path, dest: Path) -> None:
    """Build into a temporary folder beside ``dest``, then move the library into place
    (atomic: processes building at once leave one complete file)."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        out = Path(tmp) / dest.name
        res = subprocess.run([cc, *flags, str(source), "-o", str(out), "-lm"], capture_output=True, text=True, check=False)
        if res.returncode:
            raise RuntimeError(f"`{cc}` failed to build {source.name}:\n{res.stderr.strip()[-2000:]}")
        os.replace(out, dest)


def _build(kind: str, double: bool) -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (set $CC, or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    flags = [*_FLAGS, f"-DQT_DOUBLE={int(double)}"]
    source = _SOURCES[kind]
    text = [source.read_text(), _HEADER.read_text()]
    key = hashlib.sha256("\0".join([*text, cc, version, *flags, _cpu_id()]).encode()).hexdigest()[:16]
    name = f"{source.stem.lstrip('_')}-{key}-{'f64' if double else 'f32'}.so"
    path = _cache_dir() / name
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _compile(cc, flags, source, path)
        except OSError:
            # the cache cannot be written (a read-only home): build for this process alone, in
            # a fresh private folder (mkdtemp: mode 0700), never in a shared, predictable one
            # where another user could plant a library first
            private = tempfile.mkdtemp(prefix="qtrain-kernel-")
            atexit.register(shutil.rmtree, private, True)
            path = Path(private) / name
            _compile(cc, flags, source, path)
    lib = ctypes.CDLL(str(path))
    _argtypes(lib, kind)
    return lib


def library(dtype: torch.dtype, kind: str) -> ctypes.CDLL | None:
    """The loaded kernel ``kind`` (a key of :data:`KINDS`) for ``dtype`` (float32 /
    float64), built now if it is not cached; ``None`` when it is turned off
    (``QTRAIN_KERNEL=0``), the dtype has none, or it cannot be built (warned once)."""
    if kind not in _SOURCES:
        raise ValueError(f"Invalid kernel {kind!r}. Must be one of {list(KINDS)}.")
    if dtype not in _DTYPES or os.environ.get("QTRAIN_KERNEL", "1") == "0":
        return None
    with _lock:
        if (kind, dtype) in _libs:
            return _libs[kind, dtype]
        try:
            _libs[kind, dtype] = _build(kind, dtype == torch.float64)
            return _libs[kind, dtype]
        except (OSError, RuntimeError) as err:
            _libs[kind, dtype] = None
            first = not _why
            if first:
                _why.append(str(err))
    if first:  # warned outside the handler: with warnings as errors, the fallback still holds next time
        warnings.warn(f"qtrain's compiled kernels are unavailable, using the PyTorch path: {_why[0]}",
                      RuntimeWarning, stacklevel=3)
    return None


def available(dtype: torch.dtype = torch.float32, kind: str = "ry") -> bool:
    """True when the kernel ``kind`` is built (or builds now) for ``dtype``."""
    return library(dtype, kind) is not None


def check(code: int, name: str, refused: str = "") -> None:
    """Raise for a kernel's nonzero return code: 1 is a failed allocation, anything else
    refused arguments (``refused`` says which, when known)."""
    if code == 1:
        raise MemoryError(f"the {name} kernel could not allocate its scratch buffers")
    if code:
        raise ValueError(f"the {name} kernel refused its arguments (code {code}){refused}")


def why() -> str | None:
    """Why the kernels could not be built, when one failed."""
    return _why[0] if _why else None
