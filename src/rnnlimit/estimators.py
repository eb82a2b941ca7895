"""scikit-learn estimators on the diagonal-RNN limit NTK between sequences (docs/model.md §6).

``SequenceKernel`` is a callable kernel object ``k(X, Y) -> Gram`` usable as ``SVC(kernel=k)``,
``KernelRidge(kernel=k)`` or inside ``GridSearchCV`` (its parameters are nested estimator
parameters). ``SequenceKernelRidge`` and ``SequenceSVC`` wrap ``KernelRidge``/``SVC`` on the
precomputed Gram, so the kernel is evaluated once per ``fit``/``predict``; both take the kernel's
parameters as one ``SequenceKernel`` object (``kernel=SequenceKernel(readout="mean")``).

``RNNKernelClassifier`` and ``RNNKernelRegressor`` (:mod:`rnnlimit.seqmodels`, re-exported here)
are the one-call estimators: dilated windows, pooled readouts, their own choice of kernel and
ridge by leave-one-out, and aeon's input layouts. Start there (docs/sequence-kernel.md).

Input encoding (what scikit-learn passes around): a 2-D array (n, L·d), row ``i`` holding
``X_1, ..., X_L`` time-major (``d = n_channels`` numbers per step); a shorter sequence is padded
with NaN after its true length (see :func:`rnnlimit.datasets.flatten_padded`). Each series is
optionally z-normalised per channel over its true length, then multiplied by ``input_scale``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.kernel_ridge import KernelRidge
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from rnnlimit.datasets import unflatten, znormalize
from rnnlimit.errors import check_choice, check_int, check_range
from rnnlimit.seqfamily import KernelFamily as KernelFamily  # re-exported
from rnnlimit.seqfeatures import N_SEGMENTS
from rnnlimit.seqkernel import PARTS, OmegaLaw, sequence_kernel
from rnnlimit.seqmodels import RNNKernelClassifier as RNNKernelClassifier
from rnnlimit.seqmodels import RNNKernelRegressor as RNNKernelRegressor

_KERNEL_PARAMS: tuple[str, ...] = (
    "n_channels", "n_theta", "method", "sigma_w", "sigma_u", "b_max", "b_law", "tau_max",
    "activation", "readout", "n_segments", "part", "normalize", "input_scale", "znormalize",
    "dtype", "random_state",
)  # fmt: skip


class SequenceKernel(BaseEstimator):
    """Callable limit NTK ``k(X, Y)`` between encoded sequences (see the module docstring).

    ``K(ξ, ξ') = E[H H'] + E[∇_ω H·∇_ω H']`` (``part="ntk"``) or ``E[H H']`` (``"nngp"``),
    estimated with ``n_theta`` samples of ``ω`` (``method`` ``"mc"`` or scrambled-Sobol ``"qmc"``)
    drawn from ``PRNGKey(random_state)``; ``readout`` ``"last"``, ``"mean"``, ``"both"``
    (``K_last + K_mean``) or ``"segments"`` (last state and the means over ``n_segments`` equal
    parts of each series' true length); ``normalize`` divides by ``√(K(ξ,ξ)K(ξ',ξ'))``.
    ``dtype`` of features and Gram: ``"float32"``, ``"float64"``, or None (float64 when
    ``jax_enable_x64`` is on).
    """

    def __init__(
        self,
        n_channels: int = 1,
        n_theta: int = 512,
        method: str = "qmc",
        sigma_w: float = 1.0,
        sigma_u: float = 1.0,
        b_max: float = 0.8,
        b_law: str = "uniform",
        tau_max: float = 100.0,
        activation: str = "erf",
        readout: str = "last",
        n_segments: int = N_SEGMENTS,
        part: str = "ntk",
        normalize: bool = False,
        input_scale: float = 1.0,
        znormalize: bool = False,
        dtype: str | None = None,
        random_state: int = 0,
    ) -> None:
        self.n_channels = n_channels
        self.n_theta = n_theta
        self.method = method
        self.sigma_w = sigma_w
        self.sigma_u = sigma_u
        self.b_max = b_max
        self.b_law = b_law
        self.tau_max = tau_max
        self.activation = activation
        self.readout = readout
        self.n_segments = n_segments
        self.part = part
        self.normalize = normalize
        self.input_scale = input_scale
        self.znormalize = znormalize
        self.dtype = dtype
        self.random_state = random_state

    def _kernel_fn(self) -> Any:
        """Validate the parameters and build (once per parameter set) the kernel closure."""
        params = tuple(self.get_params()[k] for k in _KERNEL_PARAMS)
        cache = self.__dict__.get("_cache")
        if cache is not None and cache[0] == params:
            return cache[1]
        check_int("n_channels", self.n_channels, 1)
        check_int("random_state", self.random_state, 0, 2**31 - 1)
        check_range("input_scale", self.input_scale, 0.0, low_open=True)
        check_choice("part", self.part, PARTS)
        law = OmegaLaw(self.sigma_w, self.sigma_u, self.b_max, self.b_law, self.tau_max,
                       self.activation)  # fmt: skip
        dtype = self.dtype
        if dtype is None:
            dtype = "float64" if jax.config.read("jax_enable_x64") else "float32"
        fn = sequence_kernel(
            self.n_channels, key=jax.random.PRNGKey(self.random_state), law=law,
            n_theta=self.n_theta, method=self.method, readout=self.readout,
            n_segments=self.n_segments, normalize=self.normalize, dtype=dtype,
        )  # fmt: skip
        self.__dict__["_cache"] = (params, fn)
        return fn

    def prepare(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoded 2-D sequences → scaled ``(xs, lengths)`` as fed to the kernel."""
        xs, lengths = unflatten(np.asarray(x, np.float64), self.n_channels)
        if self.znormalize:
            return znormalize(xs, lengths, self.input_scale), lengths
        return xs * self.input_scale, lengths

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Gram ``K(x, y)`` (n_x, n_y) in float64 (``K(x, x)`` when ``y`` is None)."""
        fn = self._kernel_fn()
        b1 = self.prepare(x)
        b2 = None if y is None else self.prepare(y)
        return np.asarray(fn(b1, b2, part=self.part), np.float64)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_cache", None)  # the jitted closure is rebuilt on demand
        return state

    def diag(self, x: np.ndarray) -> np.ndarray:
        """``K(x_i, x_i)`` (n,)."""
        return np.asarray(self._kernel_fn()(self.prepare(x), diag=True, part=self.part))


class _SequenceKernelEstimator(BaseEstimator):
    """Shared ``fit``/``predict`` machinery: Gram on the training set, inner precomputed model.

    The kernel's parameters live in one :class:`SequenceKernel` (``kernel``; None for its
    defaults), reachable as nested parameters (``kernel__readout``) in a grid search.
    """

    def _kernel(self) -> SequenceKernel:
        return SequenceKernel() if self.kernel is None else clone(self.kernel)

    def _validate(self, x: Any, y: Any = None, *, fit: bool = False) -> Any:
        kw: dict[str, Any] = {"ensure_all_finite": "allow-nan", "dtype": np.float64}
        if not fit:
            return validate_data(self, x, reset=False, **kw)
        multi = isinstance(self, RegressorMixin)
        return validate_data(self, x, y, reset=True, multi_output=multi, y_numeric=multi, **kw)

    def _fit_gram(self, x: np.ndarray) -> np.ndarray:
        self.kernel_ = self._kernel()
        self.X_fit_ = x
        return self.kernel_(x)

    def _cross_gram(self, x: Any) -> np.ndarray:
        check_is_fitted(self, "X_fit_")
        x = self._validate(x)
        return self.kernel_(x, self.X_fit_)


class SequenceKernelRidge(RegressorMixin, _SequenceKernelEstimator):
    """Kernel ridge regression on the sequence NTK: ``f = K(·, X)(K(X, X) + alpha I)^{-1} y``.

    Parameters: ``alpha`` (ridge, > 0) and ``kernel`` (a :class:`SequenceKernel`).
    """

    def __init__(self, alpha: float = 1e-3, *, kernel: SequenceKernel | None = None) -> None:
        self.alpha = alpha
        self.kernel = kernel

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any) -> SequenceKernelRidge:
        """Fit on encoded sequences ``X`` (n, L·d) and targets ``y`` (n,) or (n, m)."""
        x, y = self._validate(X, y, fit=True)
        check_range("alpha", self.alpha, 0.0, low_open=True)
        gram = self._fit_gram(x)
        self.model_ = KernelRidge(alpha=self.alpha, kernel="precomputed").fit(gram, y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``K(X, X_fit) (K + alpha I)^{-1} y``."""
        gram = self._cross_gram(X)
        return self.model_.predict(gram)


class SequenceSVC(ClassifierMixin, _SequenceKernelEstimator):
    """Support-vector classifier on the sequence NTK (``SVC(kernel="precomputed")`` inside).

    Parameters: ``C`` (> 0), ``class_weight`` and ``kernel`` (a :class:`SequenceKernel`).
    """

    def __init__(
        self, C: float = 1.0, *, class_weight: Any = None, kernel: SequenceKernel | None = None
    ) -> None:
        self.C = C
        self.class_weight = class_weight
        self.kernel = kernel

    def fit(self, X: Any, y: Any) -> SequenceSVC:
        """Fit on encoded sequences ``X`` (n, L·d) and class labels ``y`` (n,)."""
        x, y = self._validate(X, y, fit=True)
        check_classification_targets(y)
        check_range("C", self.C, 0.0, low_open=True)
        gram = self._fit_gram(x)
        self.model_ = SVC(C=self.C, kernel="precomputed", class_weight=self.class_weight)
        self.model_.fit(gram, y)
        self.classes_ = self.model_.classes_
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """SVC decision values on ``K(X, X_fit)``."""
        gram = self._cross_gram(X)
        return self.model_.decision_function(gram)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels."""
        gram = self._cross_gram(X)
        return self.model_.predict(gram)
