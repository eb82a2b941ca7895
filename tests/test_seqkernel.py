"""Tests of the limit sequence kernel of the diagonal RNN (rnnlimit.seqkernel)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from rnnlimit.errors import ParameterError  # noqa: E402
from rnnlimit.seqkernel import (  # noqa: E402
    OmegaLaw,
    history_kernel,
    sample_omega,
    sequence_features,
    sequence_kernel,
)

RNG = np.random.default_rng(0)
SEQS = [RNG.uniform(-1, 1, (n, 2)) for n in (5, 9, 3, 9, 1)]


def _kernel(**kw):
    opts = {"key": jax.random.PRNGKey(0), "n_theta": 512, "readout": "both"}
    return sequence_kernel(2, **(opts | kw))


def test_padding_respects_true_lengths():
    kf = _kernel()
    gram = kf(SEQS)
    for i, j in [(0, 2), (1, 4), (3, 3)]:  # each alone, without padding
        np.testing.assert_allclose(kf([SEQS[i]], [SEQS[j]])[0, 0], gram[i, j], rtol=1e-12)


def test_gram_is_symmetric_psd_with_matching_diagonal():
    kf = _kernel()
    gram = kf(SEQS)
    np.testing.assert_allclose(gram, gram.T, atol=1e-12)
    assert np.linalg.eigvalsh(gram).min() > -1e-10
    np.testing.assert_allclose(kf(SEQS, diag=True), np.diag(gram), rtol=1e-12)
    np.testing.assert_allclose(kf(SEQS[:2], SEQS[2:]), gram[:2, 2:], rtol=1e-12)


def test_nngp_part_is_dominated_by_ntk():
    kf = _kernel()
    gap = kf(SEQS) - kf(SEQS, part="nngp")
    assert np.linalg.eigvalsh(gap).min() > -1e-10


def test_memory_budget_tiling_leaves_gram_unchanged():
    np.testing.assert_allclose(
        _kernel(memory_budget=10_000, block=2)(SEQS), _kernel()(SEQS), rtol=1e-11
    )


def test_qmc_and_mc_agree_within_standard_errors():
    mc, se_mc = _kernel(n_theta=4096, n_batches=8)(SEQS, return_stderr=True)
    qmc, se_q = _kernel(n_theta=4096, n_batches=8, method="qmc")(SEQS, return_stderr=True)
    z = np.abs(mc - qmc) / np.sqrt(se_mc**2 + se_q**2)
    assert z.max() < 5.0
    assert np.median(se_q) < np.median(se_mc)  # scrambled Sobol beats plain Monte Carlo


def test_standard_error_shrinks_like_inverse_sqrt_n_theta():
    _, se_small = _kernel(n_theta=512, n_batches=8)(SEQS, return_stderr=True)
    _, se_big = _kernel(n_theta=8192, n_batches=8)(SEQS, return_stderr=True)
    ratio = np.median(se_small / se_big)
    assert 2.0 < ratio < 8.0  # √16 = 4


def test_normalized_kernel_has_unit_diagonal():
    gram = _kernel(normalize=True)(SEQS)
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-12)
    assert np.abs(gram).max() <= 1.0 + 1e-12


def test_same_key_same_result_and_float32_option():
    np.testing.assert_array_equal(_kernel()(SEQS), _kernel()(SEQS))
    k32 = _kernel(dtype="float32")(SEQS)
    assert k32.dtype == np.float32
    np.testing.assert_allclose(k32, _kernel()(SEQS), rtol=1e-4)


def test_history_kernel_matches_sequence_kernel_on_prefixes():
    stream = RNG.uniform(-1, 1, (40, 2))
    key = jax.random.PRNGKey(4)
    hk = history_kernel(2, key=key, n_theta=256)(stream, [5, 17, 39])
    sk = sequence_kernel(2, key=key, n_theta=256)([stream[:6], stream[:18], stream])
    np.testing.assert_allclose(hk, sk, rtol=1e-10)


def test_feature_length_counts_units_channels_and_readouts():
    om = sample_omega(jax.random.PRNGKey(1), 32, 2, OmegaLaw())
    xs = np.zeros((3, 4, 2))
    assert sequence_features(om, xs).shape == (3, 32 * 5)
    assert sequence_features(om, xs, readout="both").shape == (3, 32 * 10)
    assert sequence_features(om, xs, part="nngp").shape == (3, 32)


def test_logtime_law_spreads_b_below_b_max():
    law = OmegaLaw(b_max=0.8, b_law="logtime", tau_max=1000.0)
    b = np.asarray(sample_omega(jax.random.PRNGKey(2), 4096, 1, law, method="qmc").b)
    assert np.abs(b).max() < 0.8
    assert (np.abs(b) > 0.7).mean() > 0.3  # many long memories


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"readout": "first"}, "readout"),
        ({"method": "sobol"}, "method"),
        ({"n_theta": 100, "n_batches": 3}, "n_batches"),
    ],
)
def test_invalid_parameters_name_themselves(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        sequence_kernel(2, key=jax.random.PRNGKey(0), **kwargs)


@pytest.mark.parametrize(("act", "b_max"), [("erf", 0.9), ("tanh", 1.0), ("relu", -0.1)])
def test_non_contracting_memory_law_is_refused(act, b_max):
    with pytest.raises(ParameterError, match=r"b_max.*sup\|σ'\|"):
        OmegaLaw(b_max=b_max, activation=act)


def test_stderr_needs_several_batches():
    with pytest.raises(ParameterError, match="n_batches"):
        _kernel()(SEQS, return_stderr=True)


def test_segment_means_average_to_the_time_mean():
    om = sample_omega(jax.random.PRNGKey(1), 16, 2, OmegaLaw())
    xs = RNG.uniform(-1, 1, (2, 8, 2))
    seg = np.asarray(sequence_features(om, xs, readout="segments")).reshape(2, 16, 5, 5)
    mean = np.asarray(sequence_features(om, xs, readout="mean")).reshape(2, 16, 5)
    last = np.asarray(sequence_features(om, xs, readout="last")).reshape(2, 16, 5)
    np.testing.assert_allclose(seg[:, :, 0], last, rtol=1e-12)
    np.testing.assert_allclose(seg[:, :, 1:].mean(axis=2), mean, rtol=1e-12)


def test_bidirectional_features_give_psd_sum_of_kernels():
    from rnnlimit.datasets import as_batch, reverse

    xs, lengths = as_batch(SEQS, 2)
    rev = reverse(xs, lengths)
    assert np.array_equal(rev[0, :5], xs[0, :5][::-1]) and not rev[2, 3:].any()
    assert np.array_equal(reverse(rev, lengths), xs)
    om = sample_omega(jax.random.PRNGKey(1), 64, 2, OmegaLaw())
    f, r = sequence_features(om, xs, lengths), sequence_features(om, rev, lengths)
    both = np.concatenate([f, r], axis=1)
    kf = _kernel(n_theta=64, readout="last", key=jax.random.PRNGKey(1))
    gram = both @ both.T
    np.testing.assert_allclose(gram, kf((xs, lengths)) + kf((rev, lengths)), rtol=1e-10)
    assert np.linalg.eigvalsh(gram).min() > -1e-10


def test_feature_panels_and_host_features_match_single_pass():
    from rnnlimit.seqkernel import feature_panels, host_features

    xs = RNG.uniform(-1, 1, (37, 6, 2))
    lengths = RNG.integers(1, 7, 37)
    om = sample_omega(jax.random.PRNGKey(2), 16, 2, OmegaLaw())
    ref = np.asarray(sequence_features(om, xs, lengths, readout="segments", block=37))
    panels = feature_panels(om, xs, lengths, readout="segments", block=4, panel=8, workers=2)
    assert [s for s, _ in panels] == list(range(0, 37, 8))
    np.testing.assert_allclose(np.concatenate([p for _, p in panels]), ref, rtol=1e-12)
    host = host_features(om, xs, lengths, readout="segments", block=5)
    np.testing.assert_allclose(host, ref, rtol=1e-12)


def test_channel_standardisation_uses_given_statistics():
    from rnnlimit.datasets import as_batch, channel_stats, standardize

    xs, lengths = as_batch(SEQS, 2)
    mean, sd = channel_stats(xs, lengths)
    z = standardize(xs, lengths, mean, sd)
    live = np.concatenate([z[i, :n] for i, n in enumerate(lengths)])
    np.testing.assert_allclose(live.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(live.std(axis=0), 1.0, rtol=1e-12)
    assert not z[2, 3:].any()


def test_many_segments_match_direct_means_of_the_state_history():
    from rnnlimit.seqfeatures import _unit_features

    xs = RNG.uniform(-1, 1, (4, 11, 2))
    lengths = np.array([11, 7, 3, 1])
    om = sample_omega(jax.random.PRNGKey(3), 8, 2, OmegaLaw())
    segs = 5
    got = np.asarray(
        sequence_features(om, xs, lengths, readout="segments", n_segments=segs, scale=1.0)
    ).reshape(4, 8, 1 + segs, 5)
    for i, n in enumerate(lengths):  # every state H_k, ∇H_k of series i alone, from the definition
        hist = np.asarray(
            _unit_features(om, xs[i : i + 1, :n], np.array([n]), "erf", "history", "ntk", False)
        )[:, 0]
        np.testing.assert_allclose(got[i, :, 0], hist[-1], rtol=1e-12)
        for j in range(segs):
            ks = [k for k in range(n) if k * segs // n == j]
            want = hist[ks].mean(axis=0) if ks else np.zeros_like(hist[0])
            np.testing.assert_allclose(got[i, :, 1 + j], want, rtol=1e-11, atol=1e-14)


def test_coarsened_segments_equal_a_coarser_feature_pass():
    from rnnlimit.seqfeatures import coarsen_segments, segment_counts

    xs = RNG.uniform(-1, 1, (5, 40, 1))
    lengths = np.array([40, 33, 17, 16, 9])
    counts = segment_counts(lengths, 16)
    assert np.array_equal(counts.sum(axis=1), lengths)
    assert counts[4, 2] == 0  # 9 steps over 16 parts leave some empty
    om = sample_omega(jax.random.PRNGKey(4), 8, 1, OmegaLaw())
    fine = np.asarray(sequence_features(om, xs, lengths, readout="segments", n_segments=16))
    coarse = np.asarray(sequence_features(om, xs, lengths, readout="segments", n_segments=4))
    fine, coarse = fine.reshape(5, 8, 17, 4)[:, :, 1:], coarse.reshape(5, 8, 5, 4)[:, :, 1:]
    np.testing.assert_allclose(coarsen_segments(fine, lengths, 4), coarse, rtol=1e-11)
    mean = np.asarray(sequence_features(om, xs, lengths, readout="mean")).reshape(5, 8, 1, 4)
    np.testing.assert_allclose(coarsen_segments(fine, lengths, 16), mean, rtol=1e-11)
    with pytest.raises(ParameterError, match="factor"):
        coarsen_segments(fine, lengths, 3)
    with pytest.raises(ParameterError, match="n_segments"):
        sequence_features(om, xs, lengths, readout="segments", n_segments=0)
