"""``QTConfig``: everything that defines a Quantum-Train generator, JSON round-trippable."""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, fields

from ._version import __version__
import torch

from .circuits import get_ansatz
from .mapping import ACTIVATIONS

__all__ = ["QTConfig"]

MAPPINGS = ("mlp", "paper", "mps")
GENERATORS = ("qnn", "fixed-random", "uniform", "no-entanglement", "tensor-train", "low-rank", "subspace")
# Defaults per mapping kind: the paper preset is the reference's (4, 20, 4), no activation.
PAPER_HIDDEN = (4, 20, 4)
MLP_HIDDEN = (32, 32)
MLP_ACTIVATION = "gelu"
WEIGHT_SCALES = ("auto", "none", "init")
CENTERINGS = ("auto", "global", "tensor")


@dataclass
class QTConfig:
    """Configuration of a :class:`~qtrain.QuantumTrain` wrapper.

    >>> import qtrain
    >>> cfg = qtrain.QTConfig(depth=4, mapping="paper")
    >>> cfg.resolved_hidden, cfg.resolved_activation
    ((4, 20, 4), 'none')
    >>> qtrain.QTConfig.from_json(cfg.to_json()) == cfg
    True

    Args:
        depth: ansatz blocks L (>= 1). Trainable QNN angles grow as L x (angles per block).
        ansatz: circuit family: ``"u3-cu3-ring"`` (the papers', default),
            ``"ry-cnot-ring"``, ``"ry-cnot-chain"``, ``"ry-rz-cz"``, or a name registered
            with :func:`qtrain.circuits.register_ansatz`.
        n_qubits: circuit width N; ``None`` = ``ceil(log2 M)`` (at least 1, so a model
            with M = 1 weight uses one qubit). A larger N is allowed; a smaller one is an error.
        mapping: ``"mlp"`` (default: a non-linear MLP), ``"paper"`` (the reference preset:
            hidden (4, 20, 4), no activation, mean-centred output; an affine map in disguise)
            or ``"mps"`` (a matrix-product-state mapping of bond ``mps_bond``, each input
            embedded as ``[z, 1 - z]``; :class:`~qtrain.mapping.MPSMapping`).
        mps_bond: bond dimension D of ``mapping="mps"``; its trainable count is
            ``2D + 2D^2 (N - 1) + 2DC`` (:func:`~qtrain.mapping.mps_parameter_count`).
        mapping_hidden: hidden widths of the mapping; ``None`` = (32, 32) for ``"mlp"``,
            (4, 20, 4) for ``"paper"``.
        activation: mapping activation (``"gelu"``, ``"relu"``, ``"silu"``, ``"tanh"``,
            ``"none"``); ``None`` = ``"gelu"`` for ``"mlp"``. ``"paper"`` has none.
        weight_scale: ``"init"`` gives each generated tensor the mean and standard
            deviation of the model's own initial values for it (a fixed, non-trained
            offset and gain, so generated weights start where the model was designed to
            start: BatchNorm scales near 1, conv kernels at their fan-in scale);
            ``"none"`` leaves the mapping output as is (the papers'); ``"auto"`` = ``"init"``
            for ``"mlp"``, ``"none"`` for ``"paper"``.
        centering: how the mapping's outputs are mean-centred. ``"global"``: over all M
            (the papers'); ``"tensor"``: each generated tensor of more than one weight over
            its own weights, so no tensor's mean can drift away as a whole (under global
            centring a small first layer's weights can all go negative together and kill
            every ReLU after it); with ``weight_scale="init"`` each tensor's mean then stays
            the model's initial one, for good (a BatchNorm scale's mean stays 1, a bias
            vector's its initial mean). ``"auto"`` = ``"global"`` for ``"paper"``,
            ``"tensor"`` otherwise. A saved config without this key (written before it
            existed) reads as ``"global"``, what those versions did.
        learnable_transform: also train the transform's (gamma, beta, alpha).
        transform_gamma, transform_beta, transform_alpha: the transform's constants.
        seed: seeds the angle and mapping initialisation (the global RNG is not touched).
        dtype: ``"float32"`` (default) or ``"float64"`` (a ``torch.dtype`` is accepted), for
            the circuit and the mapping; generated values are then cast to each
            parameter's dtype (a float64 layer fed by a float32 generator gets float32
            precision).
        device: where the generator and the model live; ``None`` = the model's device.
        check_memory: refuse configurations whose estimated memory will not fit.
        generator: what produces the probabilities: ``"qnn"`` (the circuit, default) or a
            classical control at the same trainable budget (see :mod:`qtrain.baselines`):
            ``"fixed-random"`` and ``"uniform"`` (a constant vector: only the mapping
            trains), ``"no-entanglement"`` (the same ansatz and angle layout without
            entangling gates), ``"tensor-train"`` and ``"low-rank"`` (parametric Born
            machines sized to the QNN's angle count, or the nearest achievable), and
            ``"subspace"`` (``w = w0 + P z``, no mapping; ``z`` has the whole QT budget:
            QNN angles + mapping). The budget is the QNN this config's ``depth``,
            ``ansatz`` and width would have.
        shots: ``None`` (exact probabilities) or the number of measurement shots every
            generation estimates the probabilities from — training forwards,
            ``generated_state_dict()`` and ``merge_and_unload()`` alike.
        diff_method: ``"backprop"`` (exact simulator gradient; with shots a
            simulation-only surrogate: sampled forward, exact backward),
            ``"parameter-shift"`` (shifted executions, each with ``shots``; what hardware
            runs) or ``"spsa"``. Costs in executions per step: :meth:`QNN.executions_per_step`.
        spsa_epsilon: SPSA's perturbation size.
        depolarizing: global depolarizing probability after each block (exact, on the
            distribution; before sampling).
        readout_error: probability that a wire's bit is read flipped: one number for all
            wires, or a sequence with one per wire (wire 0 first).
        chunk_size: C, weights emitted per basis state. The first ``ceil(M / C)`` basis
            states each give C consecutive weights (the mapping's output width is C), so
            ``N = ceil(log2(ceil(M / C)))``: 1 (the papers', default) up to thousands for
            million-weight targets.
        target_modules: which modules' parameters are generated, PEFT-style: a list of
            module names (each also matching names ending in ``"." + name``) or one regular
            expression for the whole name; ``None`` = every trainable parameter. Parameters
            outside the targets (or inside ``exclude_modules``) stay the model's own and
            are frozen, except inside ``modules_to_save``, which train as ordinary
            parameters (counted in ``n_trainable``). With ``lora_rank``: the ``nn.Linear``
            layers to adapt (``None`` = all).
        exclude_modules: modules whose parameters are never generated (same syntax).
        modules_to_save: modules kept trainable classically (same syntax).
        lora_rank: QT-LoRA. Instead of the weights themselves, generate rank-r LoRA
            factors ``A (r, in)`` and ``B (out, r)`` of every targeted ``nn.Linear``; its
            weight becomes ``W0 + (lora_alpha / r) B A`` with the pretrained ``W0`` frozen,
            and B starts at exactly 0 (so the wrapped model starts as the pretrained one).
        lora_alpha: the LoRA scale numerator; ``None`` = ``lora_rank`` (scale 1).
        subcircuits: a distributed ansatz: K independent sub-circuits (an int K for
            near-equal parts, or the sizes ``(N_1, ..., N_K)`` summing to N), each the
            chosen ansatz at the chosen depth, their distributions combined by an outer
            product (:class:`~qtrain.circuits.distributed.DistributedQNN`). ``None`` = one
            circuit on all N qubits.
    """

    depth: int = field(default=16, metadata={"help": "Ansatz blocks L (>= 1)."})
    ansatz: str = field(default="u3-cu3-ring", metadata={"help": "Circuit family name."})
    n_qubits: int | None = field(default=None, metadata={"help": "Circuit width; None = ceil(log2 M)."})
    mapping: str = field(default="mlp", metadata={"help": "'mlp' or 'paper' (the reference preset)."})
    mapping_hidden: tuple[int, ...] | None = field(default=None, metadata={"help": "Mapping hidden widths."})
    mps_bond: int = field(default=8, metadata={"help": "Bond dimension of mapping='mps'."})
    activation: str | None = field(default=None, metadata={"help": "Mapping activation."})
    weight_scale: str = field(default="auto", metadata={"help": "'auto', 'init' or 'none'."})
    centering: str = field(default="auto", metadata={"help": "'auto', 'global' or 'tensor'."})
    learnable_transform: bool = field(default=False, metadata={"help": "Train (gamma, beta, alpha)."})
    transform_gamma: float = field(default=0.1, metadata={"help": "Transform gamma."})
    transform_beta: float = field(default=0.8, metadata={"help": "Transform beta."})
    transform_alpha: float = field(default=0.3, metadata={"help": "Transform alpha."})
    seed: int = field(default=0, metadata={"help": "Initialisation seed."})
    dtype: str = field(default="float32", metadata={"help": "'float32' or 'float64'."})
    device: str | None = field(default=None, metadata={"help": "Device; None = the model's."})
    check_memory: bool = field(default=True, metadata={"help": "Refuse configurations that will not fit."})
    generator: str = field(default="qnn", metadata={"help": "'qnn' or a matched-budget classical baseline."})
    shots: int | None = field(default=None, metadata={"help": "Measurement shots per execution; None = exact."})
    diff_method: str = field(default="backprop", metadata={"help": "'backprop', 'parameter-shift' or 'spsa'."})
    spsa_epsilon: float = field(default=0.1, metadata={"help": "SPSA perturbation size."})
    depolarizing: float = field(default=0.0, metadata={"help": "Global depolarizing probability per block."})
    readout_error: float | tuple[float, ...] = field(
        default=0.0, metadata={"help": "Bit-flip probability at readout: one for all wires, or one per wire."}
    )
    chunk_size: int = field(default=1, metadata={"help": "Weights per basis state C; N = ceil(log2(ceil(M / C)))."})
    target_modules: str | tuple[str, ...] | None = field(
        default=None, metadata={"help": "Modules whose parameters are generated (names, or one regex)."})
    exclude_modules: str | tuple[str, ...] | None = field(
        default=None, metadata={"help": "Modules never generated (names, or one regex)."})
    modules_to_save: str | tuple[str, ...] | None = field(
        default=None, metadata={"help": "Modules trained classically (names, or one regex)."})
    lora_rank: int | None = field(default=None, metadata={"help": "QT-LoRA rank r (generate LoRA factors)."})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA scale numerator; None = lora_rank."})
    subcircuits: int | tuple[int, ...] | None = field(
        default=None, metadata={"help": "Distributed ansatz: K parts, or their qubit counts."})

    def __post_init__(self) -> None:
        def need_int(name: str, minimum: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"`{name}` must be an int, got {type(v).__name__} {v!r}")
            if v < minimum:
                raise ValueError(f"`{name}` must be >= {minimum}, got {v}")

        need_int("depth", 1)
        need_int("n_qubits", 1, optional=True)
        need_int("seed", 0)
        need_int("chunk_size", 1)
        need_int("lora_rank", 1, optional=True)
        if isinstance(self.subcircuits, (list, tuple)):
            if not self.subcircuits or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.subcircuits):
                raise ValueError(f"`subcircuits` sizes must be positive ints, got {self.subcircuits!r}")
            self.subcircuits = tuple(self.subcircuits)
        else:
            need_int("subcircuits", 1, optional=True)
        for name in ("target_modules", "exclude_modules", "modules_to_save"):
            v = getattr(self, name)
            if v is None or isinstance(v, str):
                continue
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x for x in v):
                raise ValueError(f"`{name}` must be None, a regex string, or a non-empty list of module names; got {v!r}")
            setattr(self, name, tuple(v))
        if self.lora_alpha is not None and (isinstance(self.lora_alpha, bool) or not isinstance(
                self.lora_alpha, (int, float)) or not self.lora_alpha > 0):
            raise ValueError(f"`lora_alpha` must be a positive number, got {self.lora_alpha!r}")
        if self.lora_alpha is not None and self.lora_rank is None:
            raise ValueError("`lora_alpha` is set but `lora_rank` is not: set lora_rank to use QT-LoRA")
        if self.lora_rank is not None and self.generator == "subspace":
            raise ValueError("`generator`='subspace' has no mapping to emit LoRA factors; use another generator")
        if not isinstance(self.ansatz, str):
            raise TypeError(f"`ansatz` must be a registered name (str), got {type(self.ansatz).__name__}")
        get_ansatz(self.ansatz)  # raises with the valid names
        if self.generator not in GENERATORS:
            raise ValueError(f"Invalid `generator` {self.generator!r}. Must be one of {list(GENERATORS)}.")
        if self.shots is not None and (isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 1):
            raise ValueError(f"`shots` must be None or a positive int, got {self.shots!r}")
        if self.diff_method not in ("backprop", "parameter-shift", "spsa"):
            raise ValueError(f"Invalid `diff_method` {self.diff_method!r}. Must be one of "
                             "['backprop', 'parameter-shift', 'spsa'].")
        def probability(name: str, v) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"`{name}` must be a probability in [0, 1] (or, for readout_error, a list of them), "
                                 f"got {v!r}")
            return float(v)

        self.depolarizing = probability("depolarizing", self.depolarizing)
        if isinstance(self.readout_error, (list, tuple)):
            self.readout_error = tuple(probability("readout_error", v) for v in self.readout_error)
        else:
            self.readout_error = probability("readout_error", self.readout_error)
        if not (isinstance(self.spsa_epsilon, (int, float)) and self.spsa_epsilon > 0 and math.isfinite(self.spsa_epsilon)):
            raise ValueError(f"`spsa_epsilon` must be a positive number, got {self.spsa_epsilon!r}")
        device_like = self.shots is not None or self.diff_method != "backprop" or self.depolarizing or any(
            self.readout_error if isinstance(self.readout_error, tuple) else (self.readout_error,))
        if device_like and self.generator not in ("qnn", "no-entanglement"):
            raise ValueError(f"`shots`, `diff_method` and noise apply to circuits; `generator`={self.generator!r} has none")
        if self.mapping not in MAPPINGS:
            raise ValueError(f"Invalid `mapping` {self.mapping!r}. Must be one of {list(MAPPINGS)}.")
        if self.mapping_hidden is not None:
            hidden = tuple(self.mapping_hidden) if isinstance(self.mapping_hidden, (list, tuple)) else None
            if hidden is None or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
                raise ValueError(f"`mapping_hidden` must be a sequence of positive ints, got {self.mapping_hidden!r}")
            self.mapping_hidden = hidden
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(f"Invalid `activation` {self.activation!r}. Must be one of {sorted(ACTIVATIONS)}.")
        need_int("mps_bond", 1)
        if self.mapping == "mps" and (self.mapping_hidden is not None or self.activation is not None):
            raise ValueError("`mapping_hidden` and `activation` describe the MLP mappings; mapping='mps' is set by "
                             "`mps_bond`")
        if self.mapping == "paper" and self.activation not in (None, "none"):
            raise ValueError(
                f"`mapping`='paper' has no activation (it is the affine reference preset), got "
                f"`activation`={self.activation!r}. Use mapping='mlp' for a non-linear mapping."
            )
        if self.weight_scale not in WEIGHT_SCALES:
            raise ValueError(f"Invalid `weight_scale` {self.weight_scale!r}. Must be one of {list(WEIGHT_SCALES)}.")
        if self.centering not in CENTERINGS:
            raise ValueError(f"Invalid `centering` {self.centering!r}. Must be one of {list(CENTERINGS)}.")
        for name in ("transform_gamma", "transform_beta", "transform_alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"`{name}` must be a positive number, got {v!r}")
            setattr(self, name, float(v))
        if isinstance(self.dtype, torch.dtype):
            self.dtype = str(self.dtype).removeprefix("torch.")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"Invalid `dtype` {self.dtype!r}. Must be one of ['float32', 'float64'].")
        if self.device is not None:
            try:
                self.device = str(torch.device(self.device))
            except (RuntimeError, TypeError):
                raise ValueError(f"Invalid `device` {self.device!r}: expected e.g. 'cpu', 'cuda', 'cuda:1'") from None

    # Resolved values: what "auto"/None mean for this mapping kind.
    @property
    def resolved_hidden(self) -> tuple[int, ...]:
        if self.mapping_hidden is not None:
            return self.mapping_hidden
        return PAPER_HIDDEN if self.mapping == "paper" else MLP_HIDDEN

    @property
    def resolved_activation(self) -> str:
        if self.mapping == "paper":
            return "none"
        return self.activation or MLP_ACTIVATION

    @property
    def resolved_lora_scale(self) -> float:
        """``lora_alpha / lora_rank`` (1 by default)."""
        if self.lora_rank is None:
            raise ValueError("not a QT-LoRA config (lora_rank is None)")
        return (self.lora_alpha if self.lora_alpha is not None else self.lora_rank) / self.lora_rank

    @property
    def resolved_weight_scale(self) -> str:
        if self.weight_scale != "auto":
            return self.weight_scale
        return "none" if self.mapping == "paper" else "init"

    @property
    def resolved_centering(self) -> str:
        if self.centering != "auto":
            return self.centering
        return "global" if self.mapping == "paper" else "tensor"

    @classmethod
    def from_saved(cls, data: dict) -> "QTConfig":
        """A config qtrain saved (checkpoint metadata, a run's ``config.json``), whatever
        version wrote it: :meth:`from_dict` of :func:`upgrade_saved`."""
        return cls.from_dict(upgrade_saved(data))

    def to_dict(self) -> dict:
        """Plain JSON-able dict, with the qtrain version that wrote it."""
        d = asdict(self)
        for key in ("mapping_hidden", "readout_error", "target_modules", "exclude_modules", "modules_to_save",
                    "subcircuits"):
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        d["qtrain_version"] = __version__
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "QTConfig":
        """Inverse of :meth:`to_dict`. Unknown keys (from a newer qtrain) are dropped with a
        warning; missing keys take their defaults (a config saved by an older qtrain is
        read through :func:`upgrade_saved` instead, which fills them as that version behaved)."""
        if not isinstance(data, dict):
            raise TypeError(f"a QTConfig must be read from a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        data = dict(data)
        data.pop("qtrain_version", None)
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(
                f"ignoring unknown QTConfig keys {unknown} (written by a newer qtrain? upgrade to use them)",
                stacklevel=2,
            )
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "<string>") -> "QTConfig":
        """Parse a config from JSON text. Text that qtrain wrote (it records
        ``qtrain_version``) is read through :func:`upgrade_saved`: a key its version did
        not know takes the value that version behaved as; hand-written text takes the
        defaults.

        Raises:
            ValueError: the text is not valid JSON (the message names ``source`` and the
                position), or a field value is invalid.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"cannot parse QTConfig from {source}: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_saved(data) if isinstance(data, dict) and "qtrain_version" in data else cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "QTConfig":
        """Read a config written by :meth:`save` (or any JSON object of its fields)."""
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read(), source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")


# What a saved config lacking a key meant: the behaviour of the versions that did not write it.
_LEGACY = {"centering": "global"}


def upgrade_saved(data: dict) -> dict:
    """A saved config dict with the keys older versions did not write filled in as those
    versions behaved (``centering``: they centred over all M, ``"global"``), so that saved
    models load and saved runs resume as they were trained.

    >>> upgrade_saved({"depth": 4})["centering"]
    'global'
    >>> upgrade_saved(QTConfig().to_dict())["centering"]
    'auto'
    """
    if not isinstance(data, dict):
        return data  # from_dict says what is wrong with it
    return {**_LEGACY, **data}
