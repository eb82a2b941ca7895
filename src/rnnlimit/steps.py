"""The fused SGD step loops of docs/model.md §3: steps ``k0 ≤ k < k1`` of online SGD in one jitted
``lax.fori_loop``, or in the native C kernel::

    ℓ_k = ½ |Y_k − ĝ_k|²,    θ_{k+1} = θ_k + η_N (Y_k − ĝ_k) · G_k,    S_{k+1} = ψ(ĝ_k)

with ``G_k = ∇_θ g^N(X_k, S_k)`` (truncated, ``S_k`` an input) or ``G_k = dĝ_k/dθ`` through the
memory (RTRL). Each loop accumulates ``Σℓ``, ``ΣS``, ``ΣS²``, the first diverged step (a
non-finite loss, or an output ``|ĝ_k,j|`` beyond a bound far above the targets' range
``[-1, 1]``: :data:`OUTPUT_BOUND`) and, if asked, a trace of ``(S_k, ĝ_k, Y_k)``. An engine
(:class:`JaxEngine`, :class:`NativeEngine`) holds the loop's state between the record points
of :func:`rnnlimit.train.train`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import native
from rnnlimit.fastmath import activation_and_derivative
from rnnlimit.nativetrain import TrainRunner
from rnnlimit.network import (
    NetworkSpec,
    Params,
    clip_memory,
    rtrl_update,
    truncated_update,
    zero_sensitivity,
)

Array = jax.Array
#: Default bound on ``|ĝ_k,j|``: beyond it a run has diverged (runaway growth, while still
#: finite). Targets lie in ``[-1, 1]^m``, and a network that learns them stays O(1).
OUTPUT_BOUND = 1e6


def _truncated_interval(
    spec: NetworkSpec,
    trace_stride: int,
    carry: dict[str, Any],
    xs: Array,
    ys: Array,
    k0: Array,
    k1: Array,
    eta: Array,
    bound: Array,
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
        return _accumulate(out, st, k, s, g, y, loss, bound, trace_stride)

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
    bound: Array,
    trace_stride: int,
) -> dict[str, Any]:
    """Per-step bookkeeping shared by both loops: Σℓ, ΣS, ΣS², first diverged step (non-finite
    loss or ``|ĝ_k,j| > bound``), trace."""
    ok = jnp.isfinite(loss) & jnp.all(jnp.abs(g) <= bound)
    bad = (st["bad"] < 0) & ~ok
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
    bound: Array,
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
        return _accumulate(out, c, k, s, g, y, loss, bound, trace_stride)

    zero = jnp.zeros((), xs.dtype)
    carry = dict(carry, loss=zero, s1=jnp.zeros_like(carry["s"]), s2=jnp.zeros_like(carry["s"]))
    return jax.lax.fori_loop(k0, k1, body, carry)


_interval_jit = jax.jit(_interval, static_argnums=(0, 1, 2))
_truncated_jit = jax.jit(_truncated_interval, static_argnums=(0, 1))


class JaxEngine:
    """The jitted JAX intervals (every gradient, every dtype)."""

    def __init__(self, spec, gradient, trace_stride, params, xs, ys, eta, K, bound) -> None:
        self.spec, self.gradient, self.trace_stride = spec, gradient, trace_stride
        self.xs, self.ys, self.eta = xs, ys, eta
        dtype = params.u.dtype
        self.bound = jnp.asarray(bound, dtype)
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
        args = (self.carry, self.xs, self.ys, k0, k1, self.eta, self.bound)
        if self.gradient == "truncated":
            self.carry = _truncated_jit(self.spec, self.trace_stride, *args)
        else:
            self.carry = _interval_jit(self.spec, self.gradient, self.trace_stride, *args)
        c = self.carry
        return int(c["bad"]), float(c["loss"]), np.asarray(c["s1"]), np.asarray(c["s2"])


class NativeEngine:
    """Float64 intervals, either gradient, in C (:class:`rnnlimit.nativetrain.TrainRunner`)."""

    def __init__(self, spec, gradient, trace_stride, params, stream, eta, bound, threads=0) -> None:
        p = {k: np.asarray(getattr(params, k), dtype=np.float64) for k in ("c", "w", "b", "u")}
        self.runner = TrainRunner(
            p["c"], p["w"], p["b"], p["u"], np.asarray(stream.x), np.asarray(stream.y),
            activation=spec.activation, clip=spec.clip, eta=float(eta), scale=spec.scale,
            bound=float(bound), gradient=gradient, trace_stride=trace_stride, threads=threads,
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


def choose_native(spec: NetworkSpec, dtype: Any, backend: str) -> bool:
    """Whether the native trainer runs (:func:`rnnlimit.native.choose`, kernel ``"train"``: both
    gradients, float64, ``d, m ≤ MAX_DM``); ``backend="native"`` raises a
    :class:`ParameterError` naming ``backend`` when it cannot."""
    return native.choose(
        "train", backend=backend, dtype=dtype, d=spec.d, m=spec.m, activation=spec.activation
    )
