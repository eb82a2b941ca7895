"""Tests of kernel ridge / GP regression through one eigendecomposition (rnnlimit.kernelridge)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlimit.errors import ParameterError
from rnnlimit.kernelridge import EigenRidge

RNG = np.random.default_rng(0)


def _problem(n: int = 25, m: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    feats = RNG.normal(size=(n + 7, 6))
    gram = feats @ feats.T + 1.0
    return gram, RNG.normal(size=(n, m)), feats


def test_leave_one_out_equals_refitting_without_each_case():
    gram, t, _ = _problem()
    k = gram[:25, :25]
    ridge = EigenRidge.of(k)
    for alpha in (1e-3, 0.3, 10.0):
        loo = ridge.loo(t, alpha)
        for i in range(25):
            keep = np.arange(25) != i
            coef = np.linalg.solve(k[np.ix_(keep, keep)] + alpha * np.eye(24), t[keep])
            np.testing.assert_allclose(loo[i], k[i, keep] @ coef, rtol=1e-8, atol=1e-10)


def test_dual_and_predictive_variance_equal_direct_solves():
    gram, t, _ = _problem()
    k, cross, diag = gram[:25, :25], gram[25:, :25], np.diag(gram)[25:]
    ridge, alpha = EigenRidge.of(k), 0.05
    inv = np.linalg.inv(k + alpha * np.eye(25))
    np.testing.assert_allclose(ridge.dual(t, alpha), inv @ t, rtol=1e-8, atol=1e-10)
    var = diag + alpha - np.einsum("ij,jk,ik->i", cross, inv, cross)
    np.testing.assert_allclose(ridge.predictive_var(cross, diag, alpha), var, rtol=1e-8)
    y = t[:, 0]
    assert ridge.amplitude(y, alpha) == pytest.approx(y @ inv @ y / 25, rel=1e-10)


def test_loo_amplitude_standardises_the_loo_residuals():
    """``s²`` makes ``mean(r_i² / (s²/c_i)) = 1`` with ``c_i = [(K+αI)^{-1}]_ii``; the LOO
    residual is also ``[(K+αI)^{-1} y]_i / c_i`` (the GP identity, an independent route)."""
    gram, t, _ = _problem()
    k, y, alpha = gram[:25, :25], t[:, :1], 0.2
    ridge = EigenRidge.of(k)
    inv = np.linalg.inv(k + alpha * np.eye(25))
    c = np.diag(inv)
    resid = (inv @ y)[:, 0] / c
    np.testing.assert_allclose(y[:, 0] - ridge.loo(y, alpha)[:, 0], resid, rtol=1e-8)
    s2 = ridge.loo_amplitude(y, alpha)
    assert np.mean(resid**2 * c / s2) == pytest.approx(1.0, rel=1e-10)


def test_alpha_must_be_positive():
    ridge = EigenRidge.of(np.eye(3))
    with pytest.raises(ParameterError, match="alpha"):
        ridge.loo(np.ones((3, 1)), 0.0)


def test_loo_tends_to_the_interpolant_below_the_smallest_eigenvalue():
    """As ``α → 0`` ridge tends to the interpolant, whose leave-one-out prediction is
    ``t_i - [K^{-1}T]_i / [K^{-1}]_ii`` (independent route: a direct inverse). The gap is
    ``O(α/λ_min)``, so every ``α`` far below ``λ_min`` gives the same LOO predictions: why the
    estimators' grid need not extend below its lower end (RESULTS.md, issue 13)."""
    feats = RNG.normal(size=(25, 60))  # full rank: λ_min ≈ (√60 - √25)² ≈ 7
    k = feats @ feats.T + 1.0
    t = RNG.normal(size=(25, 3))
    inv = np.linalg.inv(k)
    limit = t - (inv @ t) / np.diag(inv)[:, None]
    ridge = EigenRidge.of(k)
    lam_min = ridge.eigvals.min()
    for alpha in (1e-4 * lam_min, 1e-6 * lam_min):
        # each relative change of order α/λ_min; 100× margin for the conditioning of K
        np.testing.assert_allclose(ridge.loo(t, alpha), limit, atol=100 * alpha / lam_min)
    far, nearer = ridge.loo(t, 1e-2 * lam_min), ridge.loo(t, 1e-6 * lam_min)
    assert np.max(np.abs(far - limit)) > np.max(np.abs(nearer - limit))
