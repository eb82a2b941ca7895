"""Features of the diagonal-recurrence RNN's limit kernel (docs/model.md §6): one fused scan over
time.

For ``P`` samples ``ω_p = (w_p, b_p, u_p)`` each unit runs ``H_k = σ(a_k)``,
``a_k = w·X_k + b H_{k-1} + u``, ``H_0 = 0``, and carries its forward-mode sensitivities

    ∂H_k/∂w = σ'(a_k) (X_k + b ∂H_{k-1}/∂w),   ∂H_k/∂b = σ'(a_k) (H_{k-1} + b ∂H_{k-1}/∂b),
    ∂H_k/∂u = σ'(a_k) (1 + b ∂H_{k-1}/∂u).

A readout of the states (last ``H_L``, time average ``(1/L) Σ_k H_k``, both, or the last state and
the means over ``n_segments`` equal parts, default ``N_SEGMENTS``) gives the feature vector
``Φ(ξ) = P^{-1/2} [H, ∇_ω H]_{p=1..P}`` of a history ``ξ``, so that ``Φ(X) Φ(Y)ᵀ`` estimates the
kernel of :mod:`rnnlimit.seqkernel`. The scan is vectorised over ω and sequences, run in blocks
of rows and in concurrent panels; in float32 the native kernel ``_native/seq_features.c``
(:func:`rnnlimit.nativecalls.seq_features`) runs the same scan, several row ranges on threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import native, nativecalls
from rnnlimit.activations import activation
from rnnlimit.errors import ParameterError, check_choice, check_int
from rnnlimit.omega import Omega

Array = jax.Array
T = TypeVar("T")
READOUTS: tuple[str, ...] = ("last", "mean", "both", "segments")
N_SEGMENTS = 4
PARTS: tuple[str, ...] = ("ntk", "nngp")
BACKENDS: tuple[str, ...] = ("auto", "native", "jax")


def _cell(omega: Omega, act: str, ntk: bool, st: tuple, x: Array) -> tuple:
    """One step of the per-unit recursion with its forward-mode sensitivities (rows × units)."""
    sigma, dsigma = activation(act)
    h = st[0]
    a = x @ omega.w.T + omega.b * h + omega.u
    if not ntk:
        return (sigma(a),)
    s = dsigma(a)
    sb = s * omega.b
    gw = s[..., None] * x[:, None, :] + sb[..., None] * st[1]
    return sigma(a), gw, s * h + sb * st[2], s + sb * st[3]


def _flat(q: tuple[Array, ...]) -> Array:
    return jnp.concatenate([t if t.ndim == 3 else t[..., None] for t in q], axis=-1)


def segment_index(k: Array, lengths: Array, segs: int) -> Array:
    """Segment ``j = ⌊k·S/L_i⌋`` (clipped to ``S-1``) of step ``k`` of a series of length ``L_i``
    (``S = segs``)."""
    return jnp.minimum(k * segs // lengths, segs - 1)


def _segment_counts(lengths: Array, segs: int, length: int, dtype: Any) -> Array:
    """``c_ij`` of :func:`segment_counts` over steps ``k < length``, in ``dtype`` (jit-able)."""
    ks = jnp.arange(length)
    seg_of = segment_index(ks[None, :], lengths[:, None], segs)
    live = (ks[None, :] < lengths[:, None]).astype(dtype)
    return jnp.einsum("nk,nks->ns", live, jax.nn.one_hot(seg_of, segs, dtype=dtype))


def segment_counts(lengths: np.ndarray, segs: int) -> np.ndarray:
    """Steps per segment ``c_ij = #{k < L_i : ⌊k·S/L_i⌋ = j}`` (n, S) (0 for empty segments)."""
    lengths = np.asarray(lengths, np.int64)
    counts = _segment_counts(jnp.asarray(lengths), segs, int(lengths.max()), jnp.float32)
    return np.asarray(counts).astype(np.int64)  # sums of ≤ 2^24 ones: exact in float32


def _unit_features(
    omega: Omega, xs: Array, lengths: Array, act: str, readout: str, part: str, ragged: bool,
    segs: int = N_SEGMENTS,
) -> Array:  # fmt: skip
    """Per-unit features ``[H, ∂_w H, ∂_b H, ∂_u H]`` (n, P, f·r) by one scan over time.

    Segment sums are accumulated by a scatter-add into the row's current segment, so one step
    costs the same for any number of segments ``segs``.
    ``readout="history"`` returns instead the last-state features after every step (L, n, P, f).
    """
    n, length, d = xs.shape
    ntk = part == "ntk"
    zeros = jnp.zeros((n, omega.b.shape[0]), xs.dtype)
    state = (zeros, jnp.zeros((*zeros.shape, d), xs.dtype), zeros, zeros) if ntk else (zeros,)
    segs = segs if readout == "segments" else 1
    want_mean = readout in ("mean", "both", "segments")
    acc0 = tuple(jnp.zeros((n, segs, *q.shape[1:]), xs.dtype) for q in state) if want_mean else ()
    rows = jnp.arange(n)

    def step(carry, inputs):
        st, acc = carry
        k, x = inputs
        new = _cell(omega, act, ntk, st, x)
        live = k < lengths
        if ragged:  # freeze the state of sequences that have ended
            mask = [live[:, None, None] if q.ndim == 3 else live[:, None] for q in new]
            new = tuple(jnp.where(m, q, q0) for m, q, q0 in zip(mask, new, st, strict=True))
        if want_mean:  # running sums of the current segment of each row's true length
            seg = segment_index(k, lengths, segs)
            wt = live.astype(xs.dtype)
            acc = tuple(
                a0.at[rows, seg].add(wt.reshape(wt.shape + (1,) * (q.ndim - 1)) * q)
                for q, a0 in zip(new, acc, strict=True)
            )
        return (new, acc), (_flat(new) if readout == "history" else None)

    ks = jnp.arange(length)
    (last, sums), every = jax.lax.scan(step, (state, acc0), (ks, jnp.swapaxes(xs, 0, 1)))
    if readout == "history":
        return every
    out = [_flat(last)] if readout in ("last", "both", "segments") else []
    if want_mean:
        inv = 1.0 / jnp.maximum(_segment_counts(lengths, segs, length, xs.dtype), 1.0)
        out.extend(_flat(tuple(q[:, j] for q in sums)) * inv[:, j, None, None] for j in range(segs))
    return jnp.concatenate(out, axis=-1)


@partial(jax.jit, static_argnames=("act", "readout", "part", "ragged", "block", "segs"))
def _features_jit(omega, xs, lengths, scale, act, readout, part, ragged, block, segs):
    n, length, d = xs.shape
    xb = xs.reshape(n // block, block, length, d)
    lb = lengths.reshape(n // block, block)

    def one(args):
        f = _unit_features(omega, args[0], args[1], act, readout, part, ragged, segs)
        return f.reshape(block, -1) * scale

    return jax.lax.map(one, (xb, lb)).reshape(n, -1)


@partial(jax.jit, static_argnames=("act", "part"))
def _history_jit(omega, stream, scale, act, part):
    lengths = jnp.array([stream.shape[0]])
    every = _unit_features(omega, stream[None], lengths, act, "history", part, False)
    return every.reshape(stream.shape[0], -1) * scale


def _panel_rows(n: int, block: int) -> int:
    """Rows per feature panel: a multiple of ``block``, about ``n/8`` (at least 256 rows), so that
    panels feed efficient matrix products and several run concurrently."""
    want = max(256, -(-n // 8))
    return max(block, -(-min(want, n) // block) * block)


def _map_on_threads(fn: Callable[[int], T], starts: range, workers: int) -> list[T]:
    """``[fn(s) for s in starts]``, on up to ``workers`` threads when there is more than one
    start (the jitted scans and the native kernel release the GIL)."""
    if workers <= 1 or len(starts) <= 1:
        return [fn(s) for s in starts]
    with ThreadPoolExecutor(min(workers, len(starts))) as pool:
        return list(pool.map(fn, starts))


def native_reason(omega: Omega, activation_name: str) -> str:
    """Why the native feature scan cannot run these features (``''`` when it can): the one
    rule set of :func:`rnnlimit.native.decide` (built, float32, the activation)."""
    d = omega.w.shape[1]
    dtype = omega.b.dtype
    return native.decide(
        "seq", backend="native", dtype=dtype, d=d, m=1, activation=activation_name
    )[1]


def resolve_backend(omega: Omega, activation_name: str, backend: str = "auto") -> str:
    """The scan that ``backend`` runs for these features: ``"native"`` or ``"jax"``.

    ``"auto"`` gives native where :func:`native_reason` allows it and JAX computes on the CPU
    (with an accelerator the jitted scan runs there); ``"native"`` where it cannot run raises
    :class:`ParameterError` naming ``backend`` with the reason.
    """
    check_choice("backend", backend, BACKENDS)
    d, dtype = omega.w.shape[1], omega.b.dtype
    use = native.choose("seq", backend=backend, dtype=dtype, d=d, m=1, activation=activation_name)
    return "native" if use else "jax"


def _native_panels(
    omega: Omega, xs: np.ndarray, lengths: np.ndarray, act: str, readout: str, part: str,
    scale: float, segs: int, workers: int, out: np.ndarray | None,
) -> list[tuple[int, Array]]:  # fmt: skip
    """:func:`feature_panels` by the native scan: row ranges of about ``n/(4·workers)`` rows
    (at least 8) on ``workers`` threads, written into ``out``; one panel ``[(0, out)]``."""
    n, _, d = xs.shape
    segments = {"last": 0, "mean": 1, "both": 1}.get(readout, segs)
    width = feature_width(d, readout, part, segs) * omega.b.shape[0]
    dest = np.empty((n, width), np.float32) if out is None else out
    if dest.shape != (n, width) or dest.dtype != np.float32 or not dest.flags.c_contiguous:
        raise ParameterError("out", f"must be a C-contiguous float32 array of shape {(n, width)}")
    xs32 = np.ascontiguousarray(xs, np.float32)
    w_t = np.ascontiguousarray(np.asarray(omega.w, np.float32).T)  # (d, P), once for all ranges
    b, u = (np.ascontiguousarray(np.asarray(a, np.float32)) for a in (omega.b, omega.u))
    step = max(8, -(-n // (4 * max(workers, 1))))

    def run(start: int) -> None:
        nativecalls.seq_features(
            xs32, lengths, w_t, b, u, dest, activation=act, ntk=part == "ntk",
            last=readout != "mean", segments=segments, scale=float(scale),
            rows=(start, min(start + step, n)),
        )  # fmt: skip

    _map_on_threads(run, range(0, n, step), workers)
    return [(0, dest if out is not None else jnp.asarray(dest))]


def feature_panels(
    omega: Omega,
    xs: Array,
    lengths: Array | None = None,
    *,
    activation_name: str = "erf",
    readout: str = "last",
    part: str = "ntk",
    scale: float | None = None,
    block: int = 64,
    n_segments: int = N_SEGMENTS,
    panel: int | None = None,
    workers: int | None = None,
    out: np.ndarray | None = None,
    backend: str = "auto",
) -> list[tuple[int, Array]]:
    """Features of :func:`sequence_features` as row panels ``[(start, Φ[start:start+rows])]``.

    Each panel is one jitted call (``lax.map`` over blocks of ``block`` rows, each one fused scan
    over time); panels of equal shape share one compilation and run concurrently on ``workers``
    threads (default: the CPU count). Only the last panel's few input rows are zero-padded to a
    whole block (its output rows are sliced); nothing else is copied. With ``out`` (a host
    array (n, F) of the feature dtype) each worker copies its panel into ``out`` as soon as it is
    done, and the returned panels are views of ``out``.

    ``backend``: ``"native"`` runs the C scan (float32 only, :func:`native_reason`), in row
    ranges on ``workers`` threads, writing into ``out`` (or one new host array: one panel);
    ``"jax"`` the jitted scan; ``"auto"`` (default) the native one where it can run and JAX
    computes on the CPU (with a GPU the jitted scan runs there).
    """
    check_choice("readout", readout, READOUTS)
    check_choice("part", part, PARTS)
    check_int("n_segments", n_segments, 1)
    xs_np = np.asarray(xs, np.dtype(omega.b.dtype))
    n, length = xs_np.shape[:2]
    lengths_np = (np.full(n, length) if lengths is None else np.asarray(lengths)).astype(np.int32)
    if lengths_np.shape != (n,) or (n and not 0 <= lengths_np.min() <= lengths_np.max() <= length):
        raise ParameterError(
            "lengths", f"must be {n} integers in [0, {length}] (the padded length)"
        )
    scale = 1.0 / math.sqrt(omega.b.shape[0]) if scale is None else scale
    workers = (os.cpu_count() or 1) if workers is None else workers
    if resolve_backend(omega, activation_name, backend) == "native":
        return _native_panels(
            omega, xs_np, lengths_np, activation_name, readout, part, scale, n_segments,
            workers, out,
        )  # fmt: skip
    ragged = bool((lengths_np != length).any())
    block = max(1, min(block, n))
    panel = _panel_rows(n, block) if panel is None else max(block, panel // block * block)
    scale_arr = jnp.asarray(scale, xs_np.dtype)

    def one(start: int) -> tuple[int, Array]:
        rows = min(panel, n - start)
        padded = -(-rows // block) * block
        x, ln = xs_np[start : start + rows], lengths_np[start : start + rows]
        if padded != rows:
            x = np.concatenate([x, np.zeros((padded - rows, *x.shape[1:]), x.dtype)])
            ln = np.concatenate([ln, np.full(padded - rows, length, np.int32)])
        phi = _features_jit(
            omega, x, ln, scale_arr, activation_name, readout, part, ragged, block, n_segments
        )
        phi = jax.block_until_ready(phi if padded == rows else phi[:rows])
        if out is None:
            return start, phi
        out[start : start + rows] = np.asarray(phi)
        return start, out[start : start + rows]

    return _map_on_threads(one, range(0, n, panel), workers)


def sequence_features(
    omega: Omega,
    xs: Array,
    lengths: Array | None = None,
    *,
    activation_name: str = "erf",
    readout: str = "last",
    part: str = "ntk",
    scale: float | None = None,
    block: int = 64,
    n_segments: int = N_SEGMENTS,
    backend: str = "auto",
) -> Array:
    """Feature matrix ``Φ`` (n, F) with ``Φ Φᵀ`` the kernel estimate over the samples in ``omega``.

    ``xs`` (n, L, d), ``lengths`` (n,) true lengths (steps past a length are ignored: the
    last-state readout is ``H_{L_i}``, the mean divides by ``L_i``). ``F = P·f·r`` with ``f = d+3``
    for ``part="ntk"`` (``[H, ∇_ω H]``), ``f = 1`` for ``"nngp"``, and ``r = 2`` for
    ``readout="both"`` (last and mean concatenated, so the kernels add), ``r = 1 + S`` for
    ``"segments"`` with ``S = n_segments``: the last state and the segment means
    ``M_j = c_ij^{-1} Σ_{k<L_i, ⌊kS/L_i⌋=j} [H_k, ∇_ω H_k]`` over ``S`` equal parts of the true
    length (``c_ij`` steps, :func:`segment_counts`; an empty segment gives 0).
    ``scale`` defaults to ``P^{-1/2}``. Rows are processed in blocks of ``block`` to stay
    cache-resident, in panels computed concurrently (:func:`feature_panels`), or by the native
    scan in float32 (``backend``, as in :func:`feature_panels`).
    """
    panels = feature_panels(
        omega, xs, lengths, activation_name=activation_name, readout=readout, part=part,
        scale=scale, block=block, n_segments=n_segments, backend=backend,
    )  # fmt: skip
    return panels[0][1] if len(panels) == 1 else jnp.concatenate([p for _, p in panels])


def history_features(
    omega: Omega,
    stream: Array,
    *,
    activation_name: str = "erf",
    part: str = "ntk",
    scale: float | None = None,
) -> Array:
    """Features (T, F) of every history ``(X_0..X_k)`` of one stream ``stream`` (T, d), k < T.

    One scan from ``H = 0`` at the start of the stream; by the contraction
    ``sup|b|·sup|σ'| < 1`` the state forgets that start geometrically, so for ``k`` past a
    burn-in row ``k`` approximates the features of the infinite past (last-state readout).
    """
    check_choice("part", part, PARTS)
    stream = jnp.asarray(stream, omega.b.dtype)
    stream = stream[:, None] if stream.ndim == 1 else stream
    scale = 1.0 / math.sqrt(omega.b.shape[0]) if scale is None else scale
    return _history_jit(omega, stream, jnp.asarray(scale, stream.dtype), activation_name, part)


def host_features(omega: Omega, xs: Array, lengths: Array | None, **opts) -> np.ndarray:
    """:func:`feature_panels` written into one preallocated host array (n, F) (C order)."""
    width = feature_width(
        int(xs.shape[2]), opts.get("readout", "last"), opts.get("part", "ntk"),
        opts.get("n_segments", N_SEGMENTS),
    )  # fmt: skip
    out = np.empty((len(xs), width * omega.b.shape[0]), np.dtype(omega.b.dtype))
    feature_panels(omega, xs, lengths, out=out, **opts)
    return out


def feature_width(d: int, readout: str, part: str, n_segments: int = N_SEGMENTS) -> int:
    """Features per ω sample: ``f·r`` (see :func:`sequence_features`)."""
    f = d + 3 if part == "ntk" else 1
    return f * {"both": 2, "segments": 1 + n_segments}.get(readout, 1)


def coarsen_segments(means: np.ndarray, lengths: np.ndarray, factor: int) -> np.ndarray:
    """Segment means over ``S`` parts (n, ..., S, f) → means over ``S/factor`` parts.

    Exact because ``⌊k·(S/m)/L⌋ = ⌊⌊k·S/L⌋/m⌋``: coarse part ``J`` is the union of fine parts
    ``j = J·m .. J·m+m-1`` (``m = factor``), so ``M_J = Σ_j c_ij M_j / Σ_j c_ij`` with the step
    counts ``c_ij`` of :func:`segment_counts` (0 for an empty coarse part). One contraction
    over ``j`` with the normalised weights. Lets one feature pass serve several resolutions.
    """
    segs = means.shape[-2]
    check_int("factor", factor, 1)
    if segs % factor:
        raise ParameterError("factor", f"must divide the number of segments {segs}, got {factor}")
    counts = segment_counts(lengths, segs).astype(means.dtype).reshape(-1, segs // factor, factor)
    weights = counts / np.maximum(counts.sum(axis=-1, keepdims=True), 1.0)
    fine = means.reshape(len(counts), -1, segs // factor, factor, means.shape[-1])
    coarse = np.einsum("nxjmf,njm->nxjf", fine, weights)
    return coarse.reshape(*means.shape[:-2], segs // factor, means.shape[-1])
