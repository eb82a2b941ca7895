"""The limit a study compares with, and when a run has diverged (docs/model.md §4, §4b, §5).

A study evaluates on ``n_grid^(d+m)`` points of ``[-1, 1]^(d+m)`` (:func:`eval_grid`) at record
and l2 times snapped to the limit's time grid ``k·T/n_steps``, so that ``g^N_{⌊Nt⌋}`` and
``h_t`` are compared at one time. Here the limit of the networks' own gradient
(``training.gradient``: §4 truncated, §4b RTRL) is solved on those points and times and, with
``limit.both_gradients``, the other gradient's too; β = 1/2 without antisymmetric init starts
it from each network's own ``g^N_0`` instead (:func:`conditional_limit`). The solves become the
content of ``limit.npz`` (docs/results-format.md: ``h`` at the record times, π_t samples, the
``other_*`` arrays, ``gap_t``, the summary with its scale and solver warnings), and this module
decides when a limit or a finite run has run away (:data:`rnnlimit.verdicts.RUNAWAY`). The
study itself (tasks, distances, run directories) is :mod:`rnnlimit.compare`.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rnnlimit
from rnnlimit import sweep
from rnnlimit.config import ExperimentConfig, validate_config
from rnnlimit.errors import DivergenceError, ParameterError
from rnnlimit.kernels import ntk
from rnnlimit.limit import LimitResult, limit_solver
from rnnlimit.network import output_batch
from rnnlimit.rundir import Progress
from rnnlimit.verdicts import RUNAWAY, first_runaway, limit_scale, solver_warnings

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


def precision(cfg: ExperimentConfig) -> Any:
    """Switch on JAX's x64 mode for float64 experiments; return the training dtype."""
    if cfg.training.dtype == "float64":
        rnnlimit.enable_float64()
        return jnp.float64
    return jnp.float32


def step_index(times: np.ndarray, wanted: np.ndarray, scale: float) -> np.ndarray:
    """Index into ``times`` of each ``wanted`` time, matched on the step ``round(t·scale)``;
    -1 where absent."""
    have = {int(k): i for i, k in enumerate(np.round(np.asarray(times) * scale))}
    return np.asarray([have.get(int(k), -1) for k in np.round(np.asarray(wanted) * scale)])


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
    precision(cfg)
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
    idx = step_index(result.times, rec, 1.0 / dt)
    out: dict[str, np.ndarray] = dict(
        times=rec, eval_points=result.eval_points, h=result.h[idx], loss_t=result.loss_t,
        loss=result.loss, lipschitz=result.lipschitz[idx], memory_times=l2,
    )  # fmt: skip
    for name, err_t in result.error_t.items():
        out[f"error_t_{name}"] = np.asarray(err_t)[idx]
    memory = {round(t / dt): v for t, v in result.memory.items()}
    l2_idx = step_index(result.times, l2, 1.0 / dt)
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
    if gaussian_start(cfg):
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


def gaussian_start(cfg: ExperimentConfig) -> bool:
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


def task_limit(lim: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of the limit a task needs (sent to worker processes)."""
    keys = ("times", "h", "memory_times", "other_h")
    prefixes = ("pi_points_", "h_pi_", "other_h_pi_")
    return {k: v for k, v in lim.items() if k in keys or k.startswith(prefixes)}


def conditional_task_limit(cfg: ExperimentConfig, spec: Any, params: Any, other: bool) -> dict:
    """:func:`task_limit` of the limit(s) started from the network's own ``g^N_0``."""
    full = limit_arrays(cfg, conditional_limit(cfg, spec, params))
    if other:
        res = conditional_limit(cfg, spec, params, cfg.other_gradient)
        full.update(other_limit_arrays(cfg, full, res, 0.0))
    return task_limit(full)


# ---------------------------------------------------------------------- summaries, divergence


def check_limit(cfg: ExperimentConfig, result: LimitResult, gradient: str) -> None:
    """Raise :class:`DivergenceError` if ``h_t`` on the evaluation points or the RMS residual
    ``sqrt(2 L(t))`` is non-finite or beyond :data:`~rnnlimit.verdicts.RUNAWAY` (targets lie in
    ``[-1, 1]^m``), naming the time and the remedy; ``step`` is the limit's time step."""
    i = first_runaway(result.h)
    j = first_runaway(np.sqrt(2.0 * np.abs(np.asarray(result.loss, float))))
    if i is None and j is None:
        return
    t = min(
        result.times[i] if i is not None else np.inf, result.loss_t[j] if j is not None else np.inf
    )
    size = float(np.nanmax(np.abs(result.h))) if i is not None else float("nan")
    dt = cfg.training.T / cfg.limit_numerics().n_steps
    err = DivergenceError(round(t / dt), result, f"the {gradient} limit h_t")
    err.args = (
        f"the {gradient} limit h_t diverged by t = {t:.3g} (|h_t| reached {size:.3g}, beyond "
        f"{RUNAWAY:g} while the targets lie in [-1, 1]): lower training.alpha "
        f"({cfg.training.alpha:g}) or limit.dt ({cfg.limit.dt:g})",
    )
    raise err


def summarize_limit(
    cfg: ExperimentConfig,
    result: LimitResult,
    wall_time: float | None,
    notes: list[str] | None = None,
    gradient: str | None = None,
) -> dict[str, Any]:
    """The scalars of one limit: gradient, error estimate, scale, warnings, Lipschitz, times."""
    scale = limit_scale(result.h)
    loss_T = float(result.loss[-1]) if len(result.loss) else None
    return dict(
        gradient=gradient or cfg.training.gradient,
        wall_time=result.wall_time if wall_time is None else wall_time,
        solve_time=result.wall_time, error=result.error, representation=result.representation,
        kernel_method=result.kernel_method, notes=list(result.notes) if notes is None else notes,
        lipschitz_max=float(np.max(result.lipschitz)), scale=scale,
        warnings=solver_warnings(result.error, scale, loss_T),
    )  # fmt: skip


def other_limit_arrays(
    cfg: ExperimentConfig, lim: dict[str, np.ndarray], other: LimitResult, wall_time: float
) -> dict[str, np.ndarray]:
    """The other gradient's limit (``limit.both_gradients``) as ``other_*`` arrays next to the
    reference ``lim``: ``other_h`` at the record times, ``other_h_pi_<i>`` at the reference
    π_t samples (the distance between the two is measured in ``L²(π_t)`` of the reference),
    ``other_loss(_t)``, ``other_lipschitz``, ``other_error_t_<name>``, and ``gap_t``, the RMS
    over the evaluation points of ``h_t − h_t^other`` per record time."""
    dt = cfg.training.T / cfg.limit_numerics().n_steps
    idx = step_index(other.times, lim["times"], 1.0 / dt)
    out = dict(
        other_h=other.h[idx], other_loss_t=other.loss_t, other_loss=other.loss,
        other_lipschitz=other.lipschitz[idx],
    )  # fmt: skip
    for name, err_t in other.error_t.items():
        out[f"other_error_t_{name}"] = np.asarray(err_t)[idx]
    l2_idx = step_index(other.times, lim["memory_times"], 1.0 / dt)
    for i in range(len(lim["memory_times"])):
        out[f"other_h_pi_{i}"] = other.h_at(lim[f"pi_points_{i}"], int(l2_idx[i]))
    gap_t = np.sqrt(np.mean((lim["h"] - out["other_h"]) ** 2, axis=(1, 2)))
    out["gap_t"] = gap_t
    summary = json.loads(str(lim["summary_json"]))
    gradient = cfg.other_gradient
    summary["other"] = dict(
        **summarize_limit(cfg, other, wall_time, gradient=gradient), gap_max=float(gap_t.max()),
        gap_t_max=float(lim["times"][int(np.argmax(gap_t))]),
    )  # fmt: skip
    out["summary_json"] = np.asarray(json.dumps(sweep.jsonable(summary)))
    return out


def nonfinite_limit(cfg: ExperimentConfig, gradient: str, message: str) -> DivergenceError:
    """The solver's "non-finite by step k" as a :class:`DivergenceError` naming the remedy."""
    match = re.search(r"step (\d+)", message)
    step = int(match[1]) if match else 0
    dt = cfg.training.T / cfg.limit_numerics().n_steps
    err = DivergenceError(step, None, f"the {gradient} limit h_t")
    err.args = (
        f"the {gradient} limit h_t became non-finite by t = {step * dt:.3g}: lower "
        f"training.alpha ({cfg.training.alpha:g}) or limit.dt ({cfg.limit.dt:g})",
    )
    return err


def limit_failure(cfg: ExperimentConfig, err: DivergenceError) -> dict[str, Any]:
    """What ``results.json`` says of a limit that diverged: the step, its time, the message
    (``err.t`` when the error carries the time itself, else ``step`` limit time steps)."""
    dt = cfg.training.T / cfg.limit_numerics().n_steps
    t = getattr(err, "t", None)
    return dict(step=int(err.step), t=float(err.step * dt if t is None else t), message=str(err))


def other_view(lim: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The other gradient's limit in the layout :func:`task_errors` reads."""
    out = {k: v for k, v in lim.items() if k in ("times", "memory_times")}
    out["h"] = lim["other_h"]
    out.update({k[len("other_") :]: v for k, v in lim.items() if k.startswith("other_h_pi_")})
    return out


def task_divergence(
    rec: Any, N: int, diverged_at: int | None, message: str | None
) -> tuple[int | None, str | None]:
    """The step at which the run diverged: the trainer's (non-finite), else the first record
    or loss window whose output or RMS residual ``sqrt(2ℓ)`` is beyond ``RUNAWAY``."""
    if diverged_at is not None:
        return diverged_at, message
    steps = []
    if (i := first_runaway(rec.outputs)) is not None:
        steps.append(round(float(rec.eval_times[i]) * N))
    if (j := first_runaway(np.sqrt(2.0 * np.abs(np.asarray(rec.loss, float))))) is not None:
        steps.append(round(float(rec.window_t[j]) * N))
    if not steps:
        return None, None
    k = min(steps)
    return k, f"network output grew beyond {RUNAWAY:g} (targets lie in [-1, 1]) by step k={k}"
