"""Streams of rnnlimit.chains: laws, targets, lock-step particles, diagnostics, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlimit.chains import (
    AR1Chain,
    FilterTarget,
    FiniteChain,
    LagTarget,
    StepChain,
    autocorrelation,
    effective_sample_size,
    integrated_autocorrelation_time,
    memoryless_target,
    sample_stream,
    stationary_law,
    stream_from_array,
)
from rnnlimit.errors import ParameterError, StreamError
from rnnlimit.particles import advance_particles, init_particles, particle_paths

P3 = np.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.3, 0.3, 0.4]])
V3 = np.array([-0.9, 0.1, 0.7])


def test_stationary_law_solves_balance_equations() -> None:
    mu = stationary_law(FiniteChain(P3, V3))
    np.testing.assert_allclose(mu @ P3, mu, atol=1e-14)
    assert abs(mu.sum() - 1) < 1e-14 and np.all(mu > 0)


def test_finite_chain_empirical_law_matches_stationary_law_within_error() -> None:
    chain = FiniteChain(P3, V3)
    K = 100_000
    x = np.asarray(sample_stream(chain, memoryless_target(), jax.random.PRNGKey(0), K).x[:, 0])
    mu = stationary_law(chain)
    for j, v in enumerate(V3):
        ind = (np.abs(x - v) < 1e-6).astype(float)
        # standard error of a correlated mean: sqrt(var · τ / K); 5 of them is a 1-in-1e6 miss
        se = np.sqrt(ind.var() * integrated_autocorrelation_time(ind) / K)
        assert abs(ind.mean() - mu[j]) < 5 * se


def test_filter_target_follows_its_recursion() -> None:
    s = sample_stream(AR1Chain(0.6, 0.5), FilterTarget(0.6), jax.random.PRNGKey(1), 500)
    x, y = np.asarray(s.x[:, 0], float), np.asarray(s.y[:, 0], float)
    y_prev = np.concatenate([[0.0], y[:-1]])
    np.testing.assert_allclose(y, 0.6 * y_prev + 0.4 * np.sin(2 * x), atol=1e-6)


def test_lag_target_returns_past_input() -> None:
    s = sample_stream(AR1Chain(0.3, 0.7), LagTarget(lag=3), jax.random.PRNGKey(2), 200)
    x, y = np.asarray(s.x[:, 0]), np.asarray(s.y[:, 0])
    np.testing.assert_allclose(y[3:], x[:-3], atol=0)
    np.testing.assert_allclose(y[:3], 0.0)


def test_ar1_stays_in_box_and_same_key_gives_same_stream() -> None:
    chain = AR1Chain(np.array([[0.5, 0.2], [0.0, 0.3]]), noise=1.0, d=2)
    target = memoryless_target(lambda x: jnp.tanh(x[:1] + x[1:]), m=1)
    a = sample_stream(chain, target, jax.random.PRNGKey(3), 2000, burn_in=100)
    b = sample_stream(chain, target, jax.random.PRNGKey(3), 2000, burn_in=100)
    assert a.x.shape == (2000, 2) and a.y.shape == (2000, 1)
    assert float(jnp.max(jnp.abs(a.x))) <= 1.0
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))


def test_ar1_autocorrelation_and_integrated_time_match_closed_form() -> None:
    rho = 0.6  # tiny noise: clipping never acts, so X is an exact AR(1)
    s = sample_stream(
        AR1Chain(rho, 0.05), memoryless_target(), jax.random.PRNGKey(4), 200_000, dtype=jnp.float64
    )
    x = np.asarray(s.x[:, 0])
    acf = autocorrelation(x, 5)
    # sampling error of ρ(ℓ) is ~ sqrt(τ/K) ≈ 0.0045; allow 4 of them
    np.testing.assert_allclose(acf, rho ** np.arange(6), atol=0.02)
    tau = (1 + rho) / (1 - rho)
    assert abs(integrated_autocorrelation_time(x) / tau - 1) < 0.1
    assert abs(effective_sample_size(x) - 200_000 / tau) < 0.1 * 200_000 / tau


def test_particles_advance_in_lock_step_and_reach_the_stationary_law() -> None:
    chain = FiniteChain(P3, V3, initial=np.array([1.0, 0.0, 0.0]))
    target = memoryless_target()
    parts = init_particles(chain, target, jax.random.PRNGKey(5), 20_000, jnp.float64)
    step = jax.jit(lambda p, k: advance_particles(chain, target, p, k))
    keys = jax.random.split(jax.random.PRNGKey(6), 4)
    for k in keys:
        parts, x, y = step(parts, k)
    assert x.shape == (20_000, 1) and y.shape == (20_000, 1)
    np.testing.assert_allclose(np.asarray(y[:, 0]), np.sin(2 * np.asarray(x[:, 0])), atol=1e-12)
    # after n steps (x was observed before the 4th step) the law is e_0 P^3; M = 2e4 iid copies
    law = np.linalg.matrix_power(P3, 3)[0]
    freq = np.array([np.mean(np.abs(np.asarray(x[:, 0]) - v) < 1e-9) for v in V3])
    np.testing.assert_allclose(freq, law, atol=5 * np.sqrt(0.25 / 20_000))


@pytest.mark.parametrize(
    ("chain", "target"),
    [
        (AR1Chain(0.6, 0.8), FilterTarget(0.6)),
        (FiniteChain(P3, V3), LagTarget(lag=2)),
        (StepChain(lambda key, x: 0.9 * x + 0.1 * jax.random.uniform(key, x.shape), [0.2]),
         memoryless_target()),
    ],
    ids=["ar1-batched", "finite-batched", "step-chain"],
)  # fmt: skip
def test_particle_paths_equal_repeated_advance(chain, target) -> None:
    """The batched path draw (one draw for all steps where the chain separates its noise) is
    n calls of advance_particles with the same keys: the same random numbers, so equal up to
    rounding (XLA fuses the jitted scan differently from eager steps: 1e-14)."""
    parts = init_particles(chain, target, jax.random.PRNGKey(1), 16, jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(2), 7)
    out, xs, ys = jax.jit(lambda p, k: particle_paths(chain, target, p, k))(parts, keys)
    for i, k in enumerate(keys):
        parts, x, y = advance_particles(chain, target, parts, k)
        np.testing.assert_allclose(np.asarray(xs[i]), np.asarray(x), rtol=0, atol=1e-14)
        np.testing.assert_allclose(np.asarray(ys[i]), np.asarray(y), rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(out.state), np.asarray(parts.state), rtol=0, atol=1e-14)


def test_deterministic_step_chain_particles() -> None:
    chain = StepChain(lambda key, x: 0.5 * x, x0=np.array([0.8]))
    target = memoryless_target(lambda x: x)
    parts = init_particles(chain, target, jax.random.PRNGKey(0), 3, jnp.float64)
    for k in range(4):
        parts, x, _ = advance_particles(chain, target, parts, jax.random.PRNGKey(k))
        np.testing.assert_allclose(np.asarray(x[:, 0]), 0.8 * 0.5**k)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: FiniteChain(np.array([[0.5, 0.4], [0.5, 0.5]]), np.array([0.0, 1.0])), "P"),
        (lambda: FiniteChain(np.eye(2), np.array([0.0, 1.5])), "values"),
        (lambda: FiniteChain(np.eye(2), np.array([0.0, 0.5])).init(jax.random.PRNGKey(0)), "P"),
        (lambda: AR1Chain(rho=1.0), "rho"),
        (lambda: AR1Chain(noise=-0.1), "noise"),
        (lambda: FilterTarget(a=1.0), "a"),
        (lambda: stream_from_array([0.1, np.nan], [0.0, 0.0]), "x"),
        (lambda: stream_from_array([0.1, 0.2], [0.0, 2.0]), "y"),
        (lambda: stream_from_array([0.1, 0.2], [0.0]), "y"),
        (
            lambda: init_particles(AR1Chain(), FilterTarget(), jax.random.PRNGKey(0), 1, "float32"),
            "M",
        ),
    ],
)
def test_bad_stream_input_names_the_parameter(make, name: str) -> None:
    with pytest.raises(ParameterError, match=rf"^{name}:"):
        make()


def test_recorded_stream_out_of_range_is_a_stream_error() -> None:
    with pytest.raises(StreamError, match=r"\[-1, 1\]"):
        stream_from_array([0.1, -1.2], [0.0, 0.0])
