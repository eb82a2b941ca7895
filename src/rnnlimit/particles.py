"""The particles of the limit solve (docs/model.md §4): M independent copies of a chain and its
target (:mod:`rnnlimit.chains`), advanced in lock-step.

:func:`init_particles` starts them, :func:`advance_particles` observes ``(X_k, Y_k)`` of every
copy and steps every chain once, and :func:`particle_paths` runs ``n`` such steps in one
``lax.scan`` (all of a step's randomness drawn in one batch when the chain allows it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnlimit.chains import Chain, Target, _dtype, _target_step
from rnnlimit.errors import check_int

Array = jax.Array


class Particles(NamedTuple):
    """M independent copies of the chain: chain state and target state, each with leading M."""

    state: Any
    r: Array


def init_particles(chain: Chain, target: Target, key: Array, M: int, dtype: Any) -> Particles:
    """M independent copies, each started by ``chain.init`` with its own key."""
    check_int("M", M, 2)
    dt = _dtype(dtype)
    states = jax.vmap(chain.init)(jax.random.split(key, M))
    if jnp.issubdtype(states.dtype, jnp.floating):
        states = states.astype(dt)
    return Particles(states, jnp.broadcast_to(target.init(dt), (M, *target.init(dt).shape)))


def _observe(chain: Chain, target: Target, particles: Particles) -> tuple[Array, Array, Array]:
    """``X_k`` and ``Y_k`` of every copy: the new target states, ``x (M, d)``, ``y (M, m)``."""

    def one(state: Any, r: Array) -> tuple[Array, Array, Array]:
        x = chain.observe(state).astype(r.dtype)
        r, y = _target_step(target, r, x, state)
        return r, x, y

    return jax.vmap(one)(particles.state, particles.r)


def advance_particles(
    chain: Chain, target: Target, particles: Particles, key: Array
) -> tuple[Particles, Array, Array]:
    """Observe ``(X_k, Y_k)`` of every copy, then step every chain once (lock-step, jit-able).

    Returns the new particles and ``x`` of shape ``(M, d)``, ``y`` of shape ``(M, m)``.
    """
    M = particles.r.shape[0]
    r, x, y = _observe(chain, target, particles)
    if hasattr(chain, "step_many"):  # one batched random draw instead of M keyed ones
        state = chain.step_many(key, particles.state)
    else:
        state = jax.vmap(chain.step)(jax.random.split(key, M), particles.state)
    return Particles(state, r), x, y


def particle_paths(
    chain: Chain, target: Target, particles: Particles, keys: Array
) -> tuple[Particles, Array, Array]:
    """Run the M copies through one chain step per key (step ``k`` uses ``keys[k]``).

    Returns the particles after the last step and the observations ``X (n, M, d)``,
    ``Y (n, M, m)`` — exactly what ``n`` calls of :func:`advance_particles` give. When the chain
    separates its randomness (``draw``/``step_with``), all ``n`` draws are made in one batch
    before the (then cheap) sequential recursion; otherwise every step draws its own.
    """
    if not hasattr(chain, "draw"):

        def plain(p: Particles, key: Array) -> tuple[Particles, tuple[Array, Array]]:
            p, x, y = advance_particles(chain, target, p, key)
            return p, (x, y)

        particles, (xs, ys) = jax.lax.scan(plain, particles, keys)
        return particles, xs, ys
    noise = jax.vmap(lambda k: chain.draw(k, particles.state))(keys)

    def body(p: Particles, xi: Array) -> tuple[Particles, tuple[Array, Array]]:
        r, x, y = _observe(chain, target, p)
        return Particles(chain.step_with(p.state, xi), r), (x, y)

    particles, (xs, ys) = jax.lax.scan(body, particles, noise)
    return particles, xs, ys
