"""The memory fixed point against hand-computed contractions."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from rnnlimit.errors import ContractionError, ParameterError
from rnnlimit.memory import (
    geometric_error_bound,
    lipschitz_constant,
    memory_fixed_point,
)


def linear_h(x, s):
    return 0.5 * s + 0.3 * x[:1]  # |h| <= 0.8: the hard clip never acts


def test_lipschitz_of_linear_map_is_its_slope() -> None:
    assert lipschitz_constant(linear_h, 1, 1) == pytest.approx(0.5, abs=1e-14)
    assert lipschitz_constant(lambda x, s: jnp.tanh(2 * s), 1, 1, clip="smooth") == pytest.approx(
        2.0, abs=1e-12
    )  # sup of 2·sech²(2s)·sech²(tanh 2s) is at s = 0


def test_fixed_point_of_constant_input_matches_hand_computation() -> None:
    x = 0.8
    fp = memory_fixed_point(linear_h, np.full((30, 1), x), 1)
    k = np.arange(30)
    # S_k = 0.3x (1 + 0.5 + ... + 0.5^{k-1}) = 0.6 x (1 - 0.5^k)
    np.testing.assert_allclose(fp.path[:, 0], 0.6 * x * (1 - 0.5**k), atol=1e-14)
    assert fp.lipschitz == pytest.approx(0.5)
    np.testing.assert_allclose(fp.final, 0.6 * x * (1 - 0.5**30), atol=1e-14)


def test_memory_forgets_its_start_within_the_geometric_bound() -> None:
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (40, 1))
    a = memory_fixed_point(linear_h, xs, 1, s0=[-1.0], burn_in=10)
    b = memory_fixed_point(linear_h, xs, 1, s0=[1.0], burn_in=10)
    gap = np.abs(a.path - b.path).max()
    assert gap <= a.error_bound + 1e-15
    assert gap == pytest.approx(2 * 0.5**10, rel=1e-10)  # the bound is attained by linear maps
    assert geometric_error_bound(0.5, 10, 1) == pytest.approx(2 * 0.5**10)


def test_non_contractive_memory_is_refused_unless_forced() -> None:
    def h(x, s):
        return 1.5 * s

    with pytest.raises(ContractionError, match="force=True"):
        memory_fixed_point(h, np.zeros((5, 1)), 1)
    fp = memory_fixed_point(h, np.zeros((5, 1)), 1, force=True, s0=[0.1])
    np.testing.assert_allclose(fp.path[:, 0], [0.1, 0.15, 0.225, 0.3375, 0.50625])


def test_bad_history_names_the_parameter() -> None:
    with pytest.raises(ParameterError, match=r"^xs:"):
        memory_fixed_point(linear_h, np.zeros(5), 1)
    with pytest.raises(ParameterError, match=r"^burn_in:"):
        memory_fixed_point(linear_h, np.zeros((5, 1)), 1, burn_in=5)
