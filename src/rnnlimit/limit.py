"""The infinite-width limit (docs/model.md §4, §4b): an ODE coupled with the memory's fixed point.

The network output converges to ``h_t : 𝒳 × [-1,1]^m → R^m`` solving, for truncated training::

    ∂_t h_t(z) = α E_{π_t}[ A(z, Z) (Y − h_t(Z)) ],        h_0 = 0 (or a given h_0)

where ``π_t`` is the stationary law of ``(X, S, Y)`` for the chain run with the function frozen
at ``h_t`` (``S_{k+1} = ψ(h_t(X_k, S_k))``), and for RTRL training the same ODE with ``A(z, Z)``
replaced by the trace ``E(z)`` that every copy of the chain carries (§4b). The right-hand sides
are the drifts of :mod:`rnnlimit.drift`; the ODE moves ``π_t`` and ``π_t`` drives the ODE.

Scheme: ``h_t = h_0 + α Σ_j A_j R_j(t)`` in a basis (:mod:`rnnlimit.bases`); M independent
copies (particles) of ``(X, S, Y)`` (and ``E``) advance in lock-step with the current ``h``,
``chain_steps`` chain steps per stage so that they re-equilibrate to ``π_t`` (the memory and the
trace forget their start at the geometric rate ``L``); Heun's method (second order) or Euler
advances ``R`` (:mod:`rnnlimit.limitsolve`). The scheme's own error is estimated by re-solving
with ``Δt/2`` (same random numbers), ``2M`` (new ones: sampling noise), a finer basis (same
random numbers) and twice the chain steps per stage (the lag of the particle law behind ``π_t``,
its sampling noise removed in quadrature), and reported. :class:`LimitSolver` plans these
solves, runs them side by side on the available cores and estimates the error from them.
Every solve refuses a ``Δt`` beyond the explicit schemes' stability bound ``λΔt ≤ 2`` (``λ``
bounded by ``α sup_z A(z, z)``, :func:`rnnlimit.limitsolve.stiffness`) and stops with a
:class:`~rnnlimit.errors.DivergenceError` once ``|h|`` runs past ``H_MAX`` (targets lie in
``[-1, 1]^m``). RTRL traces take ``M × basis size × m²`` floats per solve, capped over the
solves of one call by ``TRACE_BUDGET_BYTES`` (checked by the plan, before any work).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import jax
import numpy as np

from rnnlimit import float_dtype
from rnnlimit.activations import CLIPS
from rnnlimit.bases import Basis, make_basis
from rnnlimit.chains import Chain, Target
from rnnlimit.drift import trace_bytes
from rnnlimit.errors import ParameterError, check_choice, check_int, check_range
from rnnlimit.kernels import ntk
from rnnlimit.kernelspec import KernelSpec
from rnnlimit.limitmemory import fit_budget
from rnnlimit.limitsolve import Request, SolveCaches, solve_trajectory
from rnnlimit.limitsteps import shared_stores, solve_cost
from rnnlimit.nystrom import NystromBasis

Array = jax.Array
REFINEMENTS: tuple[str, ...] = ("dt", "M", "basis", "lag")
REPRESENTATIONS: tuple[str, ...] = ("auto", "grid", "features", "nystrom")
#: The training whose limit is solved: §4 (truncated gradient) or §4b (RTRL).
GRADIENTS: tuple[str, ...] = ("truncated", "rtrl")
#: ``auto``: the native grid kernel (``_native/limit_pic.c``) where it applies, else JAX.
BACKENDS: tuple[str, ...] = ("auto", "native", "jax")
#: Largest memory of the RTRL traces of all the solves of one call (base and refinements).
TRACE_BUDGET_BYTES = 2 << 30
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
        if self.target.m != self.kernel.m:
            raise ParameterError("kernel.m", f"must equal the target's m={self.target.m}")


@dataclass(frozen=True)
class LimitNumerics:
    """Discretisation: horizon ``T``, step ``dt``, ``M`` particles, ``chain_steps`` per stage,
    ``grid`` nodes per axis (grid basis), ``n_features`` (feature basis) or ``n_inducing``
    points (Nyström basis, :mod:`rnnlimit.nystrom`). ``memory_budget_gb`` bounds a call with
    its error estimate (:mod:`rnnlimit.limitmemory`, estimated before any work)."""

    T: float = 3.0
    dt: float = 0.05
    M: int = 2048
    chain_steps: int = 8
    burn_in: int = 200
    grid: int = 17
    n_features: int = 2048
    n_inducing: int = 256
    memory_budget_gb: float = 4.0
    scheme: Literal["heun", "euler"] = "heun"
    representation: Literal["auto", "grid", "features", "nystrom"] = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("T", self.T, 0.0, None, low_open=True)
        check_range("dt", self.dt, 0.0, self.T, low_open=True, high_open=True)
        check_int("M", self.M, 2)
        check_int("chain_steps", self.chain_steps, 1)
        check_int("burn_in", self.burn_in, 0)
        check_int("grid", self.grid, 3)
        check_int("n_features", self.n_features, 1)
        check_int("n_inducing", self.n_inducing, 1)
        check_range("memory_budget_gb", self.memory_budget_gb, 0.0, None, low_open=True)
        check_choice("scheme", self.scheme, ("heun", "euler"))
        check_choice("representation", self.representation, REPRESENTATIONS)

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

    def basis(self, kernel: KernelSpec) -> Basis:
        """The representation of ``h_t`` (``auto``: the grid for ``d + m ≤ 3``, else Nyström)."""
        auto_nystrom = self.representation == "auto" and kernel.d + kernel.m > 3
        if self.representation == "nystrom" or auto_nystrom:
            return NystromBasis(kernel, self.n_inducing, self.seed)
        return make_basis(kernel, self.representation, self.grid, self.n_features, self.seed)


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


@dataclass(frozen=True)
class Solve:
    """One solve of a call: the base (``name=None``) or a refinement of the error estimate."""

    name: str | None
    numerics: LimitNumerics
    basis: Basis


def _rms_over_points(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS over evaluation points and outputs, per time: ``(R,)``."""
    return np.sqrt(np.mean((a - b) ** 2, axis=(1, 2)))


class LimitSolver:
    """Set up once per problem (jitted stage functions are cached by shape), call many times.

    ``solver(numerics, eval_points, times, ...)`` returns a :class:`LimitResult`: it plans the
    solves (:meth:`plan`), runs them (:meth:`solve`) and estimates the error (:meth:`estimate`).
    """

    def __init__(self, problem: LimitProblem, backend: str = "auto") -> None:
        check_choice("backend", backend, BACKENDS)
        self.problem = problem
        self.backend = backend
        self.kernel_fn = ntk(problem.kernel)
        self._caches = SolveCaches()

    def plan(self, numerics: LimitNumerics, estimate_error: bool | Sequence[str]) -> list[Solve]:
        """The base solve and the refined ones of the error estimate (``True``: every one in
        ``REFINEMENTS``, ``False``: none, or a subset of their names), longest first."""
        basis = numerics.basis(self.problem.kernel)
        solves = [Solve(None, numerics, basis)]
        if estimate_error:
            # halving dt halves the chain steps per stage: same samples per unit time, and with
            # the chain-step-indexed keys the same random numbers (see limitsteps.PathCursor)
            half = replace(numerics, dt=numerics.T / (2 * numerics.n_steps))
            if numerics.chain_steps % 2 == 0:
                half = replace(half, chain_steps=numerics.chain_steps // 2)
            finer = basis.refined()
            refined = {
                "dt": Solve("dt", half, basis),
                "M": Solve("M", replace(numerics, M=2 * numerics.M), basis),
                "basis": Solve("basis", numerics, finer),
                "lag": Solve("lag", replace(numerics, chain_steps=2 * numerics.chain_steps), basis),
            }
            wanted = REFINEMENTS if estimate_error is True else tuple(estimate_error)
            for name in wanted:
                check_choice("estimate_error", name, REFINEMENTS)
            if "lag" in wanted and "M" not in wanted:
                raise ParameterError("estimate_error", "'lag' needs 'M' (its noise level)")
            solves += [refined[name] for name in REFINEMENTS if name in wanted]
        m, gradient = self.problem.kernel.m, self.problem.gradient
        traces = sum(trace_bytes(gradient, s.basis, s.numerics.M, m) for s in solves)
        if traces > TRACE_BUDGET_BYTES:
            raise ParameterError(
                "grid" if basis.kind == "grid" else "n_features",
                f"the RTRL traces (M × basis size × m² per solve, refinements included) would "
                f"take {traces / 2**30:.1f} GiB, over the {TRACE_BUDGET_BYTES / 2**30:.0f} GiB "
                "budget: lower it, or M, or estimate fewer refinements",
            )
        # longest first (LPT scheduling): a shorter makespan on few cores
        return sorted(solves, key=lambda s: -solve_cost(s.numerics, s.basis, gradient))

    def solve(self, job: Solve, request: Request, store: Any = None) -> LimitResult:
        """Run one planned solve (see :func:`rnnlimit.limitsolve.solve_trajectory`)."""
        out = solve_trajectory(
            self.problem, job.numerics, job.basis, request, self.backend, self._caches, store
        )
        return LimitResult(
            **out,
            representation=job.basis.kind,
            kernel_method=self.kernel_fn.method_used,
            numerics=job.numerics,
        )

    def estimate(self, base: LimitResult, others: dict[str, LimitResult]) -> None:
        """Fill ``base.error`` and ``base.error_t`` from the refined solves."""
        others = {name: others[name] for name in REFINEMENTS if name in others}
        for name, other in others.items():
            idx = np.searchsorted(other.times, base.times - 1e-12)
            base.error_t[name] = _rms_over_points(base.h, other.h[idx])
        # the particle law lags π_t by a few chain steps; doubling chain_steps halves the lag
        # but also draws new random numbers and doubles the samples, exactly like the 2M
        # solve: remove that sampling noise in quadrature to keep the systematic part
        if "lag" in others:
            base.error_t["lag_raw"] = base.error_t["lag"]
            noise = base.error_t["M"] ** 2
            base.error_t["lag"] = np.sqrt(np.maximum(base.error_t["lag"] ** 2 - noise, 0.0))
        for name in base.error_t:
            base.error[name] = float(base.error_t[name].max())
        base.error_t["total"] = sum(base.error_t[n] for n in others)
        base.error["total"] = float(sum(base.error[n] for n in others))

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
        # every solve records on the base solve's Δt grid (the Δt/2 grid contains it), so the
        # refinements are compared with the base at the very same times
        dt0 = numerics.T / numerics.n_steps
        ts = np.unique(np.round(ts / dt0)) * dt0
        solves = self.plan(numerics, estimate_error)
        workers = max(1, min(os.cpu_count() or 1, len(solves)))
        fit = fit_budget(self.problem, solves, len(zs), workers, numerics.memory_budget_gb)
        solves = fit.solves
        request = Request(zs, ts, np.asarray(memory_times, float), h0, force)
        stores = shared_stores(
            self.problem, [s.numerics for s in solves], float_dtype(), self._caches.paths
        )

        def run(job: Solve) -> LimitResult:
            n = job.numerics
            store = stores.get((n.M, n.seed, n.burn_in))
            if job.name is None:
                return self.solve(job, replace(request, progress=progress), store)
            return self.solve(job, replace(request, memory_times=np.zeros(0), base=False), store)

        # the solves are independent and each keeps one core busy: run them side by side
        # (every solve has its own keys, so the results do not depend on the scheduling)
        with ThreadPoolExecutor(fit.workers) as pool:
            jobs = {s.name: pool.submit(run, s) for s in solves}
            failed = {name: job.exception() for name, job in jobs.items() if job.exception()}
        for name in (None, *REFINEMENTS):  # the base solve's error first, whatever finished first
            if name in failed:
                raise failed[name]
        results = {name: job.result() for name, job in jobs.items()}
        base = results.pop(None)
        base.notes.append(next(s.basis.note for s in solves if s.name is None))
        base.notes.extend(fit.notes)
        if self.problem.gradient == "rtrl":
            base.notes.append("RTRL limit (docs/model.md §4b): particles carry the trace E")
        if self.kernel_fn.method_used != "closed":
            how = {"table": "tabulated quadrature (Chebyshev series, error ~1e-10)"}
            used = how.get(self.kernel_fn.method_used, "quadrature")
            base.notes.append(f"kernel A has no closed form for {k.activation}: {used} used")
        if len(results):
            self.estimate(base, results)
        return base


def limit_solver(problem: LimitProblem, backend: str = "auto") -> LimitSolver:
    """Set up the limit of ``problem`` once; the returned solver is called per discretisation.

    ``backend``: ``"auto"`` runs the ``h``-coupled stages of a grid solve (``d + m ≤ 3``,
    float64) in the native kernel when it is built, else in JAX; ``"jax"`` always in JAX;
    ``"native"`` insists on the kernel (a :class:`ParameterError` where it cannot run).
    """
    return LimitSolver(problem, backend)
