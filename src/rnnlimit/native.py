"""Optional native fast path of the truncated trainer (``_native/fused_train.c``), via ctypes.

The C kernel runs steps ``k0 ≤ k < k1`` of truncated online SGD in float64 exactly as
:func:`rnnlimit.steps._truncated_interval` does (the skewed single pass per step), with a
vectorised branch-free erf/tanh/exp. It is built by ``pip install`` as an optional extension
(``setup.py``); when the compiler was missing, or ``RNNLIMIT_NATIVE=0`` is set, :func:`available`
is false and :func:`rnnlimit.train.train` uses the JAX path. This module needs only numpy.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import importlib.util
import os
from pathlib import Path

import numpy as np

_MODULE = "rnnlimit._native.fused_train"
_ABI = 4
#: Smallest N for which ``threads=0`` (auto) uses 2 threads; measured (benchmarks/RESULTS.md).
THREADS_MIN_N = 4096
ACTIVATIONS = {"erf": 0, "tanh": 1, "relu": 2}
CLIPS = {"hard": 0, "smooth": 1}

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


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    path = _library_path()
    if path is None:
        return None, "the extension rnnlimit._native.fused_train is not built"
    try:
        lib = ctypes.CDLL(str(path))
        if lib.rnnlimit_abi_version() != _ABI:
            return None, f"{path.name} has ABI {lib.rnnlimit_abi_version()}, expected {_ABI}"
    except (OSError, AttributeError) as exc:
        return None, f"cannot load {path}: {exc}"
    lib.rnnlimit_truncated.restype = _I64
    lib.rnnlimit_truncated.argtypes = [_I64, _INT, _INT, _INT, _INT, *[_P] * 8, _I64, _I64, _I64]
    lib.rnnlimit_truncated.argtypes += [_DBL, _DBL, _P, _P, _P, _P, _I64, _INT]
    lib.rnnlimit_threads_supported.restype = _INT
    lib.rnnlimit_act.restype = _INT
    lib.rnnlimit_act.argtypes = [_INT, _I64, _P, _P, _P]
    lib.rnnlimit_exp.restype = _INT
    lib.rnnlimit_exp.argtypes = [_I64, _P, _P]
    lib.rnnlimit_max_dm.restype = _INT
    lib.rnnlimit_pic_run.restype = _INT
    lib.rnnlimit_pic_run.argtypes = [_INT, _INT, _INT, _I64, _I64, _I64, _INT, _DBL, _DBL]
    lib.rnnlimit_pic_run.argtypes += [_INT, _INT, *[_P] * 8, _INT, _P, _P]
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
    """Largest input dimension d and output dimension m the kernel accepts."""
    return int(_lib().rnnlimit_max_dm())


def unsupported(activation: str, d: int, m: int) -> str:
    """Why the kernel cannot run this network ('' when it can); the availability aside."""
    if activation not in ACTIVATIONS:
        return f"activation {activation!r} is not in the native kernel"
    if max(d, m) > 64:
        return "d and m must be at most 64 for the native kernel"
    return ""


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


class TruncatedRunner:
    """State of one native truncated run: parameter columns, scratch, memory, trace.

    ``cols`` is ``(2m + d + 1, N)``: rows ``c_0..c_{m-1}``, ``w_0..w_{d-1}``, ``b_0..b_{m-1}``,
    ``u``. ``threads`` (0 = auto, 1, 2; see :func:`resolve_threads`) splits the units between
    that many threads inside the kernel. :meth:`run` advances steps ``k0 ≤ k < k1`` in place and
    returns ``(bad, Σℓ, ΣS, ΣS²)`` with ``bad = -1`` unless step ``bad`` produced a non-finite loss
    (the run stops there; the columns then hold garbage).
    """

    def __init__(
        self,
        c: np.ndarray,
        w: np.ndarray,
        b: np.ndarray,
        u: np.ndarray,
        xs: np.ndarray,
        ys: np.ndarray,
        *,
        activation: str,
        clip: str,
        eta: float,
        scale: float,
        trace_stride: int = 0,
        threads: int = 0,
    ) -> None:
        self._lib = _lib()
        N, m = np.shape(c)
        d = np.shape(w)[1]
        why = unsupported(activation, d, m)
        if why:
            raise ValueError(why)
        self.N, self.d, self.m = int(N), int(d), int(m)
        self.threads = resolve_threads(threads, self.N)
        self.cols = np.empty((2 * m + d + 1, N), dtype=np.float64)
        self.set_params(c, w, b, u)
        self.h = np.zeros(N)
        self.hp = np.zeros(N)
        self.xs = np.ascontiguousarray(xs, dtype=np.float64)
        self.ys = np.ascontiguousarray(ys, dtype=np.float64)
        self.K = self.xs.shape[0]
        _c_array(self.xs, "xs", (self.K, d))
        _c_array(self.ys, "ys", (self.K, m))
        self.act, self.clip = ACTIVATIONS[activation], CLIPS[clip]
        self.eta, self.scale = float(eta), float(scale)
        self.s = np.zeros(m)
        self._acc = np.zeros(1 + 2 * m)
        self._bad = np.full(1, -1, dtype=np.int64)
        self.trace_stride = int(trace_stride)
        rows = -(-self.K // self.trace_stride) if self.trace_stride else 0
        self.trace = np.full((rows, 3 * m), np.nan) if self.trace_stride else None

    def set_params(self, c, w, b, u) -> None:
        m, d = self.m, self.d
        self.cols[:m] = np.asarray(c, dtype=np.float64).T
        self.cols[m : m + d] = np.asarray(w, dtype=np.float64).T
        self.cols[m + d : 2 * m + d] = np.asarray(b, dtype=np.float64).T
        self.cols[-1] = np.asarray(u, dtype=np.float64)

    def params(self, cols: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """``(c (N,m), w (N,d), b (N,m), u (N,))`` copies from ``cols`` (default: current)."""
        cols = self.cols if cols is None else cols
        m, d = self.m, self.d
        return (
            np.ascontiguousarray(cols[:m].T),
            np.ascontiguousarray(cols[m : m + d].T),
            np.ascontiguousarray(cols[m + d : 2 * m + d].T),
            cols[-1].copy(),
        )

    def run(self, k0: int, k1: int) -> tuple[int, float, np.ndarray, np.ndarray]:
        m, d, N = self.m, self.d, self.N
        if not 0 <= k0 <= k1 <= self.K:
            raise ValueError(f"need 0 <= k0 <= k1 <= K, got {k0}, {k1}, {self.K}")
        cols = self.cols
        ptr = cols.ctypes.data
        row = N * 8
        trace = self.trace.ctypes.data if self.trace is not None else None
        self._bad[0] = -1
        done = self._lib.rnnlimit_truncated(
            N, d, m, self.act, self.clip,
            ptr, ptr + m * row, ptr + (m + d) * row, ptr + (2 * m + d) * row,
            self.h.ctypes.data, self.hp.ctypes.data, self.xs.ctypes.data, self.ys.ctypes.data,
            self.K, k0, k1, self.eta, self.scale,
            self.s.ctypes.data, self._acc.ctypes.data, self._bad.ctypes.data, trace,
            self.trace_stride, self.threads,
        )  # fmt: skip
        if done < 0:
            raise ValueError("native kernel refused its arguments")
        acc = self._acc
        return int(self._bad[0]), float(acc[0]), acc[1 : 1 + m].copy(), acc[1 + m :].copy()


#: Largest ``d + m`` and ``m`` of the native grid limit kernel (``limit_pic.c``).
PIC_MAX_D, PIC_MAX_M = 3, 2
#: Signature version of ``rnnlimit_pic_run`` (``rnnlimit_pic_version`` in ``limit_pic.c``).
_PIC_VERSION = 2


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
) -> np.ndarray:
    """Run ``n_steps`` time steps of the grid limit solve in place on ``R (G, m)``, ``s (M, m)``.

    ``K (G, G)`` is the node Gram, ``h0 (G, m)`` the node values of ``h_0``; ``xs (n, M, d)``,
    ``ys (n, M, m)`` the particle paths with ``n = n_steps · stages · chain_steps`` (``n_steps
    = 0``: a burn-in over ``n = chain_steps`` steps, ``R`` frozen, no deposits). With ``E (M, G,
    m, m)`` and ``dpsi (M, m)`` (both or neither) the drift is RTRL's (MODEL.md §4b) and the
    particles' traces are updated in place too. Returns the first stage's mean loss of each
    time step. Same arithmetic as the JAX stages of :mod:`rnnlimit.drift` up to summation order
    (``_native/limit_pic.c``).
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
    if (E is None) != (dpsi is None):
        raise ValueError("E and dpsi go together (the RTRL traces)")
    if E is not None:
        _c_array(E, "E", (M, G, m, m))
        _c_array(dpsi, "dpsi", (M, m))
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
        None if E is None else E.ctypes.data, None if dpsi is None else dpsi.ctypes.data,
    )  # fmt: skip
    if rc != 0:
        raise ValueError("native grid kernel refused its arguments")
    return losses[:n_steps]


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
