"""The QNN: a parameterised circuit as an ``nn.Module`` returning Born probabilities."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..resources import check_fits
from . import get_ansatz, kernel
from .ansatze import Ansatz, Op
from .fast import FastProgram, compile_fast, fast_probabilities, supports_fast
from .gates import GATES
from .gradients import SPSA, Executor, ParameterShift, executions_per_step
from .measure import exact_probs
from .qasm import to_qasm
from .statevector import Program, compile_ops, run, validate_op

DIFF_METHODS = ("backprop", "parameter-shift", "spsa")

__all__ = ["METHODS", "QNN", "estimate_circuit_bytes", "resolve_dtype", "simulation_method"]

METHODS = ("adjoint", "autograd")
"""Simulation methods: ``"adjoint"`` (fused blocks, hand-written O(2^N)-memory backward;
the default) and ``"autograd"`` (the simple reference simulator, every state kept)."""

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``torch.float32`` -> ``torch.float32`` (float32 and float64 only)."""
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
    elif dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"`dtype` must be one of {sorted(_DTYPES)}, got {dtype!r}")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def simulation_method(ops: list[Op], n_qubits: int, dtype: torch.dtype, device=None, method: str = "adjoint") -> str:
    """What a :class:`QNN` built with ``method`` on ``device`` runs: ``"kernel"`` (the
    compiled CPU kernel, :mod:`qtrain.circuits.kernel`), ``"adjoint"`` or ``"autograd"``.

    >>> from qtrain.circuits import get_ansatz
    >>> simulation_method(get_ansatz("ry-rz-cz").operations(10, 2), 10, torch.float32)
    'adjoint'
    """
    if method == "adjoint" and not supports_fast(ops):
        return "autograd"
    if method == "adjoint" and kernel.runs(kernel.match(ops, n_qubits), n_qubits, dtype, device):
        return "kernel"
    return method


def estimate_circuit_bytes(ops: list[Op], n_qubits: int, dtype: torch.dtype, *, method: str = "autograd") -> float:
    """Peak bytes of one probabilities forward+backward, from the op list, before compiling.

    ``"autograd"``: the states autograd keeps (one per single-qubit gate, 1.5 per
    controlled rotation, one per diagonal) plus working copies and the permutation
    indices. ``"adjoint"``: a fixed number of state vectors (the kept final state, the
    probabilities and their gradient, two stacked ``(2, 2^N)`` buffers, transient
    copies inside a gradient contraction) plus the shared int32 permutation indices.
    ``"kernel"``: five (psi, the probabilities, their gradient, lambda and one for the
    loss's temporaries; see :func:`simulation_method`). All include a 1.3x margin for the
    allocator (calibrated against measured peak RSS; see ``benchmarks/RESULTS.md``).
    """
    real = all(GATES[op.gate].real for op in ops)
    amp = torch.empty((), dtype=dtype).element_size() * (1 if real else 2)
    elem = torch.empty((), dtype=dtype).element_size()
    dim = 2**n_qubits
    if method == "kernel":
        return 1.3 * 5 * amp * dim
    if method == "adjoint":
        perms = len({tuple(op.wires for op in ops if GATES[op.gate].kind == "permutation")} - {()})
        states = 8.0  # psi kept, 2x2 workspace, 2 transient (gradient contraction / controlled half)
        return 1.3 * (states * amp * dim + 3 * elem * dim + perms * 8 * dim + 8 * dim)
    states = 6.0
    for op in ops:
        spec = GATES[op.gate]
        if spec.n_wires == 1 or spec.kind == "diagonal":
            states += 1
        elif spec.kind == "unitary":
            states += 1.5
    return 1.3 * (states * amp * dim + 16 * dim)


class QNN(nn.Module):
    """A parameterised circuit on ``n_qubits`` wires, started in ``|0...0>``.

    Its one parameter ``weights`` holds every angle in the ansatz's documented layout
    (see :mod:`qtrain.circuits.ansatze`). Calling the module returns all ``2^N`` Born
    probabilities ``p_i = |<i|psi(weights)>|^2``, exactly, differentiably:

    >>> import torch, qtrain
    >>> qnn = qtrain.QNN(3, depth=2, ansatz="ry-cnot-ring", seed=0)
    >>> qnn.weights.shape
    torch.Size([2, 3])
    >>> p = qnn().detach()
    >>> p.shape, round(float(p.sum()), 6)
    (torch.Size([8]), 1.0)
    >>> theta = torch.zeros(2, 3)      # angles supplied from outside
    >>> torch.func.functional_call(qnn, {"weights": theta}, ())
    tensor([1., 0., 0., 0., 0., 0., 0., 0.])

    Args:
        n_qubits: the number of wires N (>= 1). Wire 0 is the most significant bit of
            the basis index.
        depth: the number of ansatz blocks L (>= 1).
        ansatz: a registered name (``"u3-cu3-ring"``, ``"ry-cnot-ring"``,
            ``"ry-cnot-chain"``, ``"ry-rz-cz"``) or an :class:`~qtrain.circuits.Ansatz`.

    Keyword args:
        dtype: ``torch.float32`` (default) or ``torch.float64``; complex ansaetze use the
            matching complex dtype internally.
        device: where the angles live.
        seed: seeds the angle initialisation (uniform in [-pi, pi]); ignored when
            ``generator`` is given. Neither touches the global RNG.
        generator: a CPU ``torch.Generator`` to draw the initial angles from.
        check_memory: refuse (``MemoryError``) a circuit whose simulation will not fit.
        method: ``"adjoint"`` (default: fused gate blocks and a hand-written backward
            that un-computes the states, O(2^N) memory; on the CPU, ``"ry-cnot-ring"`` and
            ``"ry-cnot-chain"`` with N >= 8, and ``"u3-cu3-ring"`` with 8 <= N <= 14, run
            through the compiled kernels of :mod:`qtrain.circuits.kernel` when they are built) or ``"autograd"`` (the simple
            reference simulator; keeps every intermediate state). Both give the same
            probabilities and gradients to round-off; only ``"autograd"`` differentiates
            twice (``create_graph=True``).
        shots: ``None`` (exact) or the number of measurement shots each execution is
            estimated from (multinomial; seeded by ``sample_seed``; the sampler's state is
            the saved buffer ``sampler_state``, so resumed training draws the same stream).
        diff_method: how gradients are estimated, each with its cost in circuit executions
            per training step: ``"backprop"`` (default; 1 execution: the exact simulator
            gradient; with shots a simulation-only *surrogate*: sampled forward, exact
            backward), ``"parameter-shift"`` (what hardware runs: 1 + 2 executions per
            one-term angle + 4 per controlled-rotation angle, each with ``shots``) or
            ``"spsa"`` (3 executions: one random +-1 direction, step ``spsa_epsilon``).
        depolarizing: global depolarizing probability after each block.
        readout_error: bit-flip probability at readout (one number, or one per wire).

    Calling the module returns what the configured device reports (noise, then shots);
    :meth:`probabilities` always returns the exact, noiseless distribution.

    Raises:
        ValueError: unknown ansatz (the message lists the valid ones), ``n_qubits`` or
            ``depth`` < 1, an unsupported dtype, an unknown ``method``.
        MemoryError: the simulation's estimated memory exceeds what the device has.
    """

    def __init__(
        self,
        n_qubits: int,
        depth: int,
        ansatz: str | Ansatz = "u3-cu3-ring",
        *,
        dtype: str | torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        check_memory: bool = True,
        method: str = "adjoint",
        shots: int | None = None,
        diff_method: str = "backprop",
        depolarizing: float = 0.0,
        readout_error: float | list[float] = 0.0,
        spsa_epsilon: float = 0.1,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"Invalid `method` {method!r}. Must be one of {list(METHODS)}.")
        self.n_qubits = _check_int("n_qubits", n_qubits, 1)
        self.depth = _check_int("depth", depth, 1)
        self.ansatz = get_ansatz(ansatz)
        dtype = resolve_dtype(dtype)
        shape = tuple(self.ansatz.weight_shape(n_qubits, depth))
        n_weights = 1
        for s in shape:
            n_weights *= s
        ops = self.ansatz.operations(n_qubits, depth)
        for op in ops:  # fail at construction, whatever the method
            validate_op(op, n_qubits, n_weights)
        if method == "adjoint" and not supports_fast(ops):
            method = "autograd"  # a gate the fused path cannot apply: the reference handles all
        self.method = method
        if check_memory:
            check_fits(
                estimate_circuit_bytes(ops, n_qubits, dtype, method=simulation_method(ops, n_qubits, dtype, device, method)),
                device,
                f"simulating a {n_qubits}-qubit, depth-{depth} {self.ansatz.name!r} circuit",
                "Use fewer qubits (a smaller target) or a shallower circuit.",
            )
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        weights = torch.empty(shape, dtype=dtype)
        with torch.no_grad():
            self.ansatz.init_weights(weights, generator)
        self.weights = nn.Parameter(weights.to(device))
        self._ops, self._n_weights = ops, n_weights
        self._real = all(GATES[op.gate].real for op in ops)
        self._programs: dict[torch.device, Program] = {}  # the reference, compiled on first use
        self._fast: FastProgram | None = compile_fast(ops, n_qubits, n_weights) if method == "adjoint" else None
        if diff_method not in DIFF_METHODS:
            raise ValueError(f"Invalid `diff_method` {diff_method!r}. Must be one of {list(DIFF_METHODS)}.")
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
            raise ValueError(f"`shots` must be None or a positive int, got {shots!r}")
        if not 0 <= depolarizing <= 1:
            raise ValueError(f"`depolarizing` must be in [0, 1], got {depolarizing}")
        errors = list(readout_error) if isinstance(readout_error, (list, tuple)) else [readout_error]
        if len(errors) not in (1, n_qubits) or not all(0 <= e <= 1 for e in errors):
            raise ValueError(f"`readout_error` must be one probability or {n_qubits} (one per wire), got {readout_error!r}")
        if not spsa_epsilon > 0:
            raise ValueError(f"`spsa_epsilon` must be positive, got {spsa_epsilon}")
        self.shots, self.diff_method, self.spsa_epsilon = shots, diff_method, spsa_epsilon
        self.depolarizing, self.readout_error = depolarizing, readout_error
        self._device_like = shots is not None or diff_method != "backprop" or depolarizing or any(errors)
        if self._device_like:
            self._sampler = torch.Generator().manual_seed(sample_seed)
            self.register_buffer("sampler_state", self._sampler.get_state())
            self._executor = Executor(ops, n_qubits, n_weights, depth, shots=shots, depolarizing=depolarizing,
                                      readout_error=readout_error, generator=self._sampler)
            self._executor.on_draw = self._save_sampler
            if diff_method == "parameter-shift":
                self._executor.shift_terms()  # a gate without a shift rule fails here, not mid-training

    @property
    def real(self) -> bool:
        """True when the amplitudes stay real (the faster real-dtype path is used)."""
        return self._real

    def _program_on(self, device: torch.device) -> Program:
        if device not in self._programs:
            cpu = torch.device("cpu")
            if cpu not in self._programs:
                self._programs[cpu] = compile_ops(self._ops, self.n_qubits, self._n_weights)
            self._programs[device] = self._programs[cpu].to(device)
        return self._programs[device]

    def state(self) -> Tensor:
        """The final state vector, ``(2^N,)`` (real dtype when :attr:`real`), from the
        reference simulator (autograd; keeps every intermediate state)."""
        return run(self._program_on(self.weights.device), self.weights)

    def probabilities(self) -> Tensor:
        """All ``2^N`` exact Born probabilities, ``(2^N,)``, in ``weights.dtype``."""
        if self._fast is not None:
            return fast_probabilities(self._fast.to(self.weights.device), self.weights)
        return exact_probs(self.state())

    def forward(self) -> Tensor:
        """What the configured device reports: the exact probabilities, after noise, then
        estimated from ``shots`` (differentiated as ``diff_method`` says). Without shots
        and noise, the same as :meth:`probabilities`."""
        if not self._device_like:
            return self.probabilities()
        saved = self.sampler_state.cpu()
        if not torch.equal(saved, self._sampler.get_state()):  # restored from a checkpoint
            self._sampler.set_state(saved)
        if self.diff_method == "parameter-shift":
            return ParameterShift.apply(self.weights, self._executor)
        if self.diff_method == "spsa":
            return SPSA.apply(self.weights, self._executor, self.spsa_epsilon)
        probs = self._executor.noisy(self.probabilities())
        if self.shots is None:
            return probs
        # the surrogate: sampled values forward, the exact gradient backward
        return probs + (self._executor.sample(probs) - probs).detach()

    def _save_sampler(self) -> None:
        # every draw (forward or backward) is recorded, so a checkpoint resumes the stream exactly
        self.sampler_state.copy_(self._sampler.get_state())

    def executions_per_step(self) -> int:
        """Circuit executions one training step costs with this ``diff_method``."""
        return executions_per_step(self._executor, self.diff_method) if self._device_like else 1

    def to_qasm(self, path: str | None = None) -> str:
        """The circuit with its current angles as OpenQASM 3 (and written to ``path``)."""
        text = to_qasm(self._ops, self.weights, self.n_qubits,
                       comment=f"qtrain {self.ansatz.name} n_qubits={self.n_qubits} depth={self.depth}")
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    def draw(self, path: str | None = None, decimals: int = 2, *, max_width: int | None = None) -> str:
        """A text drawing of the circuit with its current angles (rounded to ``decimals``);
        with ``path``, also a matplotlib figure written there (needs matplotlib).
        ``max_width`` wraps long circuits. See :mod:`qtrain.circuits.draw`.

        >>> import torch, qtrain
        >>> qnn = qtrain.QNN(2, depth=1, ansatz="ry-cnot-chain")
        >>> with torch.no_grad():
        ...     _ = qnn.weights.copy_(torch.tensor([[0.5, -1.0]]))
        >>> print(qnn.draw())
        0: ─RY(0.50)──╭●─
        1: ─RY(-1.00)─╰X─
        """
        from .draw import draw_qnn

        return draw_qnn(self, path, decimals, max_width=max_width)

    def extra_repr(self) -> str:
        return (
            f"n_qubits={self.n_qubits}, depth={self.depth}, ansatz={self.ansatz.name!r}, "
            f"n_angles={self.weights.numel()}, real={self.real}, method={self.method!r}"
        )
