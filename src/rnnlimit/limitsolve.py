"""One solve of the limit (docs/model.md §4, §4b): particles carried through ``[0, T]`` with
``h_t``.

:func:`solve_trajectory` sets up the basis (its Gram or ω), the stages of the problem's drift
(:mod:`rnnlimit.drift`, in JAX, or the native grid kernel of :mod:`rnnlimit.limitsteps`) and the
particle paths, burns the particles in at ``h_0``, then advances the state time step by time
step, recording ``h_t`` at the evaluation points, the loss, the Lipschitz constant of the memory
map and samples of the memory law ``π_t``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import float_dtype, native
from rnnlimit.bases import H0, Basis
from rnnlimit.drift import SolveState, initial_state, time_stepper
from rnnlimit.errors import (
    DIVERGENCE_BOUND,
    DivergenceError,
    ParameterError,
)
from rnnlimit.kernels import ntk
from rnnlimit.limitsteps import SEGMENT_BYTES, PathCursor, native_segment
from rnnlimit.memory import check_contraction, lipschitz_fn

Array = jax.Array
#: A limit ``|h|`` beyond this (targets lie in ``[-1, 1]^m``) has run away: DivergenceError.
H_MAX = DIVERGENCE_BOUND


@dataclass(frozen=True)
class Request:
    """What a call asks of every solve: ``h_t`` at ``eval_points (n, d+m)`` and ``times``,
    memory samples at ``memory_times``, the start ``h0`` (``None``: 0), ``force`` past a
    non-contractive memory map; ``base=False`` (refinement solves, whose ``h`` alone is used)
    measures the Lipschitz constant at the first and last record only (NaN between)."""

    eval_points: np.ndarray
    times: np.ndarray
    memory_times: np.ndarray
    h0: H0 | None = None
    force: bool = False
    base: bool = True
    progress: Callable[[int, int], None] | None = None


@dataclass
class SolveCaches:
    """Compiled functions kept across the solves of one :class:`~rnnlimit.limit.LimitSolver`."""

    segments: dict[tuple, Callable] = field(default_factory=dict)
    lipschitz: dict[tuple, Callable] = field(default_factory=dict)
    paths: dict[int, Callable] = field(default_factory=dict)
    zero: dict[int, H0] = field(default_factory=dict)


def _zero_h0(caches: SolveCaches, m: int) -> H0:
    """``h_0 = 0`` (one function object per m, so compiled stages are reused across calls)."""
    if m not in caches.zero:

        def zero(z: Array) -> Array:
            return jnp.zeros((z.shape[0], m), z.dtype)

        caches.zero[m] = zero
    return caches.zero[m]


def stiffness(problem: Any, basis: Basis, lipschitz: float) -> float:
    """A bound on the largest rate ``λ`` of the drift's linear part, for any law ``π_t``.

    Truncated: ``h ↦ α E_π[A(·, Z) h(Z)]`` has ``λ_max ≤ α E_π[A(Z, Z)] ≤ α sup_z A(z, z)``
    (its trace), and so has the grid's ``α W K`` (``W`` the hat functions' mass matrix,
    ``λ_max ≤ α Σ_j W_jj K_jj ≤ α max_j K_jj``); the sup is taken over the grid nodes, or for
    features (whose ``φ·φ`` estimates ``A``) over a 3-per-axis grid. RTRL: the trace
    ``E = A + E_{−1} F`` with ``|F| ≤ L`` adds at most a factor ``1/(1 − L)`` (L at the start).
    """
    k = problem.kernel
    if basis.kind == "grid":
        points = basis.nodes()
    else:
        axes = [np.linspace(-1.0, 1.0, 3)] * (k.d + k.m)
        points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, k.d + k.m)
    sup = float(np.max(np.asarray(ntk(k).diag(jnp.asarray(points, float_dtype())))))
    memory = 1.0 / max(1e-12, 1.0 - lipschitz) if problem.gradient == "rtrl" else 1.0
    return problem.alpha * sup * memory


def check_stability(problem: Any, numerics: Any, lam: float) -> None:
    """Refuse ``dt`` beyond the explicit schemes' stability bound ``λ Δt ≤ 2`` (Euler:
    ``|1 − λΔt| ≤ 1``; Heun: ``|1 − λΔt + (λΔt)²/2| ≤ 1``) for the rate bound ``λ``."""
    dt = numerics.T / numerics.n_steps
    if lam * dt > 2.0:
        raise ParameterError(
            "dt",
            f"must be <= {2.0 / lam:.4g} (got {dt:.4g}): the explicit {numerics.scheme} step is "
            f"stable for dt·λ <= 2, and the drift's linear part has rate λ up to "
            f"α·sup A(z, z){'/(1 − L)' if problem.gradient == 'rtrl' else ''} = {lam:.4g}; "
            "lower dt (or alpha)",
        )


def _diverged(step: int, dt: float, rec_steps: np.ndarray, hs: list) -> DivergenceError:
    """The solve ran away: ``|h|`` past ``H_MAX`` (targets lie in ``[-1, 1]^m``)."""
    record = dict(times=rec_steps[: len(hs)] * dt, h=np.stack(hs) if hs else np.zeros((0,)))
    err = DivergenceError(step, record, "the limit h_t")
    err.args = (
        f"the limit h_t grew beyond |h| = {H_MAX:g} (targets lie in [-1, 1]^m) by time step "
        f"{step} (t = {step * dt:.4g}); the values recorded before are kept in this "
        "exception's .record (lower alpha or dt)",
    )
    return err


def _segment(problem: Any, numerics: Any, basis: Basis, aux: Any, backend: str, caches: Any):
    """The time stepper of one solve: native where it applies (and is allowed), else JAX."""
    k, grid = problem.kernel, basis.kind == "grid"
    use = native.choose("limit", backend=backend, dtype=float_dtype(), d=k.d, m=k.m, grid=grid)
    heun = numerics.stages == 2
    if use:
        return native_segment(problem, basis, aux, numerics.chain_steps, heun), True
    key = (basis, numerics.chain_steps, heun)
    if key not in caches.segments:
        caches.segments[key] = time_stepper(problem, basis, numerics.chain_steps, heun)
    return caches.segments[key], False


def solve_trajectory(
    problem: Any,
    numerics: Any,
    basis: Basis,
    request: Request,
    backend: str,
    caches: SolveCaches,
    store: Any = None,
) -> dict[str, Any]:
    """One solve; returns the fields of a :class:`~rnnlimit.limit.LimitResult` that it owns."""
    start = time.perf_counter()
    k, dtype = problem.kernel, float_dtype()
    h0 = request.h0 if request.h0 is not None else _zero_h0(caches, k.m)
    zs = request.eval_points
    aux = basis.setup(h0, problem.alpha, dtype)
    design_eval = np.asarray(basis.design(aux, jnp.asarray(zs, dtype)), dtype=float)
    h0_eval = np.asarray(h0(jnp.asarray(zs, dtype)), dtype=float).reshape(len(zs), k.m)
    dt = numerics.T / numerics.n_steps
    rec_steps = np.unique(np.round(request.times / dt).astype(int))
    mem_steps = {int(v) for v in np.round(request.memory_times / dt)}

    lip_key = (basis, h0)
    if lip_key not in caches.lipschitz:

        def h_expansion(theta: tuple, x: Array, s: Array) -> Array:
            """``h(x, s) = h_0 + α Σ_j A_j(z) R_j``: the basis expansion itself."""
            R, aux = theta
            return basis.expansion(aux, R, jnp.concatenate([x, s])[None, :])[0]

        caches.lipschitz[lip_key] = lipschitz_fn(
            h_expansion, k.d, k.m, clip=problem.clip, n_grid=11, lazy=True
        )

    def lipschitz(R: Any) -> Any:
        """The Lipschitz constant of the memory map at ``R``, dispatched (a jax scalar)."""
        return caches.lipschitz[lip_key]((jnp.asarray(R, dtype), aux))

    def check_lipschitz(i: int) -> None:
        """Wait for the constant dispatched at record time ``i``; a non-contractive map stops
        the solve."""
        if lips[i] is not None:
            lips[i] = float(lips[i])
            check_contraction(lips[i], force=request.force, where=f"at t = {rec_steps[i] * dt:.4g}")

    segment, on_host = _segment(problem, numerics, basis, aux, backend, caches)
    # the native stages update a state of numpy arrays in place
    state: SolveState = initial_state(
        problem.gradient, basis, numerics.M, k.m, dtype, np if on_host else jnp
    )
    L0 = float(lipschitz(state.R))
    check_contraction(L0, force=request.force)
    check_stability(problem, numerics, stiffness(problem, basis, L0))
    if store is not None:
        paths: Any = store.cursor()
    else:
        paths = PathCursor(
            problem, numerics.M, numerics.seed, numerics.burn_in, dtype, caches.paths
        )
    dt_arg = dt if on_host else jnp.asarray(dt, dtype)
    if numerics.burn_in:
        state, _ = segment(aux, state, *paths.burn(), None)

    hs, lips, losses, memory, coeffs = [], [], [], {}, []
    done = 0
    per_step = numerics.stages * numerics.chain_steps
    # the paths of one segment are held in memory at once: cap them
    path_bytes = per_step * numerics.M * (k.d + k.m) * np.dtype(dtype).itemsize
    chunk = max(1, SEGMENT_BYTES // path_bytes)
    for target_step in rec_steps:
        while target_step > done:
            n = int(min(target_step - done, chunk))
            state, seg_loss = segment(aux, state, *paths.take(n * per_step), dt_arg)
            losses.append(np.asarray(seg_loss))
            done += n
            # ½|Y − h|² with |Y| ≤ √m: a mean loss past ½(H_MAX)² means |h| ≫ any target
            if not np.all(np.isfinite(np.asarray(state.R))) or losses[-1].max() > 0.5 * H_MAX**2:
                raise _diverged(done, dt, rec_steps, hs)
        coeffs.append(np.array(state.R, dtype=float))
        hs.append(h0_eval + problem.alpha * design_eval @ coeffs[-1])
        if not np.abs(hs[-1]).max() <= H_MAX:
            raise _diverged(done, dt, rec_steps, hs[:-1])
        last = target_step == rec_steps[-1]
        # measured beside the next segment's stages (coeffs[-1] is a copy no stage writes) and
        # checked at the next record time, or at the end
        lips.append(lipschitz(coeffs[-1]) if request.base or last or not lips else None)
        if done in mem_steps:
            memory[done] = dict(x=paths.next_x(), s=np.array(state.S))
        if len(lips) > 1:
            check_lipschitz(len(lips) - 2)
        if request.progress is not None:
            request.progress(done, numerics.n_steps)
    if lips:
        check_lipschitz(len(lips) - 1)
    lips = [np.nan if L is None else L for L in lips]
    loss = np.concatenate(losses) if losses else np.zeros(0)

    def evaluate(z: Any, i: int) -> np.ndarray:
        zj = jnp.asarray(np.asarray(z, dtype=float).reshape(-1, k.d + k.m), dtype)
        return np.asarray(basis.expansion(aux, jnp.asarray(coeffs[i], dtype), zj), float)

    return dict(
        eval_points=zs,
        times=rec_steps * dt,
        h=np.stack(hs),
        loss_t=np.arange(loss.size) * dt,
        loss=loss,
        lipschitz=np.asarray(lips),
        memory={float(t * dt): v for t, v in memory.items()},
        wall_time=time.perf_counter() - start,
        evaluate=evaluate,
    )
