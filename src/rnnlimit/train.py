"""Online SGD on one stream (docs/model.md §3): one sample, one memory update, one parameter update
per step k, time ``t = k / N``::

    ℓ_k = ½ |Y_k − ĝ_k|²,    θ_{k+1} = θ_k + η_N (Y_k − ĝ_k) · G_k,    η_N = α N^(2β − 2)

``gradient="truncated"``: ``G_k = ∇_θ g^N(X_k, S_k)`` with ``S_k`` an input;
``gradient="rtrl"``: ``G_k = dĝ_k/dθ`` through the memory, carried forward exactly.

The steps run fused inside one jitted ``lax.fori_loop`` per interval between record points, so
the host is visited only to record outputs and windowed statistics; memory stays ``O(N)``
unless a trace is asked for. Float64 training, truncated or RTRL, runs on the native kernel
(:mod:`rnnlimit.native`, the same skewed pass in C, vectorised) when it is built. The loops
themselves live in :mod:`rnnlimit.steps`; this module validates, schedules and records.
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

from rnnlimit.chains import Stream, check_stream_values
from rnnlimit.errors import DivergenceError, ParameterError, check_choice, check_int, check_range
from rnnlimit.network import NetworkSpec, Params, clip_memory, output_batch
from rnnlimit.steps import OUTPUT_BOUND, JaxEngine, NativeEngine, choose_native

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
    output_bound: float = OUTPUT_BOUND,
) -> TrainRecord:
    """Train online on ``stream`` from ``params`` for ``n_steps`` steps (default: whole stream).

    ``eval_points`` ``(n, d+m)`` are points ``z = (x, s)``; at each ``t`` in ``eval_times`` the
    record keeps ``g^N_k(z)`` with ``k = round(t N)`` (before step k's update). Loss and memory
    moments are averaged over windows of ``window`` steps (default ``max(1, N // 10)``).
    ``progress(k_done, K)`` is called between intervals. Raises :class:`DivergenceError`
    (holding the record up to the step before) at the first step whose loss is non-finite or
    whose output has a component ``|ĝ_k,j| > output_bound`` (runaway growth: the targets lie in
    ``[-1, 1]^m``; default :data:`rnnlimit.steps.OUTPUT_BOUND`).

    ``backend``: ``"jax"`` runs the jitted JAX loops; ``"native"`` the C kernel of
    :mod:`rnnlimit.native` (either gradient, float64; a :class:`ParameterError` says why when it
    cannot; the rules are :func:`rnnlimit.native.decide`'s); ``"auto"`` (default) the native
    kernel where it can run and JAX computes on the CPU, JAX elsewhere. Both give the same
    record up to rounding. ``native_threads`` (0 = auto, 1, 2) is the number of
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
    check_range("output_bound", output_bound, 1.0, None, low_open=True)
    use_native = choose_native(spec, dtype, backend)
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
    engine: JaxEngine | NativeEngine
    if use_native:
        engine = NativeEngine(
            spec, gradient, trace_stride, params, stream, eta, output_bound, native_threads
        )
    else:
        xs, ys = jnp.asarray(stream.x, dtype), jnp.asarray(stream.y, dtype)
        engine = JaxEngine(spec, gradient, trace_stride, params, xs, ys, eta, K, output_bound)

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
            rec = record(bad, bad, engine.restore(last_good))
            raise DivergenceError(bad, rec, how=f"became non-finite or exceeded {output_bound:g}")
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
