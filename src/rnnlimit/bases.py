"""Finite representations of the limit function ``h_t`` (docs/model.md §4, numerical scheme).

Every basis writes ``h_t(z) = h_0(z) + α Σ_j A_j(z) R_j(t)`` and replaces the kernel of the
drift by ``A(z, Z) ≈ Σ_j A_j(z) φ_j(Z)``, so that ``dR/dt = E_{π_t}[φ(Z) (Y − h_t(Z))]``
(truncated, §4) or ``dR/dt = E_{π_t}[e (Y − h_t(Z))]`` with the trace coefficients ``e`` of
:mod:`rnnlimit.drift` (RTRL, §4b). What a basis must provide is the :class:`Basis` protocol:

* :class:`GridBasis` (``d + m ≤ 3``): nodes ``z_j`` of a tensor grid on ``[-1,1]^{d+m}``,
  ``A_j(z) = A(z, z_j)`` and ``φ_j`` the multilinear hat functions. Depositing a particle onto
  the grid (particle-in-cell) replaces ``A(z, Z)`` by ``Σ_j A(z, z_j) φ_j(Z)`` (error
  ``O(Δz²)``), so one step is a deposit plus one product with the fixed ``G × G`` Gram
  ``A(z_i, z_j)``; particles read ``h`` by multilinear interpolation of its node values, and
  ``∂_s h`` as the derivative of that interpolant (:meth:`GridBasis.slope`).
* :class:`FeatureBasis` (any dimension): ``A(z, z') ≈ φ(z)·φ(z')`` with the NTK random features
  ``φ(z) = F^(-1/2) (σ(ω_f·ẑ), σ'(ω_f·ẑ) ẑ)_{f ≤ F}`` (error ``O(F^(-1/2))``), ``A_j = φ_j``;
  particles read ``h`` and ``∂_s h`` from the expansion itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit.activations import activation
from rnnlimit.kernels import gram, ntk
from rnnlimit.kernelspec import KernelSpec

Array = jax.Array
H0 = Callable[[Array], Array]  # z (n, d+m) -> (n, m), jax-traceable


class Basis(Protocol):
    """What the solver needs of a representation of ``h_t`` (see the module docstring).

    ``Aux`` is a pytree fixed for one solve (the Gram, or ω), ``Frozen`` one with ``h`` frozen
    at given coefficients for one stage, ``Phi`` the weights ``φ(Z)`` of a batch of particles.
    """

    kind: str  # "grid" or "features": the representation's name in results

    @property
    def size(self) -> int:
        """Number of coefficients ``R_j`` (each in ``R^m``)."""

    @property
    def note(self) -> str:
        """One line for the result's notes."""

    def setup(self, h0: H0, alpha: float, dtype: Any) -> Any:
        """The per-solve ``Aux`` pytree."""

    def freeze(self, aux: Any, R: Array) -> Any:
        """``h`` frozen at coefficients ``R (size, m)`` for reading at particles."""

    def read(self, frozen: Any, z: Array) -> tuple[Array, Any]:
        """``h(Z) (M, m)`` and ``φ(Z)`` at particles ``z (M, d+m)``."""

    def slope(self, frozen: Any, z: Array) -> Array:
        """``∂_s h(Z)``: ``(M, m, m)``, entry ``[p, b, c] = ∂h_b/∂s_c`` at ``Z_p``."""

    def deposit(self, phi: Any, r: Array) -> Array:
        """``Σ_p φ(Z_p) r_p``, shape ``(size, m)``."""

    def add_to_trace(self, trace: Array, phi: Any, P: Array) -> Array:
        """``trace + φ(Z_p) ⊗ P_p`` for every particle: ``trace (M, size, m, m)``,
        ``P (M, m, m)``."""

    def design(self, aux: Any, z: Array) -> Array:
        """``A_j(z)`` at any points ``z (n, d+m)``: ``(n, size)``."""

    def expansion(self, aux: Any, R: Array, z: Array) -> Array:
        """``h(z) = h_0(z) + α Σ_j A_j(z) R_j`` at any points ``z (n, d+m)`` → ``(n, m)``."""

    def refined(self) -> Basis:
        """The finer basis of the error estimate (its ``basis`` refinement)."""

    def stage_cost(self) -> float:
        """Work of one stage besides the particles, in particle-step units (scheduling)."""


# --------------------------------------------------------------------------- grid


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class GridAux:
    """Per-solve arrays of a grid solve: nodes ``(G, D)``, Gram ``K (G, G)``, ``h_0`` at the
    nodes ``(G, m)``, ``α`` (``h0``, the function, is static)."""

    nodes: Array
    K: Array
    h0_nodes: Array
    alpha: Array
    h0: H0 = field(metadata=dict(static=True))


@dataclass(frozen=True)
class GridBasis:
    """Tensor grid with ``n_axis`` nodes per axis on ``[-1, 1]^D``, ``D = d + m``."""

    kernel: KernelSpec
    n_axis: int
    kind: str = field(default="grid", init=False)

    @property
    def D(self) -> int:
        return self.kernel.d + self.kernel.m

    @property
    def size(self) -> int:
        return self.n_axis**self.D

    @property
    def note(self) -> str:
        return f"grid basis {self.n_axis}^{self.D}, multilinear deposit"

    def nodes(self) -> np.ndarray:
        """Node coordinates ``(G, D)``, C order (last axis fastest)."""
        axes = [np.linspace(-1.0, 1.0, self.n_axis)] * self.D
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.D)

    def setup(self, h0: H0, alpha: float, dtype: Any) -> GridAux:
        nodes = jnp.asarray(self.nodes(), dtype)
        K = jnp.asarray(gram(self.kernel, nodes), dtype)
        h0_nodes = jnp.asarray(h0(nodes), dtype).reshape(-1, self.kernel.m)
        return GridAux(nodes, K, h0_nodes, jnp.asarray(alpha, dtype), h0)

    def freeze(self, aux: GridAux, R: Array) -> Array:
        """Node values ``h_0(z_j) + α Σ_i A(z_j, z_i) R_i``, ``(G, m)``."""
        return aux.h0_nodes + aux.alpha * aux.K @ R

    def _cell(self, z: Array) -> tuple[Array, Array]:
        """Lower corner index ``(M, D)`` and position ``f ∈ [0, 1]`` in the cell, per axis."""
        n = self.n_axis
        u = (jnp.clip(z, -1.0, 1.0) + 1.0) * (0.5 * (n - 1))
        i0 = jnp.clip(jnp.floor(u), 0, n - 2)
        return i0.astype(jnp.int32), u - i0

    def _corners(self, i0: Array) -> Array:
        strides = [self.n_axis ** (self.D - 1 - a) for a in range(self.D)]
        return jnp.stack(
            [
                sum((i0[:, a] + b) * strides[a] for a, b in enumerate(bits))
                for bits in itertools.product((0, 1), repeat=self.D)
            ],
            -1,
        )

    def _hat(self, f: Array, bits: tuple[int, ...], axis: int | None = None) -> Array:
        """The hat function of corner ``bits`` at cell positions ``f``: ``Π_e`` of ``f_e`` or
        ``1 − f_e``; with ``axis``, its derivative in that axis (the factor ``±1/Δz``)."""
        inv_dz = 0.5 * (self.n_axis - 1)
        out: Any = 1.0
        for e, b in enumerate(bits):
            if e == axis:
                out = out * (inv_dz if b else -inv_dz)
            else:
                out = out * (f[:, e] if b else 1.0 - f[:, e])
        return out * jnp.ones_like(f[:, 0])

    def weights(self, z: Array) -> tuple[Array, Array]:
        """Multilinear hat functions at points ``z (M, D)``: corner indices and weights
        ``(M, 2^D)`` each; the weights of a point are ≥ 0 and sum to 1."""
        i0, f = self._cell(z)
        corners = itertools.product((0, 1), repeat=self.D)
        return self._corners(i0), jnp.stack([self._hat(f, bits) for bits in corners], -1)

    def read(self, hgrid: Array, z: Array) -> tuple[Array, tuple[Array, Array]]:
        phi = self.weights(z)
        return jnp.einsum("pc,pcj->pj", phi[1], hgrid[phi[0]]), phi

    def interpolate(self, values: Array, z: Array) -> Array:
        """Multilinear interpolation of node values ``(G, m)`` at ``z (M, D)`` → ``(M, m)``."""
        return self.read(values, z)[0]

    def slope(self, hgrid: Array, z: Array) -> Array:
        """``∂_s`` of the multilinear interpolant: in each s axis, the difference quotient of
        the cell the point lies in (``[z_i, z_{i+1})``, the last cell at ``s = 1``), weighted
        multilinearly in the other axes. It is the exact derivative of the map the particles
        use (``S_{k+1} = ψ(interpolant)``), so the trace is the exact sensitivity of the
        discretised chain; and it costs what a read costs."""
        i0, f = self._cell(z)
        values = hgrid[self._corners(i0)]
        cols = []
        for a in range(self.kernel.d, self.D):
            dw = [self._hat(f, bits, a) for bits in itertools.product((0, 1), repeat=self.D)]
            cols.append(jnp.einsum("pc,pcj->pj", jnp.stack(dw, -1), values))
        return jnp.stack(cols, -1)

    def deposit(self, phi: tuple[Array, Array], r: Array) -> Array:
        idx, w = phi
        contrib = w[:, :, None] * r[:, None, :]
        return (
            jnp.zeros((self.size, r.shape[1]), r.dtype)
            .at[idx.reshape(-1)]
            .add(contrib.reshape(-1, r.shape[1]))
        )

    def add_to_trace(self, trace: Array, phi: tuple[Array, Array], P: Array) -> Array:
        idx, w = phi
        rows = jnp.arange(trace.shape[0])[:, None]
        return trace.at[rows, idx].add(w[:, :, None, None] * P[:, None, :, :])

    def design(self, aux: GridAux, z: Array) -> Array:
        return ntk(self.kernel).pair("both", z, aux.nodes)

    def expansion(self, aux: GridAux, R: Array, z: Array) -> Array:
        return aux.h0(z) + aux.alpha * self.design(aux, z) @ R

    def refined(self) -> GridBasis:
        """Halve the node spacing (the old nodes stay nodes)."""
        return replace(self, n_axis=2 * self.n_axis - 1)

    def stage_cost(self) -> float:
        # the node-Gram product of every stage, ~0.3 ns per entry against ~50 ns a particle step
        return self.size**2 / 160


# --------------------------------------------------------------------------- features


def memory_slope(h: Callable[[Array], Array], z: Array, d: int) -> Array:
    """``∂_s h(z)`` of a basis expansion ``h: (M, d+m) -> (M, m)`` at points ``z``, shape
    ``(M, m, m)`` (entry ``[p, i, c] = ∂h_i/∂s_c``), by forward-mode autodiff along the ``s``
    axes (the last ``m`` coordinates)."""
    m = z.shape[1] - d
    cols = [jax.jvp(h, (z,), (jnp.zeros_like(z).at[:, d + c].set(1.0),))[1] for c in range(m)]
    return jnp.stack(cols, -1)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class FeatureAux:
    """Per-solve arrays of a feature solve: ``ω (F, D+1)``, ``α`` (``h0`` is static)."""

    omega: Array
    alpha: Array
    h0: H0 = field(metadata=dict(static=True))


@dataclass(frozen=True)
class FeatureBasis:
    """NTK random features of ``n_features`` sampled ``ω ~ N(0, diag(σ_w², σ_b², σ_u²))``."""

    kernel: KernelSpec
    n_features: int
    seed: int = 0
    kind: str = field(default="features", init=False)

    @property
    def size(self) -> int:
        return self.n_features * (self.kernel.d + self.kernel.m + 2)

    @property
    def note(self) -> str:
        return f"feature basis, {self.n_features} random features"

    def omegas(self, dtype: Any) -> Array:
        k = self.kernel
        scales = np.concatenate([[k.sigma_w] * k.d, [k.sigma_b] * k.m, [k.sigma_u]])
        xi = jax.random.normal(jax.random.PRNGKey(self.seed), (self.n_features, scales.size), dtype)
        return xi * jnp.asarray(scales, dtype)

    def features(self, omega: Array, z: Array) -> Array:
        """``φ(z)`` of shape ``(M, F·(D+2))``: ``φ(z)·φ(z')`` is an unbiased estimate of A."""
        sigma, sigma_prime = activation(self.kernel.activation)
        zhat = jnp.concatenate([z, jnp.ones((z.shape[0], 1), z.dtype)], 1)
        pre = zhat @ omega.T
        grad = sigma_prime(pre)[:, :, None] * zhat[:, None, :]
        phi = jnp.concatenate([sigma(pre), grad.reshape(z.shape[0], -1)], 1)
        return phi / jnp.sqrt(self.n_features)

    def setup(self, h0: H0, alpha: float, dtype: Any) -> FeatureAux:
        return FeatureAux(self.omegas(dtype), jnp.asarray(alpha, dtype), h0)

    def freeze(self, aux: FeatureAux, R: Array) -> tuple[FeatureAux, Array]:
        return aux, R

    def read(self, frozen: tuple[FeatureAux, Array], z: Array) -> tuple[Array, Array]:
        aux, R = frozen
        phi = self.features(aux.omega, z)  # read and deposit with one φ(Z)
        return aux.h0(z) + aux.alpha * phi @ R, phi

    def slope(self, frozen: tuple[FeatureAux, Array], z: Array) -> Array:
        """``∂_s`` of the expansion ``h_0 + α φ(z) R`` itself, by forward-mode autodiff."""
        aux, R = frozen
        return memory_slope(lambda zz: self.expansion(aux, R, zz), z, self.kernel.d)

    def deposit(self, phi: Array, r: Array) -> Array:
        return phi.T @ r

    def add_to_trace(self, trace: Array, phi: Array, P: Array) -> Array:
        return trace + phi[:, :, None, None] * P[:, None, :, :]

    def design(self, aux: FeatureAux, z: Array) -> Array:
        return self.features(aux.omega, z)

    def expansion(self, aux: FeatureAux, R: Array, z: Array) -> Array:
        return aux.h0(z) + aux.alpha * self.design(aux, z) @ R

    def refined(self) -> FeatureBasis:
        """Twice the features, the same seed."""
        return replace(self, n_features=2 * self.n_features)

    def stage_cost(self) -> float:
        return 0.0


def make_basis(
    kernel: KernelSpec, representation: str, grid: int, n_features: int, seed: int
) -> Basis:
    """The basis a :class:`~rnnlimit.limit.LimitNumerics` asks for (``auto``: the grid for
    ``d + m ≤ 3``, else features)."""
    if representation == "auto":
        representation = "grid" if kernel.d + kernel.m <= 3 else "features"
    if representation == "grid":
        return GridBasis(kernel, grid)
    return FeatureBasis(kernel, n_features, seed)
