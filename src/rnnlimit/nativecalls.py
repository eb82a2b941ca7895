"""The calls into the native kernels on numpy arrays (docs/model.md §3, §4, §4b, §6).

Each entry point of the library (:mod:`rnnlimit.nativelib`) is called on C-contiguous arrays
of the dtype and shape its C code reads (:func:`c_array` refuses anything else): σ and σ' and
``e^x`` as the trainer computes them (float64); ``n_steps`` time steps of the grid limit solve
``∂_t h_t = α E_{π_t}[A(z, Z)(Y − h_t(Z))]`` on the node values, with the RTRL traces of §4b
when given (:func:`pic_run`, its history ring :func:`ring_shape`); the sequence kernel's
diagonal-RNN feature scan in float32 (:func:`seq_features`). Which kernel runs where is
:func:`rnnlimit.native.decide`; the trainer's state is :mod:`rnnlimit.nativetrain`.
"""

from __future__ import annotations

import numpy as np

from rnnlimit.nativelib import ACTIVATIONS, CLIPS, PIC_MAX_D, PIC_MAX_M, SEQ_LANES, library


def c_array(a: np.ndarray, name: str, shape: tuple[int, ...], dtype: type = np.float64) -> None:
    """Refuse ``a`` unless it is a C-contiguous ``dtype`` array of ``shape`` (what C reads)."""
    if a.dtype != dtype or not a.flags.c_contiguous or a.shape != shape:
        raise ValueError(f"{name} must be C-contiguous {np.dtype(dtype).name} of shape {shape}")


def activation(name: str, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(σ(a), σ'(a))`` as the kernel computes them (float64)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    h, hp = np.empty_like(a), np.empty_like(a)
    library().rnnlimit_act(ACTIVATIONS[name], a.size, a.ctypes.data, h.ctypes.data, hp.ctypes.data)
    return h, hp


def exp(x: np.ndarray) -> np.ndarray:
    """``e^x`` as the kernel computes it (float64)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.empty_like(x)
    library().rnnlimit_exp(x.size, x.ctypes.data, y.ctypes.data)
    return y


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
    c_array(K, "K", (G, G))
    c_array(h0, "h0", (G, m))
    c_array(R, "R", (G, m))
    c_array(s, "s", (M, m))
    c_array(xs, "xs", (steps, M, d))
    c_array(ys, "ys", (steps, M, m))
    rtrl = [v is not None for v in (E, dpsi, ring, ring_meta)]
    if any(rtrl) and not all(rtrl):
        raise ValueError("E, dpsi, ring and ring_meta go together (the RTRL traces)")
    if E is not None:
        c_array(E, "E", (M, G, m, m))
        c_array(dpsi, "dpsi", (M, m))
        c_array(ring, "ring", (M, ring.shape[1], ring_shape(d, m, M)[2]))
        c_array(ring_meta, "ring_meta", (M, 3), np.int64)
    lib = library()
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
        c_array(a, name, shape, np.float32)  # fmt: skip
    c_array(lengths, "lengths", (n,), np.int32)
    i0, i1 = (0, n) if rows is None else rows
    work = np.empty((2 * f + 3 + f * (int(last) + segments)) * SEQ_LANES, np.float32)
    rc = library().rnnlimit_seq_features(
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
    if library().rnnlimit_seq_act(ACTIVATIONS[name], a.size, a.ctypes.data, h.ctypes.data,
                                  hp.ctypes.data) != 0:  # fmt: skip
        raise ValueError(f"unknown activation {name!r}")
    return h, hp
