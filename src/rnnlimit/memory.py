"""The memory of the limit (docs/model.md §4): the fixed point of a random algebraic equation.

With the function frozen at ``h``, the memory obeys ``S_{k+1} = ψ(h(X_k, S_k))``. Pathwise,
``S`` is the fixed point of ``S = ψ(h(X_{-1}, S∘shift))`` over the infinite past; it is well
posed when ``s ↦ ψ(h(x, s))`` is a contraction uniformly in ``x`` with constant ``L < 1``: two
memories started anywhere in ``[-1,1]^m`` then differ by at most ``L^n · 2√m`` after ``n``
steps (the geometric error bound), so the memory forgets its start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import qmc

from rnnlimit import float_dtype
from rnnlimit.activations import CLIPS, psi
from rnnlimit.errors import ContractionError, ParameterError, check_choice, check_int

Array = jax.Array
HFunction = Callable[[Array, Array], Array]  # h(x (d,), s (m,)) -> (m,)


@dataclass(frozen=True)
class FixedPoint:
    """Result of :func:`memory_fixed_point`: the memory path and its certified accuracy.

    ``path (K, m)`` holds ``S_k`` for the steps after burn-in (``S_k`` is the memory *entering*
    step k, i.e. built from ``X_0..X_{k-1}``); ``final`` is the memory after the last input;
    ``error_bound`` is ``L^n · 2√m`` with ``n`` the number of inputs seen, valid for every entry
    of ``path`` past burn-in with ``n = burn_in``.
    """

    path: np.ndarray
    final: np.ndarray
    lipschitz: float
    error_bound: float


def geometric_error_bound(lipschitz: float, n: int, m: int) -> float:
    """``L^n · diam([-1,1]^m) = L^n · 2√m``: distance to the fixed point after n iterations."""
    return float(lipschitz) ** n * 2.0 * float(np.sqrt(m))


#: Largest point set of the Lipschitz supremum beyond ``d + m = 3`` (see :func:`lipschitz_fn`).
MAX_POINTS = 4096


def lipschitz_fn(
    h: Callable[[Any, Array, Array], Array],
    d: int,
    m: int,
    *,
    clip: str = "hard",
    n_grid: int = 21,
    points: Any = None,
    lazy: bool = False,
) -> Callable[[Any], Any]:
    """Set up, once, the measured ``sup_{x, s} ‖∂_s ψ(h(θ; x, s))‖₂`` as a function of θ
    (``lazy``: it returns the jax scalar at once, computed in the background; ``float()`` it
    to wait).

    The supremum runs over a grid of ``[-1,1]^{d+m}`` (plus ``points``); ``∂_s`` by forward-mode
    autodiff and the operator 2-norm of the ``m × m`` Jacobian. A grid estimate of a supremum:
    exact on the grid, a lower bound in general, so it is reported, not used as a proof.
    Beyond ``d + m = 3`` the grid has at most 5 nodes per axis and :data:`MAX_POINTS` points in
    all (a full 5-node grid in ``d + m = 8`` has 390,625); a scrambled Sobol set (fixed seed)
    fills the rest of the budget, so the supremum still sees the interior in high dimension.
    """
    check_choice("clip", clip, CLIPS)
    check_int("n_grid", n_grid, 2)
    D = d + m
    per_axis = n_grid if D <= 3 else max(2, min(5, int(MAX_POINTS ** (1.0 / D) + 1e-9)))
    axes = [np.linspace(-1.0, 1.0, per_axis)] * D
    z = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, D)
    if D > 3 and z.shape[0] < MAX_POINTS:
        fill = qmc.Sobol(D, scramble=True, seed=0).random_base2(12)[: MAX_POINTS - z.shape[0]]
        z = np.concatenate([z, 2.0 * fill - 1.0])
    if points is not None:
        z = np.concatenate([z, np.asarray(points, dtype=float).reshape(-1, d + m)])
    dt = float_dtype()
    zj = jnp.asarray(z, dt)

    @jax.jit
    def sup(theta: Any) -> Array:
        def norm(zi: Array) -> Array:
            J = jax.jacfwd(lambda s: psi(clip, h(theta, zi[:d], s))[0])(zi[d:])
            return jnp.linalg.norm(J, 2) if m > 1 else jnp.abs(J[0, 0])

        return jnp.max(jax.vmap(norm)(zj))

    return sup if lazy else lambda theta: float(sup(theta))


def lipschitz_constant(
    h: HFunction, d: int, m: int, *, clip: str = "hard", n_grid: int = 21, points: Any = None
) -> float:
    """Measured ``sup_{x, s} ‖∂_s ψ(h(x, s))‖₂`` over a grid (see :func:`lipschitz_fn`)."""
    sup = lipschitz_fn(lambda _, x, s: h(x, s), d, m, clip=clip, n_grid=n_grid, points=points)
    return sup(None)


def check_contraction(lipschitz: float, *, force: bool = False, where: str = "") -> None:
    """Raise :class:`ContractionError` when ``L ≥ 1`` unless ``force`` (``where``, e.g.
    ``"at t = 0.3"``, is added to the message)."""
    if lipschitz >= 1.0 and not force:
        err = ContractionError(lipschitz)
        if where:
            err.args = (f"{err.args[0]} ({where})",)
        raise err


def memory_fixed_point(
    h: HFunction,
    xs: Any,
    m: int,
    *,
    clip: str = "hard",
    burn_in: int = 0,
    s0: Any = None,
    lipschitz: float | None = None,
    force: bool = False,
) -> FixedPoint:
    """Run ``S_{k+1} = ψ(h(X_k, S_k))`` over the history ``xs (K, d)`` (oldest first).

    The first ``burn_in`` inputs only warm the memory up; the path after them is within
    ``L^burn_in · 2√m`` of the pathwise fixed point (the memory started in the infinite past).
    ``lipschitz`` defaults to :func:`lipschitz_constant` of ``h``; ``L ≥ 1`` raises
    :class:`ContractionError` unless ``force``.
    """
    x = np.asarray(xs, dtype=float)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ParameterError("xs", f"must have shape (K >= 1, d), got {x.shape}")
    check_int("m", m, 1)
    check_int("burn_in", burn_in, 0, x.shape[0] - 1)
    d = x.shape[1]
    L = lipschitz_constant(h, d, m, clip=clip) if lipschitz is None else float(lipschitz)
    check_contraction(L, force=force)
    dt = float_dtype()
    s_init = jnp.zeros(m, dt) if s0 is None else jnp.asarray(s0, dt).reshape(m)

    def step(s: Array, xk: Array) -> tuple[Array, Array]:
        return psi(clip, h(xk, s))[0], s

    final, path = jax.jit(lambda s, xx: jax.lax.scan(step, s, xx))(s_init, jnp.asarray(x, dt))
    return FixedPoint(
        path=np.asarray(path)[burn_in:],
        final=np.asarray(final),
        lipschitz=L,
        error_bound=geometric_error_bound(L, burn_in, m),
    )
