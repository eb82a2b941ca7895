"""Activations σ of docs/model.md §2 with their derivatives σ'.

``erf`` is the default (smooth, bounded, closed-form kernel); ``tanh`` is smooth and bounded
(its kernel needs quadrature); ``relu`` is unbounded but has a closed-form kernel (Cho & Saul).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax.numpy as jnp
from jax.scipy.special import erf

from rnnlimit.errors import check_choice

ActivationName = Literal["erf", "tanh", "relu"]
ACTIVATIONS: tuple[str, ...] = ("erf", "tanh", "relu")
_TWO_OVER_SQRT_PI = 1.1283791670955126

Array = jnp.ndarray


def _erf_prime(a: Array) -> Array:
    return _TWO_OVER_SQRT_PI * jnp.exp(-a * a)


def _tanh_prime(a: Array) -> Array:
    t = jnp.tanh(a)
    return 1.0 - t * t


def _relu(a: Array) -> Array:
    return jnp.maximum(a, 0.0)


def _relu_prime(a: Array) -> Array:
    return (a > 0).astype(a.dtype)


_TABLE: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array], float]] = {
    "erf": (erf, _erf_prime, _TWO_OVER_SQRT_PI),
    "tanh": (jnp.tanh, _tanh_prime, 1.0),
    "relu": (_relu, _relu_prime, 1.0),
}


def activation(name: str) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """Return ``(σ, σ')`` for ``name`` in ``ACTIVATIONS``."""
    check_choice("activation", name, ACTIVATIONS)
    sigma, sigma_prime, _ = _TABLE[name]
    return sigma, sigma_prime


def sup_derivative(name: str) -> float:
    """``sup |σ'|`` (2/√π for erf, 1 for tanh and relu), used in contraction checks."""
    check_choice("activation", name, ACTIVATIONS)
    return _TABLE[name][2]


CLIPS: tuple[str, ...] = ("hard", "smooth")


def psi(clip: str, g: Array) -> tuple[Array, Array]:
    """The memory clip ``(ψ(g), ψ'(g))``: ``hard`` clips into ``[-1, 1]``, ``smooth`` is ``tanh``.

    ``ψ'`` of the hard clip is 1 inside ``(-1, 1)`` and 0 outside (its a.e. derivative).
    """
    if clip == "hard":
        return jnp.clip(g, -1.0, 1.0), (jnp.abs(g) < 1.0).astype(g.dtype)
    t = jnp.tanh(g)
    return t, 1.0 - t * t
