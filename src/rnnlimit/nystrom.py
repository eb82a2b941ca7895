"""An inducing-point (Nyström) basis for ``h_t`` in any dimension (docs/model.md §4, scheme).

With ``P`` inducing points ``c_j`` (a scrambled Sobol set in ``[-1, 1]^{d+m}``, nested: the
first ``P`` of ``2P`` points are the ``P`` points) write

    h_t(z) = h_0(z) + α Σ_j A(z, c_j) R_j(t),
    dR/dt  = (A_CC + λI)^{-1} E_{π_t}[ A(C, Z) (Y − h_t(Z)) ],      A_CC = A(c_i, c_j).

This is the ODE of docs/model.md §4 with ``A`` replaced by its Nyström approximation
``A(z, Z) ≈ A(z, C) A_CC^{-1} A(C, Z)``: the orthogonal projection of ``A(·, Z)`` onto the span
of ``A(·, c_j)`` in the kernel's own Hilbert space, exact at the inducing points, and, for a
smooth kernel on a box, fast-converging as the points fill it (the error is the power function
``A(z, z) − A(z, C) A_CC^{-1} A(C, z)``, which is what the ``basis`` refinement ``2P``
measures). In :class:`~rnnlimit.bases.Basis` terms ``A_j(z) = A(z, c_j)`` and
``φ(Z) = (A_CC + λI)^{-1} A(C, Z)``. The ridge ``λ = 1e-10 · tr(A_CC)/P`` keeps the
Cholesky factor of the (ill-conditioned) ``A_CC`` well defined; with ``jitter = 1e-10`` it
changes the approximation by far less than the sampling noise (float32 mode: ``1e-4``).

Every chain step evaluates ``A(Z, C)`` once for all ``M`` particles (``M × P`` closed-form or
tabulated kernel entries), reads ``h`` with one product and deposits with another: the
``(M, P)`` kernel block is the whole cost, with no ``(M, F·(D+2))`` feature matrix. The block
of the particles is computed in float32 (the particle average it feeds has sampling error
~1e-3, the float32 rounding ~1e-7) and summed into float64 coefficients; for erf it is
Williams' form with per-point factors ``γ(z) = (1 + 2Σ(z, z))^{-1/2}``:
``A(z, c) = (2/π) arcsin(x) + (4/π) γ(z)γ(c) (1 − x²)^{-1/2} ẑ·ĉ``, ``x = 2Σ(z, c)γ(z)γ(c)``.
What is reported (``h`` at evaluation points, the Lipschitz constant) uses float64 kernels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.stats import qmc

from rnnlimit.bases import H0, memory_slope
from rnnlimit.kernels import ntk
from rnnlimit.kernelspec import KernelSpec

Array = jax.Array
#: Ridge ``λ`` relative to the mean diagonal of ``A_CC``: float64, float32 (where an inverse
#: with condition number ``1/λ`` must stay well inside the 1e-7 rounding).
JITTER = {"float64": 1e-10, "float32": 1e-4}


def inducing_points(D: int, P: int, seed: int) -> np.ndarray:
    """The first ``P`` points of a scrambled Sobol sequence in ``[-1, 1]^D`` (``seed`` fixes
    the scrambling): nested in ``P``, and evenly spread (low discrepancy)."""
    sobol = qmc.Sobol(D, scramble=True, rng=np.random.default_rng(seed))
    with warnings.catch_warnings():  # any P is fine here: the balance of 2^k is not needed
        warnings.filterwarnings("ignore", "The balance properties", UserWarning)
        return 2.0 * sobol.random(P) - 1.0


@lru_cache(maxsize=8)
def _inverse_gram(
    kernel: KernelSpec, P: int, seed: int, jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centres and ``(A_CC + λI)^{-1}`` (float64 numpy), once per basis: the solves of one
    call share them."""
    centres = inducing_points(kernel.d + kernel.m, P, seed)
    gram = np.asarray(ntk(kernel)(centres, centres), np.float64)
    gram = 0.5 * (gram + gram.T)
    ridge = jitter * np.trace(gram) / P
    inverse = cho_solve(cho_factor(gram + ridge * np.eye(P), lower=True), np.eye(P))
    return centres, 0.5 * (inverse + inverse.T)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class NystromAux:
    """Per-solve arrays: centres ``C (P, D)``, ``(A_CC + λI)^{-1} (P, P)``, ``α``, and the
    float32 copies the particle block uses (centres, centres scaled by the prior variances,
    ``γ(c)``)."""

    centres: Array
    inverse: Array
    alpha: Array
    centres32: Array
    scaled32: Array
    gamma32: Array
    h0: H0 = field(metadata=dict(static=True))


@dataclass(frozen=True)
class NystromBasis:
    """``P = n_inducing`` Sobol inducing points; ``seed`` scrambles them."""

    kernel: KernelSpec
    n_inducing: int
    seed: int = 0
    kind: str = field(default="nystrom", init=False)

    @property
    def size(self) -> int:
        return self.n_inducing

    @property
    def note(self) -> str:
        return f"Nyström basis, {self.n_inducing} Sobol inducing points"

    def centres(self) -> np.ndarray:
        return inducing_points(self.kernel.d + self.kernel.m, self.n_inducing, self.seed)

    def _variances(self) -> np.ndarray:
        k = self.kernel
        return np.r_[[k.sigma_w**2] * k.d, [k.sigma_b**2] * k.m]

    def setup(self, h0: H0, alpha: float, dtype: Any) -> NystromAux:
        jitter = JITTER[np.dtype(dtype).name]
        centres, inverse = _inverse_gram(self.kernel, self.n_inducing, self.seed, jitter)
        scaled = centres * self._variances()
        gamma = 1.0 / np.sqrt(1.0 + 2.0 * (np.sum(centres * scaled, 1) + self.kernel.sigma_u**2))
        f32 = (jnp.asarray(v, jnp.float32) for v in (centres, scaled, gamma))
        return NystromAux(
            jnp.asarray(centres, dtype), jnp.asarray(inverse, dtype), jnp.asarray(alpha, dtype),
            *f32, h0,
        )  # fmt: skip

    def design(self, aux: NystromAux, z: Array) -> Array:
        """``A(z, c_j)``: ``(n, P)``, in the kernel's own precision."""
        return ntk(self.kernel).pair("both", z, aux.centres)

    def block(self, aux: NystromAux, z: Array) -> Array:
        """``A(Z, c_j)`` at the particles in float32 (see the module docstring)."""
        z32 = z.astype(jnp.float32)
        if self.kernel.activation != "erf":
            return ntk(self.kernel)._pair("both", z32, aux.centres32)
        var = jnp.asarray(self._variances(), jnp.float32)
        u2 = self.kernel.sigma_u**2
        gamma = jax.lax.rsqrt(1.0 + 2.0 * (jnp.sum(z32 * z32 * var, 1) + u2))
        scale = gamma[:, None] * aux.gamma32[None, :]
        x = 2.0 * (z32 @ aux.scaled32.T + u2) * scale
        zdot = z32 @ aux.centres32.T + 1.0
        grad = (4.0 / math.pi) * scale * jax.lax.rsqrt(1.0 - x * x) * zdot
        return (2.0 / math.pi) * jnp.arcsin(x) + grad

    def freeze(self, aux: NystromAux, R: Array) -> tuple[NystromAux, Array]:
        return aux, R

    def read(self, frozen: tuple[NystromAux, Array], z: Array) -> tuple[Array, Array]:
        """``h(Z)`` and the kernel block ``A(Z, C)`` (``φ`` before the inverse, which
        :meth:`deposit` applies once to the particle sum)."""
        aux, R = frozen
        block = self.block(aux, z)
        h = aux.h0(z) + aux.alpha * (block @ R.astype(jnp.float32)).astype(R.dtype)
        return h, (aux.inverse, block)

    def slope(self, frozen: tuple[NystromAux, Array], z: Array) -> Array:
        """``∂_s`` of the expansion ``h_0 + α A(z, C) R``, by forward-mode autodiff."""
        aux, R = frozen
        return memory_slope(lambda zz: self.expansion(aux, R, zz), z, self.kernel.d)

    def deposit(self, phi: tuple[Array, Array], r: Array) -> Array:
        """``Σ_p φ(Z_p) r_p = (A_CC + λI)^{-1} Σ_p A(C, Z_p) r_p``."""
        inverse, block = phi
        return inverse @ (block.T @ r.astype(jnp.float32)).astype(inverse.dtype)

    def add_to_trace(self, trace: Array, phi: tuple[Array, Array], P: Array) -> Array:
        inverse, block = phi
        return trace + (block.astype(inverse.dtype) @ inverse)[:, :, None, None] * P[:, None]

    def expansion(self, aux: NystromAux, R: Array, z: Array) -> Array:
        return aux.h0(z) + aux.alpha * self.design(aux, z) @ R

    def refined(self) -> NystromBasis:
        """Twice the inducing points (the first ``P`` are the old ones)."""
        return replace(self, n_inducing=2 * self.n_inducing)

    def stage_cost(self) -> float:
        return 0.0

    def particle_cost(self) -> float:
        """Work of a particle step against a plain one (~50 ns): the ``P`` float32 kernel
        entries of the block at ~3 ns each (scheduling only)."""
        return 1.0 + self.n_inducing / 16
