"""The limits a study compares with, and when a run has diverged (docs/model.md §4, §4b, §5).

A study solves the limit of its networks' own gradient (``training.gradient``) and, with
``limit.both_gradients``, the other gradient's too; this module turns those solves into the
``limit.npz`` pieces that :mod:`rnnlimit.compare` does not already write (the ``other_*``
arrays, ``gap_t``, the summary with its scale and solver warnings) and decides when a limit or
a finite run has run away (:data:`rnnlimit.verdicts.RUNAWAY`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from rnnlimit import sweep
from rnnlimit.config import ExperimentConfig
from rnnlimit.errors import DivergenceError
from rnnlimit.limit import LimitResult
from rnnlimit.verdicts import RUNAWAY, first_runaway, limit_scale, solver_warnings


def step_index(times: np.ndarray, wanted: np.ndarray, scale: float) -> np.ndarray:
    """Index into ``times`` of each ``wanted`` time, matched on the step ``round(t·scale)``;
    -1 where absent."""
    have = {int(k): i for i, k in enumerate(np.round(np.asarray(times) * scale))}
    return np.asarray([have.get(int(k), -1) for k in np.round(np.asarray(wanted) * scale)])


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
