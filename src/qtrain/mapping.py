"""From probabilities to weights: the transform, the bit features and the mapping model.

For each generated weight ``i < M`` the mapping model sees one row
``[b_i, x_i]``: the N bits of ``i`` as +-1 (MSB first, bit 0 -> -1) and the transformed
probability ``x_i``. The transform, with ``S = 2^(N-1)``, is

.. math::

    x_i = \\big(\\beta \\tanh(\\gamma S p_i)\\big)^{\\alpha}
          - \\frac{1}{M}\\sum_{j<M} \\big(\\beta \\tanh(\\gamma S p_j)\\big)^{\\alpha}

with the papers' ``(gamma, beta, alpha) = (0.1, 0.8, 0.3)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "MPSMapping", "MappingModel", "ProbabilityTransform", "bit_features", "mps_parameter_count"]

ACTIVATIONS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}
"""Activations the mapping MLP accepts, by name (``"none"``: no activation)."""


def plain_modules(*modules: nn.Module) -> bool:
    """True when every module (and its children) has no hooks of any kind and no global
    module hooks are registered: a hand-written evaluation of these modules then computes
    exactly what calling them would."""
    from torch.nn.modules import module as _m

    if _m._global_forward_hooks or _m._global_forward_pre_hooks or _m._global_backward_hooks or getattr(
            _m, "_global_backward_pre_hooks", None):
        return False
    return not any(sub._forward_hooks or sub._forward_pre_hooks or sub._backward_hooks or sub._backward_pre_hooks
                   for mod in modules for sub in mod.modules())


def bit_features(
    n_qubits: int, count: int, *, start: int = 0, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """The bits of ``start..start+count-1`` as +-1 features, ``(count, n_qubits)``, MSB first.

    >>> bit_features(2, 4)
    tensor([[-1., -1.],
            [-1.,  1.],
            [ 1., -1.],
            [ 1.,  1.]])
    >>> bit_features(2, 1, start=2)
    tensor([[ 1., -1.]])
    """
    index = torch.arange(start, start + count, device=device).unsqueeze(1)
    shifts = torch.arange(n_qubits - 1, -1, -1, device=device)
    return ((index >> shifts) & 1).to(dtype) * 2 - 1


class ProbabilityTransform(nn.Module):
    """``p (2^N,) -> x (M,)``: the papers' squashing transform, mean-centred over the M kept
    entries (no renormalisation of the kept probabilities).

    ``tanh`` lifts the tiny ``p_i ~ 2^-N`` into a usable range and the power ``alpha < 1``
    spreads them out. ``x^alpha`` has an infinite slope at 0, so the base is clamped to
    the dtype's smallest normal number: an exactly-zero probability then gets a zero
    gradient instead of NaN.

    Args:
        n_qubits: N, which sets ``S = 2^(N-1)``.
        n_kept: M, how many leading probabilities are used.
        gamma, beta, alpha: the transform's constants.
        learnable: train them too (kept positive through a log parametrisation; adds 3
            trainable scalars).

    >>> t = ProbabilityTransform(n_qubits=2, n_kept=3)
    >>> x = t(torch.tensor([0.25, 0.25, 0.25, 0.25]))
    >>> x.shape, float(x.abs().max()) < 1e-7     # equal inputs centre to zero
    (torch.Size([3]), True)
    """

    def __init__(
        self,
        n_qubits: int,
        n_kept: int,
        *,
        gamma: float = 0.1,
        beta: float = 0.8,
        alpha: float = 0.3,
        learnable: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.n_kept = n_kept
        self.scale = float(2 ** (n_qubits - 1))
        logs = torch.tensor([math.log(gamma), math.log(beta), math.log(alpha)], dtype=dtype)
        if learnable:
            self.log_params = nn.Parameter(logs)
        else:
            self.register_buffer("log_params", logs)

    def forward(self, probs: Tensor) -> Tensor:
        gamma, beta, alpha = self.log_params.exp().unbind()
        base = beta * torch.tanh(gamma * self.scale * probs[: self.n_kept])
        x = base.clamp_min(torch.finfo(base.dtype).tiny).pow(alpha)
        return x - x.mean()

    def extra_repr(self) -> str:
        g, b, a = self.log_params.exp().tolist()
        return f"gamma={g:.4g}, beta={b:.4g}, alpha={a:.4g}, learnable={isinstance(self.log_params, nn.Parameter)}"


class MappingModel(nn.Module):
    """The classical mapping ``G``: a small MLP from rows ``[b_i, x_i]`` to ``n_outputs``
    weights each (1 in the papers; C with chunked generation).

    Args:
        n_inputs: row width, ``N + 1``.
        hidden: hidden layer widths.
        n_outputs: weights per row, C.
        activation: a key of :data:`ACTIVATIONS`; ``"none"`` makes the whole model one
            affine map (the papers' preset: Linear(N+1 -> 4 -> 20 -> 4 -> 1) with no
            activation is exactly ``w_i = a . b_i + c x_i + d``, centred).
        center: subtract the mean of the outputs (the papers do).
        output_bias: give the last layer a bias. Centring makes it a dead parameter;
            the papers' preset keeps it anyway so its trainable count matches theirs.
        generator: draws the initial weights (PyTorch's default ``nn.Linear`` scheme,
            uniform in +-1/sqrt(fan_in)) without touching the global RNG.

    >>> g = MappingModel(3, hidden=(4,), activation="none", center=True)
    >>> w = g(torch.randn(10, 3)).detach()
    >>> w.shape, abs(float(w.mean())) < 1e-6
    (torch.Size([10]), True)
    """

    def __init__(
        self,
        n_inputs: int,
        hidden: Sequence[int],
        *,
        n_outputs: int = 1,
        activation: str = "none",
        center: bool = False,
        output_bias: bool = True,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Invalid `activation` {activation!r}. Must be one of {sorted(ACTIVATIONS)}.")
        self.n_outputs = n_outputs
        sizes = [n_inputs, *hidden, n_outputs]
        layers: list[nn.Module] = []
        act = ACTIVATIONS[activation]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = nn.Linear(a, b, bias=output_bias or i < len(sizes) - 2, dtype=dtype)
            bound = 1 / math.sqrt(a)
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=generator)
                if lin.bias is not None:
                    lin.bias.uniform_(-bound, bound, generator=generator)
            layers.append(lin)
            if act is not None and i < len(sizes) - 2:
                layers.append(act())
        self.net = nn.Sequential(*layers)
        self.center = center

    def forward(self, rows: Tensor) -> Tensor:
        """``(K, n_inputs) -> (K * n_outputs,)``, row by row, centred."""
        return self.finish(self.rows(rows).reshape(-1))

    def rows(self, rows: Tensor) -> Tensor:
        """The MLP alone (before centring): ``(K, n_inputs) -> (K, n_outputs)``. Rows are
        independent, so they may be pushed through in chunks and :meth:`finish` applied
        to the flattened concatenation."""
        return self.net(rows)

    def as_affine(self) -> tuple[Tensor, Tensor] | None:
        """With no activation the MLP is one affine map ``row -> row @ weight.T + bias``:
        ``(weight (n_outputs, n_inputs), bias (n_outputs,))``, differentiable in the
        layers' parameters; ``None`` when there is an activation, a layer that is not a
        plain ``nn.Linear``, or a hook (then the layers must run as they are).

        >>> g = MappingModel(3, hidden=(4, 5), activation="none")
        >>> weight, bias = g.as_affine()
        >>> rows = torch.randn(6, 3)
        >>> torch.allclose(rows @ weight.T + bias, g.rows(rows), atol=1e-6)
        True
        """
        if any(type(layer) is not nn.Linear for layer in self.net) or not plain_modules(self):
            return None
        weight, bias = None, None
        for layer in self.net:  # compose x -> W x + b, first layer first
            w = layer.weight
            b = layer.bias if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
            weight = w if weight is None else w @ weight
            bias = b if bias is None else w @ bias + b
        return weight, bias

    def finish(self, out: Tensor) -> Tensor:
        """Centring over all M outputs (when ``center``)."""
        return out - out.mean() if self.center else out


def mps_parameter_count(n_inputs: int, bond: int, n_outputs: int = 1) -> int:
    """Trainable scalars of :class:`MPSMapping`: ``2D + 2D^2 (n - 2) + 2 D C`` for n
    inputs, bond dimension D and C outputs (n >= 2).

    >>> mps_parameter_count(14, 8)      # N = 13 qubits: 16 + 1,536 + 16
    1568
    """
    return 2 * bond + 2 * bond * bond * (n_inputs - 2) + 2 * bond * n_outputs


class _MPSNet(nn.Module):
    """The contraction behind :class:`MPSMapping`: ``(K, n) -> (K, C)``."""

    def __init__(self, n_inputs: int, bond: int, n_outputs: int, dtype: torch.dtype,
                 generator: torch.Generator | None) -> None:
        super().__init__()
        if n_inputs < 2:
            raise ValueError(f"an MPS mapping needs at least 2 inputs, got {n_inputs}")

        def noise(*shape: int, scale: float) -> Tensor:
            return torch.randn(*shape, dtype=dtype, generator=generator) * scale

        # Both physical slices start near the same matrix, so sum_s phi(z)_s G[:, s, :] =
        # z G0 + (1 - z) G1 ~ identity whatever z is: the chain neither explodes nor
        # vanishes at the start, and the noise carries the dependence on each input.
        eye = torch.eye(bond, dtype=dtype)
        self.first = nn.Parameter(noise(2, bond, scale=1.0))
        self.middle = nn.Parameter(eye[:, None, :].expand(n_inputs - 2, bond, 2, bond).clone()
                                   + noise(n_inputs - 2, bond, 2, bond, scale=0.3 / math.sqrt(bond)))
        self.last = nn.Parameter(noise(bond, 2, n_outputs, scale=1 / math.sqrt(bond)))

    def forward(self, rows: Tensor) -> Tensor:
        phi = torch.stack([rows, 1 - rows], dim=-1)  # (K, n, 2): each scalar z as [z, 1 - z]
        v = phi[:, 0] @ self.first  # (K, D)
        d = self.first.shape[1]
        for k in range(self.middle.shape[0]):
            core = self.middle[k].reshape(d, 2 * d)  # (D, 2D): (left, (physical, right))
            v = torch.einsum("ks,ksd->kd", phi[:, k + 1], (v @ core).view(-1, 2, d))
        return torch.einsum("ks,ksc->kc", phi[:, -1], torch.einsum("kd,dsc->ksc", v, self.last))


class MPSMapping(nn.Module):
    """A matrix-product-state mapping: each row ``[b_r, x_r]`` of n scalars is embedded
    site by site as ``[z, 1 - z]`` and contracted with a chain of bond-D cores into C
    outputs (the tensor-network mapping of the QT follow-ups). Trainable count:
    :func:`mps_parameter_count`.

    Args:
        n_inputs: row width, ``N + 1``.
        bond: bond dimension D.
        n_outputs: C.
        center: subtract the mean of the outputs.

    >>> g = MPSMapping(5, bond=3, n_outputs=2, center=True)
    >>> g.rows(torch.randn(7, 5)).shape, sum(p.numel() for p in g.parameters()) == mps_parameter_count(5, 3, 2)
    (torch.Size([7, 2]), True)
    """

    def __init__(self, n_inputs: int, bond: int, *, n_outputs: int = 1, center: bool = True,
                 dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if isinstance(bond, bool) or not isinstance(bond, int) or bond < 1:
            raise ValueError(f"`bond` must be a positive int, got {bond!r}")
        self.n_outputs = n_outputs
        self.net = _MPSNet(n_inputs, bond, n_outputs, dtype, generator)
        self.center = center

    forward = MappingModel.forward
    rows = MappingModel.rows
    finish = MappingModel.finish

    def as_affine(self) -> None:
        """Never affine (the contraction is multilinear in the inputs)."""
        return None
