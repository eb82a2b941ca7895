"""The optional native kernels (``_native/*.c``, one shared library loaded with ctypes), and the
one place that decides between them and JAX (:func:`decide`).

* ``train``: the online SGD trainer of :mod:`rnnlimit.train` (``fused_train.c``), float64, both
  gradients (truncated and RTRL), any ``d, m ≤ MAX_DM``;
* ``limit``: the grid stages of the limit solver (``limit_pic.c``), float64,
  ``d + m ≤ PIC_MAX_D``, ``m ≤ PIC_MAX_M``;
* ``seq``: the sequence kernel's feature scan (``seq_features.c``), float32.

The library is built by ``pip install`` as an optional extension (``setup.py``); when the
compiler was missing, or ``RNNLIMIT_NATIVE=0`` is set, :func:`available` is false and every
caller uses its JAX path. The size limits are compiled into the C code (``rnnlimit_native.h``);
they are read back from the library at load time and must equal the constants here, as the ABI
version must, or the library is refused. This module needs only numpy.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

_MODULE = "rnnlimit._native.fused_train"
_ABI = 5
#: Smallest N for which ``threads=0`` (auto) uses 2 threads; measured (benchmarks/RESULTS.md).
THREADS_MIN_N = 4096
ACTIVATIONS = {"erf": 0, "tanh": 1, "relu": 2}
CLIPS = {"hard": 0, "smooth": 1}
GRADIENTS = {"truncated": 0, "rtrl": 1}
#: Largest d and m of the native trainer (``MAX_DM`` in ``rnnlimit_native.h``).
MAX_DM = 64
#: The kernels :func:`decide` knows, with the dtype each computes in.
KERNEL_DTYPES = {"train": "float64", "limit": "float64", "seq": "float32"}

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int
_DBL = ctypes.c_double


def _library_path() -> Path | None:
    """The built extension file, or None."""
    try:
        spec = importlib.util.find_spec(_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        return Path(spec.origin)
    folder = Path(__file__).with_name("_native")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"fused_train{suffix}"
        if path.is_file():
            return path
    return None


def _check_limits(lib: ctypes.CDLL) -> str:
    """'' when the library's compiled size limits equal this module's, else what differs."""
    limits = {"MAX_DM": MAX_DM, "PIC_MAX_D": PIC_MAX_D, "PIC_MAX_M": PIC_MAX_M}
    limits["LANES"] = SEQ_LANES
    lib.rnnlimit_limits.restype = None
    lib.rnnlimit_limits.argtypes = [_P]
    got = np.zeros(len(limits), np.int64)
    lib.rnnlimit_limits(got.ctypes.data)
    bad = [f"{k} = {v} (expected {want})" for (k, want), v in zip(limits.items(), got, strict=True)
           if v != want]  # fmt: skip
    return "" if not bad else "the library's size limits differ: " + ", ".join(bad)


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    path = _library_path()
    if path is None:
        return None, "the extension rnnlimit._native.fused_train is not built"
    try:
        lib = ctypes.CDLL(str(path))
        if lib.rnnlimit_abi_version() != _ABI:
            return None, f"{path.name} has ABI {lib.rnnlimit_abi_version()}, expected {_ABI}"
        why = _check_limits(lib)
    except (OSError, AttributeError) as exc:
        return None, f"cannot load {path}: {exc}"
    if why:
        return None, f"{path.name}: {why}"
    lib.rnnlimit_train.restype = _I64
    lib.rnnlimit_train.argtypes = [_I64, *[_INT] * 5, *[_P] * 6, _I64, _I64, _I64]
    lib.rnnlimit_train.argtypes += [_DBL, _DBL, _DBL, *[_P] * 5, _I64, _INT]
    lib.rnnlimit_threads_supported.restype = _INT
    lib.rnnlimit_act.restype = _INT
    lib.rnnlimit_act.argtypes = [_INT, _I64, _P, _P, _P]
    lib.rnnlimit_exp.restype = _INT
    lib.rnnlimit_exp.argtypes = [_I64, _P, _P]
    lib.rnnlimit_pic_run.restype = _INT
    lib.rnnlimit_pic_run.argtypes = [_INT, _INT, _INT, _I64, _I64, _I64, _INT, _DBL, _DBL]
    lib.rnnlimit_pic_run.argtypes += [_INT, _INT, *[_P] * 8, _INT, _P, _P, _P, _P, _I64]
    lib.rnnlimit_seq_features.restype = _INT
    lib.rnnlimit_seq_features.argtypes = [_INT, _INT, *[_I64] * 5, *[_P] * 5, _INT, _I64]
    lib.rnnlimit_seq_features.argtypes += [ctypes.c_float, _P, _P]
    lib.rnnlimit_seq_act.restype = _INT
    lib.rnnlimit_seq_act.argtypes = [_INT, _I64, _P, _P, _P]
    return lib, ""


def _disabled() -> bool:
    return os.environ.get("RNNLIMIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def available() -> bool:
    """Whether the native kernel is built, loads, and is not disabled by ``RNNLIMIT_NATIVE=0``."""
    return not _disabled() and _load()[0] is not None


def unavailable_reason() -> str:
    """Why :func:`available` is false (empty string when it is true)."""
    if _disabled():
        return "disabled by RNNLIMIT_NATIVE=0"
    return _load()[1]


def _lib() -> ctypes.CDLL:
    lib = _load()[0] if not _disabled() else None
    if lib is None:
        raise RuntimeError(f"native kernel unavailable: {unavailable_reason()}")
    return lib


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
    if threads == 2 and not _lib().rnnlimit_threads_supported():
        threads = 1
    return threads


def _c_array(a: np.ndarray, name: str, shape: tuple[int, ...], dtype: type = np.float64) -> None:
    """Refuse ``a`` unless it is a C-contiguous ``dtype`` array of ``shape`` (what C reads)."""
    if a.dtype != dtype or not a.flags.c_contiguous or a.shape != shape:
        raise ValueError(f"{name} must be C-contiguous {np.dtype(dtype).name} of shape {shape}")


def activation(name: str, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(σ(a), σ'(a))`` as the kernel computes them (float64)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    h, hp = np.empty_like(a), np.empty_like(a)
    _lib().rnnlimit_act(ACTIVATIONS[name], a.size, a.ctypes.data, h.ctypes.data, hp.ctypes.data)
    return h, hp


def exp(x: np.ndarray) -> np.ndarray:
    """``e^x`` as the kernel computes it (float64)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.empty_like(x)
    _lib().rnnlimit_exp(x.size, x.ctypes.data, y.ctypes.data)
    return y


#: Largest ``d + m`` and ``m`` of the native grid limit kernel (``limit_pic.c``).
PIC_MAX_D, PIC_MAX_M = 3, 2
#: Signature version of ``rnnlimit_pic_run`` (``rnnlimit_pic_version`` in ``limit_pic.c``).
_PIC_VERSION = 3


def pic_run(
    K: np.ndarray,
    h0: np.ndarray,
    R: np.ndarray,
    s: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    n_axis: int,
    chain_steps: int,
    n_steps: int,
    heun: bool,
    alpha: float,
    dt: float,
    memory: bool,
    clip: str,
    E: np.ndarray | None = None,
    dpsi: np.ndarray | None = None,
    ring: np.ndarray | None = None,
    ring_meta: np.ndarray | None = None,
) -> np.ndarray:
    """Run ``n_steps`` time steps of the grid limit solve in place on ``R (G, m)``, ``s (M, m)``.

    ``K (G, G)`` is the node Gram, ``h0 (G, m)`` the node values of ``h_0``; ``xs (n, M, d)``,
    ``ys (n, M, m)`` the particle paths with ``n = n_steps · stages · chain_steps`` (``n_steps
    = 0``: a burn-in over ``n = chain_steps`` steps, ``R`` frozen, no deposits). With ``E (M, G,
    m, m)``, ``dpsi (M, m)``, ``ring (M, cap, 1 + 2^(d+m) + m²)`` and ``ring_meta (M, 3)`` int64
    (all or none; zero before the first call) the drift is RTRL's (docs/model.md §4b) and the
    particles' traces are updated in place too: each keeps its recent deposits in ``ring``
    and ``E`` only as an overflow (see ``_native/limit_pic.c``; :func:`ring_shape`). Returns the
    first stage's mean loss of each time step. Same arithmetic as the JAX stages of
    :mod:`rnnlimit.drift` up to summation order and the ring's dropping of deposits below 1e-16.
    """
    steps, M, d = xs.shape
    m = ys.shape[2]
    G = n_axis ** (d + m)
    stages = (2 if heun else 1) if n_steps else 0
    if d + m > PIC_MAX_D or m > PIC_MAX_M:
        raise ValueError(f"the native grid kernel needs d + m <= {PIC_MAX_D}, m <= {PIC_MAX_M}")
    if steps != (n_steps * stages * chain_steps if n_steps else chain_steps):
        raise ValueError(f"xs has {steps} chain steps, expected {n_steps}·{stages}·{chain_steps}")
    _c_array(K, "K", (G, G))
    _c_array(h0, "h0", (G, m))
    _c_array(R, "R", (G, m))
    _c_array(s, "s", (M, m))
    _c_array(xs, "xs", (steps, M, d))
    _c_array(ys, "ys", (steps, M, m))
    rtrl = [v is not None for v in (E, dpsi, ring, ring_meta)]
    if any(rtrl) and not all(rtrl):
        raise ValueError("E, dpsi, ring and ring_meta go together (the RTRL traces)")
    if E is not None:
        _c_array(E, "E", (M, G, m, m))
        _c_array(dpsi, "dpsi", (M, m))
        _c_array(ring, "ring", (M, ring.shape[1], ring_shape(d, m, M)[2]))
        _c_array(ring_meta, "ring_meta", (M, 3), np.int64)
    lib = _lib()
    version = getattr(lib, "rnnlimit_pic_version", None)
    if version is None or version() != _PIC_VERSION:
        raise ValueError(
            f"the native grid kernel is a stale build: rebuild it (version {_PIC_VERSION})"
        )
    losses = np.zeros(max(n_steps, 1))
    work = np.empty(3 * G * m)
    rc = lib.rnnlimit_pic_run(
        n_axis, d, m, M, chain_steps, n_steps, int(heun), alpha, dt, int(memory), CLIPS[clip],
        K.ctypes.data, h0.ctypes.data, R.ctypes.data, xs.ctypes.data, ys.ctypes.data,
        s.ctypes.data, losses.ctypes.data, work.ctypes.data, int(E is not None),
        *(None if v is None else v.ctypes.data for v in (E, dpsi, ring, ring_meta)),
        0 if ring is None else ring.shape[1],
    )  # fmt: skip
    if rc != 0:
        raise ValueError("native grid kernel refused its arguments")
    return losses[:n_steps]


#: Deposits kept per particle in the native RTRL history ring (``limit_pic.c``): with the
#: contraction |F| ≤ L, a deposit falls below the kernel's 1e-16 after log(1e-16)/log(L)
#: chain steps (24 at L = 0.22, the docs/model.md §5 setting; 64 covers L ≤ 0.56); the rest
#: spill into the dense trace, which costs more but is exact.
RING_CAP = 64


def ring_shape(d: int, m: int, M: int) -> tuple[int, int, int]:
    """Shape of the history ring of ``M`` particles: per deposit its cell's lower corner, the
    ``2^(d+m)`` hat weights and the ``m × m`` coefficient."""
    return (M, RING_CAP, 1 + 2 ** (d + m) + m * m)


#: Lanes (ω samples) per block of the native feature scan (``_native/seq_features.c``).
SEQ_LANES = 128


def seq_features(
    xs: np.ndarray,
    lengths: np.ndarray,
    w_t: np.ndarray,
    b: np.ndarray,
    u: np.ndarray,
    out: np.ndarray,
    *,
    activation: str,
    ntk: bool,
    last: bool,
    segments: int,
    scale: float,
    rows: tuple[int, int] | None = None,
) -> None:
    """Rows ``[i0, i1)`` of the diagonal-RNN feature matrix into ``out (n, P·f·R)`` (float32).

    ``xs (n, L, d)``, ``lengths (n,)`` int32, ``w_t (d, P)`` (``w`` transposed: each channel's
    weights contiguous over ω), ``b, u (P,)``, all float32 but ``lengths``; readouts: the last
    state when ``last``, then ``segments`` segment means (1: the time mean). Same recursion and
    layout as :func:`rnnlimit.seqfeatures.sequence_features` (``_native/seq_features.c``); the
    call releases the GIL, so row ranges can run on threads.
    """
    n, L, d = xs.shape
    P = b.shape[0]
    f = d + 3 if ntk else 1
    for a, name, shape in (
        (xs, "xs", (n, L, d)),
        (w_t, "w_t", (d, P)),
        (b, "b", (P,)),
        (u, "u", (P,)),
        (out, "out", (n, P * f * (int(last) + segments))),
    ):
        _c_array(a, name, shape, np.float32)  # fmt: skip
    _c_array(lengths, "lengths", (n,), np.int32)
    i0, i1 = (0, n) if rows is None else rows
    work = np.empty((2 * f + 3 + f * (int(last) + segments)) * SEQ_LANES, np.float32)
    rc = _lib().rnnlimit_seq_features(
        ACTIVATIONS[activation], int(ntk), i0, i1, L, d, P, xs.ctypes.data, lengths.ctypes.data,
        w_t.ctypes.data, b.ctypes.data, u.ctypes.data, int(last), segments, scale,
        out.ctypes.data, work.ctypes.data,
    )  # fmt: skip
    if rc != 0:
        raise ValueError("native feature scan refused its arguments")


def seq_activation(name: str, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(σ(a), σ'(a))`` in float32 as the native feature scan computes them (tests)."""
    a = np.ascontiguousarray(a, np.float32)
    h, hp = np.empty_like(a), np.empty_like(a)
    if _lib().rnnlimit_seq_act(ACTIVATIONS[name], a.size, a.ctypes.data, h.ctypes.data,
                               hp.ctypes.data) != 0:  # fmt: skip
        raise ValueError(f"unknown activation {name!r}")
    return h, hp
