"""The infinite-width NTK of the diagonal-recurrence RNN (docs/model.md §6) as a sequence kernel.

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
vectorised over ω and sequences (:mod:`rnnlimit.seqfeatures`), followed by a matrix product.
Standard errors come from ``n_batches`` independent groups of ω (independent scrambles for QMC):
``SE = sd_g(K_g)/√B``. This module holds the tiled Gram; the law of ω and its sampling live in
:mod:`rnnlimit.omega`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit.datasets import as_batch
from rnnlimit.errors import ParameterError, check_choice, check_int
from rnnlimit.omega import B_LAWS as B_LAWS  # re-exported (public before omega)
from rnnlimit.omega import DTYPES as DTYPES
from rnnlimit.omega import METHODS as METHODS
from rnnlimit.omega import Omega as Omega
from rnnlimit.omega import OmegaLaw as OmegaLaw
from rnnlimit.omega import check_contraction as check_contraction
from rnnlimit.omega import check_dtype as check_dtype
from rnnlimit.omega import sample_omega as sample_omega
from rnnlimit.seqfeatures import BACKENDS as BACKENDS
from rnnlimit.seqfeatures import N_SEGMENTS as N_SEGMENTS  # re-exported (public before seqfeatures)
from rnnlimit.seqfeatures import PARTS as PARTS
from rnnlimit.seqfeatures import READOUTS as READOUTS
from rnnlimit.seqfeatures import feature_panels as feature_panels
from rnnlimit.seqfeatures import feature_width, history_features, host_features
from rnnlimit.seqfeatures import sequence_features as sequence_features

Array = jax.Array


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
    n_segments: int = N_SEGMENTS,
    normalize: bool = False,
    dtype: str = "float64",
    memory_budget: int = 2**30,
    block: int = 64,
    backend: str = "auto",
) -> KernelFn:
    """Set up the Monte Carlo / QMC limit NTK between sequences; return ``kernel_fn``.

    ``kernel_fn(x1, x2=None, *, part="ntk", diag=False, return_stderr=False)`` returns the Gram
    ``K(x1, x2)`` (n1, n2) (``K(x1, x1)`` when ``x2`` is None; the vector ``K(x_i, x_i)`` with
    ``diag=True``), and its standard errors as a second array with ``return_stderr=True``
    (needs ``n_batches ≥ 2``). ``readout="segments"`` uses ``n_segments`` equal parts of each
    true length (:func:`sequence_features`). ``part="nngp"`` gives ``E[H H']`` alone.
    ``x1``/``x2``: anything ``as_batch`` takes, of ``dim_in`` channels; lengths may differ.
    ``normalize=True`` returns ``K(x,y)/√(K(x,x)K(y,y))`` (standard errors divided likewise,
    ignoring the diagonal's own error). ω is drawn once here; the ω-loop is tiled so that the
    features of one chunk take about ``memory_budget`` bytes. ``backend`` picks the feature
    scan: ``"native"`` (C, float32), ``"jax"``, or ``"auto"`` (native where it can run).
    """
    law = OmegaLaw() if law is None else law
    check_choice("readout", readout, READOUTS)
    check_int("n_segments", n_segments, 1)
    check_int("memory_budget", memory_budget, 1)
    check_int("block", block, 1)
    check_choice("backend", backend, BACKENDS)
    omega = sample_omega(key, n_theta, dim_in, law, method=method, n_batches=n_batches, dtype=dtype)
    itemsize = jnp.dtype(dtype).itemsize
    width = feature_width(dim_in, readout, "ntk", n_segments)

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
        opts = {"activation_name": law.activation, "readout": readout, "part": part,
                "block": block, "n_segments": n_segments, "backend": backend}  # fmt: skip

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
