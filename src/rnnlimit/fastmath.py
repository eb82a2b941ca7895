"""Activations and their derivatives evaluated together, for the trainer's inner loop.

The trainer needs ``σ(a)`` and ``σ'(a)`` at every unit and every step. For ``erf`` in float64,
XLA's ``erf`` and the ``exp`` of ``σ'(a) = 2/√π e^{-a²}`` are two separate costly evaluations;
here they share ``e^{-a²}``: with ``t = a²``::

    erf(a) = a T(t) / U(t)                       |a| < 1
    erf(a) = sign(a) (1 − e^{-t} P(|a|) / Q(|a|))  |a| ≥ 1   (|a| clamped at 8 inside P/Q)

with the Cephes ``ndtr.c`` coefficients (the same rational functions scipy and XLA use), so the
result agrees with ``jax.scipy.special.erf`` to a few ulps (checked in the tests). Float32 keeps
XLA's single-precision ``erf`` (a cheap polynomial, no ``exp``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jax.scipy.special import erf

Array = jnp.ndarray

TWO_OVER_SQRT_PI = 1.1283791670955126

# erfc(x) e^{x²} ≈ P(x)/Q(x) on [1, 8]; Q monic (leading 1 omitted)
_P = (
    2.46196981473530512524e-10,
    5.64189564831068821977e-1,
    7.46321056442269912687e0,
    4.86371970985681366614e1,
    1.96520832956077098242e2,
    5.26445194995477358631e2,
    9.34528527171957607540e2,
    1.02755188689515710272e3,
    5.57535335369399327526e2,
)
_Q = (
    1.32281951154744992508e1,
    8.67072140885989742329e1,
    3.54937778887819891062e2,
    9.75708501743205489753e2,
    1.82390916687909736289e3,
    2.24633760818710981792e3,
    1.65666309194161350182e3,
    5.57535340817727675546e2,
)
# erf(x) ≈ x T(x²)/U(x²) on [0, 1]; U monic (leading 1 omitted)
_T = (
    9.60497373987051638749e0,
    9.00260197203842689217e1,
    2.23200534594684319226e3,
    7.00332514112805075473e3,
    5.55923013010394962768e4,
)
_U = (
    3.35617141647503099647e1,
    5.21357949780152679795e2,
    4.59432382970980127987e3,
    2.26290000613890934246e4,
    4.92673942608635921086e4,
)


def _horner(coef: tuple[float, ...], x: Array, monic: bool = False) -> Array:
    r = x + coef[0] if monic else coef[0] * x + coef[1]
    for a in coef[1:] if monic else coef[2:]:
        r = r * x + a
    return r


def erf_and_derivative(a: Array) -> tuple[Array, Array]:
    """``(erf(a), 2/√π e^{-a²})`` sharing one ``exp`` in float64 (see the module docstring)."""
    t = a * a
    ex = jnp.exp(-t)
    if a.dtype != jnp.float64:
        return erf(a), TWO_OVER_SQRT_PI * ex
    ax = jnp.abs(a)
    small = ax < 1.0
    xl = jnp.minimum(ax, 8.0)
    # one division serves both branches
    num = jnp.where(small, a * _horner(_T, t), ex * _horner(_P, xl))
    den = jnp.where(small, _horner(_U, t, monic=True), _horner(_Q, xl, monic=True))
    r = num / den
    return jnp.where(small, r, jnp.copysign(1.0 - r, a)), TWO_OVER_SQRT_PI * ex


def _tanh_and_derivative(a: Array) -> tuple[Array, Array]:
    h = jnp.tanh(a)
    return h, 1.0 - h * h


def _relu_and_derivative(a: Array) -> tuple[Array, Array]:
    return jnp.maximum(a, 0.0), (a > 0).astype(a.dtype)


_JOINT: dict[str, Callable[[Array], tuple[Array, Array]]] = {
    "erf": erf_and_derivative,
    "tanh": _tanh_and_derivative,
    "relu": _relu_and_derivative,
}


def activation_and_derivative(name: str) -> Callable[[Array], tuple[Array, Array]]:
    """``a ↦ (σ(a), σ'(a))`` for an activation name of :mod:`rnnlimit.activations`."""
    return _JOINT[name]
