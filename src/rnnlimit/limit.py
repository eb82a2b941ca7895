"""The infinite-width limit (MODEL.md §4): an ODE coupled with the memory's fixed point.

The network output converges to ``h_t : 𝒳 × [-1,1]^m → R^m`` solving::

    ∂_t h_t(z) = α E_{π_t}[ A(z, Z) (Y − h_t(Z)) ],        h_0 = 0 (or a given h_0)

where ``π_t`` is the stationary law of ``(X, S, Y)`` for the chain run with the function frozen
at ``h_t`` (``S_{k+1} = ψ(h_t(X_k, S_k))``). The ODE moves ``π_t`` and ``π_t`` drives the ODE.

Scheme: ``h_t = h_0 + α Σ_j A_j R_j(t)`` in a basis (:mod:`rnnlimit.bases`); M independent
copies (particles) of ``(X, S, Y)`` advance in lock-step with the current ``h``, ``chain_steps``
chain steps per stage so that they re-equilibrate to ``π_t`` (the memory forgets its start at
the geometric rate ``L``); each stage averages ``φ(Z)(Y − h(Z))`` over all particles and
sub-steps; Heun's method (second order) or Euler advances ``R``. The scheme's own error is
estimated by re-solving with ``Δt/2`` (same random numbers), ``2M`` (new ones: sampling noise),
a finer basis (same random numbers) and twice the chain steps per stage (the lag of the
particle law behind ``π_t``, its sampling noise removed in quadrature), and reported. The
five solves are independent and run side by side on the available cores; those that share
random numbers read one batch of particle paths (:mod:`rnnlimit.limitsteps`, which also holds
the stages, in JAX or in the native kernel).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import float_dtype
from rnnlimit.activations import CLIPS
from rnnlimit.bases import FeatureBasis, GridBasis, grid_gram
from rnnlimit.chains import Chain, Target
from rnnlimit.errors import ContractionError, ParameterError, check_choice, check_int, check_range
from rnnlimit.kernels import KernelSpec, ntk
from rnnlimit.limitsteps import (
    SEGMENT_BYTES,
    PathCursor,
    SharedStore,
    jax_segment,
    native_reason,
    native_segment,
    shared_stores,
    solve_cost,
)
from rnnlimit.memory import check_contraction, lipschitz_fn

Array = jax.Array
REFINEMENTS: tuple[str, ...] = ("dt", "M", "basis", "lag")
#: The training whose limit is solved: §4 (truncated gradient) or §4b (RTRL).
GRADIENTS: tuple[str, ...] = ("truncated", "rtrl")
#: ``auto``: the native grid kernel (``_native/limit_pic.c``) where it applies, else JAX.
BACKENDS: tuple[str, ...] = ("auto", "native", "jax")
H0 = Callable[[Array], Array]  # z (n, d+m) -> (n, m), jax-traceable


@dataclass(frozen=True)
class LimitProblem:
    """What the limit is of: the stream (chain, target), the kernel ``A``, ``α`` and ψ.

    ``memory=False`` switches the feedback off (``S ≡ 0``, a feed-forward network on ``x``):
    with a finite chain the ODE is then linear with a closed form, which the tests use.
    ``gradient``: the training the limit is of -- ``"truncated"`` (§4, the kernel ``A`` in the
    drift) or ``"rtrl"`` (§4b, the trace ``E`` carried by every particle in its place).
    """

    chain: Chain
    target: Target
    kernel: KernelSpec
    alpha: float = 1.0
    clip: Literal["hard", "smooth"] = "hard"
    memory: bool = True
    gradient: Literal["truncated", "rtrl"] = "truncated"

    def __post_init__(self) -> None:
        check_range("alpha", self.alpha, 0.0, None, low_open=True)
        check_choice("clip", self.clip, CLIPS)
        check_choice("gradient", self.gradient, GRADIENTS)
        if self.gradient == "rtrl":
            raise ParameterError("gradient", "'rtrl' (MODEL.md §4b) is not implemented yet")
        if self.target.m != self.kernel.m:
            raise ParameterError("kernel.m", f"must equal the target's m={self.target.m}")


@dataclass(frozen=True)
class LimitNumerics:
    """Discretisation: horizon ``T``, step ``dt``, ``M`` particles, ``chain_steps`` per stage,
    ``grid`` nodes per axis (grid basis) or ``n_features`` (feature basis)."""

    T: float = 3.0
    dt: float = 0.05
    M: int = 2048
    chain_steps: int = 8
    burn_in: int = 200
    grid: int = 17
    n_features: int = 2048
    scheme: Literal["heun", "euler"] = "heun"
    representation: Literal["auto", "grid", "features"] = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("T", self.T, 0.0, None, low_open=True)
        check_range("dt", self.dt, 0.0, self.T, low_open=True, high_open=True)
        check_int("M", self.M, 2)
        check_int("chain_steps", self.chain_steps, 1)
        check_int("burn_in", self.burn_in, 0)
        check_int("grid", self.grid, 3)
        check_int("n_features", self.n_features, 1)
        check_choice("scheme", self.scheme, ("heun", "euler"))
        check_choice("representation", self.representation, ("auto", "grid", "features"))

    @property
    def n_steps(self) -> int:
        return max(1, round(self.T / self.dt))

    @property
    def stages(self) -> int:
        """Stages per time step: 2 (Heun), 1 (Euler); each runs ``chain_steps`` chain steps."""
        return 2 if self.scheme == "heun" else 1

    @property
    def total_chain_steps(self) -> int:
        """Chain steps of the particles over ``[0, T]`` (burn-in aside)."""
        return self.n_steps * self.stages * self.chain_steps


@dataclass
class LimitResult:
    """The limit on ``[0, T]`` and its own error.

    ``h (R, n_eval, m)`` at ``times (R,)`` on ``eval_points``; the loss
    ``L(t) = ½E_{π_t}|Y−h_t|²`` at ``loss_t``; ``memory[t]`` samples ``x, s`` of ``π_t``;
    ``lipschitz (R,)`` of ``s ↦ ψ(h_t(x, s))``; ``error``: max-over-t RMS differences to the
    refined solves (``dt``, ``M``, ``basis``, ``lag``; ``total`` = their sum; ``lag_raw``
    before removing the sampling noise), ``error_t`` the same per record time.
    """

    eval_points: np.ndarray
    times: np.ndarray
    h: np.ndarray
    loss_t: np.ndarray
    loss: np.ndarray
    lipschitz: np.ndarray
    memory: dict[float, dict[str, np.ndarray]]
    representation: str
    kernel_method: str
    numerics: LimitNumerics
    wall_time: float
    error: dict[str, float] = field(default_factory=dict)
    error_t: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    evaluate: Callable[[Any, int], np.ndarray] | None = field(default=None, repr=False)

    def h_at(self, z: Any, i: int) -> np.ndarray:
        """``h_t(z)`` at the i-th record time for any points ``z (n, d+m)``, shape ``(n, m)``."""
        if self.evaluate is None:
            raise ParameterError("evaluate", "this result holds no basis to evaluate h_t with")
        check_int("i", i, -len(self.times), len(self.times) - 1)
        return self.evaluate(z, i)


def _rms_over_points(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS over evaluation points and outputs, per time: ``(R,)``."""
    return np.sqrt(np.mean((a - b) ** 2, axis=(1, 2)))


class LimitSolver:
    """Set up once per problem (jitted stage functions are cached by shape), call many times.

    ``solver(numerics, eval_points, times, ...)`` returns a :class:`LimitResult`.
    """

    def __init__(self, problem: LimitProblem, backend: str = "auto") -> None:
        check_choice("backend", backend, BACKENDS)
        self.problem = problem
        self.backend = backend
        self.kernel_fn = ntk(problem.kernel)
        self._segments: dict[tuple, Callable] = {}
        self._lip: dict[tuple, Callable] = {}
        self._path_fns: dict[int, Callable] = {}

    def _zero(self, z: Array) -> Array:
        """``h_0 = 0`` (one function object, so compiled stages are reused across calls)."""
        return jnp.zeros((z.shape[0], self.problem.kernel.m), z.dtype)

    # -- one solve --------------------------------------------------------------------------

    def _basis(self, numerics: LimitNumerics) -> Any:
        k = self.problem.kernel
        rep = numerics.representation
        if rep == "auto":
            rep = "grid" if k.d + k.m <= 3 else "features"
        if rep == "grid":
            return GridBasis(k.d + k.m, numerics.grid)
        return FeatureBasis(k, numerics.n_features, numerics.seed)

    def _segment(self, basis: Any, h0: H0, aux: dict, numerics: LimitNumerics, dtype: Any):
        """The stage runner of one solve: native where it applies (and is allowed), else JAX."""
        why = native_reason(self.problem, basis, dtype)
        if why and self.backend == "native":
            raise ParameterError("backend", f"'native' is not possible here: {why}")
        if not why and self.backend != "jax":
            return native_segment(self.problem, basis, aux, numerics), True
        key = (basis, h0, numerics.chain_steps, numerics.stages)
        if key not in self._segments:
            self._segments[key] = jax_segment(self.problem, basis, h0, numerics)
        return self._segments[key], False

    def _solve_once(
        self,
        numerics: LimitNumerics,
        zs: np.ndarray,
        rec_steps: np.ndarray,
        mem_steps: set[int],
        h0: H0 | None,
        force: bool,
        progress: Callable[[int, int], None] | None,
        lipschitz_every_record: bool = True,
        store: SharedStore | None = None,
    ) -> LimitResult:
        """One solve. ``lipschitz_every_record=False`` (refinement solves, whose ``h`` alone is
        used) measures ``L`` at the first and last record only (NaN between)."""
        start = time.perf_counter()
        p, k = self.problem, self.problem.kernel
        dt_ = float_dtype()
        basis = self._basis(numerics)
        h0_fn: H0 = h0 if h0 is not None else self._zero
        aux: dict[str, Any] = {}
        if isinstance(basis, GridBasis):
            nodes = jnp.asarray(basis.nodes(), dt_)
            aux["K"] = jnp.asarray(grid_gram(k, basis, dt_))
            aux["h0"] = jnp.asarray(h0_fn(nodes), dt_).reshape(-1, k.m)
            K_eval = np.asarray(self.kernel_fn(jnp.asarray(zs, dt_), nodes), dtype=float)
        else:
            aux["omega"] = basis.omegas(dt_)
            K_eval = np.asarray(basis.features(aux["omega"], jnp.asarray(zs, dt_)), dtype=float)
        h0_eval = np.asarray(h0_fn(jnp.asarray(zs, dt_)), dtype=float).reshape(len(zs), k.m)
        R = jnp.zeros((basis.size, k.m), dt_)

        lip_key = (basis, h0)
        if lip_key not in self._lip:

            def h_expansion(theta: tuple, x: Array, s: Array) -> Array:
                """``h(x, s) = h_0 + α Σ_j A_j(z) R_j``: the basis expansion itself."""
                R, centres = theta
                z = jnp.concatenate([x, s])[None, :]
                if isinstance(basis, GridBasis):
                    feats = self.kernel_fn._pair("both", z, centres)
                else:
                    feats = basis.features(centres, z)
                return (h0_fn(z) + p.alpha * feats @ R)[0]

            self._lip[lip_key] = lipschitz_fn(h_expansion, k.d, k.m, clip=p.clip, n_grid=11)
        centres = nodes if isinstance(basis, GridBasis) else aux["omega"]

        def lipschitz(R: Array) -> float:
            return self._lip[lip_key]((jnp.asarray(R, dt_), centres))

        check_contraction(lipschitz(R), force=force)
        segment, on_host = self._segment(basis, h0_fn, aux, numerics, dt_)
        s = (np if on_host else jnp).zeros((numerics.M, k.m), dt_)
        if on_host:  # the native stages update numpy R and S in place
            R = np.zeros(R.shape)
        if store is not None:
            paths: Any = store.cursor()
        else:
            args = (numerics.M, numerics.seed, numerics.burn_in, dt_, self._path_fns)
            paths = PathCursor(p, *args)
        dt = numerics.T / numerics.n_steps
        dt_arg = dt if on_host else jnp.asarray(dt, dt_)
        if numerics.burn_in:
            R, s, _ = segment(aux, R, s, *paths.burn(), None)

        hs, lips, losses, memory, coeffs = [], [], [], {}, []
        done = 0
        per_step = numerics.stages * numerics.chain_steps
        # the paths of one segment are held in memory at once: cap them
        path_bytes = per_step * numerics.M * (k.d + k.m) * np.dtype(dt_).itemsize
        chunk = max(1, SEGMENT_BYTES // path_bytes)
        for target_step in rec_steps:
            while target_step > done:
                n = int(min(target_step - done, chunk))
                R, s, seg_loss = segment(aux, R, s, *paths.take(n * per_step), dt_arg)
                losses.append(np.asarray(seg_loss))
                done += n
                if not np.all(np.isfinite(np.asarray(R))):
                    raise ParameterError("dt", f"the limit solve became non-finite by step {done}")
            coeffs.append(np.array(R, dtype=float))
            hs.append(h0_eval + p.alpha * K_eval @ coeffs[-1])
            last = target_step == rec_steps[-1]
            lips.append(lipschitz(R) if lipschitz_every_record or last or not lips else np.nan)
            if done in mem_steps:
                memory[done] = dict(x=paths.next_x(), s=np.array(s))
            if lips[-1] >= 1.0 and not force:
                err = ContractionError(lips[-1])
                err.args = (f"{err.args[0]} (at t = {done * dt:.4g})",)
                raise err
            if progress is not None:
                progress(done, numerics.n_steps)
        loss = np.concatenate(losses) if losses else np.zeros(0)

        def evaluate(z: Any, i: int) -> np.ndarray:
            zj = jnp.asarray(np.asarray(z, dtype=float).reshape(-1, k.d + k.m), dt_)
            if isinstance(basis, GridBasis):
                feats = self.kernel_fn(zj, nodes)
            else:
                feats = basis.features(aux["omega"], zj)
            return np.asarray(h0_fn(zj) + p.alpha * feats @ jnp.asarray(coeffs[i], dt_), float)

        return LimitResult(
            eval_points=zs,
            times=rec_steps * dt,
            h=np.stack(hs),
            loss_t=np.arange(loss.size) * dt,
            loss=loss,
            lipschitz=np.asarray(lips),
            memory={float(t * dt): v for t, v in memory.items()},
            representation="grid" if isinstance(basis, GridBasis) else "features",
            kernel_method=self.kernel_fn.method_used,
            numerics=numerics,
            wall_time=time.perf_counter() - start,
            evaluate=evaluate,
        )

    def __call__(
        self,
        numerics: LimitNumerics,
        eval_points: Any,
        times: Sequence[float] | None = None,
        *,
        memory_times: Sequence[float] = (),
        h0: H0 | None = None,
        force: bool = False,
        estimate_error: bool | Sequence[str] = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> LimitResult:
        """Solve on ``[0, T]`` and (by default) estimate the scheme's error.

        ``eval_points (n, d+m)`` and ``times`` (default 31 equally spaced) say where ``h_t``
        is reported; ``memory_times`` where samples of the memory law π_t are kept; ``h0`` a
        jax-traceable initial function ``z (n, d+m) -> (n, m)`` (default 0). ``force`` lets a
        non-contractive memory map (``L ≥ 1``) through. ``estimate_error``: ``True`` for every
        refinement in ``REFINEMENTS``, ``False`` for none, or a subset of their names.
        """
        k = self.problem.kernel
        zs = np.asarray(eval_points, dtype=float)
        if zs.ndim != 2 or zs.shape[0] == 0 or zs.shape[1] != k.d + k.m:
            raise ParameterError(
                "eval_points", f"must be a non-empty (n, d+m={k.d + k.m}) array, got {zs.shape}"
            )
        ts = np.linspace(0.0, numerics.T, 31) if times is None else np.asarray(times, float)
        if ts.size == 0 or ts.min() < 0 or ts.max() > numerics.T * (1 + 1e-12):
            raise ParameterError("times", f"must be a non-empty subset of [0, T={numerics.T}]")

        def steps_of(n: LimitNumerics, t: np.ndarray) -> np.ndarray:
            return np.round(np.asarray(t) / (n.T / n.n_steps)).astype(int)

        def solve(n: LimitNumerics, prog: Callable | None = None, base: bool = True) -> LimitResult:
            rec = np.unique(steps_of(n, ts))
            mem = {int(v) for v in steps_of(n, np.asarray(memory_times, float))} if base else set()
            store = stores.get((n.M, n.seed, n.burn_in))
            return self._solve_once(n, zs, rec, mem, h0, force, prog, base, store)

        def cost(n: LimitNumerics) -> float:
            return solve_cost(n, self._basis(n))

        refined: dict[str, LimitNumerics] = {}
        if estimate_error:
            finer = (
                replace(numerics, grid=2 * numerics.grid - 1)
                if isinstance(self._basis(numerics), GridBasis)
                else replace(numerics, n_features=2 * numerics.n_features)
            )
            # halving dt halves the chain steps per stage: same samples per unit time, and with
            # the chain-step-indexed keys the same random numbers (see limitsteps.PathCursor)
            half = replace(numerics, dt=numerics.T / (2 * numerics.n_steps))
            if numerics.chain_steps % 2 == 0:
                half = replace(half, chain_steps=numerics.chain_steps // 2)
            refined = {
                "dt": half,
                "M": replace(numerics, M=2 * numerics.M),
                "basis": finer,
                "lag": replace(numerics, chain_steps=2 * numerics.chain_steps),
            }
            if estimate_error is not True:
                wanted = tuple(estimate_error)
                for name in wanted:
                    check_choice("estimate_error", name, REFINEMENTS)
                if "lag" in wanted and "M" not in wanted:
                    raise ParameterError("estimate_error", "'lag' needs 'M' (its noise level)")
                refined = {k: v for k, v in refined.items() if k in wanted}
        dtype = float_dtype()
        stores = shared_stores(self.problem, [numerics, *refined.values()], dtype, self._path_fns)
        # the solves are independent and each keeps one core busy: run them side by side
        # (every solve has its own keys, so the results do not depend on the scheduling)
        n_workers = max(1, min(os.cpu_count() or 1, 1 + len(refined)))
        with ThreadPoolExecutor(n_workers) as pool:
            # longest first (LPT scheduling): a shorter makespan on few cores
            order = sorted([None, *refined], key=lambda r: -cost(refined.get(r, numerics)))
            jobs = {
                r: pool.submit(solve, numerics, progress)
                if r is None
                else pool.submit(solve, refined[r], None, False)
                for r in order
            }
            base = jobs[None].result()
            others = {name: jobs[name].result() for name in refined}
        if isinstance(self._basis(numerics), GridBasis):
            base.notes.append(f"grid basis {numerics.grid}^{k.d + k.m}, multilinear deposit")
        else:
            base.notes.append(f"feature basis, {numerics.n_features} random features")
        if self.kernel_fn.method_used != "closed":
            base.notes.append(f"kernel A has no closed form for {k.activation}: quadrature used")
        if refined:
            for name, other in others.items():
                idx = np.searchsorted(other.times, base.times - 1e-12)
                base.error_t[name] = _rms_over_points(base.h, other.h[idx])
            # the particle law lags π_t by a few chain steps; doubling chain_steps halves the
            # lag but also draws new random numbers and doubles the samples, exactly like the
            # 2M solve: remove that sampling noise in quadrature to keep the systematic part
            if "lag" in refined:
                base.error_t["lag_raw"] = base.error_t["lag"]
                noise = base.error_t["M"] ** 2
                base.error_t["lag"] = np.sqrt(np.maximum(base.error_t["lag"] ** 2 - noise, 0.0))
            for name in base.error_t:
                base.error[name] = float(base.error_t[name].max())
            base.error_t["total"] = sum(base.error_t[n] for n in refined)
            base.error["total"] = float(sum(base.error[n] for n in refined))
        return base


def limit_solver(problem: LimitProblem, backend: str = "auto") -> LimitSolver:
    """Set up the limit of ``problem`` once; the returned solver is called per discretisation.

    ``backend``: ``"auto"`` runs the ``h``-coupled stages of a grid solve (``d + m ≤ 3``,
    float64) in the native kernel when it is built, else in JAX; ``"jax"`` always in JAX;
    ``"native"`` insists on the kernel (a :class:`ParameterError` where it cannot run).
    """
    return LimitSolver(problem, backend)
