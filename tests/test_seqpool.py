"""Tests of the dilated windows and pooled readouts (rnnlimit.seqpool)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from rnnlimit.errors import ParameterError  # noqa: E402
from rnnlimit.omega import OmegaLaw, sample_omega  # noqa: E402
from rnnlimit.seqfeatures import sequence_features  # noqa: E402
from rnnlimit.seqpool import (  # noqa: E402
    delay_embed,
    dilations,
    first_difference,
    pooled_features,
)

RNG = np.random.default_rng(0)


def _ragged(n: int = 5, length: int = 12, d: int = 2) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([length, 7, 1, 10, 12][:n])
    xs = RNG.normal(size=(n, length, d))
    xs[np.arange(length)[None, :] >= lengths[:, None]] = 0.0
    return xs, lengths


def test_delay_embedding_holds_the_lagged_inputs():
    xs, _ = _ragged()
    emb = delay_embed(xs, dilation=3, window=4)
    for k in range(xs.shape[1]):
        for j in range(4):
            lagged = xs[:, k - 3 * j] if k - 3 * j >= 0 else np.zeros_like(xs[:, 0])
            np.testing.assert_array_equal(emb[:, k, 2 * j : 2 * j + 2], lagged)


def test_first_difference_stops_at_each_true_length():
    xs, lengths = _ragged()
    dx = first_difference(xs, lengths)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(dx[i, 1:n], np.diff(xs[i, :n], axis=0))
        assert not dx[i, 0].any() and not dx[i, n:].any()


def test_dilations_fit_the_window_in_the_shortest_series():
    assert dilations(100, 9) == (1, 2, 4, 8)  # span 8·8 = 64 ≤ 99 < 8·16
    assert dilations(5, 9) == (1,)
    assert dilations(10_000, 9, max_count=3) == (1, 2, 4)
    with pytest.raises(ParameterError, match="min_length"):
        dilations(0, 9)


def _numpy_pools(omega, xs, lengths, segments=4):
    """The readouts by a plain loop over time (independent of the jitted scan); ``seg`` splits
    the steps ``0..n-1`` into ``segments`` parts with ``numpy.array_split``'s rule on the index
    ``k`` (part ``j`` holds the ``k`` with ``j n/S ≤ k < (j+1) n/S``)."""
    from scipy.special import erf

    w, b, u = (np.asarray(a) for a in (omega.w, omega.b, omega.u))
    out = []
    for x, n in zip(xs, lengths, strict=True):
        h, states = np.zeros_like(b), []
        for k in range(n):
            h = erf(w @ x[k] + b * h + u)
            states.append(h)
        s = np.array(states)
        part = np.array([min(k * segments // n, segments - 1) for k in range(n)])
        seg = [(s[part == j] > 0).mean(0) if (part == j).any() else np.zeros_like(b)
               for j in range(segments)]  # fmt: skip
        out.append(np.concatenate([(s > 0).mean(0), s.max(0), s.mean(0), *seg]))
    return np.array(out) / np.sqrt(len(b))


def test_pooled_readouts_match_a_plain_loop_on_ragged_series():
    xs, lengths = _ragged()
    lengths[0] = 3  # shorter than the 4 parts of ``seg``: one part is empty and reads 0
    omega = sample_omega(jax.random.PRNGKey(1), 40, 2, OmegaLaw(b_max=0.8), dtype="float64")
    got = pooled_features(omega, xs, lengths, pools=("ppv", "max", "mean", "seg"), workers=1)
    np.testing.assert_allclose(got, _numpy_pools(omega, xs, lengths), rtol=1e-10, atol=1e-12)
    three = pooled_features(omega, xs, lengths, pools=("seg",), segments=3, workers=1)
    ref = _numpy_pools(omega, xs, lengths, segments=3)[:, 3 * 40 :]
    np.testing.assert_allclose(three, ref, rtol=1e-10, atol=1e-12)


def test_seg_parts_average_to_ppv_on_equal_parts():
    """When ``S`` divides every length, the mean of the ``S`` part-ppvs is the ppv."""
    xs, lengths = _ragged(length=12)
    lengths[:] = 12
    omega = sample_omega(jax.random.PRNGKey(4), 16, 2, OmegaLaw(), dtype="float64")
    ppv = pooled_features(omega, xs, lengths, pools=("ppv",))
    seg = pooled_features(omega, xs, lengths, pools=("seg",), segments=4)
    np.testing.assert_allclose(seg.reshape(len(xs), 4, 16).mean(1), ppv, rtol=1e-12)


def test_pooled_mean_is_the_nngp_mean_readout_of_the_feature_scan():
    """The ``mean`` pool is ``sequence_features(readout="mean", part="nngp")`` (another scan)."""
    xs, lengths = _ragged()
    emb = delay_embed(xs, 2, 3)
    omega = sample_omega(jax.random.PRNGKey(2), 32, 6, OmegaLaw(), dtype="float64")
    mean = pooled_features(omega, emb, lengths, pools=("mean",))
    ref = sequence_features(omega, emb, lengths, readout="mean", part="nngp", backend="jax")
    np.testing.assert_allclose(mean, np.asarray(ref), rtol=1e-10, atol=1e-12)


def test_rows_do_not_depend_on_their_batch_or_threads():
    xs, lengths = _ragged()
    omega = sample_omega(jax.random.PRNGKey(3), 24, 2, OmegaLaw(), dtype="float32")
    xs32 = xs.astype(np.float32)
    full = pooled_features(omega, xs32, lengths, workers=2)
    one = pooled_features(omega, xs32[1:2, :7], lengths[1:2], workers=1)
    np.testing.assert_array_equal(full[1:2], one)


def test_pooled_feature_errors_name_the_parameter():
    xs, lengths = _ragged()
    omega = sample_omega(jax.random.PRNGKey(0), 8, 2, OmegaLaw(), dtype="float64")
    with pytest.raises(ParameterError, match="pools"):
        pooled_features(omega, xs, lengths, pools=("median",))
    with pytest.raises(ParameterError, match="segments"):
        pooled_features(omega, xs, lengths, pools=("seg",), segments=0)
    with pytest.raises(ParameterError, match="lengths"):
        pooled_features(omega, xs, np.zeros(5, int))
    with pytest.raises(ParameterError, match="xs"):
        pooled_features(omega, xs[..., :1], lengths)


def test_family_filter_scale_is_sigma_w_over_root_window():
    """``KernelFamily.sigma_w`` scales only ``w``, whose sd is ``sigma_w/√window``: the same
    seed's draws at two ``sigma_w`` are exact multiples (inverse-CDF transform of the same Sobol
    points), ``b`` and ``u`` unchanged, and the sample sd of the default draw (length 500: six
    dilations × 256 = 1536 values per window coordinate, scrambled Sobol) is within 2% of
    ``sigma_w/√window`` (the Monte Carlo error of an sd from n = 1536 independent normal draws
    is ≈ 1/√(2n) = 1.8%; each Sobol block is balanced, which does better)."""
    from rnnlimit.seqfamily import KernelFamily

    default = KernelFamily()
    ref = KernelFamily(sigma_w=1.0)
    a = default.draw(7, 1, 500)
    b = ref.draw(7, 1, 500)
    for (da, oa), (db, ob) in zip(a, b, strict=True):
        assert da == db
        np.testing.assert_allclose(np.asarray(oa.w), default.sigma_w * np.asarray(ob.w),
                                   rtol=1e-6)  # fmt: skip
        np.testing.assert_array_equal(np.asarray(oa.b), np.asarray(ob.b))
        np.testing.assert_array_equal(np.asarray(oa.u), np.asarray(ob.u))
    w = np.concatenate([np.asarray(o.w) for _, o in a])
    assert w.shape == (1536, default.window)
    sd = default.sigma_w / np.sqrt(default.window)
    np.testing.assert_allclose(w.std(axis=0), sd, rtol=0.02)
