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
from rnnlimit.estimators import (  # noqa: E402
    KernelFamily,
    RNNKernelClassifier,
    RNNKernelRegressor,
    SequenceKernel,
    SequenceKernelRidge,
    SequenceSVC,
)


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
    "estimator",
    [
        SequenceKernelRidge(kernel=SequenceKernel(n_theta=256)),
        SequenceSVC(kernel=SequenceKernel(n_theta=64)),
    ],
    ids=repr,
)
def test_sklearn_estimator_checks(estimator):
    check_estimator(estimator)


def test_variable_length_encoding_round_trips():
    seqs = [np.arange(6.0).reshape(3, 2), np.ones((1, 2))]
    xs, lengths = as_batch(seqs)
    back, back_lengths = unflatten(flatten_padded(xs, lengths), 2)
    np.testing.assert_array_equal(back, xs)
    np.testing.assert_array_equal(back_lengths, [3, 1])


def test_multichannel_flat_encoding_is_the_3d_layout():
    """(n, 2, L) in aeon's layout and its time-major flat encoding with ``n_channels=2`` give
    the same regressor (mean and predictive sd)."""
    x, y = _sine_targets(12, 6)
    x2 = np.concatenate([x, -0.5 * x[:, :, ::-1]], axis=1)
    flat = np.transpose(x2, (0, 2, 1)).reshape(len(x2), -1)
    a = RNNKernelRegressor(kernel=SMALL).fit(x2, y).predict(x2[:4], return_std=True)
    b = RNNKernelRegressor(kernel=SMALL, n_channels=2).fit(flat, y)
    for got, ref in zip(b.predict(flat[:4], return_std=True), a, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-10)


@pytest.mark.parametrize(
    "bad", [np.array([[1.0, np.nan, 2.0]]), np.array([[np.inf, 1.0, 1.0]]), np.full((1, 2), np.nan)]
)
def test_bad_padding_is_refused(bad):
    with pytest.raises(ParameterError, match="X"):
        unflatten(bad, 1)


def test_tiny_dataset_end_to_end_svc_and_ridge():
    x_train, y_train = _two_class_sequences(40, 0)
    x_test, y_test = _two_class_sequences(40, 1)
    kernel = SequenceKernel(
        n_channels=2, n_theta=128, readout="both", znormalize=True, input_scale=0.3
    )
    svc = SequenceSVC(C=100.0, kernel=kernel).fit(x_train, y_train)
    assert svc.score(x_test, y_test) >= 0.9
    ridge = SequenceKernelRidge(alpha=1e-2, kernel=kernel).fit(x_train, 2.0 * y_train - 1.0)
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


# --- the one-call estimators (rnnlimit.seqmodels) ---------------------------------------------

SMALL = KernelFamily(n_theta=64)


def _sine_or_square(n: int, seed: int, length: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The issue's example: noisy sines (class 0) vs square waves (class 1) of random frequency
    and phase, aeon layout (n, 1, length)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    y = np.arange(n) % 2
    freq, phase = rng.uniform(0.05, 0.15, (n, 1)), rng.uniform(0, 2 * np.pi, (n, 1))
    wave = np.sin(2 * np.pi * freq * t + phase)
    x = np.where(y[:, None] == 0, wave, np.sign(wave)) + rng.normal(0, 0.3, (n, length))
    return x[:, None, :], y


def _sine_targets(n: int, seed: int, noise: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Sines of random frequency f and amplitude a; target 10 f + log a + N(0, noise²)."""
    rng = np.random.default_rng(seed)
    t = np.arange(40)
    f, a = rng.uniform(0.03, 0.2, n), rng.uniform(0.5, 2.0, n)
    x = a[:, None] * np.sin(2 * np.pi * f[:, None] * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    x = x + rng.normal(0, 0.1, x.shape)
    return x[:, None, :], 10 * f + np.log(a) + rng.normal(0, noise, n)


@pytest.mark.parametrize(
    "estimator",
    [RNNKernelClassifier(kernel=SMALL), RNNKernelRegressor(kernel=SMALL)],
    ids=["classifier", "regressor"],
)
def test_one_call_estimators_pass_sklearn_checks(estimator):
    check_estimator(estimator)


def test_defaults_separate_sines_from_square_waves():
    """Untuned defaults on the issue's example (40 training series of length 50). 200 test
    series: a true accuracy of 0.99 gives ≥ 0.95 with probability > 0.999 (binomial)."""
    x_train, y_train = _sine_or_square(40, 0)
    x_test, y_test = _sine_or_square(200, 1)
    clf = RNNKernelClassifier().fit(x_train, y_train)
    assert clf.score(x_test, y_test) >= 0.95


def test_layouts_give_the_same_model():
    """aeon 3-D, a list of 2-D series, and the flat encoding are one input; unequal lengths are
    read at their true lengths (a series padded by NaN = the same series in a list)."""
    x, y = _sine_or_square(16, 2, length=20)
    flat = x[:, 0, :]
    ref = RNNKernelClassifier(kernel=SMALL).fit(x, y).decision_function(x)
    for layout in (flat, [s for s in x]):
        got = RNNKernelClassifier(kernel=SMALL).fit(layout, y).decision_function(layout)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    ragged = [s[:, : 12 + i % 8] for i, s in enumerate(x)]
    padded = np.full_like(flat, np.nan)
    for i, s in enumerate(ragged):
        padded[i, : s.shape[1]] = s[0]
    a = RNNKernelClassifier(kernel=SMALL).fit(ragged, y).decision_function(ragged)
    b = RNNKernelClassifier(kernel=SMALL).fit(padded, y).decision_function(padded)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(5), np.zeros((2, 1, 3, 4)), [np.zeros((1, 3)), np.zeros((2, 3))], [np.zeros((1, 0))]],
    ids=["1d", "4d", "channels differ", "empty series"],
)
def test_bad_shapes_name_x(bad):
    with pytest.raises(ParameterError, match="X"):
        RNNKernelClassifier(kernel=SMALL).fit(bad, np.arange(len(bad)) % 2)


def test_predict_checks_the_channel_count():
    x, y = _sine_or_square(8, 3, length=10)
    clf = RNNKernelClassifier(kernel=SMALL).fit(x, y)
    with pytest.raises(ParameterError, match="channels"):
        clf.predict(np.concatenate([x, x], axis=1))


def test_same_seed_same_model_threads_and_progress():
    """``random_state`` fixes the ω draw; the thread count does not change any number; the
    progress callback sees every feature group and candidate."""
    x, y = _sine_or_square(12, 4, length=30)
    calls = []
    a = RNNKernelClassifier(kernel=SMALL, random_state=3, n_jobs=1).fit(x, y)
    b = RNNKernelClassifier(
        kernel=SMALL, random_state=3, n_jobs=2, progress=lambda *c: calls.append(c)
    ).fit(x, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = RNNKernelClassifier(kernel=SMALL, random_state=4).fit(x, y)
    assert not np.allclose(a.coef_, c.coef_)
    stages = {s for s, _, _ in calls}
    assert stages == {"features", "selection"}
    assert ("selection", len(SMALL.candidates()), len(SMALL.candidates())) in calls


def test_pool_normalisation_gives_the_mean_of_the_readouts_cosine_kernels():
    """``normalize="pool"``: a candidate's ``Φ Φᵀ`` is the mean over its readouts q of the
    cosine kernel of q alone (each from its own one-readout family, where "all" is that cosine
    kernel), averaged over its representations; ``"block"`` gives each (readout, dilation)
    block the norm 1/√(Q·D)."""
    from rnnlimit.seqfamily import Preprocessing, candidate_features, family_features

    x, _ = _sine_or_square(5, 4, length=40)
    xs = np.transpose(x, (0, 2, 1)).astype(np.float64)
    lengths = np.full(len(xs), 40)
    prep = Preprocessing.of(xs, lengths)
    pools = ("ppv", "mean", "seg", "max")
    fam = KernelFamily(n_theta=64, pools=pools[:3], optional_pools=pools[3:])
    assert fam.all_pools == pools and fam.normalize == "pool"
    groups = fam.draw(3, 1, 40)
    raw = {r: family_features(fam, groups, prep, r, xs, lengths) for r in ("series", "diff")}
    phi = candidate_features(fam, raw, (("series", "diff"), pools))
    grams = []
    for r in ("series", "diff"):
        for q in pools:
            one = KernelFamily(n_theta=64, pools=(q,), optional_pools=(), normalize="all")
            p = candidate_features(one, {r: {q: raw[r][q]}}, ((r,), (q,)))
            grams.append(p @ p.T)
    np.testing.assert_allclose(phi @ phi.T, np.mean(grams, axis=0), rtol=1e-10, atol=1e-12)
    block_fam = KernelFamily(n_theta=64, pools=pools, optional_pools=(), normalize="block")
    block = candidate_features(block_fam, raw, (("series",), pools))
    assert len(groups) > 1
    np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, rtol=1e-12)
    first = block[:, : groups[0][1].b.shape[0]]  # ppv of the first dilation
    np.testing.assert_allclose(
        np.linalg.norm(first, axis=1), 1.0 / np.sqrt(len(pools) * len(groups)), rtol=1e-12
    )


def test_candidates_cover_representations_and_optional_readouts():
    fam = KernelFamily(n_theta=64)
    cands = fam.candidates()
    reps = [("series",), ("diff",), ("level",), ("series", "diff", "level")]
    assert cands == [(r, fam.pools) for r in reps] + [(r, fam.all_pools) for r in reps]
    x, y = _sine_or_square(12, 7, length=30)
    model = RNNKernelClassifier(kernel=fam, random_state=0).fit(x, y)
    assert (model.representations_, model.pools_) in cands
    assert KernelFamily(optional_pools=()).candidates() == [(r, fam.pools) for r in reps]


def test_kernel_family_parameters_are_validated():
    with pytest.raises(ParameterError, match="window"):
        KernelFamily(window=0)
    with pytest.raises(ParameterError, match="pools"):
        KernelFamily(pools=("median",))
    with pytest.raises(ParameterError, match="representations"):
        KernelFamily(representations=("series", "series"))
    with pytest.raises(ParameterError, match="normalize"):
        KernelFamily(normalize="rows")
    with pytest.raises(ParameterError, match="segments"):
        KernelFamily(segments=0)
    with pytest.raises(ParameterError, match="pools"):
        KernelFamily(pools=("ppv", "ppv"))
    with pytest.raises(ParameterError, match="optional_pools"):
        KernelFamily(optional_pools=("ppv",))
    with pytest.raises(ParameterError, match="b_max"):
        KernelFamily(b_max=0.95)
    x, y = _sine_or_square(6, 5, length=10)
    with pytest.raises(ParameterError, match="alphas"):
        RNNKernelClassifier(kernel=SMALL, alphas=(0.0,)).fit(x, y)
    with pytest.raises(ParameterError, match="kernel"):
        RNNKernelClassifier(kernel={"n_theta": 64}).fit(x, y)
    with pytest.raises(ParameterError, match="n_jobs"):
        RNNKernelClassifier(kernel=SMALL, n_jobs=0).fit(x, y)


def test_regressor_intervals_are_calibrated():
    """Coverage of the 90% GP intervals ``mean ± 1.645 std`` on 400 held-out series (150 to
    train, noise sd 0.2). Binomial sd of the coverage: √(0.9·0.1/400) = 0.015; the amplitude
    s² is estimated from 150 LOO residuals (relative sd √(2/150) ≈ 0.12 → sd of s ≈ 0.058,
    which moves the coverage by 2·1.645·φ(1.645)·0.058 ≈ 0.020); together sd ≈ 0.025, and the
    test allows 3 of them. The 50% intervals are checked the same way (sd ≈ 0.034, 3 sd)."""
    x_train, y_train = _sine_targets(150, 10)
    x_test, y_test = _sine_targets(400, 11)
    reg = RNNKernelRegressor(random_state=0).fit(x_train, y_train)
    mean, std = reg.predict(x_test, return_std=True)
    np.testing.assert_array_equal(mean, reg.predict(x_test))
    z = np.abs(y_test - mean) / std
    assert abs(np.mean(z < 1.6449) - 0.9) <= 0.075
    assert abs(np.mean(z < 0.6745) - 0.5) <= 0.10
    # the fit is useful: RMSE well below the targets' sd, not far above the noise 0.2
    rmse = np.sqrt(np.mean((y_test - mean) ** 2))
    assert rmse < 0.5 * np.std(y_test) and rmse < 0.3
