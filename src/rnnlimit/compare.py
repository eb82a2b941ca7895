"""Convergence of the finite networks to the limit (docs/model.md §5).

A study is one stream/target/network specification, a list of widths N and of seeds. The limit
``h_t`` is solved once (with its own error estimate, the floor), then each ``(N, seed)`` network
is trained on its own stream and evaluated at the same points and times::

    sup_rms_grid = sup_{t ≤ T} ( mean_{z ∈ grid, j ≤ m} (g^N_{⌊Nt⌋}(z)_j − h_t(z)_j)² )^(1/2)
    sup_l2_pi    = sup_{t ∈ l2_times} ( mean_{Z ∼ π_t} |g^N_{⌊Nt⌋}(Z) − h_t(Z)|² )^(1/2)

and the rate is the log-log least-squares slope of the error in N (expected near −1/2 until the
floor), with a verdict that weighs the evidence (:mod:`rnnlimit.verdicts`). Each network is
compared with the limit of its own gradient (``training.gradient``: §4 truncated, §4b RTRL);
``limit.both_gradients`` also solves the other limit, and every task then gets its distance to
that one too (``other_*``) and the limit arrays the gap between the two. A run that diverged
(non-finite, or beyond :data:`rnnlimit.verdicts.RUNAWAY`) gives no error and no rate: a task is
marked ``diverged_at`` and left out of the fit; a diverged limit stops the study with a
:class:`~rnnlimit.errors.DivergenceError` after ``results.json`` says so
(:mod:`rnnlimit.studylimits`). Data flows one way: chains → (network | limit) → compare →
report. Record and l2 times
are snapped to the limit's time grid ``k·T/n_steps`` so both sides are compared at one time.
What a run leaves on disk, and its resumption, is :mod:`rnnlimit.rundir`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rnnlimit
from rnnlimit import forecast, rundir, sweep
from rnnlimit.chains import sample_stream
from rnnlimit.config import ExperimentConfig, validate_config
from rnnlimit.errors import DivergenceError, ParameterError
from rnnlimit.kernels import ntk
from rnnlimit.limit import LimitResult, limit_solver
from rnnlimit.network import init_params, output_batch
from rnnlimit.rundir import METRICS, Progress
from rnnlimit.rundir import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported (public before rundir)
from rnnlimit.rundir import run_kind as run_kind
from rnnlimit.rundir import versions as versions
from rnnlimit.studylimits import (
    check_limit,
    limit_failure,
    nonfinite_limit,
    other_limit_arrays,
    other_view,
    summarize_limit,
    task_divergence,
)
from rnnlimit.studylimits import step_index as _step_index
from rnnlimit.train import train
from rnnlimit.verdicts import RUNAWAY
from rnnlimit.verdicts import fit_rate as fit_rate  # re-exported (public before verdicts)
from rnnlimit.verdicts import study_rates as _study_rates

N_TRACE = 2000  # finite-network memory samples kept per task, over all l2 times


# --------------------------------------------------------------------------- where and when


def eval_grid(cfg: ExperimentConfig) -> np.ndarray:
    """The ``n_grid^(d+m)`` evaluation points of ``[-1, 1]^(d+m)`` (first axis slowest)."""
    axis = np.linspace(-1.0, 1.0, cfg.study.eval_grid)
    dim = cfg.stream.d + cfg.stream.m
    return np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), -1).reshape(-1, dim)


def _snap(cfg: ExperimentConfig, ts: Any) -> np.ndarray:
    """Times rounded to the limit's grid ``k·T/n_steps`` (sorted, unique)."""
    dt = cfg.training.T / cfg.limit_numerics().n_steps
    return np.unique(np.round(np.asarray(ts, float) / dt)) * dt


def record_times(cfg: ExperimentConfig) -> np.ndarray:
    """``linspace(0, T, n_times)`` on the limit's time grid: where ``sup_t`` is taken."""
    return _snap(cfg, np.linspace(0.0, cfg.training.T, cfg.study.n_times))


def l2_times(cfg: ExperimentConfig) -> np.ndarray:
    """The times of the ``L²(π_t)`` distance, on the limit's time grid."""
    return _snap(cfg, cfg.resolved().study.l2_times)


def _precision(cfg: ExperimentConfig) -> Any:
    """Switch on JAX's x64 mode for float64 experiments; return the training dtype."""
    if cfg.training.dtype == "float64":
        rnnlimit.enable_float64()
        return jnp.float64
    return jnp.float32


# --------------------------------------------------------------------------- the limit


def run_limit(
    cfg: ExperimentConfig, progress: Progress = None, gradient: str | None = None
) -> LimitResult:
    """Solve the limit of ``gradient`` (default ``training.gradient``: for truncated training
    ``∂_t h_t = α E_{π_t}[A(z, Z)(Y − h_t(Z))]``, for RTRL the trace-carrying drift of §4b) on
    the grid at the record and l2 times, keeping samples of π_t at the l2 times; with
    ``limit.estimate_error`` also its error. Raises :class:`DivergenceError` when ``h_t`` or
    ``L(t)`` runs away (:func:`check_limit`)."""
    cfg = validate_config(cfg).resolved()
    _precision(cfg)
    gradient = gradient or cfg.training.gradient
    stage = "limit" if gradient == cfg.training.gradient else "other_limit"
    solver = limit_solver(cfg.limit_problem(gradient))
    try:
        result = solver(
            cfg.limit_numerics(),
            eval_grid(cfg),
            np.union1d(record_times(cfg), l2_times(cfg)),
            memory_times=l2_times(cfg),
            estimate_error=cfg.limit.estimate_error,
            progress=None if progress is None else lambda k, n: progress(stage, k, n),
        )
    except ParameterError as err:
        if err.parameter == "dt" and "non-finite" in str(err):  # the solver's own check
            raise nonfinite_limit(cfg, gradient, str(err)) from None
        if err.parameter != "dt":
            raise
        # the stability bound on dt: name the config keys
        msg = str(err).split(": ", 1)[-1].replace("(or alpha)", "(or training.alpha)")
        raise ParameterError("limit.dt", msg) from None
    check_limit(cfg, result, gradient)
    return result


def limit_arrays(
    cfg: ExperimentConfig, result: LimitResult, wall_time: float | None = None
) -> dict[str, np.ndarray]:
    """Everything of ``limit.npz`` (docs/results-format.md): ``h`` at the record times, π_t
    samples, ``n_pi`` of them kept as evaluation points ``pi_points_<i>`` with ``h_pi_<i>``.
    ``wall_time``: the whole solve with its error estimate (default: the base solve only)."""
    cfg = validate_config(cfg).resolved()
    dt = cfg.training.T / cfg.limit_numerics().n_steps
    rec, l2 = record_times(cfg), l2_times(cfg)
    idx = _step_index(result.times, rec, 1.0 / dt)
    out: dict[str, np.ndarray] = dict(
        times=rec, eval_points=result.eval_points, h=result.h[idx], loss_t=result.loss_t,
        loss=result.loss, lipschitz=result.lipschitz[idx], memory_times=l2,
    )  # fmt: skip
    for name, err_t in result.error_t.items():
        out[f"error_t_{name}"] = np.asarray(err_t)[idx]
    memory = {round(t / dt): v for t, v in result.memory.items()}
    l2_idx = _step_index(result.times, l2, 1.0 / dt)
    for i, t in enumerate(l2):
        mem = memory[round(t / dt)]
        out[f"memory_{i}_x"], out[f"memory_{i}_s"] = mem["x"], mem["s"]
        keep = np.round(np.linspace(0, len(mem["s"]) - 1, cfg.study.n_pi)).astype(int)
        out[f"pi_points_{i}"] = np.concatenate([mem["x"][keep], mem["s"][keep]], axis=1)
        out[f"h_pi_{i}"] = result.h_at(out[f"pi_points_{i}"], int(l2_idx[i]))
    dim = cfg.stream.d + cfg.stream.m
    axis = np.linspace(-1.0, 1.0, 41)
    z = np.zeros((41 * 41 if dim > 1 else 41, dim))
    z[:, : min(dim, 2)] = np.stack(np.meshgrid(*[axis] * min(dim, 2), indexing="ij"), -1).reshape(
        -1, min(dim, 2)
    )
    out["kernel_slice_z"] = z
    out["kernel_slice_values"] = np.asarray(ntk(cfg.kernel_spec())(z, np.zeros((1, dim))))[:, 0]
    notes = list(result.notes)
    if _conditional(cfg):
        notes.append(
            "beta = 1/2 without antisymmetric init: g^N_0 is a Gaussian process, so each "
            "network is compared with the limit started from its own g^N_0"
        )
    out["summary_json"] = np.asarray(
        json.dumps(sweep.jsonable(summarize_limit(cfg, result, wall_time, notes)))
    )
    return out


def solve_limits(
    cfg: ExperimentConfig, progress: Progress = None
) -> tuple[dict[str, np.ndarray], LimitResult]:
    """Everything of ``limit.npz``: the limit of ``training.gradient`` and, with
    ``limit.both_gradients``, the other gradient's (its divergence is noted, not raised); and
    the reference limit's :class:`LimitResult`."""
    start = time.perf_counter()
    result = run_limit(cfg, progress)
    lim = limit_arrays(cfg, result, time.perf_counter() - start)
    if not cfg.limit.both_gradients:
        return lim, result
    start = time.perf_counter()
    try:
        other = run_limit(cfg, progress, cfg.other_gradient)
    except DivergenceError as err:
        summary = json.loads(str(lim["summary_json"]))
        summary["other"] = dict(gradient=cfg.other_gradient, diverged=limit_failure(cfg, err))
        return {**lim, "summary_json": np.asarray(json.dumps(sweep.jsonable(summary)))}, result
    return {**lim, **other_limit_arrays(cfg, lim, other, time.perf_counter() - start)}, result


def _conditional(cfg: ExperimentConfig) -> bool:
    """β = 1/2 with plain initialisation: ``g^N_0`` tends to a Gaussian process, not to 0."""
    return cfg.network.beta == 0.5 and not cfg.network.antisymmetric


def conditional_limit(
    cfg: ExperimentConfig, spec: Any, params: Any, gradient: str | None = None
) -> LimitResult:
    """The limit (of ``gradient``, default ``training.gradient``) started from the network's
    own initial function, ``h_0 = g^N_0`` (docs/model.md §4: compare conditionally on the
    Gaussian-process draw). Solved without an error estimate; the study's shared limit (from
    ``h_0 = 0``) keeps the error floor."""
    solver = limit_solver(cfg.limit_problem(gradient))

    def h0(z: jax.Array) -> jax.Array:
        return output_batch(spec, params, z)

    return solver(
        cfg.limit_numerics(), eval_grid(cfg), np.union1d(record_times(cfg), l2_times(cfg)),
        memory_times=l2_times(cfg), h0=h0, estimate_error=False,
    )  # fmt: skip


def _task_limit(lim: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of the limit a task needs (sent to worker processes)."""
    keys = ("times", "h", "memory_times", "other_h")
    prefixes = ("pi_points_", "h_pi_", "other_h_pi_")
    return {k: v for k, v in lim.items() if k in keys or k.startswith(prefixes)}


def _conditional_task_limit(cfg: ExperimentConfig, spec: Any, params: Any, other: bool) -> dict:
    """:func:`_task_limit` of the limit(s) started from the network's own ``g^N_0``."""
    full = limit_arrays(cfg, conditional_limit(cfg, spec, params))
    if other:
        res = conditional_limit(cfg, spec, params, cfg.other_gradient)
        full.update(other_limit_arrays(cfg, full, res, 0.0))
    return _task_limit(full)


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
    lim = None if limit is None else _task_limit(limit_arrays(cfg, limit))
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
    dtype = _precision(cfg)
    spec = cfg.network_spec(N)
    K = max(1, round(cfg.training.T * N))
    stream = sample_stream(
        cfg.stream.build_chain(), cfg.stream.build_target(),
        jax.random.PRNGKey(cfg.study.stream_seed + seed), K, burn_in=cfg.stream.burn_in,
        dtype=dtype,
    )  # fmt: skip
    params = init_params(spec, jax.random.PRNGKey(seed), dtype)
    if lim is not None and _conditional(cfg):
        lim = _conditional_task_limit(cfg, spec, params, "other_h" in lim)
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
        idx = _step_index(rec.eval_times, times, N)
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
    sent = None if lim is None else _task_limit(lim)
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
