"""Tests of ``rnnlimit.kernels``: the NTK ``A`` of docs/model.md §4 (x64 is enabled in conftest)."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlimit.errors import ParameterError
from rnnlimit.kernelmc import monte_carlo
from rnnlimit.kernels import diag, gram, ntk, tile_shape, time_gram
from rnnlimit.kernelspec import KernelSpec
from rnnlimit.kerneltable import expectation_table, quadrature_nodes


def _points(n: int, dim: int = 2, seed: int = 0) -> np.ndarray:
    """Points uniform in ``[-1, 1]^dim``: the range of ``z = (x, s)`` in docs/model.md."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, dim))


def test_erf_closed_form_matches_quadrature() -> None:
    z1, z2 = _points(12), _points(9, seed=1)
    closed = ntk(KernelSpec("erf", 1.4, 1.4, 1.0, method="closed"))
    quad = ntk(KernelSpec("erf", 1.4, 1.4, 1.0, method="quadrature"))
    for part in ("nngp", "grad"):
        # Σ ≤ 4.9 here; the default rule resolves erf to ~1e-12 (measured), 1e-10 is the spec
        np.testing.assert_allclose(quad(z1, z2, part), closed(z1, z2, part), atol=1e-10)


def test_relu_closed_form_matches_quadrature_to_kink_limited_accuracy() -> None:
    z1, z2 = _points(10), _points(7, seed=1)
    closed = ntk(KernelSpec("relu", method="closed"))
    quad = ntk(KernelSpec("relu", method="quadrature"))
    # relu's kink makes the product rule converge algebraically: 128 nodes give ~4e-4 (measured)
    np.testing.assert_allclose(quad(z1, z2, "nngp"), closed(z1, z2, "nngp"), atol=2e-3)
    # the step σ' = 1(a > 0) converges only O(h): ~1e-2 measured, and it must not be worse
    np.testing.assert_allclose(quad(z1, z2, "grad"), closed(z1, z2, "grad"), atol=3e-2)


def test_default_quadrature_reaches_1e_10_on_tanh() -> None:
    z = _points(8)
    default = ntk(KernelSpec("tanh", method="quadrature"))
    reference = ntk(KernelSpec("tanh", quadrature_order=300, quadrature_rule="gauss_hermite"))
    # Gauss–Hermite at 300 nodes is independent of the trapezoid rule and good to ~1e-13 here
    np.testing.assert_allclose(default(z), reference(z), atol=1e-10)


def test_trapezoid_rule_beats_gauss_hermite_at_equal_order() -> None:
    z = _points(6)
    exact = ntk(KernelSpec("erf", method="closed"))(z, part="grad")
    errors = {
        rule: float(
            np.abs(
                ntk(KernelSpec("erf", method="quadrature", quadrature_rule=rule))(z, part="grad")
                - exact
            ).max()
        )
        for rule in ("trapezoid", "gauss_hermite")
    }
    # measured at 128 nodes: trapezoid ~1e-15, Gauss–Hermite ~1e-9 (it spends nodes in the tails)
    assert errors["trapezoid"] < 1e-3 * errors["gauss_hermite"]


def test_quadrature_nodes_integrate_gaussian_moments() -> None:
    for rule in ("trapezoid", "gauss_hermite"):
        nodes, weights = quadrature_nodes(rule, 64)
        moments = [float(weights @ nodes**k) for k in (0, 2, 4)]
        # E[ξ⁰, ξ², ξ⁴] = 1, 1, 3; both rules are exact to rounding for low moments
        np.testing.assert_allclose(moments, [1.0, 1.0, 3.0], rtol=1e-12)


def test_tanh_quadrature_matches_monte_carlo_within_4_standard_errors() -> None:
    spec = KernelSpec("tanh", 1.2, 0.8, 0.5, d=2, m=1)
    z1, z2 = _points(4, 3), _points(5, 3, seed=1)
    mean, stderr = monte_carlo(spec, z1, z2, jax.random.key(0), 200_000)
    # quadrature error (~1e-12) is negligible against stderr (~2e-3); 4 SE ⇒ ~6e-5 per entry
    assert np.all(np.abs(mean - ntk(spec)(z1, z2)) < 4.0 * stderr)


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_closed_form_matches_monte_carlo_within_4_standard_errors(activation: str) -> None:
    spec = KernelSpec(activation, 1.0, 1.5, 0.7, d=2, m=1)
    z1, z2 = _points(4, 3), _points(5, 3, seed=1)
    for part in ("nngp", "grad", "both"):
        mean, stderr = monte_carlo(spec, z1, z2, jax.random.key(1), 200_000, part=part)
        # the closed form is exact; 4 SE bounds MC noise with per-entry false-alarm ~6e-5
        assert np.all(np.abs(mean - ntk(spec)(z1, z2, part)) < 4.0 * stderr)


@pytest.mark.parametrize("m", [1, 2])
def test_closed_form_equals_empirical_ntk_of_a_wide_network(m: int) -> None:
    from rnnlimit.network import NetworkSpec, init_params, output

    net = NetworkSpec(
        N=4000, d=1, m=m, beta=0.5, activation="erf", sigma_w=1.0, sigma_b=1.0,
        sigma_u=1.0, c_init="rademacher", antisymmetric=False,
    )  # fmt: skip
    # jitted whole: op-by-op dispatch of init and jacobian would dominate the test's run time
    params = jax.jit(init_params, static_argnums=(0, 2))(net, jax.random.key(2), jnp.float64)
    z = jnp.asarray(_points(4, 1 + m, seed=3))

    @jax.jit
    def per_unit_ntk(p: object, zs: jax.Array) -> jax.Array:
        """``∂g_j(z_a)/∂θ^i · ∂g_k(z_b)/∂θ^i`` per unit ``i``: i.i.d. over units."""
        g = lambda q, zi: output(net, q, zi[:1], zi[1:])  # noqa: E731
        jac = jax.vmap(jax.jacrev(g), in_axes=(None, 0))(p, zs)  # leaves (n, m, N, ...)
        leaves = (x.reshape(*x.shape[:3], -1) for x in jax.tree_util.tree_leaves(jac))
        return sum(jnp.einsum("ajup,bkup->uajbk", leaf, leaf) for leaf in leaves)

    per_unit = np.asarray(per_unit_ntk(params, z))
    empirical = per_unit.sum(axis=0)
    stderr = np.sqrt(net.N) * per_unit.std(axis=0, ddof=1)  # O(N^-1/2) fluctuation of the sum
    expected = np.einsum("ab,jk->ajbk", ntk(KernelSpec("erf", d=1, m=m))(z), np.eye(m))
    # A · I_m is the N → ∞ limit; 5 SE of the i.i.d.-unit sum bounds the finite-N fluctuation
    assert np.all(np.abs(empirical - expected) <= 5.0 * stderr + 1e-12)
    assert float(stderr.max()) < 0.1  # the test has power: fluctuations are ~N^-1/2, small


@pytest.mark.parametrize("activation", ["erf", "relu", "tanh"])
def test_gram_is_symmetric_and_positive_semidefinite(activation: str) -> None:
    z = _points(200)
    k = gram(KernelSpec(activation), z)  # tanh: the tabulated kernel
    # entries are O(1) and built from the same float64 formulas: asymmetry is rounding only
    np.testing.assert_allclose(k, k.T, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(0.5 * (k + k.T))
    # eigvalsh backward error is ~n·eps·‖K‖; anything more negative would be a real defect
    assert eigenvalues.min() > -1e-10 * eigenvalues.max()


@pytest.mark.parametrize("activation", ["erf", "tanh"])
def test_tiled_gram_equals_untiled_gram(activation: str) -> None:
    spec = KernelSpec(activation, quadrature_order=16)  # accuracy is not what is tested here
    z = _points(37)
    budget = 30 * (8 * 8 if activation == "erf" else (4 * 16 + 8) * 8)  # ~30-entry tiles
    assert tile_shape(spec, 37, 23, 8, budget) < (37, 23)
    untiled = ntk(spec)(z, z)
    # tiles run the same code on padded slices: only summation-order rounding can differ
    tiled = gram(spec, z, z[:23], max_memory_bytes=budget)
    np.testing.assert_allclose(tiled, untiled[:, :23], atol=1e-13)
    np.testing.assert_allclose(gram(spec, z, max_memory_bytes=budget), untiled, atol=1e-13)


@pytest.mark.parametrize("activation", ["erf", "tanh"])
def test_tile_of_a_20000_gram_fits_the_memory_budget(activation: str) -> None:
    spec, budget = KernelSpec(activation), 64 * 2**20
    t1, t2 = tile_shape(spec, 20_000, 20_000, 8, budget)
    kernel_fn = ntk(spec)
    compiled = kernel_fn._pair.lower("both", jnp.ones((t1, 2)), jnp.ones((t2, 2))).compile()
    stats = compiled.memory_analysis()
    # what XLA itself allocates for one tile (temporaries + the tile) must stay in budget
    assert stats.temp_size_in_bytes + stats.output_size_in_bytes <= budget


def test_diag_matches_gram_diagonal() -> None:
    z = _points(30)
    for spec in (KernelSpec("erf"), KernelSpec("relu"), KernelSpec("tanh", quadrature_order=16)):
        # relu's arc-cosine angle at z = z' carries ~1e-8 rounding in the Gram, none in diag
        np.testing.assert_allclose(diag(spec, z), np.diag(ntk(spec)(z)), atol=1e-7)


def test_auto_method_uses_closed_forms_else_the_table() -> None:
    assert ntk(KernelSpec("erf")).method_used == "closed"
    assert ntk(KernelSpec("relu")).method_used == "closed"
    assert ntk(KernelSpec("tanh", method="auto")).method_used == "table"
    assert ntk(KernelSpec("erf", method="quadrature")).method_used == "quadrature"


def test_sigma_b_zero_makes_nngp_blind_to_memory() -> None:
    z = _points(5)
    z_other_memory = z.copy()
    z_other_memory[:, 1] = _points(5, 1, seed=4)[:, 0]
    kernel_fn = ntk(KernelSpec("erf", sigma_b=0.0))
    # with σ_b = 0 the pre-activation ω·ẑ does not see s; only ẑ·ẑ' in the grad part does
    np.testing.assert_allclose(kernel_fn(z, part="nngp"), kernel_fn(z_other_memory, part="nngp"))


def test_kernel_is_jittable_and_dtype_follows_inputs() -> None:
    kernel_fn = ntk(KernelSpec("erf"))
    z = _points(6)
    jitted = jax.jit(lambda a, b: kernel_fn(a, b))(jnp.asarray(z), jnp.asarray(z))
    np.testing.assert_allclose(jitted, kernel_fn(z, z), atol=1e-15)  # same XLA code, same bits
    assert kernel_fn(z).dtype == jnp.float64
    single = kernel_fn(z.astype(np.float32))
    assert single.dtype == jnp.float32
    np.testing.assert_allclose(single, kernel_fn(z), atol=1e-5)  # float32 rounding of O(1) values
    assert kernel_fn(z[0], z[1]).shape == ()
    assert kernel_fn(z[0], z).shape == (6,)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"sigma_w": 0.0}, "sigma_w"),
        ({"sigma_b": -0.1}, "sigma_b"),
        ({"sigma_u": 0.0}, "sigma_u"),
        ({"activation": "sin"}, "activation"),
        ({"activation": "tanh", "method": "closed"}, "method"),
        ({"quadrature_order": 1}, "quadrature_order"),
        ({"quadrature_rule": "simpson"}, "quadrature_rule"),
        ({"m": 0}, "m"),
    ],
)
def test_invalid_spec_raises_parameter_error_naming_the_parameter(
    kwargs: dict[str, object], parameter: str
) -> None:
    with pytest.raises(ParameterError) as info:
        KernelSpec(**kwargs)
    assert info.value.parameter == parameter


def test_wrong_point_dimension_raises_parameter_error_naming_the_argument() -> None:
    spec = KernelSpec("erf", d=2, m=1)
    good, bad = _points(3, 3), _points(3, 2)
    for call, name in (
        (lambda: ntk(spec)(bad, good), "z1"),
        (lambda: ntk(spec)(good, bad), "z2"),
        (lambda: gram(spec, good, bad), "z2"),
        (lambda: diag(spec, bad), "z"),
        (lambda: monte_carlo(spec, bad, good, jax.random.key(0), 10), "z1"),
        (lambda: ntk(spec)(good, good, part="all"), "part"),
    ):
        with pytest.raises(ParameterError) as info:
            call()
        assert info.value.parameter == name


def test_time_gram_reports_throughput() -> None:
    timing = time_gram(KernelSpec("erf"), 300, repeats=1)
    assert timing.method_used == "closed" and timing.dtype == "float64"
    assert timing.entries_per_second == pytest.approx(300**2 / timing.seconds)


# --- the tabulated kernel (rnnlimit.kerneltable) -----------------------------------------------


def _range_points(spec: KernelSpec, n: int, seed: int) -> np.ndarray:
    """Uniform points in ``[-1, 1]^{d+m}`` plus the corners and centre, where ``Σ(z, z)`` takes
    the ends of the table's range and ``ρ = ±1`` pairs occur."""
    dim = spec.d + spec.m
    corners = np.stack([np.ones(dim), -np.ones(dim), np.zeros(dim), np.r_[1.0, -np.ones(dim - 1)]])
    return np.concatenate([corners, _points(n, dim, seed)])


@pytest.mark.parametrize(
    "spec",
    [
        KernelSpec("tanh"),
        KernelSpec("tanh", 1.3, 0.7, 0.4, d=1, m=2),
        KernelSpec("tanh", d=7, m=1),  # Σ up to 9: the longest series
    ],
    ids=["d1m1", "d1m2-scales", "d7m1"],
)
def test_tanh_table_matches_quadrature_to_1e_8_across_the_range(spec: KernelSpec) -> None:
    table = ntk(spec)
    assert table.method_used == "table"
    # the reference: the trapezoid rule at 300 nodes per axis (the table is built at ~100-160
    # nodes); its error at Σ ≤ 9 is ~exp(-π²·300/(17·3)) ≈ 1e-25, far below the 1e-8 asked
    reference = ntk(replace(spec, method="quadrature", quadrature_order=300))
    z1, z2 = _range_points(spec, 24, 0), _range_points(spec, 16, 1)
    z2 = np.concatenate([z2, z1[:6]])  # exact z = z' pairs: ρ = 1
    for part in ("nngp", "grad"):
        error = np.abs(np.asarray(table(z1, z2, part)) - np.asarray(reference(z1, z2, part)))
        assert error.max() <= 1e-8, (part, error.max())
    np.testing.assert_allclose(table.diag(z1), np.diag(reference(z1)), atol=1e-8)


def test_erf_through_the_table_matches_its_closed_form() -> None:
    for d, m in ((2, 1),):
        closed = ntk(KernelSpec("erf", 1.2, 0.9, 0.8, d=d, m=m))
        table = ntk(KernelSpec("erf", 1.2, 0.9, 0.8, d=d, m=m, method="table"))
        assert table.method_used == "table"
        z1, z2 = _points(300, d + m), _points(200, d + m, seed=3)
        # Williams' arcsine formula is an independent route to the same expectations
        for part in ("nngp", "grad"):
            np.testing.assert_allclose(table(z1, z2, part), closed(z1, z2, part), atol=1e-8)


def test_table_outside_its_range_falls_back_to_quadrature() -> None:
    spec = KernelSpec("tanh")
    far = np.array([[2.5, -1.5], [0.1, 0.2]])  # Σ(z, z) = 1 + 6.25 + 2.25 > 3 = the table's top
    quadrature = ntk(replace(spec, method="quadrature"))
    np.testing.assert_allclose(ntk(spec)(far, _points(5)), quadrature(far, _points(5)), atol=1e-14)
    np.testing.assert_allclose(diag(spec, far), quadrature.diag(far), atol=1e-14)


def test_table_of_a_kinked_activation_is_refused_naming_the_method() -> None:
    # relu's kink at 0 makes the Chebyshev series converge only algebraically
    with pytest.raises(ParameterError) as info:
        ntk(KernelSpec("relu", method="table"))
    assert info.value.parameter == "method"


def test_table_coefficients_are_symmetric_and_drop_the_vanishing_parity() -> None:
    table = expectation_table("tanh", *KernelSpec("tanh").a_range)
    assert table is not None
    # tanh is odd: E[σσ] is odd in ρ and E[σ'σ'] even, so one series each
    assert [s.odd for s in table.nngp] == [True] and [s.odd for s in table.grad] == [False]
    for series in (*table.nngp, *table.grad):
        np.testing.assert_array_equal(series.coef, series.coef.transpose(1, 0, 2))


def test_table_kernel_traces_with_closed_over_points() -> None:
    """Inside a jitted caller the range check must not touch traced values (a closed-over
    concrete point set is multiplied by traced ones there) and must give the same numbers."""
    kernel_fn = ntk(KernelSpec("tanh", d=1, m=2))
    z = jnp.asarray(_points(7, 3))
    jitted = jax.jit(lambda x: kernel_fn.pair("both", x, z))(z)
    np.testing.assert_allclose(jitted, kernel_fn(z, z), atol=1e-13)
    slope = jax.jacfwd(lambda x: kernel_fn.pair("both", x[None], z)[0])(z[0])
    assert slope.shape == (7, 3) and np.all(np.isfinite(slope))
