"""Convergence of the finite networks to the limit (docs/model.md §5).

A study is one stream/target/network specification, a list of widths N and of seeds. The limit
``h_t`` is solved once (with its own error estimate, the floor; :mod:`rnnlimit.studylimits`),
then each ``(N, seed)`` network is trained on its own stream and evaluated at the same points
and times::

    sup_rms_grid = sup_{t ≤ T} ( mean_{z ∈ grid, j ≤ m} (g^N_{⌊Nt⌋}(z)_j − h_t(z)_j)² )^(1/2)
    sup_l2_pi    = sup_{t ∈ l2_times} ( mean_{Z ∼ π_t} |g^N_{⌊Nt⌋}(Z) − h_t(Z)|² )^(1/2)

and the rate is the log-log least-squares slope of the error in N (expected near −1/2 until the
floor), with a verdict that weighs the evidence (:mod:`rnnlimit.verdicts`). Each network is
compared with the limit of its own gradient (``training.gradient``: §4 truncated, §4b RTRL);
``limit.both_gradients`` also solves the other limit, and every task then gets its distance to
that one too (``other_*``) and the limit arrays the gap between the two. A run that diverged
(non-finite, or beyond :data:`rnnlimit.verdicts.RUNAWAY`) gives no error and no rate: a task is
marked ``diverged_at`` and left out of the fit; a diverged limit stops the study with a
:class:`~rnnlimit.errors.DivergenceError` after ``results.json`` says so. Data flows one way:
chains → (network | limit) → compare → report. Record and l2 times are snapped to the limit's
time grid ``k·T/n_steps`` so both sides are compared at one time. What a run leaves on disk,
and its resumption, is :mod:`rnnlimit.rundir`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rnnlimit import forecast, rundir
from rnnlimit.chains import sample_stream
from rnnlimit.config import ExperimentConfig, validate_config
from rnnlimit.errors import DivergenceError
from rnnlimit.limit import LimitResult
from rnnlimit.network import init_params
from rnnlimit.rundir import METRICS, Progress
from rnnlimit.rundir import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported (public before rundir)
from rnnlimit.rundir import run_kind as run_kind
from rnnlimit.rundir import versions as versions
from rnnlimit.studylimits import (
    conditional_task_limit,
    eval_grid,
    gaussian_start,
    l2_times,
    limit_arrays,
    limit_failure,
    other_view,
    precision,
    record_times,
    solve_limits,
    step_index,
    task_divergence,
    task_limit,
)
from rnnlimit.train import train
from rnnlimit.verdicts import RUNAWAY
from rnnlimit.verdicts import fit_rate as fit_rate  # re-exported (public before verdicts)
from rnnlimit.verdicts import study_rates as _study_rates

N_TRACE = 2000  # finite-network memory samples kept per task, over all l2 times


# --------------------------------------------------------------------------- one task


def train_task(
    cfg: ExperimentConfig,
    N: int,
    seed: int,
    limit: LimitResult | None,
    progress: Progress = None,
) -> dict[str, Any]:
    """Train the width-N network of ``seed`` (in this process) and, given the limit, its errors.

    Returns the arrays and scalars of ``tasks/N<N>_seed<seed>.{npz,json}``.
    """
    cfg = validate_config(cfg).resolved()
    lim = None if limit is None else task_limit(limit_arrays(cfg, limit))
    return study_task(cfg.model_dump(), N, seed, lim, progress)


def study_task(
    cfg_data: dict[str, Any],
    N: int,
    seed: int,
    lim: dict[str, np.ndarray] | None,
    progress: Progress = None,
) -> dict[str, Any]:
    """One (N, seed) task from plain data: runnable in any process (what executors call).

    Stream key ``stream_seed + seed``, init key ``seed``; ``K = round(T·N)`` online steps
    (:func:`rnnlimit.train.train`) with ``g^N`` recorded on the grid (and the π_t points) at
    the record and l2 times. A diverged run keeps what it recorded and notes ``diverged_at``.
    """
    start = time.perf_counter()
    cfg = validate_config(cfg_data).resolved()
    dtype = precision(cfg)
    spec = cfg.network_spec(N)
    K = max(1, round(cfg.training.T * N))
    stream = sample_stream(
        cfg.stream.build_chain(), cfg.stream.build_target(),
        jax.random.PRNGKey(cfg.study.stream_seed + seed), K, burn_in=cfg.stream.burn_in,
        dtype=dtype,
    )  # fmt: skip
    params = init_params(spec, jax.random.PRNGKey(seed), dtype)
    if lim is not None and gaussian_start(cfg):
        lim = conditional_task_limit(cfg, spec, params, "other_h" in lim)
    rec_t, l2 = record_times(cfg), l2_times(cfg)
    grid = eval_grid(cfg)
    pi = [] if lim is None else [lim[f"pi_points_{i}"] for i in range(len(l2))]
    stride = max(1, K // (4 * N_TRACE))
    diverged_at, diverged_what = None, None
    try:
        rec = train(
            spec, params, stream, alpha=cfg.training.alpha, gradient=cfg.training.gradient,
            eval_points=np.concatenate([grid, *pi]), eval_times=np.union1d(rec_t, l2),
            window=cfg.training.window, trace_stride=stride,
            progress=None if progress is None else lambda k, n: progress("train", k, n),
        )  # fmt: skip
    except DivergenceError as err:
        rec, diverged_at, diverged_what = err.record, int(err.step), str(err).split(";")[0]
    diverged_at, diverged_what = task_divergence(rec, N, diverged_at, diverged_what)
    stop = np.inf if diverged_at is None else diverged_at
    reached = np.round(rec.eval_times * N) < stop
    loss = np.where(np.round(rec.window_t * N) < stop, rec.loss, np.nan)

    def at(times: np.ndarray) -> np.ndarray:
        idx = step_index(rec.eval_times, times, N)
        idx[idx >= 0] = np.where(reached[idx[idx >= 0]], idx[idx >= 0], -1)
        out = np.full((len(times), rec.eval_points.shape[0], spec.m), np.nan)
        out[idx >= 0] = rec.outputs[idx[idx >= 0]]
        return out

    n_hist = max(1, N_TRACE // len(l2))
    trace_s = np.full((len(l2), n_hist, spec.m), np.nan)
    trace_t = np.full((len(l2), n_hist), np.nan)
    for i, t in enumerate(l2):
        rows = np.flatnonzero(rec.trace["k"] <= round(t * N))[-n_hist:]
        trace_s[i, : len(rows)] = rec.trace["s"][rows]
        trace_t[i, : len(rows)] = rec.trace["k"][rows] / N
    out: dict[str, Any] = dict(
        N=int(N), seed=int(seed), steps=int(rec.steps_done), diverged_at=diverged_at,
        diverged_t=None if diverged_at is None else diverged_at / N, diverged_what=diverged_what,
        eval_times=rec_t, outputs=at(rec_t)[:, : len(grid)], window_t=rec.window_t,
        loss=loss, memory_mean=rec.memory_mean, memory_std=rec.memory_std,
        trace_s=trace_s, trace_t=trace_t,
    )  # fmt: skip
    out["loss_first"] = float(loss[0]) if loss.size else None
    out["loss_last"] = float(loss[-1]) if loss.size else None
    if lim is not None:
        g_l2 = at(l2)
        offsets = np.cumsum([len(grid), *(len(p) for p in pi)])
        for i in range(len(l2)):
            out[f"outputs_pi_{i}"] = g_l2[i, offsets[i] : offsets[i + 1]]
        out.update(task_errors(out, lim))
        if "other_h" in lim:
            out.update({f"other_{k}": v for k, v in task_errors(out, other_view(lim)).items()})
        if diverged_at is not None:  # no sup over [0, T] from a run that did not reach T
            out.update({m: float("nan") for m in (*METRICS, *(f"other_{m}" for m in METRICS))})
    if forecast.recorded(cfg):
        out.update(forecast.network_forecast(cfg, spec, rec.params))
    out["wall_time"] = time.perf_counter() - start
    return out


def task_errors(task: dict[str, Any], limit: dict[str, np.ndarray] | LimitResult) -> dict:
    """Distances of one task to the limit: per record time ``rms_grid_t`` (RMS over grid points
    and outputs) and ``sup_rms_grid``; per l2 time ``l2_pi_t = (mean_{π_t}|g^N − h|²)^(1/2)``
    and ``sup_l2_pi``. ``limit`` is the ``limit.npz`` content (a :class:`LimitResult` gives the
    grid metric only). Sups run over the times the network reached (NaN if none)."""
    if isinstance(limit, LimitResult):
        limit = {"times": limit.times, "h": limit.h}
    g, h = np.asarray(task["outputs"], float), np.asarray(limit["h"], float)
    idx = np.abs(np.asarray(limit["times"])[None, :] - np.asarray(task["eval_times"])[:, None])
    rms_t = np.sqrt(np.mean((g - h[idx.argmin(axis=1)]) ** 2, axis=(1, 2)))
    l2_t = [
        np.sqrt(np.mean(np.sum((task[f"outputs_pi_{i}"] - limit[f"h_pi_{i}"]) ** 2, axis=1)))
        for i in range(len(limit.get("memory_times", ())))
        if f"outputs_pi_{i}" in task
    ]
    l2_t = np.asarray(l2_t, float)

    def sup(v: np.ndarray) -> float:
        v = v[np.isfinite(v)]
        return float(v.max()) if v.size else float("nan")

    return dict(sup_rms_grid=sup(rms_t), sup_l2_pi=sup(l2_t), rms_grid_t=rms_t, l2_pi_t=l2_t)


# --------------------------------------------------------------------------- run directories


def run_study(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    executor: str = "local",
    scheduler: str | None = None,
    resume: bool = False,
    workers: int | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """The whole study into ``run_dir`` (docs/results-format.md, figures/report aside).

    The limit is solved first and cached in ``limit.npz``; ``resume`` reads it back instead of
    re-solving and skips finished tasks, so a resumed run's results equal an uninterrupted
    one's bit for bit. Returns the content of ``results.json``.
    """
    return _run(cfg, run_dir, "converge", executor, scheduler, resume, workers, progress)


def write_limit_run(cfg: ExperimentConfig, run_dir: str | Path, progress: Progress = None) -> dict:
    """The limit alone (``kind = "limit"``): ``config.toml``, ``limit.npz``, CSVs, results."""
    return _run(cfg, run_dir, "limit", "inline", None, False, None, progress)


def write_train_run(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    progress: Progress = None,
    *,
    executor: str = "local",
    scheduler: str | None = None,
    resume: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """The finite networks alone (``kind = "train"``), with no comparison to the limit."""
    return _run(cfg, run_dir, "train", executor, scheduler, resume, workers, progress)


def _floor(summary: dict[str, Any] | None) -> float | None:
    """A limit's error floor ``error.total``; ``None`` if absent or no number (a refinement
    solve that diverged gives no floor)."""
    total = ((summary or {}).get("error") or {}).get("total")
    return total if total is not None and 0 <= total <= RUNAWAY else None


def _run(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    kind: str,
    executor: str,
    scheduler: str | None,
    resume: bool,
    workers: int | None,
    progress: Progress,
) -> dict[str, Any]:
    """What a run of ``kind`` computes; :mod:`rnnlimit.rundir` keeps the books."""
    cfg = validate_config(cfg).resolved()
    run_dir = rundir.prepare(cfg, run_dir, kind, resume)
    lim = None
    if kind != "train":
        lim = rundir.read_limit(run_dir) if resume else None
        if lim is None:
            try:
                lim, result = solve_limits(cfg, progress)
            except DivergenceError as err:  # nothing to compare the networks with: stop here
                failure = dict(gradient=cfg.training.gradient, diverged=limit_failure(cfg, err))
                rundir.write_results(cfg, run_dir, kind, None, [], {}, limit_failure=failure)
                raise
            if forecast.recorded(cfg):
                lim.update(forecast.limit_forecast(cfg, result))
            rundir.write_limit(run_dir, lim)
    pairs = [] if kind == "limit" else [(N, s) for N in cfg.study.widths for s in cfg.study.seeds]
    sent = None if lim is None else task_limit(lim)
    jobs = {(N, s): (cfg.model_dump(), N, s, sent) for N, s in pairs}
    tasks = rundir.complete_tasks(
        run_dir, study_task, jobs, resume=resume, executor=executor, scheduler=scheduler,
        workers=workers, progress=progress,
    )  # fmt: skip
    rates, other_rates = {}, {}
    if kind == "converge":
        summary = rundir.limit_summary(lim)
        rates = _study_rates(tasks, METRICS, _floor(summary))
        if "other_h" in lim:
            other_rates = _study_rates(tasks, METRICS, _floor(summary.get("other")), "other_")
    results = rundir.write_results(cfg, run_dir, kind, lim, tasks, rates, other_rates=other_rates)
    if forecast.recorded(cfg):
        forecast.write_forecast(cfg, run_dir, lim, tasks)
    return results
