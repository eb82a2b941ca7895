"""The law of a diagonal unit's parameters ``ω = (w, b, u)`` (docs/model.md §6) and its sampling.

A diagonal unit ``H_k = σ(w·X_k + b H_{k-1} + u)`` is a contraction of the input history when
``sup|b|·sup|σ'| < 1``; the sequence kernel is an expectation over ``ω`` (``E_ω[H H'] +
E_ω[∇_ω H·∇_ω H']``), estimated with ``P`` samples drawn here (Monte Carlo, or scrambled Sobol
points mapped by inverse CDFs). Both the feature scans (:mod:`rnnlimit.seqfeatures`) and the
kernels (:mod:`rnnlimit.seqkernel`) import this module; it imports neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm, qmc

from rnnlimit.activations import ACTIVATIONS, sup_derivative
from rnnlimit.errors import ParameterError, check_choice, check_int, check_range

Array = jax.Array
B_LAWS: tuple[str, ...] = ("uniform", "logtime")
METHODS: tuple[str, ...] = ("mc", "qmc")
DTYPES: tuple[str, ...] = ("float32", "float64")


def check_contraction(b_max: float, activation_name: str) -> None:
    """Refuse ``sup|b|·sup|σ'| ≥ 1``: then ``H = σ(w·x + b H∘shift + u)`` may not contract."""
    check_choice("activation", activation_name, ACTIVATIONS)
    lip = sup_derivative(activation_name)
    if not (0.0 <= b_max and b_max * lip < 1.0):
        raise ParameterError(
            "b_max",
            f"must satisfy 0 <= b_max and b_max * sup|σ'| < 1 (sup|σ'| = {lip:.4g} for "
            f"{activation_name}), i.e. b_max in [0, {1.0 / lip:.4g}), got {b_max!r}",
        )


def check_dtype(dtype: str) -> None:
    """Refuse an unknown dtype, and float64 while JAX runs in 32-bit mode."""
    check_choice("dtype", dtype, DTYPES)
    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise ParameterError(
            "dtype",
            "float64 needs jax_enable_x64=True; use 'float32' or "
            "enable it with jax.config.update('jax_enable_x64', True)",
        )


@dataclass(frozen=True)
class OmegaLaw:
    """Law of ``ω = (w, b, u)``: ``w ~ N(0, σ_w² I_d)``, ``u ~ N(0, σ_u²)``, bounded ``b``.

    ``b_law="uniform"``: ``b ~ U(-b_max, b_max)``. ``b_law="logtime"``: ``b = ±b_max(1 - τ^{-1})``
    with ``τ`` log-uniform on ``[1, tau_max]`` (memory time scales spread over decades).
    """

    sigma_w: float = 1.0
    sigma_u: float = 1.0
    b_max: float = 0.8
    b_law: str = "uniform"
    tau_max: float = 100.0
    activation: str = "erf"

    def __post_init__(self) -> None:
        check_range("sigma_w", self.sigma_w, 0.0)
        check_range("sigma_u", self.sigma_u, 0.0)
        check_choice("b_law", self.b_law, B_LAWS)
        check_range("tau_max", self.tau_max, 1.0)
        check_contraction(float(self.b_max), self.activation)

    def transform(self, uniforms: np.ndarray, dim_in: int) -> tuple[np.ndarray, ...]:
        """Map points of ``(0,1)^{d+2}`` (columns: w, b, u) to ``(w, b, u)`` by inverse CDFs."""
        v = np.clip(uniforms, 1e-12, 1.0 - 1e-12)
        w = self.sigma_w * norm.ppf(v[:, :dim_in])
        s = 2.0 * v[:, dim_in] - 1.0
        if self.b_law == "uniform":
            b = self.b_max * s
        else:
            b = np.sign(s) * self.b_max * (1.0 - self.tau_max ** (-np.abs(s)))
        u = self.sigma_u * norm.ppf(v[:, dim_in + 1])
        return w, b, u


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Omega:
    """``P`` samples of ω: ``w`` (P, d), ``b`` (P,), ``u`` (P,)."""

    w: Array
    b: Array
    u: Array

    def __getitem__(self, sl: slice) -> Omega:
        return Omega(self.w[sl], self.b[sl], self.u[sl])


def sample_omega(
    key: Array,
    n_theta: int,
    dim_in: int,
    law: OmegaLaw,
    *,
    method: str = "mc",
    n_batches: int = 1,
    dtype: str = "float64",
) -> Omega:
    """Draw ``n_theta`` samples of ω in ``n_batches`` independent groups (consecutive slices).

    ``method="mc"``: i.i.d. draws from ``key``. ``method="qmc"``: each group is an independently
    scrambled Sobol set (seeded from ``key``) of ``n_theta / n_batches`` points in ``(0,1)^{d+2}``
    mapped by ``law.transform``; a power-of-two group size keeps the Sobol balance.
    """
    check_int("n_theta", n_theta, 1)
    check_int("dim_in", dim_in, 1)
    check_int("n_batches", n_batches, 1, n_theta)
    check_choice("method", method, METHODS)
    check_dtype(dtype)
    if n_theta % n_batches:
        raise ParameterError("n_batches", f"must divide n_theta={n_theta}, got {n_batches}")
    if method == "mc":
        bits = np.asarray(jax.random.bits(key, (n_theta, dim_in + 2), dtype=jnp.uint32))
        v = (bits.astype(np.float64) + 0.5) / 2.0**32
    else:
        seeds = np.asarray(jax.random.randint(key, (n_batches,), 0, 2**31 - 1))
        m = n_theta // n_batches
        groups = []
        for s in seeds:
            sob = qmc.Sobol(d=dim_in + 2, scramble=True, seed=int(s))
            groups.append(
                sob.random_base2(int(math.log2(m))) if m & (m - 1) == 0 else sob.random(m)
            )
        v = np.concatenate(groups)
    w, b, u = law.transform(v.astype(np.float64), dim_in)
    dt = jnp.dtype(dtype)
    return Omega(jnp.asarray(w, dt), jnp.asarray(b, dt), jnp.asarray(u, dt))
