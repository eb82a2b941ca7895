"""Finite representations of the limit function ``h_t`` (MODEL.md §4, numerical scheme).

Both write ``h_t(z) = h_0(z) + α Σ_j A_j(z) R_j(t)`` with ``dR/dt = E_{π_t}[φ(Z) (Y − h_t(Z))]``:

* :class:`GridBasis` (``d + m ≤ 3``): nodes ``z_j`` of a tensor grid on ``[-1,1]^{d+m}``,
  ``A_j(z) = A(z, z_j)`` and ``φ_j`` the multilinear hat functions. Depositing a particle onto
  the grid (particle-in-cell) replaces ``A(z, Z)`` by ``Σ_j A(z, z_j) φ_j(Z)`` (error
  ``O(Δz²)``), so one step is a deposit plus one product with the fixed ``G × G`` Gram
  ``A(z_i, z_j)``; particles read ``h`` by multilinear interpolation of its node values.
* :class:`FeatureBasis` (any dimension): ``A(z, z') ≈ φ(z)·φ(z')`` with the NTK random features
  ``φ(z) = F^(-1/2) (σ(ω_f·ẑ), σ'(ω_f·ẑ) ẑ)_{f ≤ F}`` (error ``O(F^(-1/2))``), ``A_j = φ_j``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit.activations import activation
from rnnlimit.kernels import KernelSpec, gram

Array = jax.Array


@dataclass(frozen=True)
class GridBasis:
    """Tensor grid with ``n_axis`` nodes per axis on ``[-1, 1]^D``, ``D = d + m``."""

    D: int
    n_axis: int

    @property
    def size(self) -> int:
        return self.n_axis**self.D

    def nodes(self) -> np.ndarray:
        """Node coordinates ``(G, D)``, C order (last axis fastest)."""
        axes = [np.linspace(-1.0, 1.0, self.n_axis)] * self.D
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.D)

    def weights(self, z: Array) -> tuple[Array, Array]:
        """Multilinear hat functions at points ``z (M, D)``: corner indices and weights
        ``(M, 2^D)`` each; the weights of a point are ≥ 0 and sum to 1."""
        n = self.n_axis
        u = (jnp.clip(z, -1.0, 1.0) + 1.0) * (0.5 * (n - 1))
        i0 = jnp.clip(jnp.floor(u), 0, n - 2)
        f = u - i0
        i0 = i0.astype(jnp.int32)
        strides = [n ** (self.D - 1 - a) for a in range(self.D)]
        idx, wts = [], []
        for bits in itertools.product((0, 1), repeat=self.D):
            index = sum((i0[:, a] + b) * strides[a] for a, b in enumerate(bits))
            weight = jnp.prod(
                jnp.stack([f[:, a] if b else 1.0 - f[:, a] for a, b in enumerate(bits)], -1), -1
            )
            idx.append(index)
            wts.append(weight)
        return jnp.stack(idx, -1), jnp.stack(wts, -1)

    def interpolate(self, values: Array, z: Array) -> Array:
        """Multilinear interpolation of node values ``(G, m)`` at ``z (M, D)`` → ``(M, m)``."""
        idx, w = self.weights(z)
        return jnp.einsum("pc,pcj->pj", w, values[idx])

    def deposit(self, z: Array, r: Array) -> Array:
        """``Σ_p φ_j(Z_p) r_p`` for every node j (scatter-add), shape ``(G, m)``."""
        idx, w = self.weights(z)
        contrib = w[:, :, None] * r[:, None, :]
        return (
            jnp.zeros((self.size, r.shape[1]), r.dtype)
            .at[idx.reshape(-1)]
            .add(contrib.reshape(-1, r.shape[1]))
        )


def grid_gram(kernel: KernelSpec, basis: GridBasis, dtype: np.dtype) -> np.ndarray:
    """The fixed Gram ``A(z_i, z_j)`` between grid nodes (computed once per solve)."""
    return gram(kernel, jnp.asarray(basis.nodes(), dtype))


@dataclass(frozen=True)
class FeatureBasis:
    """NTK random features of ``n_features`` sampled ``ω ~ N(0, diag(σ_w², σ_b², σ_u²))``."""

    kernel: KernelSpec
    n_features: int
    seed: int = 0

    @property
    def size(self) -> int:
        return self.n_features * (self.kernel.d + self.kernel.m + 2)

    def omegas(self, dtype: np.dtype) -> Array:
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
