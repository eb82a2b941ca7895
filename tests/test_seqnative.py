"""The native float32 feature scan of the sequence kernel (``_native/seq_features.c``).

Reference: the JAX scan of :mod:`rnnlimit.seqfeatures` in float64 (an independent route: XLA's
erf/tanh and its own scan). Tolerance: the float32 features carry rounding of order the float32
epsilon 1.2e-7 per step, damped by the contraction ``|b|·sup|σ'| < 1``; the JAX float32 scan
itself is within 5e-7 (relative to the largest feature) of float64 on these cases, so both
float32 scans must be within 2e-6 (about 17 epsilons).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.special import erf

jax.config.update("jax_enable_x64", True)

from rnnlimit import native, nativecalls  # noqa: E402
from rnnlimit.errors import ParameterError  # noqa: E402
from rnnlimit.seqfeatures import READOUTS, feature_panels, host_features, resolve_backend  # noqa: E402
from rnnlimit.seqkernel import OmegaLaw, sample_omega, sequence_features, sequence_kernel  # noqa: E402

pytestmark = pytest.mark.skipif(not native.available(), reason=native.unavailable_reason())
TOL = 2e-6


def _omegas(d: int, act: str, p: int = 200):
    law = OmegaLaw(b_max=0.8 if act == "erf" else 0.9, activation=act)
    key = jax.random.PRNGKey(3)
    return tuple(sample_omega(key, p, d, law, method="mc", dtype=t) for t in ("float64", "float32"))


def _data(d: int, n: int = 23, length: int = 19):
    rng = np.random.default_rng(d)
    xs = rng.normal(0.0, 1.0, (n, length, d))
    lengths = rng.integers(0, length + 1, n)
    lengths[:3] = (length, 0, 2)  # full, empty, shorter than the segment count
    return xs, lengths


def test_activations_match_exact_values():
    a = np.linspace(-12.0, 12.0, 400_001).astype(np.float32)
    ad = a.astype(np.float64)
    h, hp = nativecalls.seq_activation("erf", a)
    assert np.abs(h - erf(ad)).max() < 2e-7
    exact_p = 2.0 / np.sqrt(np.pi) * np.exp(-ad * ad)
    assert np.abs(hp - exact_p).max() < 2e-7
    normal = exact_p > 1e-30  # past e^-87 the kernel's exp is clamped (absolute error < 2e-38)
    assert np.abs(hp[normal] / exact_p[normal] - 1.0).max() < 1e-5
    h, hp = nativecalls.seq_activation("tanh", a)
    assert np.abs(h - np.tanh(ad)).max() < 2e-7
    assert np.abs(hp - (1.0 - np.tanh(ad) ** 2)).max() < 4e-7
    h, hp = nativecalls.seq_activation("relu", a)
    np.testing.assert_array_equal(h, np.maximum(a, 0.0))
    np.testing.assert_array_equal(hp, (a > 0).astype(np.float32))
    special = np.array([np.nan, np.inf, -np.inf], np.float32)
    h, _ = nativecalls.seq_activation("erf", special)
    assert np.isnan(h[0]) and h[1] == 1.0 and h[2] == -1.0


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("act", ["erf", "tanh", "relu"])
def test_native_scan_matches_float64_jax_scan(d, act):
    om64, om32 = _omegas(d, act)
    xs, lengths = _data(d)
    for readout in READOUTS:
        for part in ("ntk", "nngp"):
            kw = {"activation_name": act, "readout": readout, "part": part, "n_segments": 5}
            ref = np.asarray(sequence_features(om64, xs, lengths, backend="jax", **kw))
            got = np.asarray(sequence_features(om32, xs, lengths, backend="native", **kw))
            assert got.dtype == np.float32 and got.shape == ref.shape
            err = np.abs(got - ref).max() / np.abs(ref).max()
            assert err < TOL, (readout, part, err)
            # the empty series reads 0 everywhere; the others are finite and non-zero
            assert not got[1].any() and np.isfinite(got).all() and np.abs(got[0]).max() > 0


def test_threads_and_host_output_do_not_change_the_features():
    _, om32 = _omegas(2, "erf", p=300)  # 300 = two full blocks of 128 lanes and a partial one
    xs, lengths = _data(2, n=41)
    kw = {"readout": "segments", "n_segments": 4, "backend": "native"}
    one = np.asarray(feature_panels(om32, xs, lengths, workers=1, **kw)[0][1])
    two = np.asarray(feature_panels(om32, xs, lengths, workers=2, **kw)[0][1])
    host = host_features(om32, xs, lengths, **kw)
    np.testing.assert_array_equal(one, two)  # row ranges are independent: bit-identical
    np.testing.assert_array_equal(one, host)


def test_auto_backend_uses_native_in_float32_and_kernel_agrees():
    xs, lengths = _data(1, n=12)
    seqs = [x[:n] for x, n in zip(xs, np.maximum(lengths, 1), strict=True)]
    opts = {"key": jax.random.PRNGKey(0), "n_theta": 256, "readout": "both", "dtype": "float32"}
    k_auto = sequence_kernel(1, **opts)(seqs)
    k_native = sequence_kernel(1, backend="native", **opts)(seqs)
    k_jax = sequence_kernel(1, backend="jax", **opts)(seqs)
    np.testing.assert_array_equal(k_auto, k_native)
    np.testing.assert_allclose(k_native, k_jax, rtol=0, atol=TOL * np.abs(k_jax).max())


def test_backend_errors_name_the_parameter():
    om64, _ = _omegas(1, "erf")
    xs, _ = _data(1, n=4)
    with pytest.raises(ParameterError, match=r"backend.*float32"):
        sequence_features(om64, xs, backend="native")
    with pytest.raises(ParameterError, match="backend"):
        sequence_features(om64, xs, backend="gpu")
    with pytest.raises(ParameterError, match="backend"):
        sequence_kernel(1, key=jax.random.PRNGKey(0), backend="fortran")


def test_resolve_backend_picks_native_for_float32_on_the_cpu_only():
    om64, om32 = _omegas(1, "erf")
    on_cpu = jax.default_backend() == "cpu"  # with a GPU "auto" keeps the jitted scan there
    assert resolve_backend(om32, "erf") == ("native" if on_cpu else "jax")
    assert resolve_backend(om32, "erf", "native") == "native"
    assert resolve_backend(om32, "erf", "jax") == "jax"
    assert resolve_backend(om64, "erf") == "jax"  # float64: only the JAX scan


@pytest.mark.parametrize("backend", ["native", "jax"])
def test_lengths_outside_the_padded_length_are_refused(backend):
    _, om32 = _omegas(1, "erf")
    xs, _ = _data(1, n=4, length=6)
    for bad in ([6, 6, 7, 1], [0, -1, 2, 3], [1, 2, 3]):
        with pytest.raises(ParameterError, match=r"lengths.*\[0, 6\]"):
            sequence_features(om32, xs, np.array(bad), backend=backend)
