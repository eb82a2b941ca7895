"""One-step forecasts on the held-out tail of a recording (docs/model.md §1 with §2 and §4).

Along the tail the memory runs exactly as in training, with the function frozen::

    ŷ_k = g(X_k, S_k),   S_{k+1} = ψ(ŷ_k),   S = 0 at WARMUP examples before the tail

for ``g = h_T`` (the limit at the end of training) and ``g = g^N`` (each trained network); two
baselines need no memory: persistence (the target column at the last known row) and a
least-squares linear AR model ``ŷ = a + Σ w_{c,l} v_c[j − l]`` on the same lags, fitted on the
training examples in data units. Every forecast is mapped back to data units with the run's
scaling (:class:`rnnlimit.recorded.Scaling`) and scored by RMSE and MAE against the recorded
values. :func:`write_forecast` leaves ``forecast.json`` (the recording, its scaling and
diagnostics, the score table) and ``forecast.npz`` (the curves) in the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit import sweep
from rnnlimit.config import ExperimentConfig
from rnnlimit.limit import LimitResult
from rnnlimit.network import NetworkSpec, Params, clip_memory, output
from rnnlimit.recorded import RecordedSeries, recording_diagnostics
from rnnlimit.recording_io import file_sha256

#: Examples before the tail that warm the memory up (the memory forgets its start at the
#: geometric rate L < 1 of docs/model.md §4, so a few hundred steps are plenty).
WARMUP = 256


def recorded(cfg: ExperimentConfig) -> bool:
    """Whether the experiment's stream is a recording."""
    return cfg.stream.recording is not None


def _series(cfg: ExperimentConfig) -> RecordedSeries:
    assert cfg.stream.recording is not None
    return cfg.stream.recording.build()


def _along_tail(series: RecordedSeries) -> tuple[np.ndarray, int]:
    """Inputs from WARMUP examples before the tail to its end, and where the tail starts."""
    stop = series.span[1]
    first = np.searchsorted(series.rows_all, stop - WARMUP)
    x = series.x_all[first:]
    return x, int(np.searchsorted(series.rows_all[first:], stop))


def network_forecast(cfg: ExperimentConfig, spec: NetworkSpec, params: Params) -> dict:
    """``forecast_tail (n_tail, m)``: ``g^N`` run along the tail with its memory (scaled units)."""
    series = _series(cfg)
    x, start = _along_tail(series)
    dtype = params.u.dtype

    def step(s: jax.Array, xk: jax.Array) -> tuple[jax.Array, jax.Array]:
        g = output(spec, params, xk, s)
        return clip_memory(spec, g)[0], g

    s0 = jnp.zeros((spec.m,), dtype)
    _, g = jax.jit(lambda s, xs: jax.lax.scan(step, s, xs))(s0, jnp.asarray(x, dtype))
    return {"forecast_tail": np.asarray(g, float)[start:]}


def limit_forecast(cfg: ExperimentConfig, result: LimitResult) -> dict:
    """``forecast_tail (n_tail, m)``: ``h_T`` run along the tail with its memory (scaled).

    The memory path ``S_{k+1} = ψ(h_T(X_k, S_k))``, ``S_0 = 0``, is found as the fixed point of
    the whole path at once (Jacobi sweeps ``S ← ψ(h_T(X, S∘shift))``, one batched evaluation of
    ``h_T`` each): sweep ``n`` is exact on the first ``n`` steps and within ``L^n · 2√m`` of
    the fixed point everywhere (docs/model.md §4, ``L`` the contraction constant), so the sweeps
    stop when the path no longer moves (or after ``len(X)`` sweeps, when it is exact).
    """
    series = _series(cfg)
    x, start = _along_tail(series)
    m, clip = cfg.stream.m, cfg.network.clip
    s = np.zeros((len(x), m))
    for _ in range(len(x)):
        y = result.h_at(np.concatenate([x, s], axis=1), -1)
        s_new = np.zeros_like(s)
        s_new[1:] = np.clip(y[:-1], -1.0, 1.0) if clip == "hard" else np.tanh(y[:-1])  # ψ
        moved = float(np.max(np.abs(s_new - s)))
        s = s_new
        if moved < 1e-13:
            break
    return {"forecast_tail": result.h_at(np.concatenate([x, s], axis=1), -1)[start:]}


def linear_ar(series: RecordedSeries) -> np.ndarray:
    """Least-squares ``ŷ = a + w·x_j`` fitted on the training examples in data units, on the
    tail (data units)."""
    x, y, rows = series.raw_examples()
    train = np.isin(rows, series.rows_train)
    tail = np.isin(rows, series.rows_tail)
    design = np.concatenate([np.ones((len(x), 1)), x], axis=1)
    coef, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
    return design[tail] @ coef


def _scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, float) - truth
    return dict(rmse=float(np.sqrt(np.mean(err**2))), mae=float(np.mean(np.abs(err))))


def write_forecast(
    cfg: ExperimentConfig, run_dir: str | Path, lim: dict | None, tasks: list[dict]
) -> dict[str, Any]:
    """``forecast.json`` and ``forecast.npz`` of a recorded run (docs/recorded-data.md): the
    recording (file, SHA-256, embedding, scaling), its diagnostics, and the RMSE/MAE in data
    units of every forecast on the tail. Returns the content of ``forecast.json``."""
    run_dir = Path(run_dir)
    series = _series(cfg)
    info = series.describe() | {"sha256": file_sha256(series.table.source)}
    info["units"] = f"data units of column {series.target_column!r}"
    diag = recording_diagnostics(series, cfg.training.T, list(cfg.study.widths))
    curves: dict[str, np.ndarray] = {}
    table: list[dict[str, Any]] = []
    if len(series.rows_tail):
        truth = series.truth()
        curves = dict(rows=series.rows_tail + series.horizon, truth=truth)
        curves["persistence"], curves["linear_ar"] = series.persistence(), linear_ar(series)
        if lim is not None and "forecast_tail" in lim:
            curves["limit"] = series.to_data(lim["forecast_tail"])
        for t in tasks:
            if "forecast_tail" in t and t.get("diverged_at") is None:
                curves[f"network_N{t['N']}_seed{t['seed']}"] = series.to_data(t["forecast_tail"])
        for name, pred in curves.items():
            if name in ("rows", "truth"):
                continue
            model, N, seed = name, None, None
            if name.startswith("network_"):
                model, rest = "network", name.removeprefix("network_N")
                N, seed = (int(v) for v in rest.split("_seed"))
            table.append(dict(model=model, N=N, seed=seed, **_scores(truth, pred)))
        table.sort(key=lambda r: (r["model"] != "limit", r["model"], r["N"] or 0, r["seed"] or 0))
    out = dict(recording=info, diagnostics=diag, n_tail=len(series.rows_tail), table=table)
    sweep.save_npz(run_dir / "forecast.npz", curves)
    sweep.save_json(run_dir / "forecast.json", out)
    return sweep.jsonable(out)
