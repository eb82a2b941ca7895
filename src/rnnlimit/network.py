"""The finite network of docs/model.md §2: N hidden units whose memory is their own previous output.

Unit ``i`` has ``θ^i = (c^i ∈ R^m, w^i ∈ R^d, b^i ∈ R^m, u^i ∈ R)``; with ``z = (x, s)``::

    H^i(z)  = σ(w^i·x + b^i·s + u^i)
    g^N(z)  = N^(-β) Σ_i c^i H^i(z)
    ĝ_k     = g^N(X_k, S_k),   S_{k+1} = ψ(ĝ_k),   S_0 = 0

i.e. an Elman RNN whose recurrent matrix is the rank-m matrix ``A = N^(-β) b cᵀ``.
Gradients are written by hand (and tested against ``jax.grad`` / ``jax.jacfwd``): the
truncated gradient ``∇_θ g^N(X_k, S_k)`` and the RTRL recursion
``D_k = ∇_θ g(Z_k) + ∂_s g(Z_k) J_k``, ``J_{k+1} = ψ'(ĝ_k) D_k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit.activations import ACTIVATIONS, CLIPS, activation, psi
from rnnlimit.errors import ParameterError, check_choice, check_int, check_range

Array = jax.Array
C_INITS = ("rademacher", "gaussian")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Params:
    """Parameters of all N units, stacked: ``c (N, m)``, ``w (N, d)``, ``b (N, m)``, ``u (N,)``."""

    c: Array
    w: Array
    b: Array
    u: Array


@dataclass(frozen=True)
class NetworkSpec:
    """Static description of the width-N network (validated here, once).

    ``beta ∈ [1/2, 1)`` sets the scaling ``N^(-β)``; ``antisymmetric`` pairs units ``(c, ω)``,
    ``(-c, ω)`` so that ``g^N ≡ 0`` at initialisation (N must be even); ``clip`` is ψ: ``hard``
    clips into ``[-1,1]^m``, ``smooth`` is ``tanh``.
    """

    N: int
    d: int = 1
    m: int = 1
    beta: float = 0.5
    activation: Literal["erf", "tanh", "relu"] = "erf"
    sigma_w: float = 1.0
    sigma_b: float = 1.0
    sigma_u: float = 1.0
    c_init: Literal["rademacher", "gaussian"] = "rademacher"
    antisymmetric: bool = True
    clip: Literal["hard", "smooth"] = "hard"

    def __post_init__(self) -> None:
        check_int("N", self.N, 1)
        check_int("d", self.d, 1)
        check_int("m", self.m, 1)
        check_range("beta", self.beta, 0.5, 1.0, high_open=True)
        check_choice("activation", self.activation, ACTIVATIONS)
        for name in ("sigma_w", "sigma_b", "sigma_u"):
            check_range(name, getattr(self, name), 0.0, None)
        check_choice("c_init", self.c_init, C_INITS)
        check_choice("clip", self.clip, CLIPS)
        if self.antisymmetric and self.N % 2:
            raise ParameterError(
                "N", f"must be even with antisymmetric=True (units come in pairs), got {self.N}"
            )

    @property
    def scale(self) -> float:
        """``N^(-β)``."""
        return float(self.N) ** (-self.beta)

    def eta(self, alpha: float) -> float:
        """Learning rate ``η_N = α N^(2β − 2)``."""
        return alpha * float(self.N) ** (2.0 * self.beta - 2.0)


def init_params(spec: NetworkSpec, key: Array, dtype: Any = jnp.float32) -> Params:
    """Draw θ i.i.d. over units: ``c`` Rademacher or N(0, I); ``ω ~ N(0, diag(σ_w², σ_b², σ_u²))``.

    With ``antisymmetric`` the second half of the units copies ω of the first half with ``-c``.
    """
    dt = jnp.dtype(dtype)
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ParameterError("dtype", "float64 needs x64: call rnnlimit.enable_float64() first")
    n = spec.N // 2 if spec.antisymmetric else spec.N
    kc, kw, kb, ku = jax.random.split(key, 4)
    if spec.c_init == "rademacher":
        c = jax.random.rademacher(kc, (n, spec.m), dtype=dt)
    else:
        c = jax.random.normal(kc, (n, spec.m), dtype=dt)
    w = spec.sigma_w * jax.random.normal(kw, (n, spec.d), dtype=dt)
    b = spec.sigma_b * jax.random.normal(kb, (n, spec.m), dtype=dt)
    u = spec.sigma_u * jax.random.normal(ku, (n,), dtype=dt)
    if spec.antisymmetric:
        c = jnp.concatenate([c, -c])
        w, b, u = (jnp.concatenate([a, a]) for a in (w, b, u))
    return Params(c=c, w=w, b=b, u=u)


def preactivation(params: Params, x: Array, s: Array) -> Array:
    """``w^i·x + b^i·s + u^i`` for every unit, shape ``(N,)``.

    Written as a sum over the (small) input dimensions so XLA fuses it into one loop over units.
    """
    pre = params.u
    for j in range(params.w.shape[1]):
        pre = pre + params.w[:, j] * x[j]
    for j in range(params.b.shape[1]):
        pre = pre + params.b[:, j] * s[j]
    return pre


def output(spec: NetworkSpec, params: Params, x: Array, s: Array) -> Array:
    """``g^N(x, s) = N^(-β) Σ_i c^i σ(w^i·x + b^i·s + u^i)``, shape ``(m,)``."""
    sigma, _ = activation(spec.activation)
    h = sigma(preactivation(params, x, s))
    return spec.scale * jnp.sum(params.c * h[:, None], axis=0)


def output_batch(spec: NetworkSpec, params: Params, z: Array, block: int = 256) -> Array:
    """``g^N`` at many points ``z = (x, s)`` of shape ``(n, d+m)``; returns ``(n, m)``.

    Matrix form ``σ(z Wᵀ + u) c`` evaluated in row blocks so memory stays ``O(block · N)``.
    """
    sigma, _ = activation(spec.activation)
    weights = jnp.concatenate([params.w, params.b], axis=1)

    def rows(zb: Array) -> Array:
        return spec.scale * sigma(zb @ weights.T + params.u) @ params.c

    n = z.shape[0]
    if n <= block:
        return rows(z)
    pad = (-n) % block
    zp = jnp.concatenate([z, jnp.zeros((pad, z.shape[1]), z.dtype)])
    out = jax.lax.map(rows, zp.reshape(-1, block, z.shape[1]))
    return out.reshape(-1, spec.m)[:n]


def clip_memory(spec: NetworkSpec, g: Array) -> tuple[Array, Array]:
    """``(ψ(g), ψ'(g))`` for this network's clip (:func:`rnnlimit.activations.psi`)."""
    return psi(spec.clip, g)


def output_and_gradients(
    spec: NetworkSpec, params: Params, x: Array, s: Array
) -> tuple[Array, Params, Array]:
    """``ĝ = g^N(x, s)``, its parameter gradient ``∇_θ ĝ_j`` and ``∂_s ĝ``.

    Returns ``g (m,)``, a :class:`Params` of per-output gradients with leading axis ``m``
    (``c (m, N, m)``, ``w (m, N, d)``, ``b (m, N, m)``, ``u (m, N)``) and ``∂_s g (m, m)``::

        ∂g_j/∂c^i_l = N^(-β) H^i δ_jl,   ∂g_j/∂(w^i, b^i, u^i) = N^(-β) c^i_j σ'(·) (x, s, 1)
    """
    sigma, sigma_prime = activation(spec.activation)
    pre = preactivation(params, x, s)
    h, sp = sigma(pre), sigma_prime(pre)
    a = spec.scale
    g = a * jnp.sum(params.c * h[:, None], axis=0)
    eye = jnp.eye(spec.m, dtype=pre.dtype)
    q = a * params.c.T * sp[None, :]  # (m, N): N^-β c^i_j σ'
    grads = Params(
        c=a * eye[:, None, :] * h[None, :, None],
        w=q[:, :, None] * x[None, None, :],
        b=q[:, :, None] * s[None, None, :],
        u=q,
    )
    return g, grads, q @ params.b


def truncated_update(
    spec: NetworkSpec, params: Params, x: Array, s: Array, y: Array, eta: float
) -> tuple[Params, Array]:
    """One truncated SGD step ``θ += η_N (Y − ĝ)·∇_θ g^N(X, S)`` with S held as an input.

    Fused form (no per-output gradient is materialised): with ``e = Y − ĝ`` and
    ``q_i = η N^(-β) (c^i·e) σ'(pre_i)``: ``Δc^i = η N^(-β) H^i e`` and
    ``Δ(w^i, b^i, u^i) = q_i (x, s, 1)``.
    Returns the new parameters and ``ĝ``.
    """
    sigma, sigma_prime = activation(spec.activation)
    pre = preactivation(params, x, s)
    h = sigma(pre)
    g = spec.scale * jnp.sum(params.c * h[:, None], axis=0)
    e = (y - g) * (eta * spec.scale)
    q = jnp.sum(params.c * e[None, :], axis=1) * sigma_prime(pre)
    new = Params(
        c=params.c + h[:, None] * e[None, :],
        w=params.w + q[:, None] * x[None, :],
        b=params.b + q[:, None] * s[None, :],
        u=params.u + q,
    )
    return new, g


def zero_sensitivity(spec: NetworkSpec, params: Params) -> Params:
    """``J_0 = dS_0/dθ = 0``, a :class:`Params` with leading axis m."""
    return jax.tree_util.tree_map(lambda p: jnp.zeros((spec.m, *p.shape), p.dtype), params)


def rtrl_update(
    spec: NetworkSpec, params: Params, J: Params, x: Array, s: Array, y: Array, eta: float
) -> tuple[Params, Params, Array]:
    """One RTRL step: ``D_k = ∇_θ g(Z_k) + ∂_s g(Z_k) J_k``, ``θ += η_N (Y − ĝ)·D_k``,
    ``J_{k+1} = ψ'(ĝ_k) D_k``. Returns ``(θ_{k+1}, J_{k+1}, ĝ_k)``. Cost ``O(N m² (d+2m+1))``.
    """
    g, grads, ds = output_and_gradients(spec, params, x, s)
    D = jax.tree_util.tree_map(lambda gr, j: gr + jnp.tensordot(ds, j, axes=1), grads, J)
    e = y - g
    new = jax.tree_util.tree_map(lambda p, d: p + eta * jnp.tensordot(e, d, axes=1), params, D)
    _, psi_prime = clip_memory(spec, g)
    J_next = jax.tree_util.tree_map(
        lambda d: d * psi_prime.reshape((spec.m,) + (1,) * (d.ndim - 1)), D
    )
    return new, J_next, g


def empirical_ntk(spec: NetworkSpec, params: Params, z1: Array, z2: Array) -> Array:
    """Finite-width NTK ``Θ_{jj'}(z, z') = Σ_θ ∂g_j(z)/∂θ ∂g_j'(z')/∂θ`` with S an input.

    Closed form ``N^(-2β) Σ_i [H^i H'^i δ_jj' + c^i_j c^i_j' σ'σ'' (ẑ·ẑ')]``; shape
    ``(n1, n2, m, m)``. As N → ∞ with β = 1/2 it tends to ``A(z, z') I_m`` (docs/model.md §4).
    """
    sigma, sigma_prime = activation(spec.activation)
    weights = jnp.concatenate([params.w, params.b], axis=1)
    p1, p2 = z1 @ weights.T + params.u, z2 @ weights.T + params.u
    a2 = spec.scale**2
    nngp = a2 * sigma(p1) @ sigma(p2).T
    zz = z1 @ z2.T + 1.0
    grad = jnp.einsum("ai,bi,ij,ik->abjk", sigma_prime(p1), sigma_prime(p2), params.c, params.c)
    eye = jnp.eye(spec.m, dtype=z1.dtype)
    return nngp[:, :, None, None] * eye + a2 * zz[:, :, None, None] * grad


def to_numpy(params: Params) -> dict[str, np.ndarray]:
    """Parameters as a dict of numpy arrays (for ``.npz`` files)."""
    return {k: np.asarray(getattr(params, k)) for k in ("c", "w", "b", "u")}
