"""The right-hand sides of the limit ODEs (docs/model.md §4, §4b) and the time stepping of the
solve.

A solve writes ``h_t(z) = h_0(z) + α Σ_j A_j(z) R_j(t)`` in a basis (:mod:`rnnlimit.bases`)
and carries M particles, copies of the chain ``(X, S, Y)`` (and, for RTRL, their traces) run
with ``h`` frozen at the current coefficients. A *stage* of a drift runs ``n`` chain steps of
every particle and returns the particle mean ``ρ`` of the drift's integrand: ``dR/dt ≈ ρ``.
Heun's method (``R ← R + Δt/2 (ρ(R) + ρ(R + Δt ρ(R)))``, the two stages on consecutive chain
steps) or Euler advances ``R`` (:func:`time_stepper`). The same stages run in the native grid
kernel (``_native/limit_pic.c``, :mod:`rnnlimit.limitsteps`), up to summation order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import nativecalls
from rnnlimit.activations import psi
from rnnlimit.bases import Basis

Array = jax.Array
#: ``stage(aux, R, state, X (n, M, d), Y (n, M, m)) -> (state, ρ (size, m), mean loss)``
Stage = Callable[[Any, Array, "SolveState", Array, Array], tuple["SolveState", Array, Array]]
#: ``segment(aux, state, X, Y, dt) -> (state, losses)``; ``dt = None``: a burn-in at fixed R.
Segment = Callable[[Any, "SolveState", Any, Any, Any], tuple["SolveState", Any]]


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SolveState:
    """Where a solve stands between stages.

    ``R (size, m)``: the coefficients of ``h_t``. ``S (M, m)``: each particle's memory entering
    its next chain step. RTRL only (else ``None``): ``E (M, size, m, m)``, each particle's
    trace coefficients ``e_{k−1}`` (``E_{k−1}(z) = Σ_j A_j(z) e_{k−1,j}``), and
    ``dpsi (M, m)``: ``ψ'(h_t(Z_{k−1}))``, the clip's slope at its last output. The native grid
    kernel holds ``e`` as its recent deposits, ``ring`` and ``ring_meta``
    (:func:`rnnlimit.nativecalls.ring_shape`), and uses ``E`` only as their overflow.
    """

    R: Any
    S: Any
    E: Any = None
    dpsi: Any = None
    ring: Any = None
    ring_meta: Any = None


def initial_state(
    gradient: str, basis: Basis, M: int, m: int, dtype: Any, xp: Any = jnp
) -> SolveState:
    """``R = 0``, ``S_0 = 0`` and, for RTRL, ``E = 0`` before the first step (``xp``: the array
    module, numpy for the native kernel that updates the state in place, with its ring)."""
    R, S = xp.zeros((basis.size, m), dtype), xp.zeros((M, m), dtype)
    if gradient != "rtrl":
        return SolveState(R, S)
    E, dpsi = xp.zeros((M, basis.size, m, m), dtype), xp.zeros((M, m), dtype)
    if xp is jnp:
        return SolveState(R, S, E, dpsi)
    shape = nativecalls.ring_shape(basis.kernel.d, m, M)
    return SolveState(R, S, E, dpsi, np.zeros(shape), np.zeros((M, 3), np.int64))


def trace_bytes(gradient: str, basis: Basis, M: int, m: int, itemsize: int = 8) -> int:
    """Memory of the traces of one solve: ``E`` and the native kernel's history ring (0 for
    the truncated drift)."""
    if gradient != "rtrl":
        return 0
    ring = (
        int(np.prod(nativecalls.ring_shape(basis.kernel.d, m, M))) * 8
        if basis.kind == "grid"
        else 0
    )
    return M * basis.size * m * m * itemsize + ring


def truncated_drift(problem: Any, basis: Basis, deposit: bool = True) -> Stage:
    """The drift of truncated training (docs/model.md §4)::

        ∂_t h_t(z) = α E_{π_t}[ A(z, Z) (Y − h_t(Z)) ]

    In the basis ``A(z, Z) ≈ Σ_j A_j(z) φ_j(Z)``, so ``dR/dt = E_{π_t}[φ(Z) (Y − h_t(Z))]``.
    A stage reads ``h(Z_k)`` at every particle, deposits ``φ(Z_k) r_k`` with ``r_k = Y_k − h(Z_k)``
    and moves the memory, ``S_{k+1} = ψ(h(Z_k))``; it returns ``ρ = Σ_k Σ_p φ(Z_kp) r_kp / (M n)``
    and the mean loss ``½|r|²``. ``deposit=False``: the burn-in (ρ = 0).
    """
    clip, memory = problem.clip, problem.memory

    def stage(aux: Any, R: Array, state: SolveState, xs: Array, ys: Array) -> tuple:
        frozen = basis.freeze(aux, R)

        def one(carry: tuple, xy: tuple[Array, Array]) -> tuple:
            s, rho, loss = carry
            z = jnp.concatenate([xy[0], s], 1)
            hz, phi = basis.read(frozen, z)
            r = xy[1] - hz
            if deposit:
                rho = rho + basis.deposit(phi, r)
            loss = loss + 0.5 * jnp.mean(jnp.sum(r * r, 1))
            return (psi(clip, hz)[0] if memory else s, rho, loss), None

        init = (state.S, jnp.zeros_like(R), jnp.zeros((), R.dtype))
        (s, rho, loss), _ = jax.lax.scan(one, init, (xs, ys))
        n = xs.shape[0]
        return replace(state, S=s), rho / (s.shape[0] * n), loss / n

    return stage


def rtrl_drift(problem: Any, basis: Basis, deposit: bool = True) -> Stage:
    """The drift of RTRL training (docs/model.md §4b)::

        ∂_t h_t(z) = α E_{π_t}[ E(z) (Y − h_t(Z)) ]
        E_k(z) = A(z, Z_k) + E_{k−1}(z) · diag(ψ'(h_t(Z_{k−1}))) · ∂_s h_t(Z_k)ᵀ,   E = 0 at first

    with ``π_t`` the stationary law of ``(X, S, Y, E)`` under ``h_t``. In the basis
    ``E_k(z) = Σ_j A_j(z) e_{k,j}`` with ``m × m`` coefficients per basis function::

        e_k = e_{k−1} F_k + φ(Z_k) ⊗ I_m,   F_k = diag(ψ'(h(Z_{k−1}))) ∂_s h(Z_k)ᵀ,
        dR/dt = E_{π_t}[ e_k (Y_k − h_t(Z_k)) ]

    (``∂_s h`` from :meth:`Basis.slope`). ``F_k`` contracts (``|F_k| ≤ L < 1``), so ``e``
    forgets its start geometrically, like ``S``; the burn-in runs it too. With ``ψ' ≡ 0``
    along the path, or the memory off, ``e_k = φ(Z_k) ⊗ I`` and this is :func:`truncated_drift`.

    A stage does not form ``e_k`` at every chain step. With ``h`` frozen the path ``Z_1..Z_n``
    does not depend on ``e``, so a forward pass records ``r_k = Y_k − h(Z_k)`` and ``F_k``, and
    a backward pass gathers, with ``a_n = r_n``, ``a_k = r_k + F_{k+1} a_{k+1}``,
    ``P_n = I``, ``P_{k−1} = F_k P_k``::

        Σ_k e_k r_k = Σ_k φ(Z_k) a_k + e_0 F_1 a_1,    e_n = e_0 P_0 + Σ_k φ(Z_k) ⊗ P_k

    (the same algebra, reordered): the dense ``e_0`` is touched once per stage, not per step.
    """
    clip, memory = problem.clip, problem.memory

    def stage(aux: Any, R: Array, state: SolveState, xs: Array, ys: Array) -> tuple:
        frozen = basis.freeze(aux, R)

        def forward(carry: tuple, xy: tuple[Array, Array]) -> tuple:
            s, dpsi, loss = carry
            z = jnp.concatenate([xy[0], s], 1)
            hz, _ = basis.read(frozen, z)
            J = basis.slope(frozen, z)  # [p, b, c] = ∂h_b/∂s_c at Z_k
            F = dpsi[:, :, None] * jnp.swapaxes(J, 1, 2)  # [p, c, b] = ψ'_c ∂h_b/∂s_c
            r = xy[1] - hz
            loss = loss + 0.5 * jnp.mean(jnp.sum(r * r, 1))
            if memory:
                s, dpsi = psi(clip, hz)
            return (s, dpsi, loss), (z, r, F)

        init = (state.S, state.dpsi, jnp.zeros((), R.dtype))
        (s, dpsi, loss), (zs, rs, Fs) = jax.lax.scan(forward, init, (xs, ys))
        M, m = s.shape
        eye = jnp.broadcast_to(jnp.eye(m, dtype=R.dtype), (M, m, m))

        def backward(carry: tuple, zrF: tuple[Array, Array, Array]) -> tuple:
            a, P, F_next, rho, sparse = carry
            z, r, F = zrF
            a = r + jnp.einsum("pcb,pb->pc", F_next, a)
            P = jnp.einsum("pcb,pbe->pce", F_next, P)
            _, phi = basis.read(frozen, z)
            if deposit:
                rho = rho + basis.deposit(phi, a)
            return (a, P, F, rho, basis.add_to_trace(sparse, phi, P)), None

        zero_a = jnp.zeros((M, m), R.dtype)
        init = (zero_a, eye, eye, jnp.zeros_like(R), jnp.zeros_like(state.E))
        (a, P, F, rho, sparse), _ = jax.lax.scan(backward, init, (zs, rs, Fs), reverse=True)
        if deposit:
            rho = rho + jnp.einsum("pgac,pc->ga", state.E, jnp.einsum("pcb,pb->pc", F, a))
        e = jnp.einsum("pgac,pcb->pgab", state.E, jnp.einsum("pcb,pbe->pce", F, P)) + sparse
        n = xs.shape[0]
        return SolveState(state.R, s, e, dpsi), rho / (M * n), loss / n

    return stage


DRIFTS: dict[str, Callable[..., Stage]] = {"truncated": truncated_drift, "rtrl": rtrl_drift}


def time_stepper(problem: Any, basis: Basis, chain_steps: int, heun: bool) -> Segment:
    """Jitted ``segment(aux, state, X, Y, dt) -> (state, losses)`` over ``X (n·stages·cs, M, d)``:
    ``n`` time steps of Heun or Euler on the drift of ``problem.gradient``, ``cs = chain_steps``
    chain steps per stage; ``losses (n,)`` of each step's first stage. With ``dt = None`` and
    ``X`` of the burn-in: the particles (memory, traces) after a burn-in at fixed ``R``."""
    drift = DRIFTS[problem.gradient]
    stage, burn = drift(problem, basis, True), drift(problem, basis, False)
    cs = chain_steps
    per_step = (2 if heun else 1) * cs

    def segment(aux: Any, state: SolveState, xs: Array, ys: Array, dt: Array | None) -> tuple:
        if dt is None:
            return burn(aux, state.R, state, xs, ys)[0], jnp.zeros(0, state.R.dtype)
        xs = xs.reshape(-1, per_step, *xs.shape[1:])
        ys = ys.reshape(-1, per_step, *ys.shape[1:])

        def step(state: SolveState, xy: tuple[Array, Array]) -> tuple:
            R = state.R
            state, rho1, loss = stage(aux, R, state, xy[0][:cs], xy[1][:cs])
            if heun:
                state, rho2, _ = stage(aux, R + dt * rho1, state, xy[0][cs:], xy[1][cs:])
                R = R + 0.5 * dt * (rho1 + rho2)
            else:
                R = R + dt * rho1
            return replace(state, R=R), loss

        return jax.lax.scan(step, state, (xs, ys))

    return jax.jit(segment)
