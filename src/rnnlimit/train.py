"""Online SGD on one stream (MODEL.md §3): one sample, one memory update, one parameter update
per step k, time ``t = k / N``::

    ℓ_k = ½ |Y_k − ĝ_k|²,    θ_{k+1} = θ_k + η_N (Y_k − ĝ_k) · G_k,    η_N = α N^(2β − 2)

``gradient="truncated"``: ``G_k = ∇_θ g^N(X_k, S_k)`` with ``S_k`` an input;
``gradient="rtrl"``: ``G_k = dĝ_k/dθ`` through the memory, carried forward exactly.

The steps run fused inside one jitted ``lax.fori_loop`` per interval between record points, so
the host is visited only to record outputs and windowed statistics; memory stays ``O(N)``
unless a trace is asked for. Truncated float64 training runs on the native kernel
(:mod:`rnnlimit.native`, the same skewed pass in C, vectorised) when it is built.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import native
from rnnlimit.chains import Stream, check_stream_values
from rnnlimit.errors import DivergenceError, ParameterError, check_choice, check_int, check_range
from rnnlimit.fastmath import activation_and_derivative
from rnnlimit.network import (
    NetworkSpec,
    Params,
    clip_memory,
    output_batch,
    rtrl_update,
    truncated_update,
    zero_sensitivity,
)

Array = jax.Array
GRADIENTS = ("truncated", "rtrl")
BACKENDS = ("auto", "native", "jax")


@dataclass
class TrainRecord:
    """What a run leaves behind (host arrays).

    ``eval_times (R,)`` are the times ``k/N`` at which ``outputs (R, n_eval, m)`` holds
    ``g^N_k`` on the evaluation points; ``window_t (W,)`` are the end times of the loss windows
    with ``loss (W,)`` the mean of ``ℓ_k`` over each window and ``memory_mean/std (W, m)`` the
    moments of ``S_k``; ``trace`` (if asked) holds ``S_k``, ``ĝ_k``, ``Y_k`` every few steps.
    """

    N: int
    eta: float
    gradient: str
    eval_points: np.ndarray
    eval_times: np.ndarray
    outputs: np.ndarray
    window_t: np.ndarray
    loss: np.ndarray
    memory_mean: np.ndarray
    memory_std: np.ndarray
    steps_done: int
    params: Params
    trace: dict[str, np.ndarray] = field(default_factory=dict)
    diverged_at: int | None = None


def _truncated_interval(
    spec: NetworkSpec,
    trace_stride: int,
    carry: dict[str, Any],
    xs: Array,
    ys: Array,
    k0: Array,
    k1: Array,
    eta: Array,
) -> dict[str, Any]:
    """Truncated steps ``k0 ≤ k < k1`` as one skewed elementwise pass per step.

    Each parameter column is a separate ``(N,)`` vector and the loop carries ``H_k = σ(pre_k)``,
    ``σ'(pre_k)`` and ``ĝ_k``. Step k needs only the scalars ``e_k = Y_k − ĝ_k`` and
    ``S_{k+1} = ψ(ĝ_k)``; then one pass over the units applies the update with ``H_k, σ'_k`` and
    at once forms ``pre_{k+1}`` from the new parameters, ``X_{k+1}`` and ``S_{k+1}``, so each
    array is read once and written once per step and the only reduction is ``Σ_i c^i H^i``.
    """
    sigma2 = activation_and_derivative(spec.activation)
    a = spec.scale
    d, m = spec.d, spec.m
    last = xs.shape[0] - 1
    p = carry["params"]

    def forward(c: list, w: list, b: list, u: Array, x: Array, s: Array) -> tuple:
        pre = u
        for j in range(d):
            pre = pre + w[j] * x[j]
        for j in range(m):
            pre = pre + b[j] * s[j]
        h, hp = sigma2(pre)
        g = jnp.stack([jnp.dot(c[j], h) for j in range(m)]) * a
        return h, hp, g

    cols = (
        [p.c[:, j] for j in range(m)],
        [p.w[:, j] for j in range(d)],
        [p.b[:, j] for j in range(m)],
        p.u,
    )
    s0 = carry["s"]
    h0, hp0, g0 = forward(*cols, xs[k0], s0)

    def body(k: Array, st: dict[str, Any]) -> dict[str, Any]:
        (c, w, b, u), h, hp, g, s = st["cols"], st["h"], st["hp"], st["g"], st["s"]
        x, y = xs[k], ys[k]
        err = y - g
        loss = 0.5 * jnp.sum(err * err)
        s_next = clip_memory(spec, g)[0]
        ee = err * (eta * a)
        ce = c[0] * ee[0]
        for j in range(1, m):
            ce = ce + c[j] * ee[j]
        q = ce * hp
        c = [c[j] + h * ee[j] for j in range(m)]
        w = [w[j] + q * x[j] for j in range(d)]
        b = [b[j] + q * s[j] for j in range(m)]
        u = u + q
        x_next = xs[jnp.minimum(k + 1, last)]
        h, hp, g_next = forward(c, w, b, u, x_next, s_next)
        out = dict(cols=(c, w, b, u), h=h, hp=hp, g=g_next, s=s_next)
        return _accumulate(out, st, k, s, g, y, loss, trace_stride)

    zero = jnp.zeros((), xs.dtype)
    st = dict(
        cols=cols,
        h=h0,
        hp=hp0,
        g=g0,
        s=s0,
        loss=zero,
        s1=jnp.zeros_like(s0),
        s2=jnp.zeros_like(s0),
        bad=carry["bad"],
    )
    if trace_stride:
        st["trace"] = carry["trace"]
    st = jax.lax.fori_loop(k0, k1, body, st)
    c, w, b, u = st["cols"]
    out = dict(
        carry,
        params=Params(c=jnp.stack(c, axis=1), w=jnp.stack(w, axis=1), b=jnp.stack(b, axis=1), u=u),
        s=st["s"],
        loss=st["loss"],
        s1=st["s1"],
        s2=st["s2"],
        bad=st["bad"],
    )
    if trace_stride:
        out["trace"] = st["trace"]
    return out


def _accumulate(
    out: dict[str, Any],
    st: dict[str, Any],
    k: Array,
    s: Array,
    g: Array,
    y: Array,
    loss: Array,
    trace_stride: int,
) -> dict[str, Any]:
    """Per-step bookkeeping shared by both loops: Σℓ, ΣS, ΣS², first non-finite step, trace."""
    bad = (st["bad"] < 0) & ~jnp.isfinite(loss)
    out.update(
        loss=st["loss"] + loss,
        s1=st["s1"] + s,
        s2=st["s2"] + s * s,
        bad=jnp.where(bad, k, st["bad"]),
    )
    if trace_stride:
        out["trace"] = _trace_row(st["trace"], k, trace_stride, jnp.concatenate([s, g, y]))
    return out


def _trace_row(trace: Array, k: Array, stride: int, row: Array) -> Array:
    slot = k // stride
    old = jax.lax.dynamic_index_in_dim(trace, slot, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(trace, jnp.where(k % stride == 0, row, old), slot, 0)


def _interval(
    spec: NetworkSpec,
    gradient: str,
    trace_stride: int,
    carry: dict[str, Any],
    xs: Array,
    ys: Array,
    k0: Array,
    k1: Array,
    eta: Array,
) -> dict[str, Any]:
    """Run steps ``k0 ≤ k < k1`` fused in one loop; accumulate Σℓ, ΣS, ΣS² and trace."""

    def body(k: Array, c: dict[str, Any]) -> dict[str, Any]:
        x, y, s = xs[k], ys[k], c["s"]
        if gradient == "rtrl":
            params, J, g = rtrl_update(spec, c["params"], c["J"], x, s, y, eta)
        else:
            params, g = truncated_update(spec, c["params"], x, s, y, eta)
            J = c["J"]
        err = y - g
        loss = 0.5 * jnp.sum(err * err)
        out = dict(params=params, J=J, s=clip_memory(spec, g)[0])
        return _accumulate(out, c, k, s, g, y, loss, trace_stride)

    zero = jnp.zeros((), xs.dtype)
    carry = dict(carry, loss=zero, s1=jnp.zeros_like(carry["s"]), s2=jnp.zeros_like(carry["s"]))
    return jax.lax.fori_loop(k0, k1, body, carry)


_interval_jit = jax.jit(_interval, static_argnums=(0, 1, 2))
_truncated_jit = jax.jit(_truncated_interval, static_argnums=(0, 1))
_outputs_jit = jax.jit(output_batch, static_argnums=(0,))


def _check_stream(spec: NetworkSpec, stream: Stream) -> None:
    x, y = np.asarray(stream.x), np.asarray(stream.y)
    if x.ndim != 2 or x.shape[1] != spec.d:
        raise ParameterError("stream.x", f"must have shape (K, d={spec.d}), got {x.shape}")
    if y.ndim != 2 or y.shape != (x.shape[0], spec.m):
        raise ParameterError(
            "stream.y", f"must have shape (K={x.shape[0]}, m={spec.m}), got {y.shape}"
        )
    check_stream_values("stream.x", x)
    check_stream_values("stream.y", y)


def _schedule(K: int, eval_steps: np.ndarray, window: int) -> np.ndarray:
    """Sorted interval boundaries: every window end and every record step in ``[0, K]``."""
    return np.unique(np.concatenate([[0, K], np.arange(window, K, window), eval_steps]))


class _JaxEngine:
    """The jitted JAX intervals (every gradient, every dtype)."""

    def __init__(self, spec, gradient, trace_stride, params, xs, ys, eta, K) -> None:
        self.spec, self.gradient, self.trace_stride = spec, gradient, trace_stride
        self.xs, self.ys, self.eta = xs, ys, eta
        dtype = params.u.dtype
        self.carry: dict[str, Any] = dict(
            params=params,
            J=zero_sensitivity(spec, params) if gradient == "rtrl" else jnp.zeros((), dtype),
            s=jnp.zeros((spec.m,), dtype),
            bad=jnp.asarray(-1, jnp.int32),
        )
        if trace_stride:
            self.carry["trace"] = jnp.full((-(-K // trace_stride), 3 * spec.m), jnp.nan, dtype)

    def params(self) -> Params:
        return self.carry["params"]

    def snapshot(self) -> Params:
        return self.carry["params"]

    def restore(self, snap: Params) -> Params:
        return snap

    def trace(self) -> np.ndarray:
        return np.asarray(self.carry["trace"])

    def run(self, k0: int, k1: int) -> tuple[int, float, np.ndarray, np.ndarray]:
        args = (self.carry, self.xs, self.ys, k0, k1, self.eta)
        if self.gradient == "truncated":
            self.carry = _truncated_jit(self.spec, self.trace_stride, *args)
        else:
            self.carry = _interval_jit(self.spec, self.gradient, self.trace_stride, *args)
        c = self.carry
        return int(c["bad"]), float(c["loss"]), np.asarray(c["s1"]), np.asarray(c["s2"])


class _NativeEngine:
    """Truncated float64 intervals on the C kernel (:class:`rnnlimit.native.TruncatedRunner`)."""

    def __init__(self, spec, trace_stride, params, stream, eta, threads=0) -> None:
        p = {k: np.asarray(getattr(params, k), dtype=np.float64) for k in ("c", "w", "b", "u")}
        self.runner = native.TruncatedRunner(
            p["c"], p["w"], p["b"], p["u"], np.asarray(stream.x), np.asarray(stream.y),
            activation=spec.activation, clip=spec.clip, eta=float(eta), scale=spec.scale,
            trace_stride=trace_stride, threads=threads,
        )  # fmt: skip

    def params(self) -> Params:
        c, w, b, u = (jnp.asarray(a) for a in self.runner.params())
        return Params(c=c, w=w, b=b, u=u)

    def snapshot(self) -> np.ndarray:
        return self.runner.cols.copy()

    def restore(self, snap: np.ndarray) -> Params:
        c, w, b, u = (jnp.asarray(a) for a in self.runner.params(snap))
        return Params(c=c, w=w, b=b, u=u)

    def trace(self) -> np.ndarray:
        return self.runner.trace

    def run(self, k0: int, k1: int) -> tuple[int, float, np.ndarray, np.ndarray]:
        return self.runner.run(k0, k1)


def _use_native(spec: NetworkSpec, gradient: str, dtype: Any, backend: str) -> bool:
    """Pick the backend; ``backend="native"`` raises when the native kernel cannot run."""
    if backend == "jax":
        return False
    why = native.unsupported(spec.activation, spec.d, spec.m)
    if gradient != "truncated":
        why = f"the native kernel runs gradient='truncated' only, got {gradient!r}"
    elif jnp.dtype(dtype) != jnp.float64:
        why = f"the native kernel runs float64 only, got {jnp.dtype(dtype).name}"
    elif not why and not native.available():
        why = f"the native kernel is unavailable ({native.unavailable_reason()})"
    if why and backend == "native":
        raise ParameterError("backend", why)
    return not why


def train(
    spec: NetworkSpec,
    params: Params,
    stream: Stream,
    *,
    alpha: float = 1.0,
    gradient: Literal["truncated", "rtrl"] = "truncated",
    eval_points: Any | None = None,
    eval_times: Sequence[float] | None = None,
    n_steps: int | None = None,
    window: int | None = None,
    trace_stride: int = 0,
    progress: Callable[[int, int], None] | None = None,
    backend: Literal["auto", "native", "jax"] = "auto",
    native_threads: int = 0,
) -> TrainRecord:
    """Train online on ``stream`` from ``params`` for ``n_steps`` steps (default: whole stream).

    ``eval_points`` ``(n, d+m)`` are points ``z = (x, s)``; at each ``t`` in ``eval_times`` the
    record keeps ``g^N_k(z)`` with ``k = round(t N)`` (before step k's update). Loss and memory
    moments are averaged over windows of ``window`` steps (default ``max(1, N // 10)``).
    ``progress(k_done, K)`` is called between intervals. Raises :class:`DivergenceError`
    (holding the record so far) as soon as an interval produced a non-finite output.

    ``backend``: ``"jax"`` runs the jitted JAX loops; ``"native"`` the C kernel of
    :mod:`rnnlimit.native` (truncated gradient, float64; a :class:`ParameterError` says why when
    it cannot); ``"auto"`` (default) the native kernel where it can run, JAX elsewhere. Both give
    the same record up to rounding. ``native_threads`` (0 = auto, 1, 2) is the number of
    threads the native kernel splits the units between (:func:`rnnlimit.native.resolve_threads`;
    the environment variable ``RNNLIMIT_NATIVE_THREADS`` overrides it).
    """
    check_range("alpha", alpha, 0.0, None, low_open=True)
    check_choice("gradient", gradient, GRADIENTS)
    _check_stream(spec, stream)
    K_stream = int(stream.x.shape[0])
    K = K_stream if n_steps is None else n_steps
    check_int("n_steps", K, 1, K_stream)
    window = max(1, spec.N // 10) if window is None else window
    check_int("window", window, 1)
    check_int("trace_stride", trace_stride, 0)
    check_choice("backend", backend, BACKENDS)
    check_int("native_threads", native_threads, 0, 2)
    dtype = params.u.dtype
    use_native = _use_native(spec, gradient, dtype, backend)
    zs = np.zeros((0, spec.d + spec.m)) if eval_points is None else np.asarray(eval_points, float)
    if zs.ndim != 2 or zs.shape[1] != spec.d + spec.m:
        raise ParameterError(
            "eval_points", f"must have shape (n, d+m={spec.d + spec.m}), got {zs.shape}"
        )
    times = np.asarray([] if eval_times is None else eval_times, dtype=float)
    if times.size and (times.min() < 0 or np.round(times.max() * spec.N) > K):
        raise ParameterError("eval_times", f"must lie in [0, n_steps/N = {K / spec.N:.6g}]")
    eval_steps = np.round(times * spec.N).astype(int)
    zs_dev = jnp.asarray(zs, dtype)
    eta = jnp.asarray(spec.eta(alpha), dtype)
    engine: _JaxEngine | _NativeEngine
    if use_native:
        engine = _NativeEngine(spec, trace_stride, params, stream, eta, native_threads)
    else:
        xs, ys = jnp.asarray(stream.x, dtype), jnp.asarray(stream.y, dtype)
        engine = _JaxEngine(spec, gradient, trace_stride, params, xs, ys, eta, K)

    outputs: dict[int, np.ndarray] = {}
    win_end: list[int] = []
    win_loss: list[float] = []
    win_s1: list[np.ndarray] = []
    win_s2: list[np.ndarray] = []
    acc = [0.0, np.zeros(spec.m), np.zeros(spec.m)]  # Σℓ, ΣS, ΣS² over the open window

    def record(steps_done: int, diverged_at: int | None, params: Params) -> TrainRecord:
        kept = [k for k in eval_steps if k in outputs]
        n = np.asarray(win_end, dtype=float)
        cnt = np.diff(np.concatenate([[0.0], n]))[:, None] if n.size else np.zeros((0, 1))
        mean = np.asarray(win_s1).reshape(-1, spec.m) / np.maximum(cnt, 1)
        var = np.asarray(win_s2).reshape(-1, spec.m) / np.maximum(cnt, 1) - mean**2
        trace = {}
        if trace_stride:
            tr = engine.trace()[: -(-steps_done // trace_stride)]
            m = spec.m
            trace = dict(
                k=np.arange(tr.shape[0]) * trace_stride,
                s=tr[:, :m],
                g=tr[:, m : 2 * m],
                y=tr[:, 2 * m :],
            )
        return TrainRecord(
            N=spec.N,
            eta=float(eta),
            gradient=gradient,
            eval_points=zs,
            eval_times=np.asarray(kept, dtype=float) / spec.N,
            outputs=np.stack([outputs[k] for k in kept])
            if kept
            else np.zeros((0, len(zs), spec.m)),
            window_t=n / spec.N,
            loss=np.asarray(win_loss) / np.maximum(cnt[:, 0], 1),
            memory_mean=mean,
            memory_std=np.sqrt(np.maximum(var, 0.0)),
            steps_done=steps_done,
            params=params,
            trace=trace,
            diverged_at=diverged_at,
        )

    bounds = _schedule(K, eval_steps, window)
    for k0, k1 in itertools.pairwise(bounds):
        if k0 in eval_steps and zs.size:
            outputs[int(k0)] = np.asarray(_outputs_jit(spec, engine.params(), zs_dev))
        last_good = engine.snapshot()
        bad, loss, s1, s2 = engine.run(int(k0), int(k1))
        if bad >= 0:
            raise DivergenceError(bad, record(bad, bad, engine.restore(last_good)))
        acc[0] += loss
        acc[1] = acc[1] + s1
        acc[2] = acc[2] + s2
        if k1 % window == 0 or k1 == K:
            win_end.append(int(k1))
            win_loss.append(acc[0])
            win_s1.append(acc[1])
            win_s2.append(acc[2])
            acc = [0.0, np.zeros(spec.m), np.zeros(spec.m)]
        if progress is not None:
            progress(int(k1), K)
    final = engine.params()
    if K in eval_steps and zs.size:
        outputs[K] = np.asarray(_outputs_jit(spec, final, zs_dev))
    return record(K, None, final)


def reference_truncated_step(spec: NetworkSpec) -> Callable[..., tuple[Params, Array, Array]]:
    """The textbook JAX step: a jitted ``value_and_grad`` update, ``S`` under ``stop_gradient``.

    An independent route to the same dynamics (tests) and the benchmark's baseline when called
    from a Python loop: ``params, s, loss = step(params, s, x_k, y_k, eta)``.
    """
    from rnnlimit.network import output

    def loss_fn(params: Params, x: Array, s: Array, y: Array) -> tuple[Array, Array]:
        g = output(spec, params, x, s)
        return 0.5 * jnp.sum((y - g) ** 2), g

    @partial(jax.jit, donate_argnums=(0,))
    def step(params: Params, s: Array, x: Array, y: Array, eta: Array) -> tuple:
        (loss, g), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, x, jax.lax.stop_gradient(s), y
        )
        params = jax.tree_util.tree_map(lambda p, gr: p - eta * gr, params, grads)
        return params, clip_memory(spec, g)[0], loss

    return step
