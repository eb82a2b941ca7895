"""Tests of the finite diagonal-recurrence RNN and its empirical NTK (rnnlimit.diagonal)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from rnnlimit.diagonal import empirical_ntk, init_params, predict, train_online  # noqa: E402
from rnnlimit.errors import DivergenceError, ParameterError  # noqa: E402
from rnnlimit.seqkernel import (  # noqa: E402
    OmegaLaw,
    history_features,
    sample_omega,
    sequence_kernel,
)

RNG = np.random.default_rng(1)
SEQS = [RNG.uniform(-1, 1, (n, 2)) for n in (6, 3, 8)]


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_forward_mode_features_equal_autodiff_ntk_on_same_draw(readout):
    # with Rademacher c, |c|² = 1: the empirical NTK is exactly the MC kernel on ω^{1..N}
    key = jax.random.PRNGKey(3)
    params = init_params(key, 128, 2)
    theta = empirical_ntk(params, SEQS, readout=readout)
    mc = sequence_kernel(2, key=jax.random.split(key)[0], n_theta=128, readout=readout)(SEQS)
    np.testing.assert_allclose(theta, mc, rtol=1e-10, atol=1e-12)


def test_averaged_empirical_ntk_converges_to_limit_kernel():
    limit, se = sequence_kernel(
        2, key=jax.random.PRNGKey(99), n_theta=16384, n_batches=16, method="qmc"
    )(SEQS, return_stderr=True)
    thetas = [
        np.asarray(
            empirical_ntk(init_params(jax.random.PRNGKey(s), 256, 2, c_law="gaussian"), SEQS)
        )
        for s in range(12)
    ]
    avg = np.mean(thetas, axis=0)
    se_avg = np.std(thetas, axis=0, ddof=1) / np.sqrt(len(thetas))
    z = np.abs(avg - limit) / np.sqrt(se_avg**2 + se**2)
    assert z.max() < 5.0
    assert np.abs(avg - limit).max() < 0.05 * np.abs(limit).max()


def test_per_unit_state_forgets_its_start_geometrically():
    # two streams that differ only before step 10: the states contract at rate ≤ b_max·sup|σ'|
    law = OmegaLaw(b_max=0.8)
    om = sample_omega(jax.random.PRNGKey(5), 64, 1, law)
    a = RNG.uniform(-1, 1, (60, 1))
    b = a.copy()
    b[:10] = RNG.uniform(-1, 1, (10, 1))
    fa = np.asarray(history_features(om, a, part="nngp", scale=1.0))
    fb = np.asarray(history_features(om, b, part="nngp", scale=1.0))
    gap = np.abs(fa - fb).max(axis=1)
    rho = 0.8 * 2 / np.sqrt(np.pi)
    k = np.arange(10, 60)
    assert (gap[k] <= gap[9] * rho ** (k - 9) + 1e-14).all()
    assert gap[-1] < 1e-3


def test_init_refuses_non_contracting_b():
    with pytest.raises(ParameterError, match="b_max"):
        init_params(jax.random.PRNGKey(0), 8, 1, law=OmegaLaw(b_max=0.95))


def test_antisymmetric_init_gives_zero_output():
    params = init_params(jax.random.PRNGKey(0), 64, 2, 3, antisymmetric=True)
    out = predict(params, SEQS)
    assert out.shape == (3, 3)
    np.testing.assert_allclose(out, 0.0, atol=1e-14)


@pytest.mark.parametrize("gradient", ["rtrl", "truncated"])
def test_online_training_on_a_filter_target_reduces_loss(gradient):
    x = np.clip(np.cumsum(RNG.normal(0, 0.3, 4000)) * 0.1, -1, 1)
    y = np.zeros_like(x)
    for k in range(1, len(x)):  # filter target Y_k = 0.6 Y_{k-1} + 0.4 sin(2 X_k)
        y[k] = 0.6 * y[k - 1] + 0.4 * np.sin(2 * x[k])
    params = init_params(jax.random.PRNGKey(1), 256, 1, antisymmetric=True)
    final, record = train_online(params, x, y, gradient=gradient)
    assert record["loss"][-500:].mean() < 0.3 * record["loss"][:200].mean()
    assert final.width == 256 and record["t"][-1] == pytest.approx(3999 / 256)


def test_rtrl_update_is_the_exact_gradient_of_the_unrolled_outputs():
    # with α tiny the parameters barely move, so the summed updates equal
    # η_N Σ_k (Y_k − g_k) ∇_θ g_k with ∇_θ g_k the full backprop-through-time gradient
    params = init_params(jax.random.PRNGKey(2), 16, 1)
    x = RNG.uniform(-1, 1, 12)
    y = RNG.uniform(-1, 1, 12)
    alpha, width = 1e-7, 16
    moved, rec = train_online(params, x, y, alpha=alpha, gradient="rtrl")
    err = y - rec["pred"][:, 0]
    prefixes = [x[: k + 1, None] for k in range(12)]

    def weighted_outputs(p):
        return jnp.sum(err * predict(p, prefixes)[:, 0])

    grad = jax.grad(weighted_outputs)(params)
    eta = alpha * width ** (2 * 0.5 - 2)
    for new, old, g in zip(
        jax.tree.leaves(moved), jax.tree.leaves(params), jax.tree.leaves(grad), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(new - old), eta * np.asarray(g), rtol=1e-4, atol=1e-6 * eta
        )
    truncated, _ = train_online(params, x, y, alpha=alpha, gradient="truncated")
    gap = np.abs(np.asarray(truncated.b - params.b) - eta * np.asarray(grad.b)).max()
    assert gap > 1e-2 * eta * np.abs(np.asarray(grad.b)).max()  # truncation drops the memory path


def test_divergence_raises_with_record():
    params = init_params(jax.random.PRNGKey(0), 8, 1)
    x = np.ones(200)
    with pytest.raises(DivergenceError) as info:
        train_online(params, x, 1e200 * x, alpha=1e6)
    assert len(info.value.record["loss"]) == info.value.step


def test_shapes_and_dtype_of_params():
    p = init_params(jax.random.PRNGKey(0), 10, 3, 2)
    assert (p.c.shape, p.w.shape, p.b.shape, p.u.shape) == ((10, 2), (10, 3), (10,), (10,))
    assert p.b.dtype == jnp.float64
