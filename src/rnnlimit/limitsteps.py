"""The inner loop of the limit solve (docs/model.md §4, §4b): particle paths and the native stages.

A solve advances M particles ``(X, S, Y)``. Their chain paths ``X_k`` and targets ``Y_k`` do not
depend on ``h``; only the memory ``S_{k+1} = ψ(h(X_k, S_k))``, the traces and the deposits do.
So the paths are drawn first, in batches (:class:`PathCursor`), and the stages of the drift
(:mod:`rnnlimit.drift`) then run the coupled part with ``h`` frozen. Chain step ``j`` of a solve
draws with ``fold_in(key, j)``, so solves that differ only in ``Δt``, the basis or the chain
steps per stage see the same random numbers; :class:`PathStore` computes such shared paths once
for all of them. The stages run in JAX (:func:`rnnlimit.drift.time_stepper`) or, for a grid
basis with ``d + m ≤ 3`` in float64, in the native kernel ``_native/limit_pic.c``
(:func:`native_reason`, :func:`native_segment`); both give the same numbers up to summation
order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import native, nativecalls
from rnnlimit.particles import Particles, init_particles, particle_paths

Array = jax.Array
#: Paths held in memory at once by one cursor (bytes): a segment longer than this is split.
SEGMENT_BYTES = 32 << 20
#: Largest shared path store (bytes); beyond it each solve draws its own paths segment-wise.
STORE_BYTES = 256 << 20


def solve_keys(seed: int) -> tuple[Array, Array, Array]:
    """``(init, burn-in, main)`` keys of a solve with this seed."""
    k_init, k_burn, key = jax.random.split(jax.random.PRNGKey(seed), 3)
    return k_init, k_burn, key


class PathCursor:
    """The paths of one solve, drawn batch by batch as it advances (chain step ``j`` of the
    main phase uses ``fold_in(key, j)``; the burn-in its own key)."""

    def __init__(self, problem: Any, M: int, seed: int, burn_in: int, dtype: Any, cache: dict):
        self.problem, self.burn_in, self._cache = problem, burn_in, cache
        k_init, self._k_burn, self._key = solve_keys(seed)
        self._parts: Particles = init_particles(problem.chain, problem.target, k_init, M, dtype)
        self._pos = 0

    def _paths(self, n: int) -> Callable:
        if n not in self._cache:
            chain, target = self.problem.chain, self.problem.target

            def paths(key: Array, parts: Any, j0: Array) -> tuple:
                keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(j0 + jnp.arange(n))
                return particle_paths(chain, target, parts, keys)

            self._cache[n] = jax.jit(paths)
        return self._cache[n]

    def burn(self) -> tuple[Array, Array]:
        """``X, Y`` of the burn-in (first call only)."""
        self._parts, xs, ys = self._paths(self.burn_in)(self._k_burn, self._parts, 0)
        return xs, ys

    def take(self, n: int) -> tuple[Array, Array]:
        """``X (n, M, d)``, ``Y (n, M, m)`` of the next ``n`` main chain steps."""
        self._parts, xs, ys = self._paths(n)(self._key, self._parts, self._pos)
        self._pos += n
        return xs, ys

    def next_x(self) -> np.ndarray:
        """``X`` at the next chain step (the one the current memories ``S`` go with)."""
        x = jax.vmap(self.problem.chain.observe)(self._parts.state)
        return np.asarray(x, float).reshape(self._parts.r.shape[0], -1)


class PathStore:
    """Paths of ``n`` main chain steps (plus one) and the burn-in, drawn once in numpy arrays,
    for every solve with the same ``M``, seed and burn-in; :meth:`cursor` hands out readers."""

    def __init__(self, cursor: PathCursor, n: int) -> None:
        self.burn_xy = tuple(np.asarray(a) for a in cursor.burn()) if cursor.burn_in else None
        self.xy = tuple(np.asarray(a) for a in cursor.take(n + 1))

    @staticmethod
    def nbytes(M: int, D: int, burn_in: int, n: int, itemsize: int = 8) -> int:
        return (burn_in + n + 1) * M * D * itemsize

    def cursor(self) -> StoreCursor:
        return StoreCursor(self)


class StoreCursor:
    """A reader of a :class:`PathStore` with the interface of :class:`PathCursor`."""

    def __init__(self, store: PathStore) -> None:
        self._store, self._pos = store, 0

    def burn(self) -> tuple[np.ndarray, np.ndarray]:
        assert self._store.burn_xy is not None
        return self._store.burn_xy

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = self._store.xy
        if self._pos + n >= xs.shape[0]:
            raise IndexError("the shared paths end before this solve does")
        self._pos += n
        return xs[self._pos - n : self._pos], ys[self._pos - n : self._pos]

    def next_x(self) -> np.ndarray:
        x = self._store.xy[0][self._pos]
        return x.reshape(x.shape[0], -1)


class SharedStore:
    """A :class:`PathStore` built by the first solve that asks (others wait for it)."""

    def __init__(self, make: Callable[[], PathStore]) -> None:
        self._make, self._store, self._lock = make, None, threading.Lock()

    def cursor(self) -> StoreCursor:
        with self._lock:
            if self._store is None:
                self._store = self._make()
        return self._store.cursor()


def shared_stores(problem: Any, solves: list, dtype: Any, cache: dict) -> dict[tuple, SharedStore]:
    """One :class:`SharedStore` per group of solves (``LimitNumerics``) with the same ``M``,
    seed and burn-in — they see the same paths — that has more than one member and fits in
    ``STORE_BYTES``; keyed by ``(M, seed, burn_in)``."""
    groups: dict[tuple, list] = {}
    for n in solves:
        groups.setdefault((n.M, n.seed, n.burn_in), []).append(n)
    stores = {}
    D = problem.kernel.d + problem.kernel.m
    for (M, seed, burn_in), members in groups.items():
        steps = max(n.total_chain_steps for n in members)
        size = PathStore.nbytes(M, D, burn_in, steps, np.dtype(dtype).itemsize)
        if len(members) > 1 and size <= STORE_BYTES:
            cursor = PathCursor(problem, M, seed, burn_in, dtype, cache)
            stores[(M, seed, burn_in)] = SharedStore(partial(PathStore, cursor, steps))
    return stores


def solve_cost(numerics: Any, basis: Any, gradient: str = "truncated") -> float:
    """Relative work of a solve, for scheduling: particle steps (~50 ns each, paths included),
    the basis's own work per stage and, for RTRL, the trace of every particle step: on the
    grid (the native kernel) its history of recent deposits, about twice a plain step; else
    the dense update of ``size·m²`` entries (~0.5 ns each). A basis whose particle step costs
    more than a plain one says so by ``particle_cost()`` (the Nyström block: ``1 + P/16``)."""
    particle_steps = numerics.M * numerics.total_chain_steps
    dense = basis.size * basis.kernel.m**2 / 100
    trace = particle_steps * (2.0 if basis.kind == "grid" else dense) if gradient == "rtrl" else 0.0
    per_step = basis.particle_cost() if hasattr(basis, "particle_cost") else 1.0
    stages = numerics.n_steps * numerics.stages * basis.stage_cost()
    return particle_steps * per_step + stages + trace


# --------------------------------------------------------------------------- native stages


def native_reason(problem: Any, basis: Any, dtype: Any, backend: str = "auto") -> str:
    """Why the native grid kernel cannot run this solve ('' when it can): the one rule set of
    :func:`rnnlimit.native.decide` (grid basis, ``d + m ≤ PIC_MAX_D``, float64, built, CPU)."""
    k = problem.kernel
    grid = basis.kind == "grid"
    return native.decide("limit", backend=backend, dtype=dtype, d=k.d, m=k.m, grid=grid)[1]


def native_segment(problem: Any, basis: Any, aux: Any, chain_steps: int, heun: bool) -> Callable:
    """As :func:`rnnlimit.drift.time_stepper` with the stages in ``_native/limit_pic.c`` (a
    state of numpy arrays, updated in place and returned)."""
    K = np.ascontiguousarray(aux.K, dtype=np.float64)
    h0 = np.ascontiguousarray(aux.h0_nodes, dtype=np.float64)
    opts = dict(n_axis=basis.n_axis, heun=heun, alpha=float(problem.alpha))
    opts |= dict(memory=problem.memory, clip=problem.clip)
    cs, per_step = chain_steps, (2 if heun else 1) * chain_steps

    def segment(aux: Any, state: Any, xs: Any, ys: Any, dt: float | None) -> tuple:
        xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
        # the burn-in (dt None) is n_steps = 0 over all its chain steps
        n, chain_steps = (0, xs.shape[0]) if dt is None else (xs.shape[0] // per_step, cs)
        dt = 0.0 if dt is None else float(dt)
        loss = nativecalls.pic_run(
            K, h0, state.R, state.S, xs, ys, chain_steps=chain_steps, n_steps=n, dt=dt,
            E=state.E, dpsi=state.dpsi, ring=state.ring, ring_meta=state.ring_meta, **opts,
        )  # fmt: skip
        return state, loss

    return segment
