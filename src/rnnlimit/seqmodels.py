"""One-call classifier and regressor on the diagonal-RNN sequence kernel (docs/model.md §6).

``fit(X, y)`` holds the whole procedure, on the training data only:

1. input: aeon's layout (3-D ``(n_cases, n_channels, n_timepoints)`` or a list of 2-D arrays
   for unequal lengths) or the flat 2-D encoding (:func:`rnnlimit.datasets.as_sequences`);
2. features ``Φ_r`` of every representation ``r`` of :class:`rnnlimit.seqfamily.KernelFamily`
   (dilated windows, several recurrence rates, pooled readouts; ω drawn from ``random_state``);
3. candidate kernels ``K_c = Φ_c Φ_cᵀ + 1`` (each representation, and their mean, each with the
   readouts ``pools`` and with ``pools + optional_pools``; the ``+1`` is
   an unpenalised-in-spirit bias) and ridge ``α`` in ``alphas``, chosen by exact leave-one-out
   (:class:`rnnlimit.kernelridge.EigenRidge`): the classifier by LOO accuracy (ties: lower LOO
   squared error, then the earlier candidate and smaller ``α``), the regressor by LOO squared
   error;
4. the final fit on the whole training set; predictions are linear in the features,
   ``f(x) = Φ_c(x) Φ_cᵀ A + 1ᵀA``.

The regressor also gives the Gaussian-process predictive standard deviation of the same kernel
(``predict(X, return_std=True)``), with the noise ``s²α`` and the amplitude ``s²`` set by the
evidence at the chosen ``α``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from rnnlimit.datasets import as_sequences
from rnnlimit.errors import ParameterError, check_int
from rnnlimit.kernelridge import EigenRidge
from rnnlimit.omega import Omega
from rnnlimit.seqfamily import (
    KernelFamily,
    Preprocessing,
    Progress,
    RawFeatures,
    candidate_features,
    family_features,
)

ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 3, 15))
#: Selection key from (LOO predictions, targets); larger is better, compared as tuples.
Score = Callable[[np.ndarray, np.ndarray], tuple[float, ...]]


class _RNNKernelModel(BaseEstimator):
    """Input checks, features and the leave-one-out selection shared by both estimators."""

    def __init__(
        self,
        kernel: KernelFamily | None = None,
        *,
        alphas: tuple[float, ...] | None = None,
        n_channels: int = 1,
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = 0,
        progress: Progress = None,
    ) -> None:
        self.kernel = kernel
        self.alphas = alphas
        self.n_channels = n_channels
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.progress = progress

    def _sequences(self, X: Any, y: Any = None, *, fit: bool) -> Any:
        """``(xs, lengths)`` (and ``y``) from any accepted layout; 2-D input goes through
        scikit-learn's checks (so a fitted width is enforced), other layouts through ours."""
        if fit:
            check_int("n_channels", self.n_channels, 1)
        is_2d = _ndim(X) == 2
        kw: dict[str, Any] = {"ensure_all_finite": "allow-nan", "dtype": np.float64}
        if is_2d:
            if fit:
                X, y = validate_data(self, X, y, reset=True, y_numeric=self._numeric, **kw)
            else:
                X = validate_data(self, X, reset=False, **kw)
        elif fit:
            y = column_or_1d(y, warn=True)
            if hasattr(self, "n_features_in_"):
                del self.n_features_in_
        xs, lengths = as_sequences(X, self.n_channels)
        if fit:
            if len(xs) != len(y):
                raise ParameterError("y", f"needs one target per case: {len(xs)} cases, {len(y)}")
            if len(xs) < 2:
                raise ParameterError("X", "needs at least 2 cases; got 1 sample")
            self.n_channels_ = xs.shape[2]
        elif xs.shape[2] != self.n_channels_:
            raise ParameterError("X", f"must have {self.n_channels_} channels, got {xs.shape[2]}")
        return (xs, lengths, y) if fit else (xs, lengths)

    def _family(self) -> KernelFamily:
        if self.kernel is not None and not isinstance(self.kernel, KernelFamily):
            raise ParameterError("kernel", f"must be a KernelFamily or None, got {self.kernel!r}")
        return KernelFamily() if self.kernel is None else self.kernel

    def _workers(self) -> int:
        cores = os.cpu_count() or 1
        if self.n_jobs is None or self.n_jobs == -1:
            return cores
        check_int("n_jobs", self.n_jobs, 1)
        return int(self.n_jobs)

    def _features(
        self, xs: np.ndarray, lengths: np.ndarray, reps: tuple[str, ...], pools: tuple[str, ...]
    ) -> dict[str, RawFeatures]:
        family, groups = self.family_, self._groups()  # as fitted, even after set_params
        out, total = {}, len(reps) * len(groups)
        for i, rep in enumerate(reps):
            out[rep] = family_features(
                family, groups, self.prep_, rep, xs, lengths, pools=pools,
                workers=self._workers(), progress=self.progress, done=i * len(groups),
                total=total,
            )  # fmt: skip
        return out

    def _groups(self) -> list[tuple[int, Omega]]:
        return [(d, Omega(w, b, u)) for d, (w, b, u) in self.omegas_]

    def _select(
        self, xs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, score: Score
    ) -> tuple[EigenRidge, np.ndarray]:
        """Features, leave-one-out over candidates × α, final dual coefficients; returns the
        chosen candidate's eigendecomposed Gram and training features."""
        self.family_ = family = self._family()
        alphas = ALPHAS if self.alphas is None else tuple(self.alphas)
        if not alphas or any(not (np.isfinite(a) and a > 0) for a in alphas):
            raise ParameterError("alphas", f"must be positive finite numbers, got {alphas!r}")
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        # dilations sized on the median training length: shorter series see the start of a
        # long window as zeros (chosen after the held-out run: with the shortest length, a
        # ragged set such as PickupGestureWiimoteZ, 29-361 steps, got only δ = 1, 2)
        groups = family.draw(seed, xs.shape[2], int(np.median(lengths)))
        self.omegas_ = [(d, tuple(np.asarray(a) for a in (o.w, o.b, o.u))) for d, o in groups]
        self.prep_ = Preprocessing.of(xs, lengths)
        raw = self._features(xs, lengths, family.representations, family.all_pools)
        best: tuple | None = None
        cands = family.candidates()
        for i, cand in enumerate(cands):
            phi = candidate_features(family, raw, cand)
            ridge = EigenRidge.of(phi @ phi.T + 1.0)
            for alpha in alphas:
                key = score(ridge.loo(targets, alpha), targets)
                if best is None or key > best[0]:
                    best = (key, cand, alpha, ridge, phi)
            if self.progress is not None:
                self.progress("selection", i + 1, len(cands))
        (self.loo_score_, *_), (self.representations_, self.pools_), self.alpha_, ridge, phi = best
        self.dual_ = ridge.dual(targets, self.alpha_)
        self.coef_ = phi.T @ self.dual_
        self.intercept_ = self.dual_.sum(axis=0)
        return ridge, phi

    def _raw_predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``Φ(X) Φ_trainᵀ A + 1ᵀA`` and the features ``Φ(X)`` of the chosen kernel."""
        check_is_fitted(self, "coef_")
        xs, lengths = self._sequences(X, fit=False)
        raw = self._features(xs, lengths, self.representations_, self.pools_)
        phi = candidate_features(self.family_, raw, (self.representations_, self.pools_))
        return phi @ self.coef_ + self.intercept_, phi


def _ndim(x: Any) -> int:
    """Dimensions of ``x`` read as one array (a list of equal-length rows is 2-D, as in
    scikit-learn); 0 for a ragged list (aeon's unequal-length layout)."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return len(shape)
    try:
        return np.asarray(x, dtype=np.float64).ndim
    except (ValueError, TypeError):
        return 0


def _accuracy_then_error(loo: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    acc = float(np.mean(loo.argmax(axis=1) == targets.argmax(axis=1)))
    return acc, -float(np.mean((loo - targets) ** 2))


def _squared_error(loo: np.ndarray, targets: np.ndarray) -> tuple[float]:
    return (-float(np.mean((loo - targets) ** 2)),)


class RNNKernelClassifier(ClassifierMixin, _RNNKernelModel):
    """Kernel ridge classifier (one-vs-rest ±1 targets) on the dilated diagonal-RNN kernel family.

    Parameters: ``kernel`` (:class:`rnnlimit.seqfamily.KernelFamily`, None for its defaults);
    ``alphas`` (ridge candidates, default 15 values on ``10^[-4, 3]``); ``n_channels`` (only for
    the flat 2-D encoding); ``n_jobs`` (threads of the feature scans, None or -1: all cores);
    ``random_state`` (the ω draw); ``progress`` (``callable(stage, done, total)`` with stages
    ``"features"`` and ``"selection"``, or None). Fitted: ``classes_``, ``representations_``,
    ``pools_`` (the chosen readouts), ``alpha_``, ``loo_score_`` (LOO accuracy of the choice),
    ``coef_``, ``intercept_``.
    """

    _numeric = False

    def fit(self, X: Any, y: Any) -> RNNKernelClassifier:
        """The whole procedure of the module docstring on ``(X, y)``."""
        xs, lengths, y = self._sequences(X, y, fit=True)
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ParameterError("y", "needs at least 2 classes; got 1 class")
        targets = -np.ones((len(y), len(self.classes_)))
        targets[np.arange(len(y)), index] = 1.0
        self._select(xs, lengths, targets, _accuracy_then_error)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Ridge scores (n, n_classes), or (n,) for two classes (positive: ``classes_[1]``)."""
        scores = self._raw_predict(X)[0]
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X: Any) -> np.ndarray:
        """The class of the largest ridge score."""
        scores = self._raw_predict(X)[0]
        return self.classes_[np.argmax(scores, axis=1)]


class RNNKernelRegressor(RegressorMixin, _RNNKernelModel):
    """Kernel ridge / Gaussian-process regression on the dilated diagonal-RNN kernel family.

    Parameters as :class:`RNNKernelClassifier`; ``α`` and the representations by LOO squared
    error on the standardised targets. ``predict(X, return_std=True)`` adds the GP predictive
    standard deviation of a new target, ``s·√(k** + α - k*ᵀ(K+αI)^{-1}k*)`` (module
    :mod:`rnnlimit.kernelridge`), in the units of ``y``. Fitted: ``alpha_``, ``amplitude_``
    (``s²``), ``representations_``, ``pools_``, ``loo_score_`` (minus the LOO mean squared error
    of the standardised targets), ``coef_``, ``intercept_``.
    """

    _numeric = True

    def fit(self, X: Any, y: Any) -> RNNKernelRegressor:
        """The whole procedure of the module docstring on ``(X, y)``."""
        xs, lengths, y = self._sequences(X, y, fit=True)
        y = np.asarray(y, np.float64)
        if not np.isfinite(y).all():
            raise ParameterError("y", "must be finite")
        self.y_mean_, sd = float(y.mean()), float(y.std())
        self.y_sd_ = sd if sd > 0.0 else 1.0
        targets = ((y - self.y_mean_) / self.y_sd_)[:, None]
        ridge, phi = self._select(xs, lengths, targets, _squared_error)
        self.amplitude_ = ridge.loo_amplitude(targets, self.alpha_)
        self.ridge_, self.phi_fit_ = ridge, phi
        return self

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Predictive mean (n,), and its standard deviation (n,) with ``return_std=True``."""
        scores, phi = self._raw_predict(X)
        mean = scores[:, 0] * self.y_sd_ + self.y_mean_
        if not return_std:
            return mean
        cross = phi @ self.phi_fit_.T + 1.0
        diag = np.einsum("ij,ij->i", phi, phi) + 1.0
        var = self.ridge_.predictive_var(cross, diag, self.alpha_)
        return mean, np.sqrt(self.amplitude_ * var) * self.y_sd_
