"""The limit solver against the closed form of the linear (memory-free) case, and bad input."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from rnnlimit.chains import AR1Chain, FilterTarget, FiniteChain, memoryless_target, stationary_law
from rnnlimit.errors import ContractionError, ParameterError
from rnnlimit.kernels import ntk
from rnnlimit.kernelspec import KernelSpec
from rnnlimit.limit import LimitNumerics, LimitProblem, limit_solver

P3 = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]])
V3 = np.array([-1.0, -0.5, 0.5])  # grid nodes (17 and 9 per axis): the deposit is exact there
ALPHA = 1.0


def _f(x):
    return jnp.sin(2.0 * x)


def closed_form(kernel: KernelSpec, z: np.ndarray, times: np.ndarray):
    """Memory off on a finite chain: ``u' = α K D_μ (f − u)`` on the support, solved by the
    eigendecomposition of ``D^½ K D^½``; off the support ``h_t(z) = α A(z, ·) D_μ ∫(f − u)``."""
    mu = stationary_law(FiniteChain(P3, V3))
    supp = np.stack([V3, np.zeros(3)], 1)
    A = ntk(kernel)
    K = np.asarray(A(jnp.asarray(supp)))
    f = np.sin(2 * V3)
    Dh = np.sqrt(mu)
    lam, Q = np.linalg.eigh(Dh[:, None] * K * Dh[None, :])
    c = Q.T @ (Dh * f)
    h, loss = [], []
    for t in times:
        decay = np.exp(-ALPHA * lam * t)
        integral = Q @ (c * (1 - decay) / (ALPHA * lam))  # D^½ ∫_0^t (f − u)
        h.append(ALPHA * np.asarray(A(jnp.asarray(z), jnp.asarray(supp))) @ (Dh * integral))
        resid = Q @ (c * decay) / Dh  # f − u_t on the support
        loss.append(0.5 * np.sum(mu * resid**2))
    return np.stack(h)[:, :, None], np.asarray(loss)


def _eval_grid() -> np.ndarray:
    g = np.linspace(-1, 1, 9)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


@pytest.mark.parametrize(("representation", "M"), [("grid", 2048), ("features", 512)])
def test_memory_free_limit_matches_closed_form_within_reported_error(
    representation: str, M: int
) -> None:
    kernel = KernelSpec()
    problem = LimitProblem(FiniteChain(P3, V3), memoryless_target(_f), kernel, ALPHA, memory=False)
    numerics = LimitNumerics(
        T=2.0, dt=0.2, M=M, chain_steps=4, representation=representation, n_features=128
    )
    z = _eval_grid()
    res = limit_solver(problem)(numerics, z, np.linspace(0, 2.0, 11))
    exact, _ = closed_form(kernel, z, res.times)
    err = np.sqrt(np.mean((res.h - exact) ** 2, axis=(1, 2))).max()
    # the estimate (Δt/2, 2M, finer basis) is itself noisy: allow 3 of it
    assert err <= 3.0 * res.error["total"], (err, res.error)
    assert res.error["total"] < 0.03  # and it is small, so the check has power
    assert np.abs(exact).max() > 0.3  # the solution moved away from h_0 = 0


def test_memory_free_limit_loss_follows_closed_form() -> None:
    kernel = KernelSpec()
    problem = LimitProblem(FiniteChain(P3, V3), memoryless_target(_f), kernel, ALPHA, memory=False)
    res = limit_solver(problem)(
        LimitNumerics(T=2.0, dt=0.05, M=4096), _eval_grid()[:3], estimate_error=False
    )
    _, loss = closed_form(kernel, _eval_grid()[:1], res.loss_t)
    # Heun's first stage sees h_{t_n}: the loss is sampled there, from M·chain_steps particles
    # of a 3-state chain (relative sampling error ~ 1/sqrt(M) ≈ 2%)
    np.testing.assert_allclose(res.loss, loss, rtol=0.06, atol=2e-3)
    assert loss[-1] < 0.5 * loss[0]


def test_heun_is_second_order_in_dt_on_the_linear_problem() -> None:
    kernel = KernelSpec()
    problem = LimitProblem(FiniteChain(P3, V3), memoryless_target(_f), kernel, 3.0, memory=False)
    solver = limit_solver(problem)
    z = _eval_grid()
    errs = {}
    for scheme in ("euler", "heun"):
        # with common random numbers the Δt and Δt/2 solves share the particle noise, so the
        # reported "dt" component isolates the time-stepping error
        numerics = LimitNumerics(T=1.0, dt=0.1, M=256, grid=9, chain_steps=4, scheme=scheme)
        res = solver(numerics, z, [1.0], estimate_error=["dt"])
        errs[scheme] = res.error["dt"]
    assert errs["heun"] < 0.25 * errs["euler"], errs


def test_memory_law_samples_and_lipschitz_are_reported() -> None:
    problem = LimitProblem(AR1Chain(0.6, 1.0), FilterTarget(0.6), KernelSpec())
    res = limit_solver(problem)(
        LimitNumerics(T=1.0, dt=0.1, M=512),
        _eval_grid(),
        [0.0, 1.0],
        memory_times=[1.0],
        estimate_error=False,
    )
    assert list(res.memory) == pytest.approx([1.0])
    sample = next(iter(res.memory.values()))
    assert sample["s"].shape == (512, 1) and np.all(np.abs(sample["s"]) <= 1)
    assert res.lipschitz[0] == 0.0 and 0.0 < res.lipschitz[1] < 1.0
    np.testing.assert_allclose(res.h_at(_eval_grid(), 1), res.h[1], atol=1e-12)


def test_activation_without_closed_form_uses_the_kernel_table_and_says_so() -> None:
    problem = LimitProblem(
        FiniteChain(P3, V3), memoryless_target(_f), KernelSpec(activation="tanh"), memory=False
    )
    res = limit_solver(problem)(
        LimitNumerics(T=0.2, dt=0.1, M=64, grid=5), _eval_grid()[:2], estimate_error=False
    )
    assert res.kernel_method == "table"
    assert any("tabulated quadrature" in note for note in res.notes)


def test_non_contractive_memory_is_refused_unless_forced() -> None:
    problem = LimitProblem(AR1Chain(0.6, 1.0), FilterTarget(0.6), KernelSpec())
    solver = limit_solver(problem)
    numerics = LimitNumerics(T=0.2, dt=0.1, M=64, grid=5)

    def h0(z):
        return 3.0 * z[:, 1:]  # s ↦ clip(3 s): Lipschitz 3

    with pytest.raises(ContractionError, match="force=True"):
        solver(numerics, _eval_grid()[:2], h0=h0, estimate_error=False)
    res = solver(numerics, _eval_grid()[:2], h0=h0, force=True, estimate_error=False)
    assert res.lipschitz[0] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"T": 0.0}, "T"), ({"T": 1.0, "dt": 1.0}, "dt"), ({"M": 1}, "M"), ({"grid": 2}, "grid")],
)
def test_bad_numerics_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ParameterError, match=rf"^{name}:"):
        LimitNumerics(**kwargs)


def test_empty_evaluation_set_is_refused() -> None:
    problem = LimitProblem(AR1Chain(), FilterTarget(), KernelSpec())
    with pytest.raises(ParameterError, match=r"^eval_points:"):
        limit_solver(problem)(LimitNumerics(T=1.0, dt=0.1), np.zeros((0, 2)))
    with pytest.raises(ParameterError, match=r"^times:"):
        limit_solver(problem)(LimitNumerics(T=1.0, dt=0.1), np.zeros((1, 2)), [2.0])


def test_same_seed_same_result_with_the_error_estimate_solved_side_by_side() -> None:
    problem = LimitProblem(AR1Chain(0.6, 1.0), FilterTarget(0.6), KernelSpec())
    numerics = LimitNumerics(T=0.4, dt=0.1, M=128, grid=5, chain_steps=2)
    a = limit_solver(problem)(numerics, _eval_grid(), [0.2, 0.4])
    b = limit_solver(problem)(numerics, _eval_grid(), [0.2, 0.4])
    np.testing.assert_array_equal(a.h, b.h)
    assert a.error == b.error and set(a.error) == {"dt", "M", "basis", "lag", "lag_raw", "total"}


def _memory_problem(d: int, m: int, clip: str = "hard") -> LimitProblem:
    """A problem with the memory on: AR(1) inputs in R^d, a filtered target in R^m."""

    def f(x):
        return jnp.sin(2.0 * x[:1]) * jnp.ones(m) + 0.3 * jnp.arange(m) * x[-1]

    target = FilterTarget(0.5, f=f, m=m) if (d, m) != (1, 1) else FilterTarget(0.5)
    kernel = KernelSpec(d=d, m=m)
    return LimitProblem(AR1Chain(0.6, 0.8, d=d), target, kernel, alpha=1.0, clip=clip)


@pytest.mark.parametrize(
    ("d", "m", "scheme", "clip"),
    [(1, 1, "heun", "hard"), (2, 1, "euler", "smooth"), (1, 2, "heun", "hard")],
)
def test_native_grid_stages_equal_the_jax_stages(d: int, m: int, scheme: str, clip: str) -> None:
    """The C stages (limit_pic.c) against the JAX stages on the same paths: the same h, loss,
    memory samples and Lipschitz constants up to summation order (float64, 1e-12)."""
    from rnnlimit import native

    if not native.available():
        pytest.skip(f"native kernel unavailable: {native.unavailable_reason()}")
    problem = _memory_problem(d, m, clip)
    numerics = LimitNumerics(T=0.6, dt=0.1, M=96, chain_steps=3, grid=7, burn_in=5, scheme=scheme)
    z = np.random.default_rng(0).uniform(-1, 1, (10, d + m))
    kw = dict(memory_times=[0.3], estimate_error=False)
    a = limit_solver(problem, "native")(numerics, z, [0.0, 0.3, 0.6], **kw)
    b = limit_solver(problem, "jax")(numerics, z, [0.0, 0.3, 0.6], **kw)
    assert np.abs(a.h).max() > 1e-3  # something happened
    np.testing.assert_allclose(a.h, b.h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    np.testing.assert_allclose(a.lipschitz, b.lipschitz, rtol=1e-10)
    np.testing.assert_allclose(a.memory[0.3]["s"], b.memory[0.3]["s"], atol=1e-12)
    np.testing.assert_array_equal(a.memory[0.3]["x"], b.memory[0.3]["x"])


def test_shared_paths_give_the_solve_alone() -> None:
    """Solves with the same M and seed read one shared path store; the base solve must be the
    same as when it draws its own paths segment by segment (and the dt solve sees its noise)."""
    problem = _memory_problem(1, 1)
    numerics = LimitNumerics(T=0.6, dt=0.1, M=64, chain_steps=2, grid=9, burn_in=4)
    z = _eval_grid()
    solver = limit_solver(problem)
    alone = solver(numerics, z, estimate_error=False, memory_times=[0.6])
    shared = solver(numerics, z, estimate_error=["dt", "basis"], memory_times=[0.6])
    np.testing.assert_allclose(shared.h, alone.h, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(shared.memory[0.6]["x"], alone.memory[0.6]["x"])
    np.testing.assert_array_equal(shared.memory[0.6]["s"], alone.memory[0.6]["s"])
    half = solver(LimitNumerics(T=0.6, dt=0.05, M=64, chain_steps=1, grid=9, burn_in=4), z,
                  estimate_error=False)  # fmt: skip
    expected = np.sqrt(np.mean((alone.h - half.h[::2]) ** 2, axis=(1, 2))).max()
    assert shared.error["dt"] == pytest.approx(expected, rel=1e-12)


def test_native_backend_where_it_cannot_run_names_the_backend() -> None:
    problem = _memory_problem(1, 1)
    numerics = LimitNumerics(T=0.2, dt=0.1, M=8, chain_steps=1, representation="features")
    with pytest.raises(ParameterError, match="backend"):
        limit_solver(problem, "native")(numerics, _eval_grid(), estimate_error=False)
    with pytest.raises(ParameterError, match="backend"):
        limit_solver(problem, "gpu")


def test_unknown_gradient_mode_names_the_parameter() -> None:
    with pytest.raises(ParameterError, match=r"^gradient:"):
        LimitProblem(AR1Chain(), FilterTarget(), KernelSpec(), gradient="bptt")  # type: ignore[arg-type]


def test_dt_beyond_the_stability_bound_is_refused_naming_dt_and_the_bound() -> None:
    """α = 900 (allowed by the config) with dt = 0.05: refused before any step; at 0.9 of the
    bound it quoted, the same problem runs and stays bounded (|h| within the targets' scale)."""
    problem = LimitProblem(AR1Chain(0.6, 1.0), FilterTarget(0.6), KernelSpec(), alpha=900.0)
    solver = limit_solver(problem)
    small = dict(M=64, grid=5, chain_steps=1, burn_in=5)
    with pytest.raises(ParameterError, match=r"^dt: must be <= ") as info:
        solver(LimitNumerics(T=1.0, dt=0.05, **small), _eval_grid(), estimate_error=False)
    bound = float(str(info.value).split("<= ")[1].split(" ")[0])
    assert 0.0 < bound < 0.05
    res = solver(
        LimitNumerics(T=10 * bound, dt=0.9 * bound, **small), _eval_grid(), estimate_error=False
    )
    assert np.all(np.isfinite(res.h)) and np.abs(res.h).max() < 2.0


def test_a_runaway_limit_stops_with_a_divergence_error_keeping_its_record(monkeypatch) -> None:
    """Without the stability check (as before it existed) α = 900 and dt = 0.05 blow up; the
    solver stops once |h| passes H_MAX, instead of running on to 1e151."""
    from rnnlimit import limitsolve
    from rnnlimit.errors import DivergenceError

    monkeypatch.setattr(limitsolve, "check_stability", lambda *args: None)
    problem = LimitProblem(AR1Chain(0.6, 1.0), FilterTarget(0.6), KernelSpec(), alpha=900.0)
    numerics = LimitNumerics(T=1.0, dt=0.05, M=64, grid=5, chain_steps=1, burn_in=5)
    with pytest.raises(DivergenceError, match="grew beyond") as info:
        limit_solver(problem)(numerics, _eval_grid(), np.linspace(0, 1, 21), estimate_error=False)
    assert 0 < info.value.step < 20
    record = info.value.record
    assert record["h"].shape[0] == record["times"].size >= 1 and np.all(np.isfinite(record["h"]))


def test_dt_refinement_is_compared_at_the_base_solve_record_times() -> None:
    """Record times off the Δt grid (31 times on [0, 2], Δt = 0.05) are snapped to the base
    grid for every solve: the Δt error then equals the one measured at on-grid times, instead
    of the change of h between two different times (~1e-2 before the snapping)."""
    problem = LimitProblem(AR1Chain(0.6, 1.0), FilterTarget(0.6), KernelSpec())
    numerics = LimitNumerics(T=2.0, dt=0.05, M=256, grid=9)
    solver = limit_solver(problem)
    off_grid = solver(numerics, _eval_grid(), estimate_error=("dt",))
    assert np.allclose(off_grid.times / 0.05, np.round(off_grid.times / 0.05))
    on_grid = solver(numerics, _eval_grid(), off_grid.times, estimate_error=("dt",))
    assert off_grid.error["dt"] == pytest.approx(on_grid.error["dt"], rel=1e-9)
    # Heun's O(Δt²) error at Δt = 0.05 is ~1e-5 here; a time mismatch of Δt/2 would be ~1e-2
    assert off_grid.error["dt"] < 1e-3
