"""The Nyström basis (rnnlimit.nystrom) against closed forms, the grid basis and the f64 kernel."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from test_limit import ALPHA, P3, V3, _eval_grid, _f, closed_form

from rnnlimit.chains import AR1Chain, FilterTarget, FiniteChain, memoryless_target
from rnnlimit.kernels import ntk
from rnnlimit.kernelspec import KernelSpec
from rnnlimit.limit import LimitNumerics, LimitProblem, limit_solver
from rnnlimit.nystrom import NystromBasis, inducing_points


def test_inducing_points_are_nested_and_fill_the_box() -> None:
    small, large = inducing_points(5, 64, 3), inducing_points(5, 128, 3)
    np.testing.assert_array_equal(small, large[:64])  # the 2P refinement keeps the P points
    assert np.all(np.abs(large) <= 1.0)
    # low discrepancy: every half-box along each axis holds close to half of the points
    assert np.all(np.abs((large > 0).mean(0) - 0.5) <= 0.05)


def _power_function(basis: NystromBasis, z: np.ndarray) -> np.ndarray:
    """``A(z, z) − A(z, C) A_CC^{-1} A(C, z)``: the Nyström error on the diagonal."""
    aux = basis.setup(lambda x: jnp.zeros((x.shape[0], 1)), 1.0, jnp.float64)
    cross = np.asarray(basis.design(aux, jnp.asarray(z)))
    quad = np.einsum("np,pq,nq->n", cross, np.asarray(aux.inverse), cross)
    return np.asarray(ntk(basis.kernel).diag(z)) - quad


def test_nystrom_kernel_is_exact_at_the_inducing_points_and_converges_between() -> None:
    """The projection onto the span of ``A(·, c_j)`` is the identity there, and its error (the
    power function, ≥ 0 as for any orthogonal projection) shrinks as points are added."""
    kernel = KernelSpec("erf", d=3, m=1)
    basis = NystromBasis(kernel, 32, seed=1)
    aux = basis.setup(lambda z: jnp.zeros((z.shape[0], 1)), 1.0, jnp.float64)
    at_centres = np.asarray(basis.design(aux, aux.centres)) @ np.asarray(aux.inverse)
    # the ridge is 1e-10 of the diagonal: the identity up to rounding of the ill-conditioned
    # solve (~1e-6 measured)
    np.testing.assert_allclose(at_centres, np.eye(32), atol=1e-5)
    z = np.random.default_rng(0).uniform(-1, 1, (200, 4))
    coarse, fine = _power_function(basis, z), _power_function(NystromBasis(kernel, 256, 1), z)
    assert coarse.min() > -1e-6 and fine.min() > -1e-6
    assert fine.mean() < 0.1 * coarse.mean(), (coarse.mean(), fine.mean())


@pytest.mark.parametrize("activation", ["erf", "tanh"])
def test_float32_particle_block_matches_the_float64_kernel(activation: str) -> None:
    basis = NystromBasis(KernelSpec(activation, 1.2, 0.8, 0.9, d=4, m=1), 32)
    aux = basis.setup(lambda z: jnp.zeros((z.shape[0], 1)), 1.0, jnp.float64)
    z = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (50, 5)))
    block = np.asarray(basis.block(aux, z), np.float64)
    # Williams' arcsine form (erf) or the table (tanh) in float32: entries O(1), rounding ~1e-7
    np.testing.assert_allclose(block, np.asarray(basis.design(aux, z)), atol=2e-6)


def test_memory_free_nystrom_limit_matches_closed_form_within_reported_error() -> None:
    kernel = KernelSpec()
    problem = LimitProblem(FiniteChain(P3, V3), memoryless_target(_f), kernel, ALPHA, memory=False)
    numerics = LimitNumerics(
        T=2.0, dt=0.2, M=512, chain_steps=4, representation="nystrom", n_inducing=32
    )
    z = _eval_grid()
    res = limit_solver(problem)(numerics, z, np.linspace(0, 2.0, 11))
    exact, _ = closed_form(kernel, z, res.times)
    err = np.sqrt(np.mean((res.h - exact) ** 2, axis=(1, 2))).max()
    assert res.representation == "nystrom"
    # as for the other bases: the estimate (Δt/2, 2M, 2P) is itself noisy, allow 3 of it
    assert err <= 3.0 * res.error["total"], (err, res.error)
    assert res.error["total"] < 0.03 and np.abs(exact).max() > 0.3


def test_nystrom_and_grid_limits_agree_with_the_memory_on() -> None:
    """The §5 problem (memory on, d = m = 1) in two bases with the same particle paths: they
    differ by the two basis errors only (grid 17²: ~2e-4; 64 inducing points: ~1e-3)."""
    problem = LimitProblem(AR1Chain(0.6, 1.0), FilterTarget(0.6), KernelSpec(), alpha=1.0)
    solver = limit_solver(problem, "jax")
    common = dict(T=1.0, dt=0.1, M=256, chain_steps=4, burn_in=50)
    z = _eval_grid()
    grid = solver(LimitNumerics(**common, grid=17), z, estimate_error=False)
    nys = solver(
        LimitNumerics(**common, representation="nystrom", n_inducing=64),
        z,
        estimate_error=["basis"],
    )
    gap = np.sqrt(np.mean((grid.h - nys.h) ** 2, axis=(1, 2))).max()
    assert np.abs(grid.h).max() > 0.1
    assert gap <= max(3.0 * nys.error["basis"], 2e-3), (gap, nys.error)


def test_auto_representation_is_nystrom_beyond_three_dimensions() -> None:
    numerics = LimitNumerics()
    assert numerics.basis(KernelSpec(d=3, m=1)).kind == "nystrom"
    assert numerics.basis(KernelSpec(d=2, m=1)).kind == "grid"
