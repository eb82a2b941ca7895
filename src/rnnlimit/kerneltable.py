"""Kernels ``A`` without a closed form (docs/model.md §4): 2-D quadrature, and its table.

``A`` needs, per pair of points, ``N = E[σ(u)σ(v)]`` and ``G = E[σ'(u)σ'(v)]`` for
``(u, v) ~ N(0, Σ)``. Written in ``a = √Σ11``, ``b = √Σ22`` and the correlation
``ρ = Σ12/(ab)``, both are smooth functions ``f(a, b, ρ)`` on a box: ``a, b`` lie in
``[σ_u, √(σ_w² d + σ_b² m + σ_u²)]`` for ``z ∈ [-1, 1]^{d+m}`` and ``ρ ∈ [-1, 1]``. They are
tabulated once per activation and range by 2-D quadrature (the trapezoid rule of
:func:`quadrature_nodes`, refined for the largest ``a``) at Chebyshev nodes and
stored as a tensor Chebyshev series: split into even and odd parts in ``ρ``,

    f(a, b, ρ) = Σ_{p,q,k} C⁺_pqk T_p(α(a)) T_q(α(b)) T_k(y)
               + ρ Σ_{p,q,k} C⁻_pqk T_p(α(a)) T_q(α(b)) T_k(y),      y = 2ρ² − 1,

with ``α`` the affine map of ``log a`` onto ``[-1, 1]`` (the series in ``log a`` is the
shortest of the maps tried: ``a``, ``a²``, ``1/a``, ``log a``). For an odd σ (erf, tanh) ``N``
has only the odd part and ``G`` only the even one, so half of the series vanish and are dropped.
Coefficients are truncated where the sum of the dropped ones is below ``tol`` per axis.

Evaluation: ``T_p(α(a_i))`` per row and ``T_q(α(b_j))`` per column, then per entry a Clenshaw
sum over ``k`` whose coefficients ``Σ_q H_iqk T_q(α(b_j))`` (``H = T(α(a)) C`` per row) are
formed on the fly: one fused elementwise kernel, no gathers and no per-entry tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from scipy.fft import dct

from rnnlimit.activations import activation as activation_pair

Array = jax.Array
#: Largest Chebyshev node counts tried (per ``a`` axis, and in ``y``) before giving up.
MAX_NODES_A, MAX_NODES_Y = 48, 96
_HALF_WIDTH = 8.5
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True, eq=False)
class Series:
    """One part ``Σ C_pqk T_p(α(a)) T_q(α(b)) T_k(y)``: ``coef (n_p, n_p, K)``, symmetric in
    ``(p, q)``; ``odd`` multiplies it by ``ρ``."""

    coef: np.ndarray
    odd: bool


@dataclass(frozen=True, eq=False)
class ExpectationTable:
    """``N`` and ``G`` of one activation on ``a, b ∈ [a_min, a_max]``, ``ρ ∈ [-1, 1]``.

    ``nngp`` and ``grad`` hold the non-vanishing parts (:class:`Series`); ``tail`` bounds the
    truncation error of each (sum of dropped coefficients); ``nodes = (n_a, n_y)`` the build grid.
    """

    activation: str
    a_min: float
    a_max: float
    nngp: tuple[Series, ...]
    grad: tuple[Series, ...]
    tail: float
    nodes: tuple[int, int]

    def log_range(self) -> tuple[float, float]:
        return math.log(self.a_min), math.log(self.a_max)


def chebyshev_nodes(n: int) -> np.ndarray:
    """First-kind nodes ``cos(π(j + ½)/n)``, ``j = 0..n-1`` (decreasing)."""
    return np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _coefficients(values: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients of the interpolant through values at first-kind nodes (all axes)."""
    c = values
    for axis in range(values.ndim):
        n = values.shape[axis]
        c = dct(c, type=2, axis=axis) / n
        first = [slice(None)] * values.ndim
        first[axis] = 0
        c[tuple(first)] *= 0.5
    return c


# --- 2-D Gaussian quadrature ---------------------------------------------------------------


def quadrature_nodes(rule: str, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``ξ_k`` and weights ``w_k`` with ``Σ_k w_k f(ξ_k) ≈ E[f(ξ)]``, ``ξ ~ N(0, 1)``.

    ``"trapezoid"``: ``order`` equispaced nodes on ``[-8.5, 8.5]`` (tail mass ~1e-17), weights
    ``∝ φ(ξ_k)``; converges geometrically in ``1/h`` for integrands analytic in a strip, and
    beats ``"gauss_hermite"`` (nodes of Hermite_e, which spends nodes far in the tails) by
    orders of magnitude at equal order for erf/tanh kernels with ``Σ ≳ 1`` (see tests).
    """
    if rule == "gauss_hermite":
        nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    else:
        nodes = np.linspace(-_HALF_WIDTH, _HALF_WIDTH, order)
        weights = np.exp(-0.5 * nodes * nodes)
    return nodes, weights / weights.sum()


def quadrature_expectations(
    activation: str,
    rule: str,
    order: int,
    s11: Array,
    s22: Array,
    s12: Array,
    need_nngp: bool,
    need_grad: bool,
) -> tuple[Array, Array]:
    """Tensor-product rule (:func:`quadrature_nodes`) on ``(a, a') = (L11 ξ1, L21 ξ1 + L22 ξ2)``,
    ``L`` the Cholesky factor of the 2×2 covariance; ``L22 = √max(Σ22 − L21², 0)`` so perfectly
    correlated pairs reduce to a 1-D rule. The rule's error is not symmetric in ``(z, z')``.
    Outer axis scanned, inner vectorised: O(order) memory per entry."""
    sigma, sigma_prime = activation_pair(activation)
    dtype = s12.dtype
    nodes, weights = (jnp.asarray(v, dtype) for v in quadrature_nodes(rule, order))
    l11 = jnp.sqrt(s11)
    l21 = s12 / l11
    l22 = jnp.sqrt(jnp.maximum(s22 - l21 * l21, 0.0))
    shape = jnp.broadcast_shapes(s11.shape, s22.shape, s12.shape)
    zero = jnp.zeros(shape, dtype)

    def outer_node(
        carry: tuple[Array, Array], node: tuple[Array, Array]
    ) -> tuple[tuple[Array, Array], None]:
        nngp, grad = carry
        xi, wi = node
        a = l11 * xi
        a_prime = (l21 * xi)[..., None] + l22[..., None] * nodes
        if need_nngp:
            nngp = nngp + wi * sigma(a) * jnp.matmul(sigma(a_prime), weights, precision=_HIGHEST)
        if need_grad:
            inner = jnp.matmul(sigma_prime(a_prime), weights, precision=_HIGHEST)
            grad = grad + wi * sigma_prime(a) * inner
        return (nngp, grad), None

    (nngp, grad), _ = jax.lax.scan(outer_node, (zero, zero), (nodes, weights))
    return nngp, grad


# --- the table --------------------------------------------------------------------------------


def quadrature_order_for(a_max: float) -> int:
    """Trapezoid nodes so that ``σ(aξ)`` with poles at distance ``π/(2a)`` from the real axis
    (tanh) is integrated to ~e^{-30}: the rule's error is ``~exp(−2πτ/h)`` for an integrand
    analytic in the strip ``|Im ξ| < τ``, here ``τ = π/(2a)``, ``h = 17/n``."""
    return max(96, math.ceil(30.0 * a_max * 2 * _HALF_WIDTH / math.pi**2))


def expectation_values(
    sigma: Callable, sigma_prime: Callable, a: np.ndarray, rho: np.ndarray, n_quad: int
) -> tuple[np.ndarray, np.ndarray]:
    """``N, G`` at every ``(a_p, a_q, ρ_k)``, shape ``(n_a, n_a, n_ρ)``, by the trapezoid rule
    in ``(u, v) = (a ξ1, b(ρ ξ1 + √(1−ρ²) ξ2))``: the inner sum over ``ξ2`` once per ``(b, ρ)``,
    then one matrix product over ``ξ1`` for every ``a``."""
    xi_np, w_np = quadrature_nodes("trapezoid", n_quad)
    xi, w = jnp.asarray(xi_np), jnp.asarray(w_np)
    a_j, rho_j = jnp.asarray(a), jnp.asarray(rho)
    outer = a_j[:, None] * xi[None, :]
    f_a, p_a = sigma(outer) * w, sigma_prime(outer) * w
    cond = jnp.sqrt(jnp.maximum(1.0 - rho_j * rho_j, 0.0))

    def per_b(b: Array) -> tuple[Array, Array]:
        v = b * (rho_j[:, None, None] * xi[None, :, None] + cond[:, None, None] * xi[None, None, :])
        g, gp = sigma(v) @ w, sigma_prime(v) @ w  # (n_ρ, n_quad): the inner integral over ξ2
        hi = jax.lax.Precision.HIGHEST
        return jnp.matmul(f_a, g.T, precision=hi), jnp.matmul(p_a, gp.T, precision=hi)

    nngp, grad = jax.lax.map(per_b, a_j)  # (n_b, n_a, n_ρ)
    return np.asarray(nngp).transpose(1, 0, 2), np.asarray(grad).transpose(1, 0, 2)


def _needed(coef: np.ndarray, axis: int, tol: float) -> int:
    """Smallest length along ``axis`` whose dropped coefficients sum (max over the others)
    to less than ``tol``; ``-1`` when even the last third is not that small (not converged)."""
    others = tuple(i for i in range(coef.ndim) if i != axis)
    size = np.abs(coef).max(axis=others)
    tail = np.concatenate([np.cumsum(size[::-1])[::-1], [0.0]])
    n = int(np.argmax(tail < tol))
    return n if n <= (2 * size.size) // 3 else -1


def _series(values: np.ndarray, odd: bool, tol: float, scale: float) -> Series | bool | None:
    """Truncated series of one part; ``None`` when the part vanishes, ``False`` when its
    coefficients have not decayed to ``tol`` (more nodes needed)."""
    coef = _coefficients(values)
    if np.abs(coef).max() <= 1e-13 * scale:
        return None
    n_p, n_k = _needed(coef, 0, tol / 3), _needed(coef, 2, tol / 3)
    if n_p < 0 or n_k < 0:
        return False
    kept = coef[: max(n_p, 1), : max(n_p, 1), : max(n_k, 1)]
    return Series(np.ascontiguousarray(0.5 * (kept + kept.transpose(1, 0, 2))), odd)


def expectation_table(activation: str, a_min: float, a_max: float) -> ExpectationTable | None:
    """The table of ``N`` and ``G`` for σ = ``activation`` on ``a, b ∈ [a_min, a_max]``, built
    once per activation, range and float type (``tol`` 1e-10 in float64, 1e-5 in float32);
    ``None`` when the Chebyshev series do not converge to ``tol`` within ``MAX_NODES_A ×
    MAX_NODES_Y`` nodes (a kinked σ such as relu): the caller then uses quadrature."""
    x64 = bool(jax.config.jax_enable_x64)
    return _build_table(activation, float(a_min), float(a_max), 1e-10 if x64 else 1e-5, x64)


@lru_cache(maxsize=16)
def _build_table(
    activation: str, a_min: float, a_max: float, tol: float, x64: bool
) -> ExpectationTable | None:
    """:func:`expectation_table` (``x64`` is part of the cache key: the build computes in it)."""
    sigma, sigma_prime = activation_pair(activation)
    log_lo, log_hi = math.log(a_min), math.log(a_max)
    n_a, n_y = 16, 32
    n_quad = quadrature_order_for(a_max)
    while n_a <= MAX_NODES_A and n_y <= MAX_NODES_Y:
        a = np.exp(log_lo + (log_hi - log_lo) * (chebyshev_nodes(n_a) + 1.0) / 2.0)
        y = chebyshev_nodes(n_y)
        rho = np.sqrt((1.0 + y) / 2.0)  # > 0 at first-kind nodes
        both = np.concatenate([rho, -rho])
        nngp, grad = expectation_values(sigma, sigma_prime, a, both, n_quad)
        parts: dict[str, list] = {"nngp": [], "grad": []}
        grow_a = grow_y = False
        for name, values in (("nngp", nngp), ("grad", grad)):
            plus, minus = values[..., :n_y], values[..., n_y:]
            scale = float(np.abs(values).max()) or 1.0
            for odd, part in ((False, 0.5 * (plus + minus)), (True, 0.5 * (plus - minus) / rho)):
                series = _series(part, odd, tol, scale)
                if series is False:
                    coef = _coefficients(part)
                    grow_a |= _needed(coef, 0, tol / 3) < 0
                    grow_y |= _needed(coef, 2, tol / 3) < 0
                elif series is not None:
                    parts[name].append(series)
        if not (grow_a or grow_y):
            return ExpectationTable(
                activation, a_min, a_max, tuple(parts["nngp"]), tuple(parts["grad"]), tol,
                (n_a, n_y),
            )  # fmt: skip
        n_a, n_y = (2 * n_a if grow_a else n_a), (2 * n_y if grow_y else n_y)
    return None


# --- evaluation ------------------------------------------------------------------------------


def _chebyshev_values(t: Array, n: int) -> Array:
    """``T_0(t), …, T_{n-1}(t)`` by the three-term recurrence, stacked on a new last axis."""
    values = [jnp.ones_like(t), t]
    for _ in range(2, n):
        values.append(2.0 * t * values[-1] - values[-2])
    return jnp.stack(values[:n], -1)


def _sum_series(series: Series, ta: Array, tb: Array, y: Array, rho: Array) -> Array:
    """``Σ_k T_k(y) Σ_q H_qk T_q(α(b))`` with ``H_qk = Σ_p T_p(α(a)) C_pqk`` (times ρ if odd).

    ``H`` is one matrix product per row (materialised: XLA does not fuse a dot into its
    consumers, so it is not recomputed per entry); the Clenshaw sum over ``k`` with its
    coefficients formed on the fly stays elementwise, and XLA fuses it into one loop."""
    coef = jnp.asarray(series.coef, y.dtype)
    n_p, n_k = coef.shape[0], coef.shape[2]
    h = jnp.einsum("...p,pqk->...qk", ta[..., :n_p], coef, precision=jax.lax.Precision.HIGHEST)

    def c(k: int) -> Array:
        return sum(h[..., q, k] * tb[..., q] for q in range(n_p))

    b1 = b2 = jnp.zeros_like(y)
    for k in range(n_k - 1, 0, -1):
        b1, b2 = c(k) + 2.0 * y * b1 - b2, b1
    total = c(0) + y * b1 - b2
    return rho * total if series.odd else total


def table_expectations(
    table: ExpectationTable, s11: Array, s22: Array, s12: Array, need_nngp: bool, need_grad: bool
) -> tuple[Array, Array]:
    """``N, G`` at broadcastable ``(Σ11, Σ22, Σ12)`` (rows ``(n1, 1)``, columns ``(1, n2)``, or
    all ``(n,)``). Points must lie in the table's range (``a, b ∈ [a_min, a_max]``)."""
    log_lo, log_hi = table.log_range()
    a, b = jnp.sqrt(s11), jnp.sqrt(s22)
    rho = jnp.clip(s12 / (a * b), -1.0, 1.0)
    y = 2.0 * rho * rho - 1.0
    n_max = max((s.coef.shape[0] for s in (*table.nngp, *table.grad)), default=1)
    scale = 2.0 / (log_hi - log_lo)
    ta = _chebyshev_values((jnp.log(a) - log_lo) * scale - 1.0, max(n_max, 2))
    tb = _chebyshev_values((jnp.log(b) - log_lo) * scale - 1.0, max(n_max, 2))
    zero = jnp.zeros(jnp.broadcast_shapes(s11.shape, s22.shape, s12.shape), s12.dtype)

    def total(parts: tuple[Series, ...]) -> Array:
        return sum((_sum_series(s, ta, tb, y, rho) for s in parts), zero)

    return (total(table.nngp) if need_nngp else zero), (total(table.grad) if need_grad else zero)
