"""Tests of the scikit-learn estimators on the sequence NTK (rnnlimit.estimators, datasets)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import check_estimator

jax.config.update("jax_enable_x64", True)

from rnnlimit.datasets import as_batch, flatten_padded, unflatten  # noqa: E402
from rnnlimit.errors import ParameterError  # noqa: E402
from rnnlimit.estimators import SequenceKernel, SequenceKernelRidge, SequenceSVC  # noqa: E402


def _two_class_sequences(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy slow (class 0) vs fast (class 1) sines, lengths 15..30, 2 channels."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        length = int(rng.integers(15, 31))
        t = np.arange(length) * 0.4 + rng.uniform(0, 6)
        wave = np.sin(t) if i % 2 == 0 else np.sin(2.5 * t)
        seqs.append(np.stack([wave, 0.5 * wave], 1) + rng.normal(0, 0.2, (length, 2)))
        labels.append(i % 2)
    return flatten_padded(*as_batch(seqs)), np.array(labels)


@pytest.mark.parametrize(
    "estimator", [SequenceKernelRidge(n_theta=256), SequenceSVC(n_theta=64)], ids=repr
)
def test_sklearn_estimator_checks(estimator):
    check_estimator(estimator)


def test_variable_length_encoding_round_trips():
    seqs = [np.arange(6.0).reshape(3, 2), np.ones((1, 2))]
    xs, lengths = as_batch(seqs)
    back, back_lengths = unflatten(flatten_padded(xs, lengths), 2)
    np.testing.assert_array_equal(back, xs)
    np.testing.assert_array_equal(back_lengths, [3, 1])


@pytest.mark.parametrize(
    "bad", [np.array([[1.0, np.nan, 2.0]]), np.array([[np.inf, 1.0, 1.0]]), np.full((1, 2), np.nan)]
)
def test_bad_padding_is_refused(bad):
    with pytest.raises(ParameterError, match="X"):
        unflatten(bad, 1)


def test_tiny_dataset_end_to_end_svc_and_ridge():
    x_train, y_train = _two_class_sequences(40, 0)
    x_test, y_test = _two_class_sequences(40, 1)
    kw = {"n_channels": 2, "n_theta": 128, "readout": "both", "znormalize": True}
    kw |= {"input_scale": 0.3}
    svc = SequenceSVC(C=100.0, **kw).fit(x_train, y_train)
    assert svc.score(x_test, y_test) >= 0.9
    ridge = SequenceKernelRidge(alpha=1e-2, **kw).fit(x_train, 2.0 * y_train - 1.0)
    assert np.mean((ridge.predict(x_test) > 0) == y_test) >= 0.9


def test_callable_kernel_in_svc_inside_gridsearch():
    x_train, y_train = _two_class_sequences(40, 2)
    kernel = SequenceKernel(n_channels=2, n_theta=128, znormalize=True, readout="both")
    grid = {"C": [100.0], "kernel__input_scale": [0.3, 3.0]}
    search = GridSearchCV(SVC(kernel=kernel), grid, cv=3).fit(x_train, y_train)
    assert search.best_score_ >= 0.8
    assert search.best_params_["kernel__input_scale"] == 0.3
    gram = kernel(x_train[:5])
    np.testing.assert_allclose(kernel.diag(x_train[:5]), np.diag(gram), rtol=1e-10)


def test_segment_readout_kernel_is_the_library_kernel():
    """``SequenceKernel(readout="segments", n_segments=k)`` is ``sequence_kernel`` with the same
    readout: the same Gram from the same ω draw; the segment count changes it."""
    from rnnlimit.seqkernel import OmegaLaw, sequence_kernel

    x, _ = _two_class_sequences(6, 3)
    kernel = SequenceKernel(n_channels=2, n_theta=64, readout="segments", n_segments=3)
    direct = sequence_kernel(
        2,
        key=jax.random.PRNGKey(0),
        law=OmegaLaw(),
        n_theta=64,
        method="qmc",
        readout="segments",
        n_segments=3,
        dtype="float64",
    )
    expected = np.asarray(direct(kernel.prepare(x)))  # fmt: skip
    np.testing.assert_allclose(kernel(x), expected, rtol=1e-10)
    other = SequenceKernel(n_channels=2, n_theta=64, readout="segments", n_segments=5)(x)
    assert not np.allclose(other, expected)


def test_kernel_parameters_are_validated_when_used():
    with pytest.raises(ParameterError, match="n_segments"):
        SequenceKernel(readout="segments", n_segments=0)(np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="b_max"):
        SequenceKernel(b_max=2.0)(np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="input_scale"):
        SequenceKernel(input_scale=0.0)(np.zeros((2, 3)))


def test_ucr_loader_reads_the_copy_inside_aeon():
    pytest.importorskip("aeon")
    from rnnlimit.datasets import load_ucr

    xs, lengths, y = load_ucr("JapaneseVowels", "train")
    assert xs.shape[2] == 12 and len(y) == len(xs) == 270
    assert lengths.min() < lengths.max() == xs.shape[1]
