"""Kernel ridge regression and its Gaussian-process reading through one eigendecomposition.

For a PSD Gram ``K = U Λ Uᵀ`` (n, n) and targets ``T`` (n, m), ridge ``α > 0`` gives dual
coefficients ``A = (K + αI)^{-1} T`` and fitted values ``T̂ = K A = U diag(λ/(λ+α)) Uᵀ T``. The
hat matrix ``H = K (K+αI)^{-1}`` has diagonal ``h_i = Σ_j U_ij² λ_j/(λ_j+α)``, so the
leave-one-out predictions are exact and cost ``O(n m)`` per ``α`` once ``U`` is known:

    T̂_{-i} = T_i - (T_i - T̂_i) / (1 - h_i).

Read as a Gaussian process ``f ~ GP(0, s² K)`` observed with noise variance ``s² α``, the
predictive law of a new target is normal with mean ``k*ᵀ A`` and variance
``s² (k** + α - k*ᵀ (K+αI)^{-1} k*)``; ``s² = Tᵀ(K+αI)^{-1}T / n`` maximises the evidence in
``s²`` at fixed ``α`` (one column of ``T``); :meth:`EigenRidge.loo_amplitude` sets ``s²`` instead
so that the leave-one-out residuals have the GP's leave-one-out variance on average (more robust
when the kernel is misspecified).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnlimit.errors import ParameterError


@dataclass(frozen=True)
class EigenRidge:
    """``K = U Λ Uᵀ`` of one training Gram, set up once for many ``α`` (see the module)."""

    eigvals: np.ndarray
    eigvecs: np.ndarray

    @classmethod
    def of(cls, gram: np.ndarray) -> EigenRidge:
        """Eigendecompose a symmetric PSD ``gram`` (rounding below 0 is clipped to 0)."""
        lam, vecs = np.linalg.eigh(np.asarray(gram, np.float64))
        return cls(np.maximum(lam, 0.0), vecs)

    def _check(self, alpha: float) -> None:
        if not alpha > 0.0:
            raise ParameterError("alpha", f"must be > 0, got {alpha!r}")

    def loo(self, targets: np.ndarray, alpha: float) -> np.ndarray:
        """Exact leave-one-out predictions ``T̂_{-i}`` (n, m) of ridge ``alpha``."""
        self._check(alpha)
        gain = self.eigvals / (self.eigvals + alpha)
        fitted = self.eigvecs @ (gain[:, None] * (self.eigvecs.T @ targets))
        hat = (self.eigvecs**2) @ gain
        return targets - (targets - fitted) / (1.0 - hat)[:, None]

    def dual(self, targets: np.ndarray, alpha: float) -> np.ndarray:
        """Dual coefficients ``A = (K + αI)^{-1} T`` (n, m)."""
        self._check(alpha)
        return self.eigvecs @ ((self.eigvecs.T @ targets) / (self.eigvals + alpha)[:, None])

    def amplitude(self, targets: np.ndarray, alpha: float) -> float:
        """Evidence-maximising ``s² = tᵀ (K+αI)^{-1} t / n`` for one target column ``t``."""
        proj = self.eigvecs.T @ np.asarray(targets).reshape(-1)
        return float(np.sum(proj**2 / (self.eigvals + alpha)) / len(proj))

    def loo_amplitude(self, targets: np.ndarray, alpha: float) -> float:
        """``s²`` that makes the leave-one-out residuals unit-variance on average: the GP's LOO
        predictive variance of target ``i`` is ``s² / c_i``, ``c_i = [(K+αI)^{-1}]_ii``, so
        ``s² = mean_i(r_i² c_i)`` with the LOO residuals ``r_i`` (one target column)."""
        t = np.asarray(targets).reshape(-1, 1)
        resid = (t - self.loo(t, alpha))[:, 0]
        c = (self.eigvecs**2) @ (1.0 / (self.eigvals + alpha))
        return float(np.mean(resid**2 * c))

    def predictive_var(self, cross: np.ndarray, diag: np.ndarray, alpha: float) -> np.ndarray:
        """``k** + α - k*ᵀ (K+αI)^{-1} k*`` per test row (times ``s²`` for the GP variance);
        ``cross`` = ``K(X*, X)`` (n*, n), ``diag`` = ``K(x*, x*)`` (n*,)."""
        self._check(alpha)
        proj = cross @ self.eigvecs
        return np.maximum(diag + alpha - np.sum(proj**2 / (self.eigvals + alpha), axis=1), alpha)
