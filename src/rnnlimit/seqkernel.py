"""The infinite-width NTK of the diagonal-recurrence RNN (MODEL.md §6) as a sequence kernel.

Each hidden unit runs its own recursion ``H_k = σ(w·X_k + b H_{k-1} + u)``, ``H_0 = 0``, so its
readout state ``H`` (last state ``H_L``, or time average ``(1/L) Σ_k H_k``) is a function of
``ω = (w, b, u)`` and the input history only. The limit kernel between histories ``ξ, ξ'`` is

    K(ξ, ξ') = E_ω[H H'] + E_ω[∇_ω H · ∇_ω H']          (NNGP part + gradient part)

(``E[c²] = 1`` has been used). ``∇_ω H`` is carried forward through the recursion in forward mode,
``d+2`` numbers per unit:

    ∂H_k/∂w = σ'(a_k) (X_k + b ∂H_{k-1}/∂w),   ∂H_k/∂b = σ'(a_k) (H_{k-1} + b ∂H_{k-1}/∂b),
    ∂H_k/∂u = σ'(a_k) (1 + b ∂H_{k-1}/∂u),     a_k = w·X_k + b H_{k-1} + u.

With ``P`` samples ``ω_p`` (Monte Carlo, or scrambled Sobol points) the feature vector of a history
is ``Φ(ξ) = P^{-1/2} [H, ∇_ω H]_{p=1..P}`` and ``K ≈ Φ(X) Φ(Y)ᵀ``: one fused ``lax.scan`` over time,
vectorised over ω and sequences, followed by a matrix product. Standard errors come from
``n_batches`` independent groups of ω (independent scrambles for QMC): ``SE = sd_g(K_g)/√B``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm, qmc

from rnnlimit.activations import ACTIVATIONS, activation, sup_derivative
from rnnlimit.datasets import as_batch
from rnnlimit.errors import ParameterError, check_choice, check_int, check_range

Array = jax.Array
B_LAWS: tuple[str, ...] = ("uniform", "logtime")
READOUTS: tuple[str, ...] = ("last", "mean", "both", "segments")
N_SEGMENTS = 4
PARTS: tuple[str, ...] = ("ntk", "nngp")
METHODS: tuple[str, ...] = ("mc", "qmc")
DTYPES: tuple[str, ...] = ("float32", "float64")


def check_contraction(b_max: float, activation_name: str) -> None:
    """Refuse ``sup|b|·sup|σ'| ≥ 1``: then ``H = σ(w·x + b H∘shift + u)`` may not contract."""
    check_choice("activation", activation_name, ACTIVATIONS)
    lip = sup_derivative(activation_name)
    if not (0.0 <= b_max and b_max * lip < 1.0):
        raise ParameterError(
            "b_max",
            f"must satisfy 0 <= b_max and b_max * sup|σ'| < 1 (sup|σ'| = {lip:.4g} for "
            f"{activation_name}), i.e. b_max in [0, {1.0 / lip:.4g}), got {b_max!r}",
        )


def check_dtype(dtype: str) -> None:
    """Refuse an unknown dtype, and float64 while JAX runs in 32-bit mode."""
    check_choice("dtype", dtype, DTYPES)
    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise ParameterError(
            "dtype",
            "float64 needs jax_enable_x64=True; use 'float32' or "
            "enable it with jax.config.update('jax_enable_x64', True)",
        )


@dataclass(frozen=True)
class OmegaLaw:
    """Law of ``ω = (w, b, u)``: ``w ~ N(0, σ_w² I_d)``, ``u ~ N(0, σ_u²)``, bounded ``b``.

    ``b_law="uniform"``: ``b ~ U(-b_max, b_max)``. ``b_law="logtime"``: ``b = ±b_max(1 - τ^{-1})``
    with ``τ`` log-uniform on ``[1, tau_max]`` (memory time scales spread over decades).
    """

    sigma_w: float = 1.0
    sigma_u: float = 1.0
    b_max: float = 0.8
    b_law: str = "uniform"
    tau_max: float = 100.0
    activation: str = "erf"

    def __post_init__(self) -> None:
        check_range("sigma_w", self.sigma_w, 0.0)
        check_range("sigma_u", self.sigma_u, 0.0)
        check_choice("b_law", self.b_law, B_LAWS)
        check_range("tau_max", self.tau_max, 1.0)
        check_contraction(float(self.b_max), self.activation)

    def transform(self, uniforms: np.ndarray, dim_in: int) -> tuple[np.ndarray, ...]:
        """Map points of ``(0,1)^{d+2}`` (columns: w, b, u) to ``(w, b, u)`` by inverse CDFs."""
        v = np.clip(uniforms, 1e-12, 1.0 - 1e-12)
        w = self.sigma_w * norm.ppf(v[:, :dim_in])
        s = 2.0 * v[:, dim_in] - 1.0
        if self.b_law == "uniform":
            b = self.b_max * s
        else:
            b = np.sign(s) * self.b_max * (1.0 - self.tau_max ** (-np.abs(s)))
        u = self.sigma_u * norm.ppf(v[:, dim_in + 1])
        return w, b, u


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Omega:
    """``P`` samples of ω: ``w`` (P, d), ``b`` (P,), ``u`` (P,)."""

    w: Array
    b: Array
    u: Array

    def __getitem__(self, sl: slice) -> Omega:
        return Omega(self.w[sl], self.b[sl], self.u[sl])


def sample_omega(
    key: Array,
    n_theta: int,
    dim_in: int,
    law: OmegaLaw,
    *,
    method: str = "mc",
    n_batches: int = 1,
    dtype: str = "float64",
) -> Omega:
    """Draw ``n_theta`` samples of ω in ``n_batches`` independent groups (consecutive slices).

    ``method="mc"``: i.i.d. draws from ``key``. ``method="qmc"``: each group is an independently
    scrambled Sobol set (seeded from ``key``) of ``n_theta / n_batches`` points in ``(0,1)^{d+2}``
    mapped by ``law.transform``; a power-of-two group size keeps the Sobol balance.
    """
    check_int("n_theta", n_theta, 1)
    check_int("dim_in", dim_in, 1)
    check_int("n_batches", n_batches, 1, n_theta)
    check_choice("method", method, METHODS)
    check_dtype(dtype)
    if n_theta % n_batches:
        raise ParameterError("n_batches", f"must divide n_theta={n_theta}, got {n_batches}")
    if method == "mc":
        bits = np.asarray(jax.random.bits(key, (n_theta, dim_in + 2), dtype=jnp.uint32))
        v = (bits.astype(np.float64) + 0.5) / 2.0**32
    else:
        seeds = np.asarray(jax.random.randint(key, (n_batches,), 0, 2**31 - 1))
        m = n_theta // n_batches
        groups = []
        for s in seeds:
            sob = qmc.Sobol(d=dim_in + 2, scramble=True, seed=int(s))
            groups.append(
                sob.random_base2(int(math.log2(m))) if m & (m - 1) == 0 else sob.random(m)
            )
        v = np.concatenate(groups)
    w, b, u = law.transform(v.astype(np.float64), dim_in)
    dt = jnp.dtype(dtype)
    return Omega(jnp.asarray(w, dt), jnp.asarray(b, dt), jnp.asarray(u, dt))


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


def _unit_features(
    omega: Omega, xs: Array, lengths: Array, act: str, readout: str, part: str, ragged: bool
) -> Array:
    """Per-unit features ``[H, ∂_w H, ∂_b H, ∂_u H]`` (n, P, f·r) by one scan over time.

    ``readout="history"`` returns instead the last-state features after every step (L, n, P, f).
    """
    n, length, d = xs.shape
    ntk = part == "ntk"
    zeros = jnp.zeros((n, omega.b.shape[0]), xs.dtype)
    state = (zeros, jnp.zeros((*zeros.shape, d), xs.dtype), zeros, zeros) if ntk else (zeros,)
    segs = N_SEGMENTS if readout == "segments" else 1
    want_mean = readout in ("mean", "both", "segments")
    acc0 = (
        (tuple(jnp.zeros((n, segs, *q.shape[1:]), xs.dtype) for q in state),
         jnp.zeros((n, segs), xs.dtype))
        if want_mean else ()
    )  # fmt: skip

    def step(carry, inputs):
        st, acc = carry
        k, x = inputs
        new = _cell(omega, act, ntk, st, x)
        live = k < lengths
        if ragged:  # freeze the state of sequences that have ended
            mask = [live[:, None, None] if q.ndim == 3 else live[:, None] for q in new]
            new = tuple(jnp.where(m, q, q0) for m, q, q0 in zip(mask, new, st, strict=True))
        if want_mean:  # running sums over each of `segs` equal parts of the true length
            seg = jnp.minimum(k * segs // lengths, segs - 1)
            wt = jax.nn.one_hot(seg, segs, dtype=xs.dtype) * live[:, None]
            sums = tuple(
                a0 + wt.reshape(wt.shape + (1,) * (q.ndim - 1)) * q[:, None]
                for q, a0 in zip(new, acc[0], strict=True)
            )
            acc = (sums, acc[1] + wt)
        return (new, acc), (_flat(new) if readout == "history" else None)

    ks = jnp.arange(length)
    (last, acc), every = jax.lax.scan(step, (state, acc0), (ks, jnp.swapaxes(xs, 0, 1)))
    if readout == "history":
        return every
    out = [_flat(last)] if readout in ("last", "both", "segments") else []
    if want_mean:
        sums, counts = acc
        parts = [
            _flat(tuple(q[:, j] for q in sums)) / jnp.maximum(counts[:, j], 1.0)[:, None, None]
            for j in range(segs)
        ]
        out.extend(parts)
    return jnp.concatenate(out, axis=-1)


@partial(jax.jit, static_argnames=("act", "readout", "part", "ragged", "block"))
def _features_jit(omega, xs, lengths, scale, act, readout, part, ragged, block):
    n, length, d = xs.shape
    xb = xs.reshape(n // block, block, length, d)
    lb = lengths.reshape(n // block, block)

    def one(args):
        f = _unit_features(omega, args[0], args[1], act, readout, part, ragged)
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
    panel: int | None = None,
    workers: int | None = None,
    out: np.ndarray | None = None,
) -> list[tuple[int, Array]]:
    """Features of :func:`sequence_features` as row panels ``[(start, Φ[start:start+rows])]``.

    Each panel is one jitted call (``lax.map`` over blocks of ``block`` rows, each one fused scan
    over time); panels of equal shape share one compilation and run concurrently on ``workers``
    threads (default: the CPU count). Only the last panel's few input rows are zero-padded to a
    whole block (its output rows are sliced); nothing else is copied. With ``out`` (a host
    array (n, F) of the feature dtype) each worker copies its panel into ``out`` as soon as it is
    done, and the returned panels are views of ``out``.
    """
    check_choice("readout", readout, READOUTS)
    check_choice("part", part, PARTS)
    xs_np = np.asarray(xs, np.dtype(omega.b.dtype))
    n, length = xs_np.shape[:2]
    lengths_np = (np.full(n, length) if lengths is None else np.asarray(lengths)).astype(np.int32)
    ragged = bool((lengths_np != length).any())
    block = max(1, min(block, n))
    panel = _panel_rows(n, block) if panel is None else max(block, panel // block * block)
    scale = 1.0 / math.sqrt(omega.b.shape[0]) if scale is None else scale
    scale_arr = jnp.asarray(scale, xs_np.dtype)

    def one(start: int) -> tuple[int, Array]:
        rows = min(panel, n - start)
        padded = -(-rows // block) * block
        x, ln = xs_np[start : start + rows], lengths_np[start : start + rows]
        if padded != rows:
            x = np.concatenate([x, np.zeros((padded - rows, *x.shape[1:]), x.dtype)])
            ln = np.concatenate([ln, np.full(padded - rows, length, np.int32)])
        phi = _features_jit(omega, x, ln, scale_arr, activation_name, readout, part, ragged, block)
        phi = jax.block_until_ready(phi if padded == rows else phi[:rows])
        if out is None:
            return start, phi
        out[start : start + rows] = np.asarray(phi)
        return start, out[start : start + rows]

    starts = list(range(0, n, panel))
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(starts) == 1:
        return [one(s) for s in starts]
    with ThreadPoolExecutor(min(workers, len(starts))) as pool:
        return list(pool.map(one, starts))


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
) -> Array:
    """Feature matrix ``Φ`` (n, F) with ``Φ Φᵀ`` the kernel estimate over the samples in ``omega``.

    ``xs`` (n, L, d), ``lengths`` (n,) true lengths (steps past a length are ignored: the
    last-state readout is ``H_{L_i}``, the mean divides by ``L_i``). ``F = P·f·r`` with ``f = d+3``
    for ``part="ntk"`` (``[H, ∇_ω H]``), ``f = 1`` for ``"nngp"``, and ``r = 2`` for
    ``readout="both"`` (last and mean concatenated, so the kernels add), ``r = 1 + N_SEGMENTS``
    for ``"segments"`` (last state and the means over each quarter of the true length).
    ``scale`` defaults to ``P^{-1/2}``. Rows are processed in blocks of ``block`` to stay
    cache-resident, in panels computed concurrently (:func:`feature_panels`).
    """
    panels = feature_panels(
        omega, xs, lengths, activation_name=activation_name, readout=readout, part=part,
        scale=scale, block=block,
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
    width = _feature_width(int(xs.shape[2]), opts.get("readout", "last"), opts.get("part", "ntk"))
    out = np.empty((len(xs), width * omega.b.shape[0]), np.dtype(omega.b.dtype))
    feature_panels(omega, xs, lengths, out=out, **opts)
    return out


def _feature_width(d: int, readout: str, part: str) -> int:
    """Features per ω sample: ``f·r`` (see :func:`sequence_features`)."""
    f = d + 3 if part == "ntk" else 1
    return f * {"both": 2, "segments": 1 + N_SEGMENTS}.get(readout, 1)


def _gram(
    omega: Omega,
    n_batches: int,
    chunk: int,
    features: Callable[[Omega, float], tuple[np.ndarray, np.ndarray | None]],
    return_stderr: bool,
    diag: bool,
    norms: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Accumulate ``K = (1/B) Σ_g Φ_g(X) Φ_g(Y)ᵀ`` over ω-groups, in ω-chunks of ``chunk``.

    Returns ``(K, SE or None, diag K(X,X), diag K(Y,Y))`` (diagonals only if ``norms``);
    with ``diag=True`` ``K`` is the vector ``K(x_i, x_i)``. The features arrive as host arrays;
    the products run on host BLAS (``Φ Φᵀ`` of one array as a symmetric rank-k update).
    """
    p = omega.b.shape[0]
    m = p // n_batches
    s1 = s2 = d1 = d2 = None
    for g in range(n_batches):
        kg = g1 = g2 = None
        for c in range(g * m, (g + 1) * m, chunk):
            f1, f2 = features(omega[c : min(c + chunk, (g + 1) * m)], 1.0 / math.sqrt(m))
            f1 = np.asarray(f1)
            f2 = None if f2 is None else np.asarray(f2)
            if norms or diag:
                q1 = np.einsum("ij,ij->i", f1, f1)
                q2 = q1 if f2 is None or not norms else np.einsum("ij,ij->i", f2, f2)
                g1 = q1 if g1 is None else g1 + q1
                g2 = q2 if g2 is None else g2 + q2
            if diag:
                kg = g1
                continue
            # host BLAS: Φ Φᵀ of one array is a symmetric rank-k update (half the flops)
            part = f1 @ f1.T if f2 is None else f1 @ f2.T
            kg = part if kg is None else kg + part
        s1 = kg if s1 is None else s1 + kg
        if g1 is not None:
            d1 = g1 if d1 is None else d1 + g1
            d2 = g2 if d2 is None else d2 + g2
        if return_stderr:
            s2 = kg * kg if s2 is None else s2 + kg * kg
    k = np.asarray(s1) / n_batches
    se = None
    if return_stderr:
        var = (np.asarray(s2) - n_batches * k * k) / max(n_batches - 1, 1)
        se = np.sqrt(np.maximum(var, 0.0) / n_batches) if n_batches > 1 else np.full_like(k, np.nan)
    if d1 is None:
        return k, se, np.zeros(0), np.zeros(0)
    return k, se, np.asarray(d1) / n_batches, np.asarray(d2) / n_batches


KernelFn = Callable[..., np.ndarray | tuple[np.ndarray, np.ndarray]]


def sequence_kernel(
    dim_in: int,
    *,
    key: Array,
    law: OmegaLaw | None = None,
    n_theta: int = 1024,
    method: str = "mc",
    n_batches: int = 1,
    readout: str = "last",
    normalize: bool = False,
    dtype: str = "float64",
    memory_budget: int = 2**30,
    block: int = 64,
) -> KernelFn:
    """Set up the Monte Carlo / QMC limit NTK between sequences; return ``kernel_fn``.

    ``kernel_fn(x1, x2=None, *, part="ntk", diag=False, return_stderr=False)`` returns the Gram
    ``K(x1, x2)`` (n1, n2) (``K(x1, x1)`` when ``x2`` is None; the vector ``K(x_i, x_i)`` with
    ``diag=True``), and its standard errors as a second array with ``return_stderr=True``
    (needs ``n_batches ≥ 2``). ``part="nngp"`` gives ``E[H H']`` alone. ``x1``/``x2``: anything
    ``as_batch`` takes, of ``dim_in`` channels; lengths may differ. ``normalize=True`` returns
    ``K(x,y)/√(K(x,x)K(y,y))`` (standard errors divided likewise, ignoring the diagonal's own
    error). ω is drawn once here; the ω-loop is tiled so that the features of one chunk take about
    ``memory_budget`` bytes.
    """
    law = OmegaLaw() if law is None else law
    check_choice("readout", readout, READOUTS)
    check_int("memory_budget", memory_budget, 1)
    check_int("block", block, 1)
    omega = sample_omega(key, n_theta, dim_in, law, method=method, n_batches=n_batches, dtype=dtype)
    itemsize = jnp.dtype(dtype).itemsize
    width = _feature_width(dim_in, readout, "ntk")

    def kernel_fn(x1, x2=None, *, part="ntk", diag=False, return_stderr=False):
        check_choice("part", part, PARTS)
        if return_stderr and n_batches < 2:
            raise ParameterError("n_batches", "must be >= 2 for standard errors")
        xs1, l1 = as_batch(x1, dim_in)
        b2 = None if (x2 is None or diag) else as_batch(x2, dim_in)
        for name, xs in (("x1", xs1), ("x2", None if b2 is None else b2[0])):
            if xs is not None and xs.shape[2] != dim_in:
                raise ParameterError(name, f"must have {dim_in} channels, got {xs.shape[2]}")
        rows = len(xs1) + (0 if b2 is None else len(b2[0]))
        chunk = max(1, min(n_theta // n_batches, memory_budget // (3 * rows * width * itemsize)))
        opts = {"activation_name": law.activation, "readout": readout, "part": part, "block": block}

        def features(om, scale):
            f1 = host_features(om, xs1, l1, scale=scale, **opts)
            f2 = None if b2 is None else host_features(om, b2[0], b2[1], scale=scale, **opts)
            return f1, f2

        k, se, d1, d2 = _gram(omega, n_batches, chunk, features, return_stderr, diag, normalize)
        if normalize:
            den = d1 if diag else np.sqrt(np.outer(d1, d2))
            k = k / den
            se = None if se is None else se / den
        return (k, se) if return_stderr else k

    return kernel_fn


def history_kernel(
    dim_in: int,
    *,
    key: Array,
    law: OmegaLaw | None = None,
    n_theta: int = 1024,
    method: str = "mc",
    n_batches: int = 1,
    dtype: str = "float64",
) -> KernelFn:
    """Limit NTK between histories of one stream; returns ``kernel_fn(stream, times1, times2)``.

    ``kernel_fn(stream, times1, times2=None, *, part="ntk", return_stderr=False)`` is the Gram
    between the histories ``(X_0..X_k)``, ``k ∈ times1`` and ``k ∈ times2``, from
    :func:`history_features` (one scan over the stream per ω-chunk).
    """
    law = OmegaLaw() if law is None else law
    omega = sample_omega(key, n_theta, dim_in, law, method=method, n_batches=n_batches, dtype=dtype)

    def kernel_fn(stream, times1, times2=None, *, part="ntk", return_stderr=False):
        if return_stderr and n_batches < 2:
            raise ParameterError("n_batches", "must be >= 2 for standard errors")
        t1 = np.asarray(times1)
        t2 = None if times2 is None else np.asarray(times2)

        def features(om, scale):
            f = history_features(om, stream, activation_name=law.activation, part=part, scale=scale)
            return f[t1], (None if t2 is None else f[t2])

        k, se, _, _ = _gram(
            omega, n_batches, n_theta // n_batches, features, return_stderr, False, False
        )
        return (k, se) if return_stderr else k

    return kernel_fn
