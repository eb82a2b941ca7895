"""Convergence of the finite networks to the limit (MODEL.md §5).

A study is one stream/target/network specification, a list of widths N and of seeds. The limit
``h_t`` is solved once (with its own error estimate, the floor), then each ``(N, seed)`` network
is trained on its own stream and evaluated at the same points and times::

    sup_rms_grid = sup_{t ≤ T} ( mean_{z ∈ grid, j ≤ m} (g^N_{⌊Nt⌋}(z)_j − h_t(z)_j)² )^(1/2)
    sup_l2_pi    = sup_{t ∈ l2_times} ( mean_{Z ∼ π_t} |g^N_{⌊Nt⌋}(Z) − h_t(Z)|² )^(1/2)

and the rate is the log-log least-squares slope of the error in N (expected near −1/2 until the
floor). Data flows one way: chains → (network | limit) → compare → report. Record and l2 times
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
from scipy import stats

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
from rnnlimit.train import train

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


def _step_index(times: np.ndarray, wanted: np.ndarray, scale: float) -> np.ndarray:
    """Index into ``times`` of each ``wanted`` time, matched on the step ``round(t·scale)``;
    -1 where absent."""
    have = {int(k): i for i, k in enumerate(np.round(np.asarray(times) * scale))}
    return np.asarray([have.get(int(k), -1) for k in np.round(np.asarray(wanted) * scale)])


# --------------------------------------------------------------------------- the limit


def run_limit(cfg: ExperimentConfig, progress: Progress = None) -> LimitResult:
    """Solve ``∂_t h_t = α E_{π_t}[A(z, Z)(Y − h_t(Z))]`` on the grid at the record and l2 times,
    keeping samples of π_t at the l2 times; with ``limit.estimate_error`` also its error."""
    cfg = validate_config(cfg).resolved()
    _precision(cfg)
    solver = limit_solver(cfg.limit_problem())
    return solver(
        cfg.limit_numerics(),
        eval_grid(cfg),
        np.union1d(record_times(cfg), l2_times(cfg)),
        memory_times=l2_times(cfg),
        estimate_error=cfg.limit.estimate_error,
        progress=None if progress is None else lambda k, n: progress("limit", k, n),
    )


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
    summary = dict(
        wall_time=result.wall_time if wall_time is None else wall_time,
        solve_time=result.wall_time, error=result.error, representation=result.representation,
        kernel_method=result.kernel_method, notes=notes,
        lipschitz_max=float(np.max(result.lipschitz)),
    )  # fmt: skip
    out["summary_json"] = np.asarray(json.dumps(sweep.jsonable(summary)))
    return out


def _conditional(cfg: ExperimentConfig) -> bool:
    """β = 1/2 with plain initialisation: ``g^N_0`` tends to a Gaussian process, not to 0."""
    return cfg.network.beta == 0.5 and not cfg.network.antisymmetric


def conditional_limit(cfg: ExperimentConfig, spec: Any, params: Any) -> LimitResult:
    """The limit started from the network's own initial function, ``h_0 = g^N_0`` (MODEL.md §4:
    compare conditionally on the Gaussian-process draw). Solved without an error estimate; the
    study's shared limit (from ``h_0 = 0``) keeps the error floor."""
    solver = limit_solver(cfg.limit_problem())

    def h0(z: jax.Array) -> jax.Array:
        return output_batch(spec, params, z)

    return solver(
        cfg.limit_numerics(), eval_grid(cfg), np.union1d(record_times(cfg), l2_times(cfg)),
        memory_times=l2_times(cfg), h0=h0, estimate_error=False,
    )  # fmt: skip


def _task_limit(lim: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of the limit a task needs (sent to worker processes)."""
    keys = ("times", "h", "memory_times")
    return {k: v for k, v in lim.items() if k in keys or k.startswith(("pi_points_", "h_pi_"))}


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
        lim = _task_limit(limit_arrays(cfg, conditional_limit(cfg, spec, params)))
    rec_t, l2 = record_times(cfg), l2_times(cfg)
    grid = eval_grid(cfg)
    pi = [] if lim is None else [lim[f"pi_points_{i}"] for i in range(len(l2))]
    stride = max(1, K // (4 * N_TRACE))
    diverged_at = None
    try:
        rec = train(
            spec, params, stream, alpha=cfg.training.alpha, gradient=cfg.training.gradient,
            eval_points=np.concatenate([grid, *pi]), eval_times=np.union1d(rec_t, l2),
            window=cfg.training.window, trace_stride=stride,
            progress=None if progress is None else lambda k, n: progress("train", k, n),
        )  # fmt: skip
    except DivergenceError as err:
        rec, diverged_at = err.record, int(err.step)

    def at(times: np.ndarray) -> np.ndarray:
        idx = _step_index(rec.eval_times, times, N)
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
        eval_times=rec_t, outputs=at(rec_t)[:, : len(grid)], window_t=rec.window_t,
        loss=rec.loss, memory_mean=rec.memory_mean, memory_std=rec.memory_std,
        trace_s=trace_s, trace_t=trace_t,
    )  # fmt: skip
    out["loss_first"] = float(rec.loss[0]) if rec.loss.size else None
    out["loss_last"] = float(rec.loss[-1]) if rec.loss.size else None
    if lim is not None:
        g_l2 = at(l2)
        offsets = np.cumsum([len(grid), *(len(p) for p in pi)])
        for i in range(len(l2)):
            out[f"outputs_pi_{i}"] = g_l2[i, offsets[i] : offsets[i + 1]]
        out.update(task_errors(out, lim))
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


def fit_rate(Ns: Any, errors: Any) -> dict[str, Any]:
    """Least-squares fit ``log e = log C + slope · log N`` over the finite positive points.

    Returns ``slope``, ``ci95`` (t-distribution, n−2 degrees of freedom; NaN for n ≤ 2),
    ``stderr``, ``intercept = C`` (so ``e ≈ C N^slope``), ``log_intercept`` and ``n_points``.
    """
    N, e = np.asarray(Ns, float).ravel(), np.asarray(errors, float).ravel()
    if N.shape != e.shape:
        raise ParameterError("errors", f"must match Ns in length ({N.size}), got {e.size}")
    ok = np.isfinite(N) & np.isfinite(e) & (N > 0) & (e > 0)
    x, y = np.log(N[ok]), np.log(e[ok])
    n = int(x.size)
    nan = float("nan")
    out: dict[str, Any] = dict(slope=nan, ci95=[nan, nan], stderr=nan, intercept=nan)
    out.update(log_intercept=nan, n_points=n)
    sxx = float(np.sum((x - x.mean()) ** 2)) if n else 0.0
    if n < 2 or sxx <= 0.0:
        return out
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    a = float(y.mean() - slope * x.mean())
    out.update(slope=slope, intercept=float(np.exp(a)), log_intercept=a)
    if n > 2:
        resid = y - (a + slope * x)
        se = float(np.sqrt(np.sum(resid**2) / (n - 2) / sxx))
        q = float(stats.t.ppf(0.975, n - 2))
        out.update(stderr=se, ci95=[slope - q * se, slope + q * se])
    return out


# --------------------------------------------------------------------------- run directories


def study_rates(tasks: list[dict[str, Any]], floor: float | None) -> dict[str, dict[str, Any]]:
    """:func:`fit_rate` of each metric over the tasks that did not diverge, with the limit's
    own error ``floor`` (below which no rate can be seen)."""
    ok = [t for t in tasks if t.get("diverged_at") is None]
    rates = {}
    for m in METRICS:
        fit = fit_rate([t["N"] for t in ok], [np.nan if t.get(m) is None else t[m] for t in ok])
        rates[m] = dict(metric=m, **fit, floor=floor)
    return rates


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
            start = time.perf_counter()
            result = run_limit(cfg, progress)
            lim = limit_arrays(cfg, result, time.perf_counter() - start)
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
    rates = {}
    if kind == "converge":
        rates = study_rates(tasks, rundir.limit_summary(lim).get("error", {}).get("total"))
    results = rundir.write_results(cfg, run_dir, kind, lim, tasks, rates)
    if forecast.recorded(cfg):
        forecast.write_forecast(cfg, run_dir, lim, tasks)
    return results
