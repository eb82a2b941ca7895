"""Measurements shared by the sections of ``bench_limit.py``: the distance of a trained network
to a limit, the fitted rate of such distances in N, and the date and machine line of a
RESULTS.md section."""

from __future__ import annotations

import datetime
import os
import platform

import jax
import numpy as np


def stamp() -> str:
    """The time of a RESULTS.md section, ``YYYY-MM-DD HH:MM UTC``."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``1.98, 2.07, 2.39``."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def machine() -> str:
    """Processor, cores, jax version and backend, and the load average, for a RESULTS.md line."""
    load = load_average()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} ({jax.default_backend()}), load average {load}"
    )


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
