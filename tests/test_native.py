"""The native trainer (rnnlimit.native, _native/fused_train.c), truncated and RTRL, against the
JAX path; the one native/JAX boundary (native.decide); the build itself."""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf as sp_erf

from rnnlimit import native, nativecalls, nativelib
from rnnlimit.chains import AR1Chain, FilterTarget, sample_stream
from rnnlimit.errors import DivergenceError, ParameterError
from rnnlimit.network import NetworkSpec, init_params
from rnnlimit.train import train


def test_native_extension_built_where_a_compiler_exists():
    """`make test` must not pass with the native tests silently skipped: where a C compiler is on
    PATH (so `pip install` builds the extension) and RNNLIMIT_NATIVE is not 0, it must load."""
    if nativelib.disabled():
        pytest.skip("RNNLIMIT_NATIVE=0: the native kernels are disabled on purpose")
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler on PATH: the optional extension cannot have been built")
    assert native.available(), (
        f"a C compiler ({compiler}) exists but the native extension is unavailable: "
        f"{native.unavailable_reason()}; rebuild it with `pip install -e .` (or set "
        "RNNLIMIT_NATIVE=0 to run without it)"
    )


needs_native = pytest.mark.skipif(
    not native.available(), reason=f"native kernel unavailable: {native.unavailable_reason()}"
)


def _setup(N=40, d=1, m=1, K=300, activation="erf", clip="hard", seed=1):
    spec = NetworkSpec(N=N, d=d, m=m, activation=activation, clip=clip, antisymmetric=False)
    params = init_params(spec, jax.random.PRNGKey(seed), jnp.float64)

    def f(x):
        return jnp.sin(2.0 * jnp.mean(x) + jnp.arange(m))

    stream = sample_stream(
        AR1Chain(rho=0.6, noise=0.5, d=d),
        FilterTarget(a=0.6, f=f, m=m),
        jax.random.PRNGKey(seed + 7),
        K,
        burn_in=10,
        dtype=jnp.float64,
    )
    return spec, params, stream


def _same_record(a, b, tol=1e-12) -> None:
    for k in ("c", "w", "b", "u"):
        np.testing.assert_allclose(
            np.asarray(getattr(a.params, k)), np.asarray(getattr(b.params, k)), rtol=tol,
            atol=tol, err_msg=k,
        )  # fmt: skip
    for k in ("eval_times", "window_t", "loss", "memory_mean", "memory_std", "outputs"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=tol, atol=tol, err_msg=k)
    assert a.steps_done == b.steps_done and a.diverged_at == b.diverged_at
    assert a.trace.keys() == b.trace.keys()
    for k in a.trace:
        np.testing.assert_allclose(a.trace[k], b.trace[k], rtol=tol, atol=tol, err_msg=k)


# Tolerance: the native and JAX steps do the same arithmetic per unit in the same order; they
# differ only in the order of the sums over units (g, ds), i.e. by a few ulps per step, and
# these contracting runs (300 steps, N = 40) do not amplify that: observed differences are
# below 3e-14 (relative); 1e-12 leaves room for other compilers' FMA contraction.
_CASES = [
    (d, m, act, clip)
    for d, m in ((1, 1), (2, 1), (1, 2), (2, 2))
    for act in ("erf", "tanh", "relu")
    for clip in ("hard", "smooth")
] + [(3, 3, "tanh", "smooth"), (4, 1, "relu", "hard")]


@needs_native
@pytest.mark.parametrize("gradient", ["truncated", "rtrl"])
@pytest.mark.parametrize(("d", "m", "activation", "clip"), _CASES)
def test_native_equals_jax(gradient, activation, clip, d, m):
    """Both gradients; the fused d, m <= 2 passes and the blocked generic one (3, 3), (4, 1)."""
    spec, params, stream = _setup(N=40, d=d, m=m, activation=activation, clip=clip)
    zs = np.random.default_rng(0).uniform(-1, 1, (7, d + m))
    kw = dict(alpha=2.0, eval_points=zs, eval_times=[0.0, 1.0, 3.3, 7.5], window=16, trace_stride=3)
    rn = train(spec, params, stream, gradient=gradient, backend="native", **kw)
    rj = train(spec, params, stream, gradient=gradient, backend="jax", **kw)
    _same_record(rn, rj)
    assert np.all(np.isfinite(rn.loss))


@needs_native
@pytest.mark.parametrize(("d", "m", "N"), [(1, 1, 40), (2, 2, 40), (4, 3, 600)])
def test_native_rtrl_differs_from_truncated_and_blocks_agree(d, m, N):
    """RTRL is not truncated in disguise (the memory path moves the parameters), and the
    generic pass over several blocks (N = 600 > 256 units per block) equals JAX (d = 4, m = 3)."""
    spec, params, stream = _setup(N=N, d=d, m=m, K=200, clip="smooth")
    kw = dict(alpha=2.0, window=20, backend="native")
    rr = train(spec, params, stream, gradient="rtrl", **kw)
    rt = train(spec, params, stream, gradient="truncated", **kw)
    assert np.max(np.abs(np.asarray(rr.params.b) - np.asarray(rt.params.b))) > 1e-6
    rj = train(spec, params, stream, gradient="rtrl", alpha=2.0, window=20, backend="jax")
    _same_record(rr, rj)


@needs_native
def test_auto_picks_native_and_n_steps_short_of_stream():
    spec, params, stream = _setup(N=64, K=250)
    ra = train(spec, params, stream, n_steps=201, window=50, trace_stride=7)
    rj = train(spec, params, stream, n_steps=201, window=50, trace_stride=7, backend="jax")
    _same_record(ra, rj)


@needs_native
def test_native_leaves_callers_params_and_is_deterministic():
    spec, params, stream = _setup(N=30, K=60)
    u0 = np.asarray(params.u).copy()
    a = train(spec, params, stream, backend="native")
    b = train(spec, params, stream, backend="native")
    np.testing.assert_array_equal(np.asarray(params.u), u0)
    np.testing.assert_array_equal(np.asarray(a.params.c), np.asarray(b.params.c))
    np.testing.assert_array_equal(a.loss, b.loss)


@needs_native
def test_divergence_same_step_as_jax():
    spec, params, stream = _setup(N=20, K=400)
    with pytest.raises(DivergenceError) as nat:
        train(spec, params, stream, alpha=1e6, window=25, backend="native", trace_stride=2)
    with pytest.raises(DivergenceError) as jx:
        train(spec, params, stream, alpha=1e6, window=25, backend="jax", trace_stride=2)
    assert nat.value.step == jx.value.step
    rn, rj = nat.value.record, jx.value.record
    assert rn.diverged_at == rj.diverged_at == nat.value.step
    _same_record(rn, rj)


@needs_native
def test_native_erf_and_exp_match_scipy():
    a = np.concatenate(
        [
            np.linspace(-30.0, 30.0, 200_001),
            np.geomspace(1e-300, 30.0, 20_001),
            -np.geomspace(1e-300, 30.0, 20_001),
            [0.0, -0.0, 0.999999999, 1.0, 1.000000001, 8.0, 26.0, 27.0, 1e300],
        ]
    )
    h, hp = nativecalls.activation("erf", a)
    np.testing.assert_allclose(h, sp_erf(a), rtol=2e-16 * 4, atol=0)
    np.testing.assert_array_equal(np.signbit(h[a == 0]), np.signbit(a[a == 0]))
    with np.errstate(over="ignore"):
        want = 2 / np.sqrt(np.pi) * np.exp(-(a**2))
    np.testing.assert_allclose(hp, want, rtol=1e-15, atol=1e-305)
    x = np.concatenate(
        [np.linspace(-745.0, 709.7, 400_001), np.geomspace(1e-300, 700, 10_001), [0.0, -0.0]]
    )
    np.testing.assert_allclose(nativecalls.exp(x), np.exp(x), rtol=5e-16, atol=1e-320)  # ~2 ulp
    ex = nativecalls.exp(np.array([-800.0, 710.0, np.inf, -np.inf, np.nan]))
    assert ex[0] == 0 and ex[1] == np.inf and ex[2] == np.inf and ex[3] == 0
    assert np.isnan(ex[4])
    t, tp = nativecalls.activation("tanh", a)
    np.testing.assert_allclose(t, np.tanh(a), rtol=4e-16, atol=0)
    np.testing.assert_allclose(tp, 1 - np.tanh(a) ** 2, rtol=1e-15, atol=5e-16)
    for name in ("erf", "tanh", "relu"):
        h, _ = nativecalls.activation(name, np.array([np.nan]))
        assert np.isnan(h[0]), name


def test_backend_choice_is_checked(monkeypatch):
    spec, params, stream = _setup(N=10, K=20)
    with pytest.raises(ParameterError, match="backend"):
        train(spec, params, stream, backend="fortran")
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    # decide's first failed rule is the reason: availability comes before the dtype
    why = "float64" if native.available() else "unavailable"
    with pytest.raises(ParameterError, match=why):
        train(spec, p32, stream, backend="native")
    monkeypatch.setenv("RNNLIMIT_NATIVE", "0")
    assert not native.available()
    with pytest.raises(ParameterError, match="RNNLIMIT_NATIVE"):
        train(spec, params, stream, backend="native")
    rec = train(spec, params, stream)  # auto falls back to JAX
    assert np.all(np.isfinite(rec.loss))


@needs_native
@pytest.mark.parametrize("gradient", ["truncated", "rtrl"])
@pytest.mark.parametrize(("d", "m", "activation"), [(1, 1, "erf"), (2, 2, "tanh"), (3, 2, "erf")])
def test_native_two_threads_match_one_and_are_deterministic(
    monkeypatch, d, m, activation, gradient
):
    monkeypatch.delenv("RNNLIMIT_NATIVE_THREADS", raising=False)
    spec, params, stream = _setup(N=4096, d=d, m=m, K=200, activation=activation)
    kw = dict(alpha=2.0, window=50, trace_stride=7, backend="native", gradient=gradient)
    r1 = train(spec, params, stream, native_threads=1, **kw)
    r2 = train(spec, params, stream, native_threads=2, **kw)
    r2b = train(spec, params, stream, native_threads=2, **kw)
    _same_record(r1, r2)
    _same_record(r2, r2b, tol=0.0)
    for k in ("c", "w", "b", "u"):
        assert np.array_equal(np.asarray(getattr(r2.params, k)), np.asarray(getattr(r2b.params, k)))


@needs_native
def test_native_threads_resolution(monkeypatch):
    monkeypatch.delenv("RNNLIMIT_NATIVE_THREADS", raising=False)
    assert native.resolve_threads(1, 10**6) == 1
    assert native.resolve_threads(0, 100) == 1
    big = native.THREADS_MIN_N
    expect = 2 if (os.cpu_count() or 1) >= 2 else 1
    assert native.resolve_threads(0, big) == expect
    monkeypatch.setenv("RNNLIMIT_NATIVE_THREADS", "1")
    assert native.resolve_threads(2, big) == 1
    monkeypatch.setenv("RNNLIMIT_NATIVE_THREADS", "x")
    with pytest.raises(ValueError):
        native.resolve_threads(0, big)
    monkeypatch.delenv("RNNLIMIT_NATIVE_THREADS")
    with pytest.raises(ValueError):
        native.resolve_threads(3, big)
    spec, params, stream = _setup(N=8, K=20)
    with pytest.raises(ParameterError):
        train(spec, params, stream, native_threads=3)


@needs_native
def test_decide_applies_one_set_of_rules_to_every_kernel(monkeypatch):
    f64, f32 = np.float64, np.float32
    cpu = dict(platform="cpu")
    assert native.decide("train", dtype=f64, d=1, m=1, activation="erf", **cpu) == (True, "")
    assert native.decide("limit", dtype=f64, d=1, m=2, **cpu) == (True, "")
    assert native.decide("seq", dtype=f32, d=5, m=1, activation="tanh", **cpu) == (True, "")
    max_dm = nativelib.MAX_DM
    no = {
        "jax": native.decide("train", backend="jax", dtype=f64, d=1, m=1, **cpu),
        "float64": native.decide("train", dtype=f32, d=1, m=1, **cpu),
        "float32": native.decide("seq", dtype=f64, d=1, m=1, **cpu),
        f"<= {max_dm}": native.decide("train", dtype=f64, d=max_dm + 1, m=1, **cpu),
        "d + m <= 3": native.decide("limit", dtype=f64, d=2, m=2, **cpu),
        "grid basis": native.decide("limit", dtype=f64, d=1, m=1, grid=False, **cpu),
        "'sigmoid'": native.decide("seq", dtype=f32, d=1, m=1, activation="sigmoid", **cpu),
        "gpu": native.decide("train", dtype=f64, d=1, m=1, platform="gpu"),
    }
    for words, (use, why) in no.items():
        assert not use and words in why, (words, why)
    # an accelerator only steers "auto"; an explicit "native" still runs on the host
    assert native.decide("train", backend="native", dtype=f64, d=1, m=1, platform="gpu")[0]
    with pytest.raises(ParameterError, match=r"backend.*float64"):
        native.choose("limit", backend="native", dtype=f32, d=1, m=1, **cpu)
    assert not native.choose("limit", backend="auto", dtype=f32, d=1, m=1, **cpu)
    monkeypatch.setenv("RNNLIMIT_NATIVE", "0")
    for kernel, dt in (("train", f64), ("limit", f64), ("seq", f32)):
        use, why = native.decide(kernel, dtype=dt, d=1, m=1, **cpu)
        assert not use and "RNNLIMIT_NATIVE=0" in why
        with pytest.raises(ParameterError, match="backend"):
            native.choose(kernel, backend="native", dtype=dt, d=1, m=1, **cpu)


@needs_native
def test_library_with_other_size_limits_is_refused(monkeypatch):
    """The C limits (rnnlimit_native.h) are read back at load: a Python-side constant that
    disagrees makes the library unavailable, with the reason, instead of overrunning buffers."""
    assert native.available()
    try:
        for name in ("MAX_DM", "PIC_MAX_M", "SEQ_LANES"):
            monkeypatch.setattr(nativelib, name, getattr(nativelib, name) + 1)
            nativelib.load.cache_clear()
            assert not native.available()
            assert "size limits differ" in native.unavailable_reason(), name
            monkeypatch.undo()
    finally:
        nativelib.load.cache_clear()
    assert native.available()
