"""A Monte Carlo estimate of the kernel ``A``, with standard errors (docs/model.md §4).

An independent route to the closed forms, the table and the quadrature of
:mod:`rnnlimit.kernels`: sample ``ω^k = (w, b, u) ~ N(0, diag(σ_w² I_d, σ_b² I_m, σ_u²))`` and
average ``σ(ω·ẑ)σ(ω·ẑ') + σ'(ω·ẑ)σ'(ω·ẑ')(ẑ·ẑ')`` over ``k``, with ``ẑ = (x, s, 1)``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from rnnlimit.activations import activation as activation_pair
from rnnlimit.errors import check_choice, check_int
from rnnlimit.kernelspec import (
    PARTS,
    Array,
    KernelSpec,
    Part,
    common_dtype,
    points,
    prior_variances,
)

_HIGHEST = jax.lax.Precision.HIGHEST


def monte_carlo(
    spec: KernelSpec,
    z1: Array,
    z2: Array | None,
    key: Array,
    n_samples: int,
    *,
    part: Part = "both",
) -> tuple[Array, Array]:
    """Monte Carlo estimate of ``A(z1_i, z2_j)`` and its standard error, both ``(n1, n2)``.

    Draws ``ω^k = (w, b, u) ~ N(0, diag(σ_w² I_d, σ_b² I_m, σ_u²))``, ``k = 1..n_samples``, and
    averages ``σ(ω·ẑ)σ(ω·ẑ') + σ'(ω·ẑ)σ'(ω·ẑ')(ẑ·ẑ')``. ``c`` enters ``A`` only through
    ``E[c cᵀ] = I``, which is used exactly rather than sampled. Memory O(n_samples·(n1+n2)).
    """
    check_choice("part", part, PARTS)
    check_int("n_samples", n_samples, 2)
    a, _ = points("z1", z1, spec)
    b, _ = points("z2", z1 if z2 is None else z2, spec)
    a, b = common_dtype(a, b)
    xi = _standard_normals(key, n_samples, spec.d + spec.m + 1, a.dtype)
    means, stderrs = _monte_carlo(spec, a, b, xi)
    return means[PARTS.index(part)], stderrs[PARTS.index(part)]


@partial(jax.jit, static_argnums=(1, 2, 3))
def _standard_normals(key: Array, n: int, dim: int, dtype: jnp.dtype) -> Array:
    """``ξ ~ N(0, I)``, shape ``(n, dim)``; jitted apart from the spec: compiled once per shape."""
    return jax.random.normal(key, (n, dim), dtype)


@partial(jax.jit, static_argnums=0)
def _monte_carlo(spec: KernelSpec, z1: Array, z2: Array, xi: Array) -> tuple[Array, Array]:
    """All three parts at once (one compilation), stacked in the order of ``PARTS``."""
    n = xi.shape[0]
    sigma, sigma_prime = activation_pair(spec.activation)
    omega = jnp.sqrt(prior_variances(spec, z1.dtype)) * xi[:, :-1]
    u = spec.sigma_u * xi[:, -1]
    pre1 = jnp.matmul(z1, omega.T, precision=_HIGHEST) + u
    pre2 = jnp.matmul(z2, omega.T, precision=_HIGHEST) + u
    avg = lambda p, q: jnp.matmul(p, q.T, precision=_HIGHEST) / n  # noqa: E731
    f1, f2, p1, p2 = sigma(pre1), sigma(pre2), sigma_prime(pre1), sigma_prime(pre2)
    zdot = jnp.matmul(z1, z2.T, precision=_HIGHEST) + 1.0
    # mean and second moment of the per-sample value, each a sum of feature products
    nngp, nngp2 = avg(f1, f2), avg(f1 * f1, f2 * f2)
    grad, grad2 = avg(p1, p2) * zdot, avg(p1 * p1, p2 * p2) * zdot**2
    cross = avg(f1 * p1, f2 * p2) * zdot
    mean = jnp.stack([nngp + grad, nngp, grad])
    second = jnp.stack([nngp2 + 2.0 * cross + grad2, nngp2, grad2])
    variance = jnp.maximum(second - mean * mean, 0.0) * (n / (n - 1))
    return mean, jnp.sqrt(variance / n)
