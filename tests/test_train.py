"""The online trainer (docs/model.md §3) against hand computations and plain Python loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf as np_erf

from rnnlimit import native
from rnnlimit.chains import AR1Chain, FilterTarget, Stream, sample_stream
from rnnlimit.errors import DivergenceError, ParameterError, StreamError
from rnnlimit.network import NetworkSpec, init_params, output_batch, rtrl_update
from rnnlimit.train import reference_truncated_step, train


def _stream(K: int, d: int = 1, m: int = 1, seed: int = 0, dtype=jnp.float64) -> Stream:
    def f(x):
        return jnp.sin(2.0 * jnp.mean(x) + jnp.arange(m))

    return sample_stream(
        AR1Chain(rho=0.6, noise=0.5, d=d),
        FilterTarget(a=0.6, f=f, m=m),
        jax.random.PRNGKey(seed),
        K,
        burn_in=10,
        dtype=dtype,
    )


def _setup(N=40, d=1, m=1, K=200, activation="erf", clip="hard", antisymmetric=False, seed=1):
    spec = NetworkSpec(N=N, d=d, m=m, activation=activation, clip=clip, antisymmetric=antisymmetric)
    params = init_params(spec, jax.random.PRNGKey(seed), jnp.float64)
    return spec, params, _stream(K, d, m, seed)


def _np(params) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(params, k), dtype=float) for k in ("c", "w", "b", "u")}


def _close(p, q, rtol=1e-12, atol=1e-13) -> None:
    for k in ("c", "w", "b", "u"):
        np.testing.assert_allclose(np.asarray(getattr(p, k)), q[k], rtol=rtol, atol=atol, err_msg=k)


# --------------------------------------------------------------------------- one step by hand


@pytest.mark.parametrize("activation", ["erf", "tanh"])
def test_one_step_equals_hand_computation(activation):
    spec, params, stream = _setup(N=30, d=2, m=2, activation=activation)
    p = _np(params)
    x, y = np.asarray(stream.x[0]), np.asarray(stream.y[0])
    s = np.zeros(2)  # S_0 = 0
    a = 30**-0.5
    eta = 1.7 * 30 ** (2 * 0.5 - 2)
    pre = p["w"] @ x + p["b"] @ s + p["u"]
    if activation == "erf":
        h, sp = np_erf(pre), 2 / np.sqrt(np.pi) * np.exp(-(pre**2))
    else:
        h, sp = np.tanh(pre), 1 - np.tanh(pre) ** 2
    g = a * h @ p["c"]
    e = y - g
    # ∂g_j/∂c^i_l = a H^i δ_jl ; ∂g_j/∂(w, b, u)^i = a c^i_j σ'(pre_i) (x, s, 1)
    q = a * (p["c"] @ e) * sp
    want = dict(
        c=p["c"] + eta * a * np.outer(h, e),
        w=p["w"] + eta * np.outer(q, x),
        b=p["b"] + eta * np.outer(q, s),
        u=p["u"] + eta * q,
    )
    rec = train(spec, params, stream, alpha=1.7, n_steps=1, window=1)
    _close(rec.params, want)
    np.testing.assert_allclose(rec.loss, [0.5 * e @ e], rtol=1e-12)
    np.testing.assert_allclose(rec.eta, eta)
    np.testing.assert_allclose(rec.memory_mean, [s])


# --------------------------------------------------------------------------- against loops


@pytest.mark.parametrize(
    "d,m,activation,clip",
    [
        (1, 1, "erf", "hard"),
        (2, 3, "erf", "smooth"),
        (1, 2, "tanh", "hard"),
        (2, 1, "relu", "hard"),
    ],
)
def test_truncated_train_equals_reference_loop(d, m, activation, clip):
    K = 300
    spec, params, stream = _setup(N=64, d=d, m=m, K=K, activation=activation, clip=clip)
    alpha = 2.0
    step = reference_truncated_step(spec)
    eta = jnp.asarray(spec.eta(alpha))
    p = jax.tree_util.tree_map(jnp.copy, params)
    s = jnp.zeros((m,))
    losses, ss = [], []
    for k in range(K):
        ss.append(np.asarray(s))
        p, s, loss = step(p, s, stream.x[k], stream.y[k], eta)
        losses.append(float(loss))
    rec = train(spec, params, stream, alpha=alpha, window=50)
    _close(rec.params, _np(p), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(rec.loss, np.mean(np.reshape(losses, (-1, 50)), axis=1), rtol=1e-10)
    ss = np.reshape(ss, (-1, 50, m))
    np.testing.assert_allclose(rec.memory_mean, ss.mean(axis=1), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(rec.memory_std, ss.std(axis=1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["jax", "native"])
def test_rtrl_train_equals_python_loop_of_rtrl_update(backend):
    """Both trainers against a Python loop of network.rtrl_update (itself checked against
    jax.jacfwd in test_network.py); the native one does the same sums in another order."""
    if backend == "native" and not native.available():
        pytest.skip(native.unavailable_reason())
    K = 200
    spec, params, stream = _setup(N=32, d=2, m=2, K=K, clip="smooth")
    alpha = 1.5
    eta = spec.eta(alpha)
    p = params
    J = jax.tree_util.tree_map(lambda a: jnp.zeros((2, *a.shape)), params)
    s = jnp.zeros((2,))
    losses = []
    update = jax.jit(rtrl_update, static_argnums=0)
    for k in range(K):
        p, J, g = update(spec, p, J, stream.x[k], s, stream.y[k], eta)
        losses.append(0.5 * float(jnp.sum((stream.y[k] - g) ** 2)))
        s = jnp.tanh(g)
    rec = train(spec, params, stream, alpha=alpha, gradient="rtrl", window=K, backend=backend)
    _close(rec.params, _np(p), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(rec.loss, [np.mean(losses)], rtol=1e-10)
    assert rec.gradient == "rtrl"


# --------------------------------------------------------------------------- bookkeeping


def test_eval_outputs_equal_output_batch_at_those_steps():
    N, K = 40, 160
    spec, params, stream = _setup(N=N, K=K, antisymmetric=True)
    z = np.stack(np.meshgrid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 4)), -1).reshape(-1, 2)
    times = [0.0, 1.0, 2.5, K / N]
    rec = train(spec, params, stream, alpha=1.0, eval_points=z, eval_times=times, window=7)
    np.testing.assert_allclose(rec.eval_times, times)
    assert rec.outputs.shape == (4, 12, 1)
    np.testing.assert_allclose(rec.outputs[0], 0.0, atol=1e-15)  # antisymmetric start
    for t, out in zip(times, rec.outputs, strict=True):
        k = round(t * N)
        pk = train(spec, params, stream, alpha=1.0, n_steps=k).params if k else params
        np.testing.assert_allclose(out, np.asarray(output_batch(spec, pk, jnp.asarray(z))), 1e-11)
    np.testing.assert_allclose(np.asarray(rec.params.u), np.asarray(pk.u), rtol=1e-12)


def test_windows_and_time_bookkeeping():
    N, K = 20, 105
    spec, params, stream = _setup(N=N, K=K)
    rec = train(
        spec, params, stream, alpha=1.0, window=10, eval_points=np.zeros((1, 2)), eval_times=[0.55]
    )
    ends = [*range(10, K, 10), K]
    np.testing.assert_allclose(rec.window_t, np.asarray(ends) / N)
    assert rec.steps_done == K and rec.N == N and rec.diverged_at is None
    # a record point inside a window does not split the window's mean
    plain = train(spec, params, stream, alpha=1.0, window=10)
    np.testing.assert_allclose(rec.loss, plain.loss, rtol=1e-12)
    assert rec.loss.shape == (len(ends),) and rec.memory_mean.shape == (len(ends), 1)
    assert rec.eval_times.tolist() == [11 / N]
    default = train(spec, params, stream, alpha=1.0)
    assert default.window_t[0] == pytest.approx(max(1, N // 10) / N)


def test_trace_holds_memory_output_and_target():
    spec, params, stream = _setup(N=20, K=50)
    rec = train(spec, params, stream, alpha=1.0, trace_stride=5, window=10)
    assert rec.trace["k"].tolist() == list(range(0, 50, 5))
    np.testing.assert_allclose(rec.trace["y"][:, 0], np.asarray(stream.y[::5, 0]))
    np.testing.assert_allclose(rec.trace["s"][0], 0.0)
    # S_{k+1} = clip(ĝ_k); loss of window 0 uses the same ĝ
    assert np.all(np.abs(rec.trace["s"]) <= 1)


def test_same_seed_same_result():
    spec, params, stream = _setup(N=30, K=80)
    a = train(spec, params, stream, alpha=1.0)
    b = train(spec, init_params(spec, jax.random.PRNGKey(1), jnp.float64), stream, alpha=1.0)
    for k in ("c", "w", "b", "u"):
        np.testing.assert_array_equal(np.asarray(getattr(a.params, k)), getattr(b.params, k))
    np.testing.assert_array_equal(a.loss, b.loss)


def test_train_does_not_consume_the_callers_params():
    spec, params, stream = _setup(N=30, K=20)
    u0 = np.asarray(params.u).copy()
    train(spec, params, stream, alpha=1.0)
    np.testing.assert_array_equal(np.asarray(params.u), u0)


def test_progress_is_called_up_to_the_end():
    spec, params, stream = _setup(N=20, K=45)
    seen = []
    train(spec, params, stream, window=10, progress=lambda k, K: seen.append((k, K)))
    assert seen[-1] == (45, 45) and [k for k, _ in seen] == sorted(k for k, _ in seen)


def test_float32_runs_and_tracks_float64():
    spec = NetworkSpec(N=64, antisymmetric=True)
    s64 = _stream(300)
    p64 = init_params(spec, jax.random.PRNGKey(0), jnp.float64)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p64)
    s32 = Stream(s64.x.astype(jnp.float32), s64.y.astype(jnp.float32))
    r32 = train(spec, p32, s32, alpha=1.0, window=50)
    r64 = train(spec, p64, s64, alpha=1.0, window=50)
    assert r32.params.c.dtype == jnp.float32
    np.testing.assert_allclose(r32.loss, r64.loss, rtol=1e-3, atol=1e-6)
    r32 = train(spec, p32, s32, alpha=1.0, gradient="rtrl", window=50)
    assert np.all(np.isfinite(r32.loss))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1.5])
def test_bad_stream_values_are_refused(bad):
    spec, params, stream = _setup(N=10, K=20)
    x = np.asarray(stream.x).copy()
    x[3, 0] = bad
    with pytest.raises(StreamError, match=r"stream\.x"):
        train(spec, params, Stream(x, stream.y))
    y = np.asarray(stream.y).copy()
    y[5, 0] = bad
    with pytest.raises(StreamError, match=r"stream\.y"):
        train(spec, params, Stream(stream.x, y))


def test_bad_shapes_and_parameters_are_refused():
    spec, params, stream = _setup(N=10, K=20)
    cases = [
        (dict(stream=Stream(stream.x[:, 0], stream.y)), "stream.x"),
        (dict(stream=Stream(np.zeros((20, 2)), stream.y)), "stream.x"),
        (dict(stream=Stream(stream.x, stream.y[:10])), "stream.y"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(gradient="bptt"), "gradient"),
        (dict(n_steps=21), "n_steps"),
        (dict(n_steps=0), "n_steps"),
        (dict(window=0), "window"),
        (dict(eval_points=np.zeros((3, 3))), "eval_points"),
        (dict(eval_points=np.zeros((1, 2)), eval_times=[2.5]), "eval_times"),
        (dict(eval_points=np.zeros((1, 2)), eval_times=[-0.1]), "eval_times"),
    ]
    for kw, name in cases:
        args = dict(stream=stream) | kw
        s = args.pop("stream")
        with pytest.raises(ParameterError) as info:
            train(spec, params, s, **args)
        assert info.value.parameter == name, (kw, info.value)


def test_divergence_raises_with_step_and_record():
    spec, params, stream = _setup(N=10, K=400)
    with pytest.raises(DivergenceError) as info:
        train(
            spec,
            params,
            stream,
            alpha=1e12,
            window=5,
            eval_points=np.zeros((1, 2)),
            eval_times=[0.0],
        )
    err = info.value
    assert 0 <= err.step < 400
    rec = err.record
    assert rec.diverged_at == err.step and rec.steps_done == err.step
    assert np.all(rec.window_t * spec.N <= err.step)
    assert np.all(np.isfinite(rec.loss))
    assert rec.outputs.shape[0] == 1


@pytest.mark.parametrize("backend", ["jax", "native"])
@pytest.mark.parametrize("gradient", ["truncated", "rtrl"])
def test_runaway_growth_stops_while_still_finite(backend, gradient):
    """α = 100 makes the output grow like 1e150 long before it overflows: the run must stop at
    the first step with |ĝ_k| > output_bound (read off an unbounded reference run's trace), not
    hundreds of steps later at the first non-finite value."""
    if backend == "native" and not native.available():
        pytest.skip(native.unavailable_reason())
    spec, params, stream = _setup(N=10, K=400)
    kw = dict(alpha=100.0, window=5, gradient=gradient)
    with pytest.raises(DivergenceError) as ref:
        train(spec, params, stream, trace_stride=1, output_bound=1e300, backend="jax", **kw)
    g = np.abs(ref.value.record.trace["g"][:, 0])  # ĝ_k for k < the non-finite step
    beyond = np.flatnonzero(g > 1e6)
    assert beyond.size and np.all(np.isfinite(g))
    with pytest.raises(DivergenceError, match="exceeded 1e\\+06") as info:
        train(spec, params, stream, backend=backend, **kw)
    assert info.value.step == beyond[0] < ref.value.step
    rec = info.value.record
    assert rec.steps_done == beyond[0] and np.all(np.isfinite(rec.loss))
    assert all(np.all(np.isfinite(np.asarray(getattr(rec.params, k)))) for k in "cwbu")


# --------------------------------------------------------------------------- fastmath


def test_fast_erf_matches_jax_and_scipy_in_float64():
    from rnnlimit.fastmath import erf_and_derivative

    a = np.concatenate([np.linspace(-9, 9, 200_001), [0.0, -0.0, 1.0, -1.0, 1e-300, 40.0, -40.0]])
    h, hp = jax.jit(erf_and_derivative)(jnp.asarray(a))
    h, hp = np.asarray(h), np.asarray(hp)
    want = np.asarray(jax.scipy.special.erf(jnp.asarray(a)))
    assert np.max(np.abs(h - want)) <= 4e-16
    assert np.max(np.abs(h - np_erf(a)) / np.maximum(np.abs(np_erf(a)), 1e-300)) <= 1e-15
    np.testing.assert_allclose(hp, 2 / np.sqrt(np.pi) * np.exp(-(a**2)), rtol=1e-15, atol=0)
    assert np.all(np.abs(h) <= 1.0) and h[-2] == 1.0 and h[-1] == -1.0


def test_fast_erf_float32_keeps_xla_erf():
    from rnnlimit.fastmath import erf_and_derivative

    a = jnp.linspace(-5, 5, 1001, dtype=jnp.float32)
    h, hp = erf_and_derivative(a)
    assert h.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(h), np.asarray(jax.scipy.special.erf(a)))
    np.testing.assert_allclose(
        np.asarray(hp), 2 / np.sqrt(np.pi) * np.exp(-(np.asarray(a) ** 2)), 2e-6
    )
