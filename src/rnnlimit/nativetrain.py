"""The native trainer's state between intervals (``_native/fused_train.c`` via
:mod:`rnnlimit.nativelib`): parameter columns, RTRL sensitivities, memory and trace, for
:class:`rnnlimit.steps.NativeEngine`."""

from __future__ import annotations

import numpy as np

from rnnlimit.native import resolve_threads
from rnnlimit.nativecalls import c_array
from rnnlimit.nativelib import ACTIVATIONS, CLIPS, GRADIENTS, MAX_DM, library


class TrainRunner:
    """State of one native training run: parameter columns, sensitivities, memory, trace.

    ``cols`` is ``(P, N)``, ``P = 2m + d + 1``: rows ``c_0..c_{m-1}``, ``w_0..w_{d-1}``,
    ``b_0..b_{m-1}``, ``u``. With ``gradient="rtrl"`` the kernel also carries ``D_{k-1}``
    (``sens``, ``(m, P, N)``) and ``ψ'(ĝ_{k-1})`` (``psp``), so that ``J_k = ψ'(ĝ_{k-1}) D_{k-1}``
    (docs/model.md §3; ``J_0 = 0``). ``threads`` (0 = auto, 1, 2; see :func:`resolve_threads`)
    splits
    the units between that many threads inside the kernel. :meth:`run` advances steps
    ``k0 ≤ k < k1`` in place and returns ``(bad, Σℓ, ΣS, ΣS²)`` with ``bad = -1`` unless step
    ``bad`` produced a non-finite loss or an output with ``|ĝ_k,j| > bound`` (the run stops
    there; the columns then hold garbage).
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
        bound: float,
        gradient: str = "truncated",
        trace_stride: int = 0,
        threads: int = 0,
    ) -> None:
        self._lib = library()
        N, m = np.shape(c)
        d = np.shape(w)[1]
        if max(d, m) > MAX_DM or activation not in ACTIVATIONS or gradient not in GRADIENTS:
            raise ValueError(
                f"the native trainer cannot run d={d}, m={m}, {activation}, {gradient}"
            )
        self.N, self.d, self.m = int(N), int(d), int(m)
        self.threads = resolve_threads(threads, self.N)
        P = 2 * m + d + 1
        self.cols = np.empty((P, N), dtype=np.float64)
        self.set_params(c, w, b, u)
        self.rtrl = GRADIENTS[gradient]
        self.sens = np.zeros((m, P, N)) if self.rtrl else None
        self.psp = np.zeros(m)
        self.h = np.zeros(N)
        self.hp = np.zeros(N)
        self.xs = np.ascontiguousarray(xs, dtype=np.float64)
        self.ys = np.ascontiguousarray(ys, dtype=np.float64)
        self.K = self.xs.shape[0]
        c_array(self.xs, "xs", (self.K, d))
        c_array(self.ys, "ys", (self.K, m))
        self.act, self.clip = ACTIVATIONS[activation], CLIPS[clip]
        self.eta, self.scale, self.bound = float(eta), float(scale), float(bound)
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
        trace = self.trace.ctypes.data if self.trace is not None else None
        sens = self.sens.ctypes.data if self.sens is not None else None
        self._bad[0] = -1
        done = self._lib.rnnlimit_train(
            N, d, m, self.act, self.clip, self.rtrl, self.cols.ctypes.data, sens,
            self.h.ctypes.data, self.hp.ctypes.data, self.xs.ctypes.data, self.ys.ctypes.data,
            self.K, k0, k1, self.eta, self.scale, self.bound, self.s.ctypes.data,
            self.psp.ctypes.data, self._acc.ctypes.data, self._bad.ctypes.data, trace,
            self.trace_stride, self.threads,
        )  # fmt: skip
        if done == -2:
            raise MemoryError("the native trainer could not allocate its scratch memory")
        if done < 0:
            raise ValueError("native kernel refused its arguments")
        acc = self._acc
        return int(self._bad[0]), float(acc[0]), acc[1 : 1 + m].copy(), acc[1 + m :].copy()
