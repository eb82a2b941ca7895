"""The RTRL limit (docs/model.md §4b) against the trace recursion evaluated directly, and its
special
cases: m = 2 traces, native = JAX, and the truncated limit where the trace has no memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlimit import float_dtype
from rnnlimit.activations import psi
from rnnlimit.bases import FeatureBasis, GridBasis
from rnnlimit.chains import AR1Chain, FilterTarget, FiniteChain
from rnnlimit.drift import initial_state, rtrl_drift
from rnnlimit.kernels import ntk
from rnnlimit.kernelspec import KernelSpec
from rnnlimit.limit import LimitNumerics, LimitProblem, limit_solver
from rnnlimit.limitsteps import PathCursor

P3 = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]])
V3 = np.array([-1.0, -0.5, 0.5])  # nodes of the 9-, 17- and 33-node grids: x is read exactly
M, CS, BURN = 64, 6, 30


def _h0_linear_in_s(m: int):
    """``h_0`` smooth in x, linear in s and coupling the outputs: on a grid whose nodes carry
    the chain's x values, multilinear interpolation reads it and its ``∂_s`` exactly."""
    B = np.array([[0.5, -0.3], [0.25, 0.45]])[:m, :m]

    def h0(z):
        x, s = z[:, :1], z[:, 1:]
        return 0.6 * jnp.sin(2.0 * x) * jnp.ones(m) + s @ jnp.asarray(B.T, z.dtype)

    return h0


def _h0_curved(z):
    """``h_0`` with curvature in s: the grid reads ``∂_s h_0`` only to O(Δz)."""
    x, s = z[:, :1], z[:, 1:]
    return 0.6 * jnp.sin(2.0 * x) + 0.5 * s - 0.2 * s**2


def _problem(m: int, clip: str = "hard", memory: bool = True) -> LimitProblem:
    target = FilterTarget(0.5, f=lambda x: jnp.sin(2.0 * x) * jnp.ones(m), m=m)
    kernel = KernelSpec(d=1, m=m)
    return LimitProblem(FiniteChain(P3, V3), target, kernel, 1.0, clip, memory, "rtrl")


def _paths(problem: LimitProblem, cache: dict, seed: int = 0):
    """The burn-in and first-stage paths the solver draws (same keys, see PathCursor)."""
    cursor = PathCursor(problem, M, seed, BURN, float_dtype(), cache)
    xb, yb = cursor.burn()
    xs, ys = cursor.take(CS)
    return np.concatenate([xb, xs]), np.concatenate([yb, ys])


def direct_drift(problem, h0, kernel, z_eval, xs, ys, rtrl: bool = True) -> np.ndarray:
    """``E[E(z)(Y − h(Z))]`` averaged over the last ``CS`` of the steps ``xs``, by running
    ``E_k(z) = kernel(z, Z_k) I + E_{k−1}(z) diag(ψ'(h(Z_{k−1}))) ∂_s h(Z_k)ᵀ`` at every
    evaluation point and particle (numpy; ``∂_s h`` by autodiff of ``h``; no basis)."""
    m = problem.kernel.m
    n = len(z_eval)
    E = np.zeros((n, M, m, m))
    dpsi = np.zeros((M, m))
    s = np.zeros((M, m))
    acc = np.zeros((n, m))
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda s1, x1: h0(jnp.concatenate([x1, s1])[None])[0])))
    for k in range(len(xs)):
        Z = np.concatenate([xs[k], s], 1)
        hz = np.asarray(h0(jnp.asarray(Z)))
        J = np.asarray(jac(jnp.asarray(s), jnp.asarray(xs[k])))  # [p, b, c] = ∂h_b/∂s_c
        if rtrl:
            E = np.einsum("npac,pc,pbc->npab", E, dpsi, J)
        else:
            E = np.zeros_like(E)
        E += np.asarray(kernel(z_eval, Z))[:, :, None, None] * np.eye(m)
        if k >= len(xs) - CS:
            acc += np.einsum("npab,pb->na", E, ys[k] - hz) / (M * CS)
        s_new, dpsi = (np.asarray(a) for a in psi(problem.clip, jnp.asarray(hz)))
        s = s_new if problem.memory else s
        dpsi = dpsi if problem.memory else np.zeros_like(dpsi)
    return acc


def _one_euler_step(solver, numerics, h0, z_eval) -> np.ndarray:
    """``(h_Δt − h_0)(z) / (α Δt)`` of the solver: its drift at ``h_0`` on the first stage."""
    res = solver(numerics, z_eval, [0.0, numerics.dt], h0=h0, estimate_error=False)
    return (res.h[1] - res.h[0]) / (solver.problem.alpha * numerics.dt)


def _numerics(**kw) -> LimitNumerics:
    base = dict(T=0.2, dt=0.1, M=M, chain_steps=CS, burn_in=BURN, scheme="euler", seed=0)
    return LimitNumerics(**(base | kw))


Z_EVAL = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-0.9, 0.9, 4)), -1).reshape(-1, 2)


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("representation", ["grid", "features"])
def test_rtrl_drift_equals_the_trace_recursion_with_the_basis_kernel(representation, m) -> None:
    """With ``A`` replaced by what the basis makes of it (``Σ_j A(z, z_j) φ_j(Z)`` on the grid,
    ``φ(z)·φ(Z)`` for features) and ``h = h_0`` read exactly, the solver's first Euler step is
    the trace recursion itself, burn-in included: equal up to rounding (float64, 1e-10 of
    the drift's size). This checks the bookkeeping of the m × m traces (order of
    ``diag(ψ') ∂_s hᵀ``) independently of the basis's approximation error."""
    problem = _problem(m, clip="smooth")
    h0 = _h0_linear_in_s(m)
    z_eval = np.concatenate([Z_EVAL, np.zeros((len(Z_EVAL), m - 1))], 1)
    numerics = _numerics(grid=9, n_features=16, representation=representation)
    k = problem.kernel
    dtype = float_dtype()
    if representation == "grid":
        basis = GridBasis(k, 9)
        nodes = jnp.asarray(basis.nodes(), dtype)
        A_nodes = np.asarray(ntk(k)(jnp.asarray(z_eval), nodes))

        def kernel(z, Z):
            idx, w = basis.weights(jnp.asarray(Z))
            phi = np.zeros((len(Z), basis.size))
            np.add.at(phi, (np.arange(len(Z))[:, None], np.asarray(idx)), np.asarray(w))
            return A_nodes @ phi.T
    else:
        basis = FeatureBasis(k, 16, 0)
        omega = basis.omegas(dtype)

        def kernel(z, Z):
            return np.asarray(
                basis.features(omega, jnp.asarray(z)) @ basis.features(omega, jnp.asarray(Z)).T
            )

    solver = limit_solver(problem, "jax")
    xs, ys = _paths(problem, solver._caches.paths)
    expected = direct_drift(problem, h0, kernel, z_eval, xs, ys)
    truncated = direct_drift(problem, h0, kernel, z_eval, xs, ys, rtrl=False)
    got = _one_euler_step(solver, numerics, h0, z_eval)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * scale)
    # the trace's memory term is material here, so the check has power
    assert np.abs(expected - truncated).max() > 0.05 * scale


def test_rtrl_grid_drift_converges_to_the_trace_recursion_with_the_exact_kernel() -> None:
    """Against the recursion with the exact kernel ``A`` and the exact ``∂_s h`` (no grid).
    With ``h_0`` linear in s the grid reads ``h`` and ``∂_s h`` exactly, so the error is the
    deposit's (``A`` interpolated in s, O(Δz²)): it must fall by ≥ 3 per halving of the node
    spacing (4 expected). With ``h_0`` curved in s the slope is the cell's difference
    quotient (O(Δz) pointwise, partly averaged out over particles) and the particles read
    ``h`` to O(Δz²): the error must stay small (≤ 1% of the drift on 17 and 33 nodes; the
    trace's memory term moves the drift by ≥ 5%, so the check has power)."""
    problem = _problem(1)
    solver = limit_solver(problem, "jax")
    xs, ys = _paths(problem, solver._caches.paths)
    A = ntk(problem.kernel)
    for h0, grids in ((_h0_linear_in_s(1), (9, 17, 33)), (_h0_curved, (17, 33))):
        expected = direct_drift(problem, h0, A, Z_EVAL, xs, ys)
        truncated = direct_drift(problem, h0, A, Z_EVAL, xs, ys, rtrl=False)
        scale = np.abs(expected).max()
        assert np.abs(expected - truncated).max() > 0.05 * scale
        errs = []
        for grid in grids:
            got = _one_euler_step(solver, _numerics(grid=grid, representation="grid"), h0, Z_EVAL)
            errs.append(np.abs(got - expected).max() / scale)
        if h0 is _h0_curved:
            assert max(errs) < 0.01, errs
        else:
            assert errs[1] < errs[0] / 3 and errs[2] < errs[1] / 3, errs


@pytest.mark.parametrize("representation", ["grid", "features", "nystrom"])
def test_m2_traces_have_m_by_m_blocks_per_basis_function(representation) -> None:
    problem = _problem(2)
    numerics = LimitNumerics(grid=5, n_features=8, n_inducing=8, representation=representation)
    basis = numerics.basis(problem.kernel)
    dtype = float_dtype()
    aux = basis.setup(_h0_linear_in_s(2), problem.alpha, dtype)
    state = initial_state("rtrl", basis, M, 2, dtype)
    assert state.E.shape == (M, basis.size, 2, 2) and state.dpsi.shape == (M, 2)
    xs, ys = _paths(problem, {})
    state, rho, loss = rtrl_drift(problem, basis)(aux, state.R, state, xs[:CS], ys[:CS])
    assert state.E.shape == (M, basis.size, 2, 2) and rho.shape == (basis.size, 2)
    # off-diagonal trace entries come from the coupling of the outputs through ∂_s h
    off = np.abs(np.asarray(state.E)[:, :, 0, 1]).max()
    assert off > 1e-3 * np.abs(np.asarray(state.E)).max()
    assert np.isfinite(float(loss))


def _memory_problem(d: int, m: int, clip: str, gradient: str = "rtrl", memory: bool = True):
    def f(x):
        return jnp.sin(2.0 * x[:1]) * jnp.ones(m) + 0.3 * jnp.arange(m) * x[-1]

    target = FilterTarget(0.5, f=f, m=m)
    return LimitProblem(
        AR1Chain(0.6, 0.8, d=d), target, KernelSpec(d=d, m=m), 1.0, clip, memory, gradient
    )


@pytest.mark.parametrize(
    ("d", "m", "scheme", "clip"),
    [(1, 1, "heun", "hard"), (2, 1, "euler", "smooth"), (1, 2, "heun", "smooth")],
)
def test_native_rtrl_stages_equal_the_jax_stages(d, m, scheme, clip) -> None:
    """limit_pic.c's RTRL stages against the JAX ones on the same paths (float64): the same
    h, loss, memory and Lipschitz constants up to summation order (1e-12)."""
    from rnnlimit import native

    if not native.available():
        pytest.skip(f"native kernel unavailable: {native.unavailable_reason()}")
    problem = _memory_problem(d, m, clip)
    numerics = LimitNumerics(T=0.6, dt=0.1, M=96, chain_steps=3, grid=7, burn_in=5, scheme=scheme)
    z = np.random.default_rng(0).uniform(-1, 1, (10, d + m))
    kw = dict(memory_times=[0.3], estimate_error=False, h0=_h0_linear_in_s(m) if d == 1 else None)
    a = limit_solver(problem, "native")(numerics, z, [0.0, 0.3, 0.6], **kw)
    b = limit_solver(problem, "jax")(numerics, z, [0.0, 0.3, 0.6], **kw)
    truncated = limit_solver(_memory_problem(d, m, clip, "truncated"), "jax")(
        numerics, z, [0.0, 0.3, 0.6], **kw
    )
    assert np.abs(a.h - truncated.h).max() > 1e-4  # the traces mattered
    np.testing.assert_allclose(a.h, b.h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    np.testing.assert_allclose(a.lipschitz, b.lipschitz, rtol=1e-10)
    np.testing.assert_allclose(a.memory[0.3]["s"], b.memory[0.3]["s"], atol=1e-12)


@pytest.mark.parametrize(("m", "clip"), [(1, "hard"), (2, "smooth")])
def test_native_rtrl_history_ring_overflow_spills_into_the_dense_trace(m, clip, monkeypatch):
    """With a ring of 2 deposits and 3 chain steps per stage, every stage spills deposits into
    the dense trace E (limit_pic.c's exact fallback); h must still equal the JAX stages (1e-12),
    which keep the dense trace throughout."""
    from rnnlimit import native, nativecalls

    if not native.available():
        pytest.skip(f"native kernel unavailable: {native.unavailable_reason()}")
    monkeypatch.setattr(nativecalls, "RING_CAP", 2)
    metas, run = [], nativecalls.pic_run

    def spy(*args, **kw):
        out = run(*args, **kw)
        metas.append(kw["ring_meta"].copy())
        return out

    monkeypatch.setattr(nativecalls, "pic_run", spy)
    problem = _memory_problem(1, m, clip)
    numerics = LimitNumerics(T=0.6, dt=0.1, M=64, chain_steps=3, grid=7, burn_in=5)
    z = np.random.default_rng(1).uniform(-1, 1, (10, 1 + m))
    kw = dict(estimate_error=False, h0=_h0_linear_in_s(m))
    a = limit_solver(problem, "native")(numerics, z, [0.0, 0.3, 0.6], **kw)
    b = limit_solver(problem, "jax")(numerics, z, [0.0, 0.3, 0.6], **kw)
    assert metas and all(meta[:, 1].max() <= 2 for meta in metas)
    assert any(meta[:, 2].any() for meta in metas)  # the dense trace was in use
    np.testing.assert_allclose(a.h, b.h, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("representation", "backend"),
    [("grid", "jax"), ("grid", "auto"), ("features", "jax"), ("nystrom", "jax")],
)
def test_rtrl_limit_without_memory_is_the_truncated_limit(representation, backend) -> None:
    """``memory=False``: the memory map is constant, ``∂_s`` of it is 0 and ``E_k = A(·, Z_k)``."""
    kw = dict(
        T=0.4,
        dt=0.1,
        M=64,
        chain_steps=2,
        grid=7,
        n_features=16,
        n_inducing=16,
        representation=representation,
    )
    numerics = LimitNumerics(**kw)
    z = np.random.default_rng(1).uniform(-1, 1, (8, 2))
    res = {
        g: limit_solver(_memory_problem(1, 1, "hard", g, memory=False), backend)(
            numerics, z, estimate_error=False
        )
        for g in ("rtrl", "truncated")
    }
    scale = np.abs(res["truncated"].h).max()
    assert scale > 0.05
    # the Nyström block is float32 (rnnlimit.nystrom): the two programs round it differently
    atol = 1e-6 * scale if representation == "nystrom" else 1e-12
    np.testing.assert_allclose(res["rtrl"].h, res["truncated"].h, rtol=0, atol=atol)


@pytest.mark.parametrize("backend", ["jax", "auto"])
def test_rtrl_limit_with_a_saturated_clip_is_the_truncated_limit(backend) -> None:
    """Outputs beyond the hard clip everywhere: ``ψ' = 0`` along the path, the trace forgets
    at once and the drift is the truncated one (the memory itself is on: S ≡ 1)."""

    def h0(z):
        return 3.0 + 0.5 * z[:, 1:]

    numerics = LimitNumerics(T=0.3, dt=0.1, M=64, chain_steps=2, grid=7)
    z = np.random.default_rng(2).uniform(-1, 1, (8, 2))
    kw = dict(h0=h0, estimate_error=False, memory_times=[0.3])
    res = {
        g: limit_solver(_memory_problem(1, 1, "hard", g), backend)(numerics, z, **kw)
        for g in ("rtrl", "truncated")
    }
    assert np.all(res["rtrl"].memory[0.3]["s"] == 1.0)  # saturated: ψ' = 0 throughout
    assert np.abs(res["truncated"].h[-1] - res["truncated"].h[0]).max() > 0.05
    np.testing.assert_allclose(res["rtrl"].h, res["truncated"].h, rtol=0, atol=1e-12)


def test_rtrl_error_estimate_reports_every_refinement() -> None:
    problem = _memory_problem(1, 1, "hard")
    numerics = LimitNumerics(T=0.4, dt=0.1, M=64, grid=5, chain_steps=2, burn_in=10)
    res = limit_solver(problem)(numerics, Z_EVAL, [0.2, 0.4])
    assert set(res.error) == {"dt", "M", "basis", "lag", "lag_raw", "total"}
    assert all(np.isfinite(v) for v in res.error.values()) and res.error["total"] > 0
    assert any("§4b" in note for note in res.notes)


@pytest.mark.slow
def test_rtrl_networks_are_nearer_the_rtrl_limit_and_truncated_ones_the_truncated_limit() -> None:
    """Finite networks (N = 5000, 3 seeds, α = 3 so that the two limits lie ~0.03 apart) in the
    docs/model.md §5 setting otherwise: the seed-averaged output of RTRL-trained networks is nearer
    the RTRL limit than the truncated one, and that of truncated training the other way round
    (the network fluctuation, ~0.03 per seed, is cut by √3 in the average; measured 0.4
    of the distance to the other limit, the check asks for < 0.6)."""
    from rnnlimit.chains import sample_stream
    from rnnlimit.network import NetworkSpec, init_params
    from rnnlimit.train import train

    T, alpha, N = 3.0, 3.0, 5000
    times = np.linspace(0.0, T, 16)
    g = np.linspace(-1.0, 1.0, 9)
    z = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    chain, target = AR1Chain(0.6, 1.0), FilterTarget(0.6)
    limits = {
        gr: limit_solver(LimitProblem(chain, target, KernelSpec(), alpha, gradient=gr))(
            LimitNumerics(T=T), z, times, estimate_error=False
        )
        for gr in ("rtrl", "truncated")
    }
    gap = np.sqrt(np.mean((limits["rtrl"].h - limits["truncated"].h) ** 2, axis=(1, 2))).max()
    assert gap > 0.02
    spec = NetworkSpec(N=N, d=1, m=1, beta=0.5, activation="erf", antisymmetric=True)
    outputs: dict[str, list] = {"rtrl": [], "truncated": []}
    for seed in range(3):
        key = jax.random.PRNGKey(1000 + seed)
        stream = sample_stream(chain, target, key, round(T * N), burn_in=1000, dtype=jnp.float64)
        params = init_params(spec, jax.random.PRNGKey(seed), jnp.float64)
        for gr in outputs:
            rec = train(
                spec, params, stream, alpha=alpha, gradient=gr, eval_times=times, eval_points=z
            )
            outputs[gr].append(rec.outputs)
    for gr, other in (("rtrl", "truncated"), ("truncated", "rtrl")):
        mean = np.mean(outputs[gr], axis=0)
        dist = {
            lim: np.sqrt(np.mean((mean - limits[lim].h) ** 2, axis=(1, 2))).max()
            for lim in (gr, other)
        }
        assert dist[gr] < 0.6 * dist[other], (gr, dist)


def test_rtrl_traces_beyond_the_memory_budget_are_refused_before_any_work() -> None:
    """d = 1, m = 2 on 17³ nodes: the traces of the base and the refined solves (33³ nodes,
    2M, ...) would take ~4 GiB, over TRACE_BUDGET_BYTES: a ParameterError naming the grid,
    raised by the plan (no solve started); without the refinements the base fits."""
    from rnnlimit.errors import ParameterError
    from rnnlimit.limit import TRACE_BUDGET_BYTES

    solver = limit_solver(_memory_problem(1, 2, "hard"))
    with pytest.raises(ParameterError, match=r"^grid:.*GiB"):
        solver.plan(LimitNumerics(), True)
    (base,) = solver.plan(LimitNumerics(), False)
    assert base.numerics.M * base.basis.size * 4 * 8 < TRACE_BUDGET_BYTES
