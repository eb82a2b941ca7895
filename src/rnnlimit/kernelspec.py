"""The parameters of the kernel ``A`` and of its inputs (docs/model.md §4).

One hidden unit's input weights are ``ω = (w, b, u) ~ N(0, diag(σ_w² I_d, σ_b² I_m, σ_u²))``
and ``A`` acts on points ``z = (x, s) ∈ R^d × R^m``. :class:`KernelSpec` holds the activation
σ, the prior scales ``σ_w, σ_b, σ_u``, the dimensions ``d, m`` and the evaluation route;
:func:`prior_variances` is the diagonal ``(σ_w² 1_d, σ_b² 1_m)`` of the prior covariance of
``(w, b)``, and :func:`points` the one check of a point set ``z (n, d+m)``. Evaluating ``A``
is :mod:`rnnlimit.kernels`; its Monte Carlo estimate :mod:`rnnlimit.kernelmc`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from rnnlimit.activations import ACTIVATIONS
from rnnlimit.errors import ParameterError, check_choice, check_int, check_range

Array = jax.Array
Part = Literal["both", "nngp", "grad"]
PARTS: tuple[str, ...] = ("both", "nngp", "grad")
METHODS: tuple[str, ...] = ("closed", "table", "quadrature", "auto")
CLOSED_FORM_ACTIVATIONS: tuple[str, ...] = ("erf", "relu")
QUADRATURE_RULES: tuple[str, ...] = ("trapezoid", "gauss_hermite")


@dataclass(frozen=True)
class KernelSpec:
    """Parameters of ``A``: activation σ, prior scales ``σ_w, σ_b, σ_u``, dimensions ``d, m``.

    ``method`` is ``"closed"`` (erf, relu only), ``"quadrature"`` (any σ: a 2-D product rule,
    ``quadrature_order ≤ 360`` nodes per axis, ``quadrature_rule`` "trapezoid" or
    "gauss_hermite"), ``"table"`` (any smooth σ: the quadrature tabulated once over
    :attr:`a_range` and interpolated, error ≤ 1e-10 in float64; see :mod:`rnnlimit.kerneltable`)
    or ``"auto"`` (closed form when one exists, else the table; see :attr:`method_used`).
    ``sigma_b = 0`` is allowed: it switches the memory off. The default (trapezoid, 128 nodes) is
    accurate to ~1e-14 for erf/tanh with ``Σ(z, z) ≤ 3`` and ~1e-10 at ``Σ = 5.5``; relu's kinks
    make any such rule converge only algebraically (~1e-3), so relu should use the closed form.
    """

    activation: str = "erf"
    sigma_w: float = 1.0
    sigma_b: float = 1.0
    sigma_u: float = 1.0
    d: int = 1
    m: int = 1
    method: str = "auto"
    quadrature_order: int = 128
    quadrature_rule: str = "trapezoid"

    def __post_init__(self) -> None:
        check_choice("activation", self.activation, ACTIVATIONS)
        check_range("sigma_w", self.sigma_w, 0.0, low_open=True)
        check_range("sigma_b", self.sigma_b, 0.0)
        check_range("sigma_u", self.sigma_u, 0.0, low_open=True)
        check_int("d", self.d, 1)
        check_int("m", self.m, 1)
        check_choice("method", self.method, METHODS)
        check_int("quadrature_order", self.quadrature_order, 2, 360)
        check_choice("quadrature_rule", self.quadrature_rule, QUADRATURE_RULES)
        if self.method == "closed" and self.activation not in CLOSED_FORM_ACTIVATIONS:
            raise ParameterError(
                "method",
                f"no closed form for activation {self.activation!r} (closed forms exist for "
                f"{', '.join(CLOSED_FORM_ACTIVATIONS)}); use 'quadrature' or 'auto'",
            )

    @property
    def method_used(self) -> str:
        """``"closed"``, ``"table"`` or ``"quadrature"``: what ``method`` resolves to for this
        activation (a table that does not converge falls back to quadrature in :class:`KernelFn`,
        whose ``method_used`` is authoritative)."""
        if self.method == "auto":
            closed = self.activation in CLOSED_FORM_ACTIVATIONS
            return "closed" if closed else "table"
        return self.method

    @property
    def a_range(self) -> tuple[float, float]:
        """``(min, max)`` of ``√Σ(z, z)`` over ``z ∈ [-1, 1]^{d+m}``: ``σ_u`` and
        ``√(σ_w² d + σ_b² m + σ_u²)``, the range a kernel table covers."""
        top = self.sigma_w**2 * self.d + self.sigma_b**2 * self.m + self.sigma_u**2
        return self.sigma_u, math.sqrt(top)


def prior_variances(spec: KernelSpec, dtype: jnp.dtype) -> Array:
    """Diagonal of the prior covariance of ``(w, b)``: ``(σ_w² 1_d, σ_b² 1_m)``."""
    return jnp.concatenate(
        [jnp.full((spec.d,), spec.sigma_w**2, dtype), jnp.full((spec.m,), spec.sigma_b**2, dtype)]
    )


def points(name: str, z: object, spec: KernelSpec) -> tuple[Array, bool]:
    """Validate a point set ``z`` of shape ``(n, d+m)`` or ``(d+m,)``; return it 2-D."""
    arr = jnp.asarray(z)
    if arr.ndim not in (1, 2) or arr.shape[-1] != spec.d + spec.m:
        raise ParameterError(
            name,
            f"must have shape (n, d + m) = (n, {spec.d + spec.m}) or ({spec.d + spec.m},), "
            f"got {tuple(arr.shape)}",
        )
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return jnp.atleast_2d(arr), arr.ndim == 1


def common_dtype(z1: Array, z2: Array) -> tuple[Array, Array]:
    """``z1, z2`` cast to their common dtype."""
    dtype = jnp.result_type(z1.dtype, z2.dtype)
    return z1.astype(dtype), z2.astype(dtype)
