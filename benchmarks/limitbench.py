"""Measurements shared by the sections of ``bench_limit.py``: the distance of a trained network
to a limit, and the fitted rate of such distances in N."""

from __future__ import annotations

import numpy as np


def max_rms(rec, lim) -> float:
    """Max-over-t RMS distance of a training record to a limit on the same points."""
    idx = np.searchsorted(lim.times, rec.eval_times - 1e-12)
    return float(np.sqrt(np.mean((rec.outputs - lim.h[idx]) ** 2, axis=(1, 2))).max())


def loglog_slope(N: np.ndarray, E: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of log E against log N and its standard error."""
    logN, logE = np.log(N), np.log(E)
    slope, intercept = np.polyfit(logN, logE, 1)
    resid = logE - (slope * logN + intercept)
    se = np.sqrt(resid @ resid / max(1, len(N) - 2) / np.sum((logN - logN.mean()) ** 2))
    return float(slope), float(se)
