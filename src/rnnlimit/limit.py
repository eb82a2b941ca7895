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
five solves are independent and run side by side on the available cores.
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

from rnnlimit import native
from rnnlimit.activations import CLIPS, psi
from rnnlimit.bases import FeatureBasis, GridBasis, grid_gram
from rnnlimit.chains import Chain, Target, init_particles, particle_paths
from rnnlimit.errors import ContractionError, ParameterError, check_choice, check_int, check_range
from rnnlimit.kernels import KernelSpec, ntk
from rnnlimit.memory import check_contraction, lipschitz_fn

Array = jax.Array
REFINEMENTS: tuple[str, ...] = ("dt", "M", "basis", "lag")
#: ``auto``: the native grid kernel (``_native/limit_pic.c``) where it applies, else JAX.
BACKENDS: tuple[str, ...] = ("auto", "native", "jax")
H0 = Callable[[Array], Array]  # z (n, d+m) -> (n, m), jax-traceable


@dataclass(frozen=True)
class LimitProblem:
    """What the limit is of: the stream (chain, target), the kernel ``A``, ``α`` and ψ.

    ``memory=False`` switches the feedback off (``S ≡ 0``, a feed-forward network on ``x``):
    with a finite chain the ODE is then linear with a closed form, which the tests use.
    """

    chain: Chain
    target: Target
    kernel: KernelSpec
    alpha: float = 1.0
    clip: Literal["hard", "smooth"] = "hard"
    memory: bool = True

    def __post_init__(self) -> None:
        check_range("alpha", self.alpha, 0.0, None, low_open=True)
        check_choice("clip", self.clip, CLIPS)
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
        self._burn: dict[tuple, Callable] = {}
        self._lip: dict[tuple, Callable] = {}
        self._path_fns: dict[int, Callable] = {}

    def _zero(self, z: Array) -> Array:
        """``h_0 = 0`` (one function object, so compiled stages are reused across calls)."""
        return jnp.zeros((z.shape[0], self.problem.kernel.m), z.dtype)

    # -- the pieces that run inside jit ---------------------------------------------------

    def _paths(self, n_sub: int) -> Callable:
        """Jitted ``(key, parts, j0) -> parts, X (n_sub, M, d), Y (n_sub, M, m)``.

        The particle paths do not depend on ``h``, so they are drawn in one batch ahead of the
        ``h``-coupled stages. Chain step ``j`` uses ``fold_in(key, j)``: solves that differ only
        in ``Δt``, the basis or the chain steps per stage see the same random numbers (common
        random numbers), so their differences are discretisation, not noise.
        """
        if n_sub not in self._path_fns:
            chain, target = self.problem.chain, self.problem.target

            def paths(key: Array, parts: Any, j0: Array) -> tuple:
                keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(j0 + jnp.arange(n_sub))
                return particle_paths(chain, target, parts, keys)

            self._path_fns[n_sub] = jax.jit(paths)
        return self._path_fns[n_sub]

    def _stage(self, basis: Any, h0: H0, deposit: bool) -> Callable:
        """One stage: the paths ``X, Y`` of ``n`` chain steps with ``h`` frozen at ``R``.

        Returns the new memories, ``ρ = Σ_k Σ_p φ(Z_kp)(Y_kp − h(Z_kp)) / (M n)`` and the mean
        loss ``½|Y − h(Z)|²``.
        """
        clip, alpha, memory = self.problem.clip, self.problem.alpha, self.problem.memory

        def run(aux: dict, R: Array, s: Array, xs: Array, ys: Array) -> tuple:
            hgrid = aux["h0"] + alpha * aux["K"] @ R if "K" in aux else None

            def one(carry: tuple, xy: tuple[Array, Array]) -> tuple:
                s, rho, loss = carry
                z = jnp.concatenate([xy[0], s], 1)
                if hgrid is not None:
                    hz = basis.interpolate(hgrid, z)
                else:
                    feats = basis.features(aux["omega"], z)  # read and deposit with one φ(Z)
                    hz = h0(z) + alpha * feats @ R
                r = xy[1] - hz
                if deposit:
                    rho = rho + (basis.deposit(z, r) if hgrid is not None else feats.T @ r)
                loss = loss + 0.5 * jnp.mean(jnp.sum(r * r, 1))
                s_next = psi(clip, hz)[0] if memory else s
                return (s_next, rho, loss), None

            init = (s, jnp.zeros_like(R), jnp.zeros((), R.dtype))
            (s, rho, loss), _ = jax.lax.scan(one, init, (xs, ys))
            n = xs.shape[0]
            return s, rho / (s.shape[0] * n), loss / n

        return run

    def _segment(self, basis: Any, h0: H0, numerics: LimitNumerics, n_steps: int) -> Callable:
        """Jitted ``n_steps`` time steps (JAX stages): paths, then Heun or Euler on ``R``."""
        key = (basis, h0, numerics.chain_steps, numerics.scheme, n_steps)
        if key in self._segments:
            return self._segments[key]
        stage = self._stage(basis, h0, True)
        heun = numerics.scheme == "heun"
        cs = numerics.chain_steps
        per_step = cs * (2 if heun else 1)
        paths = self._paths(n_steps * per_step)

        def segment(aux: dict, R: Array, parts: Any, s: Array, j0: Array, dt: Array) -> tuple:
            parts, xs, ys = paths(aux["key"], parts, j0)
            xs = xs.reshape(n_steps, per_step, *xs.shape[1:])
            ys = ys.reshape(n_steps, per_step, *ys.shape[1:])

            def step(carry: tuple, xy: tuple[Array, Array]) -> tuple:
                R, s = carry
                s, rho1, loss = stage(aux, R, s, xy[0][:cs], xy[1][:cs])
                if heun:
                    s, rho2, _ = stage(aux, R + dt * rho1, s, xy[0][cs:], xy[1][cs:])
                    R = R + 0.5 * dt * (rho1 + rho2)
                else:
                    R = R + dt * rho1
                return (R, s), loss

            (R, s), losses = jax.lax.scan(step, (R, s), (xs, ys))
            return R, parts, s, losses

        self._segments[key] = jax.jit(segment)
        return self._segments[key]

    def _burn_in(self, basis: Any, h0: H0, n_sub: int) -> Callable:
        """Jitted burn-in: ``n_sub`` chain steps at ``R`` (no deposits) from chain step 0."""
        bkey = (basis, h0, n_sub)
        if bkey not in self._burn:
            stage, paths = self._stage(basis, h0, False), self._paths(n_sub)

            def burn(aux: dict, R: Array, parts: Any, s: Array) -> tuple:
                parts, xs, ys = paths(aux["key"], parts, 0)
                return parts, stage(aux, R, s, xs, ys)[0]

            self._burn[bkey] = jax.jit(burn)
        return self._burn[bkey]

    def _native_ok(self, basis: Any, dtype: Any) -> str:
        """Why the native grid kernel cannot run this solve ('' when it can)."""
        k = self.problem.kernel
        if not isinstance(basis, GridBasis):
            return "the native limit kernel handles the grid basis only"
        if k.d + k.m > native.PIC_MAX_D or k.m > native.PIC_MAX_M:
            return f"the native limit kernel needs d + m <= {native.PIC_MAX_D}"
        if dtype != jnp.float64:
            return "the native limit kernel runs in float64 (enable jax_enable_x64)"
        if not native.available():
            return native.unavailable_reason()
        return ""

    # -- one solve --------------------------------------------------------------------------

    def _basis(self, numerics: LimitNumerics) -> Any:
        k = self.problem.kernel
        rep = numerics.representation
        if rep == "auto":
            rep = "grid" if k.d + k.m <= 3 else "features"
        if rep == "grid":
            return GridBasis(k.d + k.m, numerics.grid)
        return FeatureBasis(k, numerics.n_features, numerics.seed)

    def _jax_advance(
        self, aux: dict, basis: Any, h0: H0, numerics: LimitNumerics, dt: Array
    ) -> Callable:
        """``advance(parts, R, s, j0, n)``: ``n`` time steps from chain step ``j0`` in JAX;
        ``n = 0`` with ``key=`` is the burn-in."""

        def advance(parts: Any, R: Array, s: Array, j0: int, n: int, key: Any = None) -> tuple:
            if n == 0:
                burn = self._burn_in(basis, h0, numerics.burn_in)
                parts, s = burn(dict(aux, key=key), R, parts, s)
                return parts, R, s, np.zeros(0)
            R, parts, s, losses = self._segment(basis, h0, numerics, n)(aux, R, parts, s, j0, dt)
            return parts, R, s, losses

        return advance

    def _native_advance(
        self, aux: dict, basis: Any, numerics: LimitNumerics, dt: float
    ) -> Callable:
        """As :meth:`_jax_advance`, with the ``h``-coupled stages in ``_native/limit_pic.c``
        (the particle paths still come from JAX); ``R`` and ``s`` are numpy arrays here."""
        K = np.ascontiguousarray(aux["K"], dtype=np.float64)
        h0 = np.ascontiguousarray(aux["h0"], dtype=np.float64)
        heun = numerics.scheme == "heun"
        per_step = numerics.chain_steps * (2 if heun else 1)
        opts = dict(
            n_axis=basis.n_axis, heun=heun, alpha=float(self.problem.alpha), dt=dt,
            memory=self.problem.memory, clip=self.problem.clip,
        )  # fmt: skip

        def advance(parts: Any, R: Any, s: Any, j0: int, n: int, key: Any = None) -> tuple:
            steps = n * per_step if n else numerics.burn_in
            parts, xs, ys = self._paths(steps)(aux["key"] if key is None else key, parts, j0)
            xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
            cs = numerics.chain_steps if n else numerics.burn_in
            loss = native.pic_run(K, h0, R, s, xs, ys, chain_steps=cs, n_steps=n, **opts)
            return parts, R, s, loss

        return advance

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
    ) -> LimitResult:
        """One solve. ``lipschitz_every_record=False`` (refinement solves, whose ``h`` alone is
        used) measures ``L`` at the first and last record only (NaN between)."""
        start = time.perf_counter()
        p, k = self.problem, self.problem.kernel
        dt_ = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        basis = self._basis(numerics)
        h0_fn: H0 = h0 if h0 is not None else self._zero
        aux: dict[str, Any] = {}
        if isinstance(basis, GridBasis):
            nodes = jnp.asarray(basis.nodes(), dt_)
            aux["K"] = jnp.asarray(grid_gram(k, basis, dt_))
            aux["h0"] = jnp.asarray(h0_fn(nodes), dt_).reshape(-1, k.m)
            K_eval = jnp.asarray(self.kernel_fn(jnp.asarray(zs, dt_), nodes))
        else:
            aux["omega"] = basis.omegas(dt_)
            K_eval = basis.features(aux["omega"], jnp.asarray(zs, dt_))
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

        k_init, k_burn, aux["key"] = jax.random.split(jax.random.PRNGKey(numerics.seed), 3)
        parts = init_particles(p.chain, p.target, k_init, numerics.M, dt_)
        s = jnp.zeros((numerics.M, k.m), dt_)
        check_contraction(lipschitz(R), force=force)
        why = self._native_ok(basis, dt_)
        if why and self.backend == "native":
            raise ParameterError("backend", f"'native' is not possible here: {why}")
        heun = numerics.scheme == "heun"
        per_step = numerics.chain_steps * (2 if heun else 1)
        dt = jnp.asarray(numerics.T / numerics.n_steps, dt_)
        if not why and self.backend != "jax":
            advance = self._native_advance(aux, basis, numerics, float(dt))
            R, s = np.zeros(R.shape), np.zeros(s.shape)
        else:
            advance = self._jax_advance(aux, basis, h0_fn, numerics, dt)
        if numerics.burn_in:
            parts, R, s, _ = advance(parts, R, s, 0, 0, key=k_burn)

        hs, lips, losses, memory, coeffs = [], [], [], {}, []
        done = 0
        # the paths of one call are held in memory: cap them at about 32 MB
        path_bytes = per_step * numerics.M * (k.d + k.m) * np.dtype(dt_).itemsize
        chunk = max(1, (32 << 20) // path_bytes)
        for target_step in rec_steps:
            while target_step > done:
                n = int(min(target_step - done, chunk))
                parts, R, s, seg_loss = advance(parts, R, s, done * per_step, n)
                losses.append(np.asarray(seg_loss))
                done += n
                if not np.all(np.isfinite(np.asarray(R))):
                    raise ParameterError("dt", f"the limit solve became non-finite by step {done}")
            hs.append(h0_eval + p.alpha * np.asarray(K_eval @ jnp.asarray(R, dt_)))
            coeffs.append(jnp.asarray(R, dt_))
            last = target_step == rec_steps[-1]
            lips.append(lipschitz(R) if lipschitz_every_record or last or not lips else np.nan)
            if done in mem_steps:
                x = np.asarray(jax.vmap(p.chain.observe)(parts.state), float).reshape(-1, k.d)
                memory[done] = dict(x=x, s=np.asarray(s))
            if lips[-1] >= 1.0 and not force:
                err = ContractionError(lips[-1])
                err.args = (f"{err.args[0]} (at t = {done * float(dt):.4g})",)
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
            return np.asarray(h0_fn(zj) + p.alpha * feats @ coeffs[i], dtype=float)

        return LimitResult(
            eval_points=zs,
            times=rec_steps * float(dt),
            h=np.stack(hs),
            loss_t=np.arange(loss.size) * float(dt),
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
            return self._solve_once(n, zs, rec, mem, h0, force, prog, base)

        def cost(n: LimitNumerics) -> float:
            """Relative work of a solve: particle steps, plus node-Gram products for a grid."""
            stages = n.n_steps * (2 if n.scheme == "heun" else 1)
            G = self._basis(n).size
            return n.M * stages * n.chain_steps + (
                G * G / 100 if n.representation != "features" else 0
            )

        refined: dict[str, LimitNumerics] = {}
        if estimate_error:
            finer = (
                replace(numerics, grid=2 * numerics.grid - 1)
                if isinstance(self._basis(numerics), GridBasis)
                else replace(numerics, n_features=2 * numerics.n_features)
            )
            # halving dt halves the chain steps per stage: same samples per unit time, and with
            # the chain-step-indexed keys the same random numbers (see _paths)
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
