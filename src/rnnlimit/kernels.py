"""The neural tangent kernel ``A`` of the infinite-width limit (docs/model.md §4).

For ``z = (x, s) ∈ R^d × R^m``, ``ẑ = (x, s, 1)`` and one hidden unit's input weights
``ω = (w, b, u) ~ N(0, diag(σ_w² I_d, σ_b² I_m, σ_u²))``::

    A(z, z') = [ E[σ(ω·ẑ) σ(ω·ẑ')] + E[σ'(ω·ẑ) σ'(ω·ẑ')] (ẑ·ẑ') ] · I_m

The first term ("nngp") is the gradient in ``c``, the second ("grad") the gradient in ``ω``;
``ẑ·ẑ' = x·x' + s·s' + 1`` is the plain dot product. The pre-activations ``(ω·ẑ, ω·ẑ')`` are
centred Gaussian with covariance ``Σ(z, z') = σ_w² x·x' + σ_b² s·s' + σ_u²``.

``A`` is a scalar times ``I_m``: every function here returns that scalar kernel, shape
``(n1, n2)`` for point sets ``z1 (n1, d+m)``, ``z2 (n2, d+m)``. Four evaluation routes:
closed forms (erf: Williams 1997; relu: Cho & Saul 2009 arc-cosine kernels of degree 1 and 0),
2-D Gaussian quadrature for any σ (trapezoid or Gauss–Hermite product rule on the Cholesky
factor of the 2×2 covariance), a table of that quadrature interpolated by a tensor Chebyshev
series (:mod:`rnnlimit.kerneltable`: any smooth σ, ~1e-10, at a few times the cost of a closed
form), and a Monte Carlo estimate with standard errors (:mod:`rnnlimit.kernelmc`). The
parameters of ``A`` are a :class:`~rnnlimit.kernelspec.KernelSpec`; here ``A`` is evaluated
(:func:`ntk`, :func:`diag`) and its Gram matrices built tile by tile within a memory bound
(:func:`gram`, :func:`time_gram`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit.errors import ParameterError, check_choice, check_int
from rnnlimit.kernelmc import monte_carlo as monte_carlo  # re-exported (docs/concepts.md)
from rnnlimit.kernelspec import PARTS, Array, Part, common_dtype, points, prior_variances
from rnnlimit.kernelspec import KernelSpec as KernelSpec  # re-exported (README, docs)
from rnnlimit.kerneltable import (
    expectation_table,
    quadrature_expectations,
    table_expectations,
)

DEFAULT_MAX_MEMORY_BYTES = 256 * 2**20
_HIGHEST = jax.lax.Precision.HIGHEST


# --- the two Gaussian expectations, elementwise in (Σ11, Σ22, Σ12) -----------------------------
# closed forms here; quadrature and its table in rnnlimit.kerneltable


def _erf_expectations(s11: Array, s22: Array, s12: Array) -> tuple[Array, Array]:
    """Williams (1997): with ``D = (1+2Σ11)(1+2Σ22) − 4Σ12² = det(I + 2Σ)``,
    ``E[erf(a) erf(a')] = (2/π) arcsin(2Σ12/√((1+2Σ11)(1+2Σ22)))`` and
    ``E[erf'(a) erf'(a')] = (4/π) E[exp(−a²−a'²)] = (4/π)/√D``."""
    # D = 1 + 2(Σ11+Σ22) + 4 det Σ, with det Σ ≥ 0 enforced against rounding; then
    # arcsin(2Σ12/√(D + 4Σ12²)) = atan2(2Σ12, √D): one √D serves both parts, no clipping
    root = jnp.sqrt(1.0 + 2.0 * (s11 + s22) + 4.0 * jnp.maximum(s11 * s22 - s12 * s12, 0.0))
    return (2.0 / math.pi) * jnp.arctan2(2.0 * s12, root), (4.0 / math.pi) / root


def _relu_expectations(s11: Array, s22: Array, s12: Array) -> tuple[Array, Array]:
    """Cho & Saul (2009) arc-cosine kernels, ``θ`` the angle with ``cos θ = Σ12/√(Σ11Σ22)``:
    ``E[relu(a) relu(a')] = (√(Σ11Σ22 − Σ12²) + (π − θ) Σ12)/(2π)`` (degree 1) and
    ``E[1(a>0) 1(a'>0)] = (π − θ)/(2π)`` (degree 0)."""
    root = jnp.sqrt(jnp.maximum(s11 * s22 - s12 * s12, 0.0))
    theta = jnp.arctan2(root, s12)  # better conditioned than arccos near θ = 0
    return (root + (math.pi - theta) * s12) / (2.0 * math.pi), (math.pi - theta) / (2.0 * math.pi)


# --- assembling A from the covariances ---------------------------------------------------------


def _assemble(
    spec: KernelSpec,
    method: str,
    part: str,
    s11: Array,
    s22: Array,
    s12: Array,
    zdot: Array | None,
) -> Array:
    """``nngp + grad · (ẑ·ẑ')`` (or one of the two parts) from the Gaussian expectations;
    ``zdot = ẑ·ẑ'`` is not needed (``None``) for ``part="nngp"``."""
    need_nngp, need_grad = part != "grad", part != "nngp"
    if method == "closed":
        closed = _erf_expectations if spec.activation == "erf" else _relu_expectations
        nngp, grad = closed(s11, s22, s12)
    elif method == "table":
        table = expectation_table(spec.activation, *spec.a_range)
        assert table is not None  # KernelFn resolves a failed table to "quadrature"
        nngp, grad = table_expectations(table, s11, s22, s12, need_nngp, need_grad)
    else:
        rule, order = spec.quadrature_rule, spec.quadrature_order
        args = (s11, s22, s12, need_nngp, need_grad)
        nngp, grad = quadrature_expectations(spec.activation, rule, order, *args)
    if part == "nngp":
        return nngp
    return grad * zdot if part == "grad" else nngp + grad * zdot


def _pair_kernel(spec: KernelSpec, method: str, part: str, z1: Array, z2: Array) -> Array:
    """Scalar kernel ``A(z1_i, z2_j)``, shape ``(n1, n2)``; inputs already validated."""
    v = prior_variances(spec, z1.dtype)
    s11 = (z1 * z1) @ v + spec.sigma_u**2
    s22 = (z2 * z2) @ v + spec.sigma_u**2
    s12 = jnp.matmul(z1 * v, z2.T, precision=_HIGHEST) + spec.sigma_u**2
    zdot = jnp.matmul(z1, z2.T, precision=_HIGHEST) + 1.0 if part != "nngp" else None
    return _assemble(spec, method, part, s11[:, None], s22[None, :], s12, zdot)


def _diag_kernel(spec: KernelSpec, method: str, part: str, z: Array) -> Array:
    """``A(z_i, z_i)``, shape ``(n,)``."""
    s = (z * z) @ prior_variances(spec, z.dtype) + spec.sigma_u**2
    return _assemble(spec, method, part, s, s, s, jnp.sum(z * z, axis=-1) + 1.0)


def _bytes_per_entry(spec: KernelSpec, itemsize: int) -> int:
    """Conservative bound on intermediate bytes per Gram entry (checked against XLA in tests)."""
    method = ntk(spec).method_used
    per_entry = {"closed": 8, "table": 16}.get(method, 4 * spec.quadrature_order + 8)
    return per_entry * itemsize


def _table_converges(spec: KernelSpec) -> bool:
    """Build (or fetch) the table of ``spec``; False when its series do not converge."""
    return expectation_table(spec.activation, *spec.a_range) is not None


def _in_table_range(spec: KernelSpec, z: Array) -> bool:
    """Whether every ``√Σ(z_i, z_i)`` lies in :attr:`KernelSpec.a_range` (concrete ``z`` only;
    traced values are taken to be in range, as the solver's points are)."""
    if isinstance(z, jax.core.Tracer):
        return True
    zz = np.asarray(z, dtype=np.float64)  # numpy: no tracing even inside a jitted caller
    variances = np.r_[[spec.sigma_w**2] * spec.d, [spec.sigma_b**2] * spec.m]
    s = (zz * zz) @ variances + spec.sigma_u**2
    return bool(s.size == 0 or s.max() <= spec.a_range[1] ** 2 * (1.0 + 1e-9))


# --- public API --------------------------------------------------------------------------------


class KernelFn:
    """``A`` for one :class:`KernelSpec`, jitted once; call as ``kernel_fn(z1, z2, part)``.

    ``z1 (n1, d+m)``, ``z2 (n2, d+m)`` (or single points ``(d+m,)``; ``z2=None`` means ``z1``)
    give the scalar kernel ``A(z1_i, z2_j)`` of shape ``(n1, n2)``, the full kernel being that
    times ``I_m``. ``part``: ``"both"`` = A, ``"nngp"`` = ``E[σσ']``, ``"grad"`` =
    ``E[σ'σ'](ẑ·ẑ')``. dtype follows the inputs. :attr:`method_used` says whether closed forms
    or quadrature are used (``method="auto"`` falls back to quadrature without an error).
    """

    def __init__(self, spec: KernelSpec) -> None:
        self.spec = spec
        self.method_used: str = spec.method_used
        if self.method_used == "table" and not _table_converges(spec):
            if spec.method == "table":
                message = (
                    f"the Chebyshev table of {spec.activation!r} does not converge to 1e-10 on "
                    f"a in {spec.a_range}; use 'quadrature'"
                )
                raise ParameterError("method", message)
            self.method_used = "quadrature"
        self._pair = jax.jit(partial(_pair_kernel, spec, self.method_used), static_argnums=0)
        self._diag = jax.jit(partial(_diag_kernel, spec, self.method_used), static_argnums=0)
        if self.method_used == "table":  # points outside the table's range: quadrature
            self._pair_out = jax.jit(partial(_pair_kernel, spec, "quadrature"), static_argnums=0)
            self._diag_out = jax.jit(partial(_diag_kernel, spec, "quadrature"), static_argnums=0)

    def pair(self, part: str, z1: Array, z2: Array) -> Array:
        """``A(z1_i, z2_j)`` for validated 2-D point sets of one dtype."""
        if self.method_used == "table" and not (
            _in_table_range(self.spec, z1) and _in_table_range(self.spec, z2)
        ):
            return self._pair_out(part, z1, z2)
        return self._pair(part, z1, z2)

    def __call__(self, z1: Array, z2: Array | None = None, part: Part = "both") -> Array:
        check_choice("part", part, PARTS)
        a, single1 = points("z1", z1, self.spec)
        b, single2 = points("z2", z1 if z2 is None else z2, self.spec)
        out = self.pair(part, *common_dtype(a, b))
        out = out[:, 0] if single2 else out
        return out[0] if single1 else out

    def diag(self, z: Array, part: Part = "both") -> Array:
        """``A(z_i, z_i)``, shape ``(n,)``: the diagonal of the Gram without forming it."""
        check_choice("part", part, PARTS)
        arr, single = points("z", z, self.spec)
        table_ok = self.method_used != "table" or _in_table_range(self.spec, arr)
        out = (self._diag if table_ok else self._diag_out)(part, arr)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"KernelFn({self.spec!r}, method_used={self.method_used!r})"


@lru_cache(maxsize=64)
def ntk(spec: KernelSpec) -> KernelFn:
    """Set up ``A`` of docs/model.md §4 once for ``spec`` (cached per spec) and return its
    kernel_fn."""
    return KernelFn(spec)


def diag(spec: KernelSpec, z: Array, *, part: Part = "both") -> Array:
    """``A(z_i, z_i)`` for ``z (n, d+m)``, shape ``(n,)``."""
    return ntk(spec).diag(z, part)


def tile_shape(
    spec: KernelSpec, n1: int, n2: int, itemsize: int, max_memory_bytes: int
) -> tuple[int, int]:
    """Largest ``(t1, t2)`` tile whose intermediates fit in ``max_memory_bytes``."""
    need = _bytes_per_entry(spec, itemsize)
    entries = max_memory_bytes // need
    if entries < 1:
        message = f"must be >= {need} (one Gram entry) for this spec, got {max_memory_bytes}"
        raise ParameterError("max_memory_bytes", message)
    t1 = min(n1, max(1, math.isqrt(entries)))
    return t1, min(n2, max(1, entries // t1))


def _pad_rows(z: Array, tile: int) -> Array:
    """Append zero rows (valid points) up to a multiple of ``tile``."""
    return jnp.pad(z, ((0, -z.shape[0] % tile), (0, 0)))


def gram(
    spec: KernelSpec,
    z1: Array,
    z2: Array | None = None,
    *,
    part: Part = "both",
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
) -> np.ndarray:
    """Gram matrix ``G_ij = A(z1_i, z2_j)`` (scalar part of ``A``), a NumPy array ``(n1, n2)``.

    Computed tile by tile so that intermediates never exceed ``max_memory_bytes`` (the output
    array itself is not counted); all tiles share one compiled shape (the last ones are padded).
    With ``z2=None`` and closed forms only tiles on or above the diagonal are computed and
    mirrored.
    """
    check_choice("part", part, PARTS)
    check_int("max_memory_bytes", max_memory_bytes, 1)
    kernel_fn = ntk(spec)
    a, _ = points("z1", z1, spec)
    b, _ = points("z2", z1 if z2 is None else z2, spec)
    a, b = common_dtype(a, b)
    n1, n2 = a.shape[0], b.shape[0]
    t1, t2 = tile_shape(spec, n1, n2, a.dtype.itemsize, max_memory_bytes)
    # closed forms and the (symmetrised) table are symmetric up to rounding; a quadrature
    # rule's error is not symmetric
    mirror = z2 is None and kernel_fn.method_used in ("closed", "table")
    if mirror:
        t1 = t2 = min(t1, t2)  # square tiles so that mirrored tiles line up
    if (t1, t2) == (n1, n2):
        return np.asarray(kernel_fn.pair(part, a, b))
    a, b = _pad_rows(a, t1), _pad_rows(b, t2)
    out = np.empty((n1, n2), dtype=a.dtype)
    for i in range(0, n1, t1):
        for j in range(0, n2, t2):
            rows, cols = slice(i, min(i + t1, n1)), slice(j, min(j + t2, n2))
            if mirror and j < i:
                out[rows, cols] = out[cols, rows].T
                continue
            tile = np.asarray(kernel_fn.pair(part, a[i : i + t1], b[j : j + t2]))
            out[rows, cols] = tile[: rows.stop - i, : cols.stop - j]
    return out


@dataclass(frozen=True)
class GramTiming:
    """Throughput of :func:`gram` on ``n × n`` points uniform in ``[-1, 1]^(d+m)``."""

    n: int
    seconds: float
    entries_per_second: float
    method_used: str
    dtype: str


def time_gram(
    spec: KernelSpec,
    n: int = 4000,
    *,
    repeats: int = 3,
    seed: int = 0,
    dtype: str = "float64",
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
) -> GramTiming:
    """Best-of-``repeats`` wall time of ``gram(spec, z)`` after one compiling call."""
    check_int("n", n, 1)
    check_int("repeats", repeats, 1)
    z = np.random.default_rng(seed).uniform(-1.0, 1.0, (n, spec.d + spec.m)).astype(dtype)
    out_dtype = gram(spec, z, max_memory_bytes=max_memory_bytes).dtype  # float32 without x64
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        gram(spec, z, max_memory_bytes=max_memory_bytes)
        best = min(best, time.perf_counter() - start)
    return GramTiming(n, best, n * n / best, ntk(spec).method_used, str(out_dtype))
