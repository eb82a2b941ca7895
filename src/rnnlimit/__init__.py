"""rnnlimit: wide output-feedback RNNs trained online on one ergodic stream, and their limit.

See docs/model.md for the mathematics; the modules follow it: ``chains`` (§1), ``network`` and
``train`` (§2–3), ``kernels``, ``memory`` and ``limit`` (§4), ``compare`` (§5), ``diagonal`` and
``seqkernel`` (§6).
"""

from __future__ import annotations

import jax

__version__ = "0.1.0"


def enable_float64(enable: bool = True) -> None:
    """Switch JAX to 64-bit floats (``jax_enable_x64``); call before creating arrays."""
    jax.config.update("jax_enable_x64", enable)


def float_dtype() -> jax.typing.DTypeLike:
    """The float type JAX computes in now: float64 in x64 mode, else float32."""
    return jax.numpy.float64 if jax.config.jax_enable_x64 else jax.numpy.float32


__all__ = ["__version__", "enable_float64", "float_dtype"]
