"""Data streams of docs/model.md §1: one long trajectory of an ergodic Markov chain and its targets.

Inputs ``X_k ∈ 𝒳 ⊂ [-1, 1]^d`` form a time-homogeneous Markov chain with stationary law ``μ``;
targets ``Y_k ∈ [-1, 1]^m`` follow a filter ``Y_k = F(X_k, r_{k-1})`` of the input history,
where ``r`` is the target's own (finite) state (``r = Y`` for ``Y_k = a·Y_{k-1} + (1-a)·f(X_k)``;
a buffer of past inputs for a lag target). ``(X_k, r_k)`` is then itself Markov.

Each chain and target is a pair of pure functions over explicit state (optax style):
``chain.init(key) -> state``, ``chain.step(key, state) -> state``, ``chain.observe(state) -> x``
and ``target.init() -> r``, ``target.step(r, x) -> (r, y)``. :func:`sample_stream` runs one long
trajectory in a ``lax.scan``; :mod:`rnnlimit.particles` advances M independent copies in
lock-step (what the limit solver needs). This module imports nothing else of the project except
its errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import float_dtype
from rnnlimit.errors import ParameterError, StreamError, check_int, check_range

Array = jax.Array


# --------------------------------------------------------------------------- chains


@dataclass(frozen=True)
class FiniteChain:
    """Finite-state chain: ``P[i, j] = P(X_{k+1} = v_j | X_k = v_i)``, ``values[i] ∈ [-1,1]^d``.

    The chain state is the index; ``observe`` returns ``values[index]``. ``X_0`` is drawn from
    ``initial`` (default: the stationary law, so the stream starts stationary).
    """

    P: np.ndarray
    values: np.ndarray
    initial: np.ndarray | None = None

    def __post_init__(self) -> None:
        P = np.asarray(self.P, dtype=float)
        values = np.asarray(self.values, dtype=float)
        if values.ndim == 1:
            values = values[:, None]
        if P.ndim != 2 or P.shape[0] != P.shape[1]:
            raise ParameterError("P", f"must be a square transition matrix, got shape {P.shape}")
        if values.shape[0] != P.shape[0]:
            raise ParameterError(
                "values", f"must have one row per state ({P.shape[0]}), got shape {values.shape}"
            )
        if np.any(P < 0) or not np.allclose(P.sum(axis=1), 1.0, atol=1e-10):
            raise ParameterError("P", "rows must be probability vectors (entries >= 0, sum 1)")
        check_stream_values("values", values)
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "values", values)
        if self.initial is not None:
            init = np.asarray(self.initial, dtype=float)
            if init.shape != (P.shape[0],) or np.any(init < 0) or abs(init.sum() - 1) > 1e-10:
                raise ParameterError("initial", "must be a probability vector over the states")
            object.__setattr__(self, "initial", init)

    @property
    def d(self) -> int:
        return int(self.values.shape[1])

    def init(self, key: Array) -> Array:
        p0 = stationary_law(self) if self.initial is None else self.initial
        return jax.random.choice(key, p0.shape[0], p=jnp.asarray(p0))

    def step(self, key: Array, state: Array) -> Array:
        logits = jnp.log(jnp.asarray(self.P))[state]
        return jax.random.categorical(key, logits)

    def draw(self, key: Array, states: Array) -> Array:
        """The randomness of one step of M copies: Gumbel variables ``(M, n_states)``."""
        dtype = float_dtype()
        return jax.random.gumbel(key, (states.shape[0], self.P.shape[0]), dtype)

    def step_with(self, states: Array, g: Array) -> Array:
        """Gumbel-max: ``X_{k+1} = argmax_j (log P[X_k, j] + g_j)`` ~ ``P[X_k, ·]``."""
        return jnp.argmax(jnp.log(jnp.asarray(self.P, g.dtype))[states] + g, axis=-1)

    def step_many(self, key: Array, states: Array) -> Array:
        """One step of M independent copies (state indices ``(M,)``) with one batched draw."""
        return self.step_with(states, self.draw(key, states))

    def observe(self, state: Array) -> Array:
        return jnp.asarray(self.values)[state]


@dataclass(frozen=True)
class AR1Chain:
    """Clipped VAR(1) on ``[-1,1]^d``: ``X_{k+1} = clip(A X_k + noise · ξ_k, -1, 1)``, ξ ~ N(0, I).

    ``A`` is a scalar ``ρ`` (AR(1), times the identity) or a ``d × d`` matrix. ``X_0 = x0``
    (default 0); use ``burn_in`` in :func:`sample_stream` to start near stationarity.
    """

    rho: float | np.ndarray = 0.6
    noise: float = 0.5
    d: int = 1
    x0: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_int("d", self.d, 1)
        check_range("noise", self.noise, 0.0, None)
        A = np.asarray(self.rho, dtype=float)
        if A.ndim == 0:
            check_range("rho", float(A), -1.0, 1.0, low_open=True, high_open=True)
            A = A * np.eye(self.d)
        elif A.shape != (self.d, self.d):
            raise ParameterError("rho", f"must be a scalar or a {self.d}x{self.d} matrix")
        elif np.max(np.abs(np.linalg.eigvals(A))) >= 1:
            raise ParameterError("rho", "spectral radius must be < 1 for an ergodic VAR(1)")
        object.__setattr__(self, "rho", A)
        x0 = np.zeros(self.d) if self.x0 is None else np.asarray(self.x0, dtype=float)
        if x0.shape != (self.d,):
            raise ParameterError("x0", f"must have shape ({self.d},), got {x0.shape}")
        check_stream_values("x0", x0)
        object.__setattr__(self, "x0", x0)

    def init(self, key: Array) -> Array:
        del key
        return jnp.asarray(self.x0)

    def step(self, key: Array, state: Array) -> Array:
        xi = jax.random.normal(key, state.shape, dtype=state.dtype)
        return jnp.clip(jnp.asarray(self.rho, state.dtype) @ state + self.noise * xi, -1.0, 1.0)

    def step_many(self, key: Array, states: Array) -> Array:
        """One step of M independent copies ``states (M, d)`` with one batched draw.

        The innovations are drawn in float32 and widened: for particles (a Monte Carlo
        average with error ~1e-3) the 2^-24 resolution is irrelevant, and float64 normals
        (an inverse-erf transform) cost about twice as much on CPU.
        """
        return self.step_with(states, self.draw(key, states))

    def draw(self, key: Array, states: Array) -> Array:
        """The randomness of one step of M copies: ξ ~ N(0, I) in float32, shape ``(M, d)``."""
        return jax.random.normal(key, states.shape, dtype=jnp.float32)

    def step_with(self, states: Array, xi: Array) -> Array:
        """``X_{k+1} = clip(A X_k + noise · ξ, -1, 1)`` for given innovations ``ξ (M, d)``."""
        A = jnp.asarray(self.rho, states.dtype)
        mean = jnp.sum(states[:, None, :] * A[None, :, :], axis=-1)  # A x, fused (tiny d)
        return jnp.clip(mean + self.noise * xi.astype(states.dtype), -1.0, 1.0)

    def observe(self, state: Array) -> Array:
        return state


@dataclass(frozen=True)
class StepChain:
    """A chain from a user step function ``x_{k+1} = step_fn(key, x_k)`` (must be jit-able).

    The caller is responsible for ergodicity; values are checked to lie in ``[-1,1]^d``.
    """

    step_fn: Callable[[Array, Array], Array]
    x0: np.ndarray

    def __post_init__(self) -> None:
        x0 = np.atleast_1d(np.asarray(self.x0, dtype=float))
        check_stream_values("x0", x0)
        object.__setattr__(self, "x0", x0)

    @property
    def d(self) -> int:
        return int(self.x0.shape[0])

    def init(self, key: Array) -> Array:
        del key
        return jnp.asarray(self.x0)

    def step(self, key: Array, state: Array) -> Array:
        return jnp.asarray(self.step_fn(key, state), dtype=state.dtype)

    def observe(self, state: Array) -> Array:
        return state


Chain = FiniteChain | AR1Chain | StepChain


# --------------------------------------------------------------------------- targets


def _sin2(x: Array) -> Array:
    return jnp.sin(2.0 * x)


@dataclass(frozen=True)
class FilterTarget:
    """``Y_k = a·Y_{k-1} + (1-a)·f(X_k)`` with ``|f| ≤ 1`` (``a = 0``: memoryless ``Y_k = f(X_k)``).

    ``f`` maps ``x ∈ R^d`` to ``R^m`` (default ``sin(2x)``, ``m = d``). The state is ``Y_{k-1}``.
    """

    a: float = 0.6
    f: Callable[[Array], Array] = field(default=_sin2)
    m: int = 1

    def __post_init__(self) -> None:
        check_range("a", self.a, 0.0, 1.0, high_open=True)
        check_int("m", self.m, 1)

    def init(self, dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((self.m,), dtype)

    def step(self, r: Array, x: Array) -> tuple[Array, Array]:
        y = self.a * r + (1.0 - self.a) * jnp.reshape(self.f(x), (self.m,)).astype(r.dtype)
        return y, y


def memoryless_target(f: Callable[[Array], Array] = _sin2, m: int = 1) -> FilterTarget:
    """``Y_k = f(X_k)``: the memoryless special case ``F(x, y) = f(x)``."""
    return FilterTarget(a=0.0, f=f, m=m)


@dataclass(frozen=True)
class LagTarget:
    """``Y_k = scale · X_{k-lag}[:m]`` (``X_j = 0`` for ``j < 0``): a target that needs memory.

    The state is the buffer ``(X_{k-lag}, …, X_{k-1})``.
    """

    lag: int = 1
    m: int = 1
    d: int = 1
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_int("lag", self.lag, 1)
        check_int("m", self.m, 1, self.d)
        check_range("scale", self.scale, -1.0, 1.0)

    def init(self, dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((self.lag, self.d), dtype)

    def step(self, r: Array, x: Array) -> tuple[Array, Array]:
        y = self.scale * r[0, : self.m]
        return jnp.concatenate([r[1:], x[None, :].astype(r.dtype)], axis=0), y


Target = FilterTarget | LagTarget


# --------------------------------------------------------------------------- streams


class Stream(NamedTuple):
    """One trajectory: ``x`` of shape ``(K, d)`` and ``y`` of shape ``(K, m)``."""

    x: Array
    y: Array


def check_stream_values(name: str, values: Any) -> np.ndarray:
    """Raise :class:`StreamError` unless every value is finite and in ``[-1, 1]``."""
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise StreamError(name, f"must be finite, found {arr[tuple(bad)]} at index {tuple(bad)}")
    if arr.size and np.max(np.abs(arr)) > 1.0:
        bad = np.unravel_index(np.argmax(np.abs(arr)), arr.shape)
        raise StreamError(
            name, f"values must lie in [-1, 1], found {arr[bad]:.6g} at index {tuple(bad)}"
        )
    return arr


def _dtype(dtype: Any) -> Any:
    dt = jnp.dtype(dtype)
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ParameterError(
            "dtype", "float64 needs JAX's x64 mode: call rnnlimit.enable_float64() first"
        )
    return dt


def sample_stream(
    chain: Chain,
    target: Target,
    key: Array,
    n_steps: int,
    *,
    burn_in: int = 0,
    dtype: Any = jnp.float32,
) -> Stream:
    """Sample ``(X_k, Y_k)_{k < n_steps}`` from one trajectory (after ``burn_in`` discarded steps).

    Nothing is resampled or shuffled: consecutive samples are as correlated as the chain makes
    them. Same key, same stream.
    """
    check_int("n_steps", n_steps, 1)
    check_int("burn_in", burn_in, 0)
    dt = _dtype(dtype)
    k_init, k_run = jax.random.split(key)
    state0 = chain.init(k_init)
    if jnp.issubdtype(jnp.asarray(state0).dtype, jnp.floating):
        state0 = jnp.asarray(state0, dt)
    x, y = _run_stream(chain, target, state0, target.init(dt), k_run, n_steps + burn_in)
    return Stream(x[burn_in:].astype(dt), y[burn_in:].astype(dt))


def _target_step(target: Any, r: Array, x: Array, state: Any) -> tuple[Array, Array]:
    """``Y_k`` from the target state and ``X_k``; a target that reads the chain's own state (a
    recording's ``y_J`` at the index ``J``, :mod:`rnnlimit.recorded`) is given that state."""
    if getattr(target, "reads_chain_state", False):
        return target.step_state(r, state)
    return target.step(r, x)


def _run_stream(
    chain: Chain, target: Target, state0: Array, r0: Array, key: Array, n: int
) -> tuple[Array, Array]:
    def body(carry: tuple[Array, Array], k: Array) -> tuple[tuple[Array, Array], tuple]:
        state, r = carry
        x = chain.observe(state).astype(r.dtype)
        r, y = _target_step(target, r, x, state)
        return (chain.step(k, state), r), (x, y)

    keys = jax.random.split(key, n)
    _, (x, y) = jax.jit(lambda c, ks: jax.lax.scan(body, c, ks))((state0, r0), keys)
    return x, y


def stream_from_array(x: Any, y: Any) -> Stream:
    """A recorded series as a stream, after checking it is finite and inside ``[-1, 1]``."""
    xa = check_stream_values("x", np.atleast_2d(np.asarray(x, dtype=float).T).T)
    ya = check_stream_values("y", np.atleast_2d(np.asarray(y, dtype=float).T).T)
    if xa.shape[0] != ya.shape[0]:
        raise ParameterError("y", f"must have as many rows as x ({xa.shape[0]}), got {ya.shape[0]}")
    return Stream(jnp.asarray(xa), jnp.asarray(ya))


# --------------------------------------------------------------------------- diagnostics


def stationary_law(chain: FiniteChain) -> np.ndarray:
    """Exact stationary law ``μ`` of a finite chain: the solution of ``μ P = μ``, ``Σ μ = 1``.

    Solved as a least-squares system (numerically stable for nearly reducible chains);
    raises :class:`ParameterError` when the solution is not unique (chain not ergodic).
    """
    n = chain.P.shape[0]
    lhs = np.vstack([chain.P.T - np.eye(n), np.ones((1, n))])
    rhs = np.zeros(n + 1)
    rhs[-1] = 1.0
    mu, _, rank, _ = np.linalg.lstsq(lhs, rhs, rcond=None)
    if rank < n:
        raise ParameterError("P", "chain is not ergodic: its stationary law is not unique")
    mu = np.clip(mu, 0.0, None)
    return mu / mu.sum()


def autocorrelation(series: Any, max_lag: int | None = None) -> np.ndarray:
    """Empirical autocorrelation ``ρ(ℓ)``, ``ℓ = 0..max_lag``, of each column (FFT, O(K log K))."""
    x = np.asarray(series, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    K = x.shape[0]
    max_lag = K - 1 if max_lag is None else min(max_lag, K - 1)
    xc = x - x.mean(axis=0)
    nfft = 1 << int(np.ceil(np.log2(2 * K)))
    f = np.fft.rfft(xc, n=nfft, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=nfft, axis=0)[: max_lag + 1] / K
    var = np.where(acov[0] > 0, acov[0], 1.0)
    rho = acov / var
    return rho[:, 0] if np.asarray(series).ndim == 1 else rho


def integrated_autocorrelation_time(series: Any, c: float = 5.0) -> np.ndarray:
    """``τ = 1 + 2 Σ_{ℓ≥1} ρ(ℓ)`` with Sokal's automatic window (smallest W with W ≥ c·τ(W))."""
    rho = np.asarray(autocorrelation(series))
    rho = rho[:, None] if rho.ndim == 1 else rho
    taus = 2.0 * np.cumsum(rho, axis=0) - 1.0
    out = np.empty(rho.shape[1])
    for j in range(rho.shape[1]):
        ok = np.arange(taus.shape[0]) >= c * taus[:, j]
        w = int(np.argmax(ok)) if np.any(ok) else taus.shape[0] - 1
        out[j] = max(taus[w, j], 1e-12)
    return out[0] if np.asarray(series).ndim == 1 else out


def effective_sample_size(series: Any) -> np.ndarray:
    """``K / τ``: how many independent samples a correlated series of length K is worth."""
    K = np.asarray(series).shape[0]
    return K / integrated_autocorrelation_time(series)
