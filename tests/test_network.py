"""The hand-written gradients of rnnlimit.network against JAX autodiff (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlimit.errors import ParameterError
from rnnlimit.network import (
    NetworkSpec,
    Params,
    clip_memory,
    empirical_ntk,
    init_params,
    output,
    output_and_gradients,
    output_batch,
    rtrl_update,
    truncated_update,
    zero_sensitivity,
)

shapes = st.tuples(
    st.integers(2, 12).map(lambda n: 2 * n),  # N (even, for antisymmetric draws)
    st.integers(1, 3),  # d
    st.integers(1, 3),  # m
    st.sampled_from(["erf", "tanh"]),
    st.sampled_from(["rademacher", "gaussian"]),
    st.integers(0, 2**31 - 1),
)


def _setup(N: int, d: int, m: int, act: str, c_init: str, seed: int, clip: str = "smooth"):
    spec = NetworkSpec(
        N=N, d=d, m=m, beta=0.5, activation=act, c_init=c_init, antisymmetric=False, clip=clip
    )
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = init_params(spec, k1, jnp.float64)
    xs = jax.random.uniform(k2, (8, d), jnp.float64, -1.0, 1.0)
    ys = jax.random.uniform(k3, (8, m), jnp.float64, -1.0, 1.0)
    return spec, params, xs, ys


def _max_diff(a: Params, b: Params) -> float:
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


@settings(max_examples=5, deadline=None)
@given(shapes)
def test_parameter_gradient_matches_jacrev(shape) -> None:
    spec, params, xs, _ = _setup(*shape)
    s = jnp.tanh(xs[1, :1]) * jnp.ones(spec.m)

    @jax.jit
    def both(params: Params, x: jax.Array, s: jax.Array) -> tuple:
        jac = jax.jacrev(lambda p: output(spec, p, x, s))(params)
        ds_auto = jax.jacfwd(lambda s_: output(spec, params, x, s_))(s)
        return output_and_gradients(spec, params, x, s), output(spec, params, x, s), jac, ds_auto

    (g, grads, ds), g_ref, jac, ds_auto = both(params, xs[0], s)
    np.testing.assert_allclose(g, g_ref, atol=1e-14)
    assert _max_diff(grads, jac) < 1e-12  # float64 round-off on O(1) sums of N terms
    np.testing.assert_allclose(ds, ds_auto, atol=1e-12)


@settings(max_examples=5, deadline=None)
@given(shapes)
def test_truncated_update_is_minus_eta_grad_of_loss_with_stopped_memory(shape) -> None:
    spec, params, xs, ys = _setup(*shape)
    s = 0.3 * jnp.ones(spec.m)
    eta = 0.37

    def loss(p: Params) -> jax.Array:
        g = output(spec, p, xs[0], jax.lax.stop_gradient(s))
        return 0.5 * jnp.sum((ys[0] - g) ** 2)

    grad = jax.jit(jax.grad(loss))(params)
    expected = jax.tree_util.tree_map(lambda p, gr: p - eta * gr, params, grad)
    new, g = jax.jit(lambda p: truncated_update(spec, p, xs[0], s, ys[0], eta))(params)
    assert _max_diff(new, expected) < 1e-12
    np.testing.assert_allclose(g, output(spec, params, xs[0], s), atol=1e-14)


def _unrolled_memory(spec: NetworkSpec, params: Params, xs: jax.Array) -> jax.Array:
    """``S_K`` from ``S_0 = 0`` at fixed θ: ``S_{k+1} = ψ(g(X_k, S_k; θ))``, unrolled."""

    def step(s: jax.Array, x: jax.Array) -> tuple[jax.Array, None]:
        return clip_memory(spec, output(spec, params, x, s))[0], None

    return jax.lax.scan(step, jnp.zeros(spec.m, xs.dtype), xs, unroll=True)[0]


@pytest.mark.parametrize("clip", ["smooth", "hard"])
@settings(max_examples=4, deadline=None)
@given(shapes)
def test_rtrl_sensitivity_matches_jacfwd_through_unrolled_memory(clip: str, shape) -> None:
    spec, params, xs, ys = _setup(*shape, clip=clip)

    @jax.jit
    def both(params: Params) -> tuple[Params, Params, Params]:
        def step(carry: tuple, xy: tuple) -> tuple:
            p, J, s = carry
            p, J, g = rtrl_update(spec, p, J, xy[0], s, xy[1], 0.0)
            return (p, J, clip_memory(spec, g)[0]), None

        init = (params, zero_sensitivity(spec, params), jnp.zeros(spec.m))
        (same, J, _), _ = jax.lax.scan(step, init, (xs, ys))
        # J_K = dS_K/dθ by forward-mode autodiff through the whole recursion
        return same, J, jax.jacfwd(lambda p: _unrolled_memory(spec, p, xs))(params)

    same, J, jac = both(params)
    assert _max_diff(same, params) == 0.0  # η = 0 keeps θ fixed
    assert _max_diff(J, jac) < 1e-10  # float64: 8 chained steps of O(1) Jacobians


@settings(max_examples=4, deadline=None)
@given(shapes)
def test_rtrl_update_uses_total_derivative_through_memory(shape) -> None:
    spec, params, xs, ys = _setup(*shape)
    K, eta = 5, 0.05

    @jax.jit
    def both(params: Params) -> tuple[Params, jax.Array, Params]:
        J, s = zero_sensitivity(spec, params), jnp.zeros(spec.m)
        for k in range(K):
            _, J, g = rtrl_update(spec, params, J, xs[k], s, ys[k], 0.0)
            s = clip_memory(spec, g)[0]
        new, _, g = rtrl_update(spec, params, J, xs[K], s, ys[K], eta)

        def total(p: Params) -> jax.Array:  # ĝ_K as a function of θ through every S_k
            return output(spec, p, xs[K], _unrolled_memory(spec, p, xs[:K]))

        return new, g, jax.jacfwd(total)(params)

    new, g, D = both(params)
    e = ys[K] - g
    expected = jax.tree_util.tree_map(lambda p, d: p + eta * jnp.tensordot(e, d, axes=1), params, D)
    assert _max_diff(new, expected) < 1e-10


def test_antisymmetric_initialisation_gives_zero_output() -> None:
    spec = NetworkSpec(N=64, d=2, m=2, antisymmetric=True)
    params = init_params(spec, jax.random.PRNGKey(3), jnp.float64)
    z = jax.random.uniform(jax.random.PRNGKey(4), (50, 4), jnp.float64, -1, 1)
    assert float(jnp.max(jnp.abs(output_batch(spec, params, z)))) < 1e-14


def test_output_batch_matches_pointwise_output_with_blocking() -> None:
    spec = NetworkSpec(N=40, d=2, m=3, antisymmetric=False)
    params = init_params(spec, jax.random.PRNGKey(0), jnp.float64)
    z = jax.random.uniform(jax.random.PRNGKey(1), (37, 5), jnp.float64, -1, 1)
    pointwise = jnp.stack([output(spec, params, zi[:2], zi[2:]) for zi in z])
    np.testing.assert_allclose(output_batch(spec, params, z, block=8), pointwise, atol=1e-13)


def test_empirical_ntk_matches_jacrev_definition() -> None:
    spec = NetworkSpec(N=30, d=1, m=2, antisymmetric=False)
    params = init_params(spec, jax.random.PRNGKey(0), jnp.float64)
    z = jax.random.uniform(jax.random.PRNGKey(1), (4, 3), jnp.float64, -1, 1)

    def jac(zi: jax.Array) -> jax.Array:
        j = jax.jacrev(lambda p: output(spec, p, zi[:1], zi[1:]))(params)
        return jnp.concatenate([a.reshape(spec.m, -1) for a in jax.tree_util.tree_leaves(j)], 1)

    J = jnp.stack([jac(zi) for zi in z])  # (n, m, P)
    np.testing.assert_allclose(
        empirical_ntk(spec, params, z, z), jnp.einsum("ajp,bkp->abjk", J, J), atol=1e-12
    )


def test_initialisation_laws() -> None:
    spec = NetworkSpec(
        N=200_000, d=1, m=1, sigma_w=0.5, sigma_b=2.0, sigma_u=1.5, antisymmetric=False
    )
    p = init_params(spec, jax.random.PRNGKey(0), jnp.float64)
    assert set(np.unique(np.asarray(p.c))) == {-1.0, 1.0}
    # sample std of 2e5 Gaussians: relative error ~ 1/sqrt(2·2e5) ≈ 0.0016; allow 5x
    for arr, sd in ((p.w, 0.5), (p.b, 2.0), (p.u, 1.5)):
        assert abs(float(jnp.std(arr)) / sd - 1) < 0.008


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"N": 10, "beta": 1.0}, "beta"),
        ({"N": 10, "beta": 0.4}, "beta"),
        ({"N": 0}, "N"),
        ({"N": 11, "antisymmetric": True}, "N"),
        ({"N": 10, "activation": "gelu"}, "activation"),
        ({"N": 10, "sigma_w": -1.0}, "sigma_w"),
        ({"N": 10, "clip": "soft"}, "clip"),
    ],
)
def test_bad_network_parameters_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ParameterError, match=rf"^{name}:"):
        NetworkSpec(**kwargs)
