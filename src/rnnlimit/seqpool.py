"""Dilated input windows and pooled readouts for the diagonal-recurrence RNN (docs/model.md §6).

A diagonal unit sees each input channel through one scalar weight, a nonlinear single-pole
filter. Feeding it a delay embedding of the series,

    X̃_k = (X_k, X_{k-δ}, ..., X_{k-(m-1)δ}) ∈ R^{d·m}    (zero before the start),

makes ``w·X̃_k`` a random local filter of width ``m`` at dilation ``δ`` (the shape detector of a
random convolution), still inside §6's class: the unit is ``H_k = σ(w·X̃_k + b H_{k-1} + u)``
with the same law of ``ω = (w, b, u)`` (:mod:`rnnlimit.omega`), recurrence rates included.

Pooled readouts of the states ``H_1..H_L`` (true length ``L``) give the NNGP part
``E_ω[r(H) r(H')]`` of the sequence kernel for each readout ``r``:

    mean: (1/L) Σ_k H_k,   max: max_k H_k,   ppv: (1/L) Σ_k 1[H_k > 0],
    seg:  (1/|I_j|) Σ_{k ∈ I_j} 1[H_k > 0],  I_j = {k : j L/S ≤ k < (j+1) L/S},  j < S

(``seg``: the ppv of each of ``S`` consecutive parts of the true length, which keeps where in
the series a shape occurs: the outlines, spectra and aligned recordings need it; an empty part,
``L < S``, reads 0)
(``ppv``, the proportion of positive values, is the time mean of the state's sign: ``H_k > 0``
iff ``a_k > 0`` for erf, tanh and relu). With ``P`` samples ``ω_p`` the features are
``Φ(ξ) = P^{-1/2} [r(H_p)]_{p, r}`` and ``Φ(X) Φ(Y)ᵀ`` estimates that kernel.
"""

from __future__ import annotations

import math
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit.activations import activation
from rnnlimit.errors import ParameterError, check_int
from rnnlimit.omega import Omega
from rnnlimit.seqfeatures import _map_on_threads

POOLS: tuple[str, ...] = ("ppv", "max", "mean", "seg")


def pool_width(pool: str, segments: int) -> int:
    """Columns a readout takes per unit (``seg``: one per part of the series)."""
    return segments if pool == "seg" else 1


_BLOCK = 32  # rows per jitted call: one compilation per (length, channels, P)


def delay_embed(xs: np.ndarray, dilation: int, window: int) -> np.ndarray:
    """``(n, L, d)`` → ``(n, L, d·m)``: channel block ``j`` holds ``X_{k-jδ}`` (0 for ``k < jδ``).

    Padding after a true length is left as it is (the scans ignore those steps).
    """
    check_int("dilation", dilation, 1)
    check_int("window", window, 1)
    n, length, d = xs.shape
    out = np.zeros((n, length, d * window), xs.dtype)
    for j in range(window):
        lag = j * dilation
        if lag < length:
            out[:, lag:, j * d : (j + 1) * d] = xs[:, : length - lag]
    return out


def first_difference(xs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``X_k - X_{k-1}`` (0 at the first step and after each true length)."""
    out = np.zeros_like(xs)
    out[:, 1:] = xs[:, 1:] - xs[:, :-1]
    out[np.arange(xs.shape[1])[None, :] >= lengths[:, None]] = 0.0
    return out


def dilations(min_length: int, window: int, max_count: int = 32) -> tuple[int, ...]:
    """Dilations ``δ = 2^0, 2^1, ...`` whose window span ``(m-1)·δ`` fits ``min_length - 1``
    steps (at least ``δ = 1``), at most ``max_count`` of them."""
    check_int("min_length", min_length, 1)
    top = max(1, (min_length - 1) // max(window - 1, 1))
    return tuple(2**e for e in range(min(int(math.log2(top)) + 1, max_count)))


@partial(jax.jit, static_argnames=("act", "pools", "segments"))
def _pool_block(
    omega: Omega, xs: jax.Array, lengths: jax.Array, act: str, pools: tuple, segments: int
) -> jax.Array:
    """Pooled readouts (rows, P·len(pools)) of one block of rows by one scan over time."""
    sigma, _ = activation(act)
    n = xs.shape[0]
    zero = jnp.zeros((n, omega.b.shape[0]), xs.dtype)

    segs = "seg" in pools
    zseg = jnp.zeros((n, segments if segs else 1, omega.b.shape[0]), xs.dtype)

    def step(carry, inputs):
        h, top, total, positive, seg_pos, seg_cnt = carry
        k, x = inputs
        new = sigma(x @ omega.w.T + omega.b * h + omega.u)
        live = (k < lengths)[:, None]
        h = jnp.where(live, new, h)
        top = jnp.where(live, jnp.maximum(top, new), top)
        total = total + jnp.where(live, new, 0.0)
        pos = jnp.where(live & (new > 0), 1.0, 0.0).astype(xs.dtype)
        positive = positive + pos
        if segs:
            part = jnp.minimum(k * segments // jnp.maximum(lengths, 1), segments - 1)
            onehot = jax.nn.one_hot(part, segments, dtype=xs.dtype) * live.astype(xs.dtype)
            seg_pos = seg_pos + onehot[:, :, None] * pos[:, None, :]
            seg_cnt = seg_cnt + onehot
        return (h, top, total, positive, seg_pos, seg_cnt), None

    ks = jnp.arange(xs.shape[1])
    cnt0 = jnp.zeros((n, segments if segs else 1), xs.dtype)
    init = (zero, jnp.full_like(zero, -jnp.inf), zero, zero, zseg, cnt0)
    (_, top, total, positive, seg_pos, seg_cnt), _ = jax.lax.scan(
        step, init, (ks, jnp.swapaxes(xs, 0, 1))
    )
    inv = 1.0 / lengths[:, None].astype(xs.dtype)
    value = {"max": top, "mean": total * inv, "ppv": positive * inv}
    if segs:
        seg = seg_pos / jnp.maximum(seg_cnt, 1.0)[:, :, None]
        value["seg"] = seg.reshape(n, -1)
    return jnp.concatenate([value[p] for p in pools], axis=1)


def pooled_features(
    omega: Omega,
    xs: np.ndarray,
    lengths: np.ndarray,
    *,
    activation_name: str = "erf",
    pools: tuple[str, ...] = POOLS,
    segments: int = 4,
    workers: int | None = None,
) -> np.ndarray:
    """Features ``Φ`` (n, P·Σ_r width_r) of the pooled readouts, scaled by ``P^{-1/2}``.

    Column block ``r`` holds readout ``pools[r]`` of the ``P`` units (``seg``: ``segments``
    columns per unit, part-major: ``[seg_1 of the P units, seg_2 of them, ...]``). ``xs``
    (n, L, D) with ``D`` the dimension of ``omega.w``, ``lengths`` (n,) true lengths in
    ``[1, L]``. Blocks of rows run on ``workers`` threads (default: the CPU count).
    """
    if not pools or any(p not in POOLS for p in pools):
        raise ParameterError("pools", f"must be a non-empty tuple of {POOLS}, got {pools!r}")
    check_int("segments", segments, 1)
    n, length, dim = xs.shape
    if dim != omega.w.shape[1]:
        raise ParameterError("xs", f"must have {omega.w.shape[1]} channels, got {dim}")
    lengths = np.asarray(lengths, np.int32)
    if lengths.shape != (n,) or (n and not 1 <= lengths.min() <= lengths.max() <= length):
        raise ParameterError("lengths", f"must be {n} integers in [1, {length}]")
    dtype = np.dtype(omega.b.dtype)
    out = np.empty((n, omega.b.shape[0] * sum(pool_width(p, segments) for p in pools)), dtype)
    scale = 1.0 / math.sqrt(omega.b.shape[0])

    def run(start: int) -> None:
        rows = min(_BLOCK, n - start)
        x = np.zeros((_BLOCK, length, dim), dtype)
        ln = np.full(_BLOCK, length, np.int32)
        x[:rows], ln[:rows] = xs[start : start + rows], lengths[start : start + rows]
        phi = _pool_block(omega, jnp.asarray(x), jnp.asarray(ln), activation_name, tuple(pools),
                           segments)  # fmt: skip
        out[start : start + rows] = np.asarray(phi)[:rows] * scale

    workers = (os.cpu_count() or 1) if workers is None else workers
    _map_on_threads(run, range(0, n, _BLOCK), workers)
    return out
