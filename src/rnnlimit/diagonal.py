"""The finite diagonal-recurrence RNN of docs/model.md §6 and its empirical NTK.

Unit ``i = 1..N`` keeps its own memory: ``H^i_k = σ(w^i·X_k + b^i H^i_{k-1} + u^i)``, ``H^i_0 = 0``,
and the output is ``g_k = N^{-β} Σ_i c^i H^i_k`` (``c^i ∈ R^m``). With ``sup|b|·sup|σ'| < 1``
each ``H^i`` is a contraction of its own past, so the network maps input histories to outputs.

Online training on one stream (docs/model.md §3): one sample, one state update and one parameter
update per step, ``θ_{k+1} = θ_k + η_N (Y_k − g_k) · G_k``, ``η_N = α N^{2β−2}``, with ``G_k``
either ``truncated`` (``H_{k-1}`` held as an input) or ``rtrl`` (the per-unit sensitivities
``J_k = σ'(a_k)((X_k, H_{k-1}, 1) + b J_{k-1})`` carried forward: ``d+2`` numbers per unit).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit.activations import activation
from rnnlimit.datasets import as_batch
from rnnlimit.errors import DivergenceError, ParameterError, check_choice, check_int, check_range
from rnnlimit.omega import OmegaLaw, check_dtype, sample_omega

Array = jax.Array
GRADIENTS: tuple[str, ...] = ("truncated", "rtrl")
READOUTS: tuple[str, ...] = ("last", "mean")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class DiagonalParams:
    """``c`` (N, m), ``w`` (N, d), ``b`` (N,), ``u`` (N,): one row per hidden unit."""

    c: Array
    w: Array
    b: Array
    u: Array

    @property
    def width(self) -> int:
        return int(self.b.shape[0])


def init_params(
    key: Array,
    width: int,
    dim_in: int,
    dim_out: int = 1,
    *,
    law: OmegaLaw | None = None,
    c_law: str = "rademacher",
    antisymmetric: bool = False,
    dtype: str = "float64",
) -> DiagonalParams:
    """Draw ``θ^i = (c^i, ω^i)`` i.i.d.: ``ω`` from ``law`` (Monte Carlo, same draw as
    ``sample_omega(key_ω, ...)``), ``c`` Rademacher or Gaussian with ``E[c cᵀ] = I``.

    ``law`` is validated here: ``b_max·sup|σ'| ≥ 1`` raises ``ParameterError('b_max', ...)``.
    ``antisymmetric``: units come in pairs ``(c, ω), (−c, ω)`` (``width`` even), so ``g ≡ 0``.
    The ω-key is ``jax.random.split(key)[0]``, the c-key ``[1]``.
    """
    law = OmegaLaw() if law is None else law
    check_int("width", width, 2 if antisymmetric else 1)
    check_int("dim_out", dim_out, 1)
    check_choice("c_law", c_law, ("rademacher", "gaussian"))
    check_dtype(dtype)
    if antisymmetric and width % 2:
        raise ParameterError("width", f"must be even with antisymmetric=True, got {width}")
    k_omega, k_c = jax.random.split(key)
    half = width // 2 if antisymmetric else width
    om = sample_omega(k_omega, half, dim_in, law, dtype=dtype)
    shape = (half, dim_out)
    if c_law == "rademacher":
        c = jax.random.rademacher(k_c, shape).astype(dtype)
    else:
        c = jax.random.normal(k_c, shape, dtype)
    if antisymmetric:
        c = jnp.concatenate([c, -c])
        om = type(om)(*(jnp.concatenate([q, q]) for q in (om.w, om.b, om.u)))
    return DiagonalParams(c, om.w, om.b, om.u)


@partial(jax.jit, static_argnames=("act", "readout"))
def _readout_states(params: DiagonalParams, xs: Array, lengths: Array, act: str, readout: str):
    """Readout state per sequence and unit (n, N): ``H_{L_i}`` or ``(1/L_i) Σ_{k≤L_i} H_k``."""
    sigma, _ = activation(act)

    def step(carry, inputs):
        h, acc = carry
        k, x = inputs
        live = (k < lengths)[:, None]
        hn = jnp.where(live, sigma(x @ params.w.T + params.b * h + params.u), h)
        return (hn, acc + jnp.where(live, hn, 0.0)), None

    z = jnp.zeros((xs.shape[0], params.width), xs.dtype)
    ks = jnp.arange(xs.shape[1])
    (last, total), _ = jax.lax.scan(step, (z, z), (ks, jnp.swapaxes(xs, 0, 1)))
    return last if readout == "last" else total / lengths[:, None].astype(xs.dtype)


def _batch(params: DiagonalParams, x: object) -> tuple[Array, Array]:
    xs, lengths = as_batch(x, int(params.w.shape[1]))
    return jnp.asarray(xs, params.b.dtype), jnp.asarray(lengths, jnp.int32)


def predict(
    params: DiagonalParams,
    x: object,
    *,
    beta: float = 0.5,
    activation_name: str = "erf",
    readout: str = "last",
) -> Array:
    """Outputs ``N^{-β} Σ_i c^i H^i(ξ)`` (n, m) on a set of sequences ``x`` (see ``as_batch``).

    (The kernel's ``readout="both"``, ``K_last + K_mean``, is the NTK of a network with two
    independent readout vectors; this finite network has one readout, ``last`` or ``mean``.)
    """
    check_range("beta", beta, 0.5, 1.0, high_open=True)
    check_choice("readout", readout, READOUTS)
    xs, lengths = _batch(params, x)
    return _predict(params, xs, lengths, beta, activation_name, readout)


def _predict(params, xs, lengths, beta, act, readout):
    return params.width ** (-beta) * (_readout_states(params, xs, lengths, act, readout) @ params.c)


def empirical_ntk(
    params: DiagonalParams,
    x1: object,
    x2: object | None = None,
    *,
    beta: float = 0.5,
    activation_name: str = "erf",
    readout: str = "last",
) -> Array:
    """``Θ(ξ, ξ') = N^{2β−1} (1/m) Σ_j ∇_θ g_j(ξ)·∇_θ g_j(ξ')`` (n1, n2), by reverse-mode autodiff.

    The factor ``N^{2β−1}`` makes ``Θ = (1/N) Σ_i [H^i H'^i + (|c^i|²/m) ∇_ω H^i·∇_ω H'^i]``,
    which at initialisation averages to the limit kernel ``K`` for every β.
    """
    check_range("beta", beta, 0.5, 1.0, high_open=True)
    check_choice("readout", readout, READOUTS)
    xs1, l1 = _batch(params, x1)
    xs2, l2 = (xs1, l1) if x2 is None else _batch(params, x2)

    def jac(xs, lengths):
        f = lambda p: _predict(p, xs, lengths, beta, activation_name, readout)  # noqa: E731
        j = jax.jacrev(f)(params)  # leaves (n, m, *leaf_shape)
        return jnp.concatenate(
            [q.reshape(q.shape[0], q.shape[1], -1) for q in jax.tree.leaves(j)], axis=2
        )

    j1, j2 = jac(xs1, l1), jac(xs2, l2)
    m = j1.shape[1]
    return params.width ** (2 * beta - 1) * jnp.einsum("amp,bmp->ab", j1, j2) / m


@partial(jax.jit, static_argnames=("act", "gradient"))
def _train_scan(params, xs, ys, eta, scale, act, gradient):
    sigma, dsigma = activation(act)
    n_units, d = params.w.shape

    def step(carry, inputs):
        p, h, jw, jb, ju = carry
        x, y = inputs
        a = p.w @ x + p.b * h + p.u
        hn, s = sigma(a), dsigma(a)
        if gradient == "rtrl":
            jw, jb, ju = (
                s[:, None] * (x[None, :] + p.b[:, None] * jw),
                s * (h + p.b * jb),
                s * (1.0 + p.b * ju),
            )
        else:
            jw, jb, ju = s[:, None] * x[None, :], s * h, s
        g = scale * (hn @ p.c)
        err = y - g
        e = scale * eta * (p.c @ err)
        new = DiagonalParams(
            p.c + scale * eta * jnp.outer(hn, err),
            p.w + e[:, None] * jw,
            p.b + e * jb,
            p.u + e * ju,
        )
        return (new, hn, jw, jb, ju), (g, 0.5 * jnp.sum(err * err))

    z = jnp.zeros(n_units, xs.dtype)
    init = (params, z, jnp.zeros((n_units, d), xs.dtype), z, z)
    (final, *_), (preds, losses) = jax.lax.scan(step, init, (xs, ys))
    return final, preds, losses


def train_online(
    params: DiagonalParams,
    stream_x: Array,
    stream_y: Array,
    *,
    alpha: float = 1.0,
    beta: float = 0.5,
    activation_name: str = "erf",
    gradient: str = "rtrl",
) -> tuple[DiagonalParams, dict[str, np.ndarray]]:
    """Online SGD on one stream ``(X_k, Y_k)``, ``k < T``: returns final θ and the record.

    At step ``k``: ``H_k = σ(w X_k + b H_{k-1} + u)``, ``g_k = N^{-β} cᵀ H_k`` predicts ``Y_k``,
    ``ℓ_k = ½|Y_k − g_k|²``, then ``θ ← θ + η_N (Y_k − g_k)·G_k``. The record holds ``pred``
    (T, m), ``loss`` (T,) and ``t = k/N``. A non-finite output raises ``DivergenceError``
    carrying the record up to that step.
    """
    check_range("alpha", alpha, 0.0, low_open=True)
    check_range("beta", beta, 0.5, 1.0, high_open=True)
    check_choice("gradient", gradient, GRADIENTS)
    dt = params.b.dtype
    xs = jnp.asarray(stream_x, dt)
    xs = xs[:, None] if xs.ndim == 1 else xs
    ys = jnp.asarray(stream_y, dt)
    ys = ys[:, None] if ys.ndim == 1 else ys
    if xs.shape[0] != ys.shape[0] or xs.shape[1] != params.w.shape[1]:
        raise ParameterError(
            "stream_x",
            f"needs shape (T, {params.w.shape[1]}) matching "
            f"stream_y (T, m); got {xs.shape} and {ys.shape}",
        )
    n = params.width
    eta = alpha * n ** (2 * beta - 2)
    final, preds, losses = _train_scan(params, xs, ys, eta, n ** (-beta), activation_name, gradient)
    record = {
        "pred": np.asarray(preds),
        "loss": np.asarray(losses),
        "t": np.arange(xs.shape[0]) / n,
    }
    bad = ~np.isfinite(record["pred"]).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise DivergenceError(k, {key: v[:k] for key, v in record.items()})
    return final, record
