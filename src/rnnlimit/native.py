"""The optional native kernels (``_native/*.c``, one shared library loaded with ctypes), and the
one place that decides between them and JAX (:func:`decide`).

* ``train``: the online SGD trainer of :mod:`rnnlimit.train` (``fused_train.c``), float64, both
  gradients (truncated and RTRL), any ``d, m ≤ MAX_DM``;
* ``limit``: the grid stages of the limit solver (``limit_pic.c``), float64,
  ``d + m ≤ PIC_MAX_D``, ``m ≤ PIC_MAX_M``;
* ``seq``: the sequence kernel's feature scan (``seq_features.c``), float32.

The library is built by ``pip install`` as an optional extension (``setup.py``); when the
compiler was missing, or ``RNNLIMIT_NATIVE=0`` is set, :func:`available` is false and every
caller uses its JAX path. Loading the library and checking its ABI version and compiled size
limits is :mod:`rnnlimit.nativelib`; the calls into the kernels on numpy arrays are
:mod:`rnnlimit.nativecalls`. This module needs only numpy.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from rnnlimit.nativelib import (
    ACTIVATIONS,
    DISABLED,
    MAX_DM,
    PIC_MAX_D,
    PIC_MAX_M,
    disabled,
    library,
    load,
)

#: Smallest N for which ``threads=0`` (auto) uses 2 threads; measured (benchmarks/RESULTS.md).
THREADS_MIN_N = 4096
#: The kernels :func:`decide` knows, with the dtype each computes in.
KERNEL_DTYPES = {"train": "float64", "limit": "float64", "seq": "float32"}


def available() -> bool:
    """Whether the native kernel is built, loads, and is not disabled by ``RNNLIMIT_NATIVE=0``."""
    return not disabled() and load()[0] is not None


def unavailable_reason() -> str:
    """Why :func:`available` is false (empty string when it is true)."""
    if disabled():
        return DISABLED
    return load()[1]


def max_dm() -> int:
    """Largest input dimension d and output dimension m the native trainer accepts."""
    return MAX_DM


def _jax_platform() -> str:
    import jax  # only when a caller did not say: this module otherwise needs only numpy

    return jax.default_backend()


def decide(
    kernel: Literal["train", "limit", "seq"],
    *,
    backend: str = "auto",
    dtype: Any,
    d: int,
    m: int,
    activation: str | None = None,
    grid: bool = True,
    platform: str | None = None,
) -> tuple[bool, str]:
    """Whether ``kernel`` runs natively, and why not (``(True, '')`` when it does).

    The same rules, in this order, for every kernel; the first that fails is the reason:

    1. ``backend="jax"`` asks for JAX;
    2. ``RNNLIMIT_NATIVE=0`` disables the native kernels;
    3. the library is built, loads, and its ABI version and size limits match this module;
    4. the dtype is the kernel's (:data:`KERNEL_DTYPES`: float64 for ``train`` and ``limit``,
       float32 for ``seq``);
    5. the sizes fit: ``train``: ``d, m ≤ MAX_DM``; ``limit``: ``d + m ≤ PIC_MAX_D``,
       ``m ≤ PIC_MAX_M`` and the grid basis (``grid``); ``seq``: any;
    6. the activation (when the kernel takes one) is erf, tanh or relu;
    7. with ``backend="auto"`` only: JAX computes on the CPU (``platform``, default
       ``jax.default_backend()``). With an accelerator the JAX path runs there; an explicit
       ``backend="native"`` still runs the C kernel on the host.

    Never raises for a failed rule: :func:`choose` turns a failure under ``backend="native"``
    into an error.
    """
    if kernel not in KERNEL_DTYPES:
        raise ValueError(f"kernel must be one of {tuple(KERNEL_DTYPES)}, got {kernel!r}")
    if backend == "jax":
        return False, "backend='jax' was asked for"
    if not available():
        return False, f"the native kernels are unavailable ({unavailable_reason()})"
    want = KERNEL_DTYPES[kernel]
    if np.dtype(dtype) != np.dtype(want):
        return (
            False,
            f"the native {kernel} kernel computes in {want} only, got {np.dtype(dtype).name}",
        )
    if kernel == "train" and max(d, m) > MAX_DM:
        return False, f"the native train kernel needs d, m <= {MAX_DM}, got d={d}, m={m}"
    if kernel == "limit" and not grid:
        return False, "the native limit kernel handles the grid basis only"
    if kernel == "limit" and (d + m > PIC_MAX_D or m > PIC_MAX_M):
        return False, (
            f"the native limit kernel needs d + m <= {PIC_MAX_D} and m <= {PIC_MAX_M}, "
            f"got d={d}, m={m}"
        )
    if activation is not None and activation not in ACTIVATIONS:
        return False, f"activation {activation!r} is not in the native {kernel} kernel"
    if backend == "auto":
        plat = _jax_platform() if platform is None else platform
        if plat != "cpu":
            return False, f"JAX computes on {plat} (the native kernels run on the CPU)"
    return True, ""


def choose(kernel: Literal["train", "limit", "seq"], *, backend: str = "auto", **kw: Any) -> bool:
    """:func:`decide`'s answer; with ``backend="native"`` a failed rule raises
    :class:`rnnlimit.errors.ParameterError` naming ``backend`` and the reason."""
    from rnnlimit.errors import ParameterError, check_choice

    check_choice("backend", backend, ("auto", "native", "jax"))
    use, why = decide(kernel, backend=backend, **kw)
    if not use and backend == "native":
        raise ParameterError("backend", f"'native' cannot run here: {why}")
    return use


def resolve_threads(threads: int, N: int) -> int:
    """Threads the kernel uses for ``N`` units: 1 or 2.

    ``threads`` 1 or 2 forces that many; 0 (auto) means 2 when ``N >= THREADS_MIN_N`` and
    ``os.cpu_count() >= 2``, else 1. The environment variable ``RNNLIMIT_NATIVE_THREADS``
    (0, 1 or 2) overrides the argument. 2 falls back to 1 when the kernel was built without
    thread support.
    """
    env = os.environ.get("RNNLIMIT_NATIVE_THREADS", "").strip()
    if env:
        try:
            threads = int(env)
        except ValueError:
            raise ValueError(f"RNNLIMIT_NATIVE_THREADS must be 0, 1 or 2, got {env!r}") from None
    if threads not in (0, 1, 2):
        raise ValueError(f"threads must be 0 (auto), 1 or 2, got {threads!r}")
    if threads == 0:
        threads = 2 if N >= THREADS_MIN_N and (os.cpu_count() or 1) >= 2 else 1
    if threads == 2 and not library().rnnlimit_threads_supported():
        threads = 1
    return threads
