"""The reading of a run's numbers (docs/model.md §5): the run directory loaded, and the sentences
that say what its errors, rates, limits and forecasts support.

:func:`load_run` reads ONLY the files of the run directory (docs/results-format.md);
:func:`reading` and :func:`recorded_reading` never recompute what :mod:`rnnlimit.compare` owns:
the errors, the fitted rate and the limit's own error come from ``results.json`` (the forecast
scores from ``forecast.json``). :mod:`rnnlimit.report` lays these out as the report's pages.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnlimit.errors import ParameterError
from rnnlimit.figures import ci95_text, error_floor, tasks_by_N
from rnnlimit.sweep import load_npz
from rnnlimit.verdicts import limit_scale, rate_verdict, solver_warnings, verdict_sentence

__all__ = ["RunData", "load_run", "reading", "recorded_reading"]

_TASK_FILE = re.compile(r"N(\d+)_seed(\d+)\.npz$")


@dataclass
class RunData:
    """What a run directory holds: ``results.json``, ``limit.npz`` and ``tasks/*.npz``."""

    run_dir: Path
    results: dict[str, Any]
    limit: dict[str, np.ndarray] | None
    tasks: dict[tuple[int, int], dict[str, np.ndarray]]

    @property
    def kind(self) -> str:
        return str(self.results.get("kind", "partial"))


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a run directory. Without ``results.json`` (a killed run) the finished tasks'
    ``tasks/*.json`` stand in, so what was computed can still be reported."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ParameterError("RUN_DIR", f"{str(root)!r} is not a directory")
    tasks: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for p in sorted((root / "tasks").glob("N*_seed*.npz")):
        if m := _TASK_FILE.search(p.name):
            tasks[int(m[1]), int(m[2])] = load_npz(p)
    limit = load_npz(root / "limit.npz") if (root / "limit.npz").is_file() else None
    if (root / "results.json").is_file():
        results = json.loads((root / "results.json").read_text())
    elif tasks or limit is not None:
        metas = [json.loads(p.read_text()) for p in sorted((root / "tasks").glob("*.json"))]
        results = {"kind": "partial", "tasks": metas, "limit": {}}
    else:
        raise ParameterError(
            "RUN_DIR", f"{str(root)!r} holds no results.json, limit.npz or tasks/: not a run dir"
        )
    return RunData(root, results, limit, tasks)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _rate_line(metric: str, r: dict[str, Any], tasks: list[dict[str, Any]], what: str) -> str:
    """One fitted rate with its verdict (recomputed for run directories that hold none)."""
    if r.get("verdict") is None:
        used = [t for t in tasks if t.get("diverged_at") is None and t.get(metric) is not None]
        v = rate_verdict(r, len({t["N"] for t in used}), len({t["seed"] for t in used}))
        r = {**r, "verdict": v["verdict"], "verdict_reason": v["reason"]}
    left_out = r.get("excluded") or []
    excl = f", {len(left_out)} diverged runs left out" if left_out else ""
    return (
        f"Fitted rate of {metric}{what}: error ∝ N^{r['slope']:.3f}, 95% CI {ci95_text(r)} "
        f"({r.get('n_points', '?')} runs{excl}): {verdict_sentence(r['verdict'])} "
        f"({r['verdict_reason']})."
    )


def _mean_error(tasks: list[dict[str, Any]], N: int, metric: str) -> float | None:
    vals = [t[metric] for t in tasks if t["N"] == N and t.get(metric) is not None]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _divergence_lines(res: dict[str, Any], gradient: str) -> list[str]:
    """What diverged: the limit (nothing else can be read then) and each finite run."""
    lines = []
    lim, other = res.get("limit") or {}, res.get("other_limit") or {}
    for d, after in (
        (
            lim.get("diverged"),
            "the networks were not trained: there is nothing to compare them with",
        ),
        (other.get("diverged"), f"the networks are compared with the {gradient} limit only"),
    ):
        if d:
            lines.append(
                f"DIVERGED: {d.get('message', 'a limit diverged')}. A diverged limit gives no "
                f"error estimate and no contraction check; {after}."
            )
    tasks = res.get("tasks", [])
    bad = [t for t in tasks if t.get("diverged_at") is not None]
    if bad:
        named = "; ".join(
            f"N = {t['N']} seed {t['seed']} at step {t['diverged_at']}"
            + (f" (t = {t['diverged_t']:.3g})" if t.get("diverged_t") is not None else "")
            + (f": {t['diverged_what']}" if t.get("diverged_what") else "")
            for t in bad
        )
        lines.append(
            f"{len(bad)} of {len(tasks)} finite runs DIVERGED and are left out of every error, "
            f"mean and rate below: {named}."
        )
    return lines


def _other_limit_lines(res: dict[str, Any], gradient: str) -> list[str]:
    """The other gradient's limit (``limit.both_gradients``): the gap, the networks' distance to
    it, and which limit the widest networks are nearer."""
    other = res.get("other_limit") or {}
    if not other or other.get("diverged"):
        return []
    name, lines = other.get("gradient", "other"), []
    gap = other.get("gap_max")
    floors = [
        f
        for f in ((res.get("limit") or {}).get("error") or {}, other.get("error") or {})
        if f.get("total") is not None
    ]
    floor = max((f["total"] for f in floors), default=None)
    if gap is not None:
        lines.append(
            f"Gap between the {gradient} and the {name} limits (max over t of the RMS over the "
            f"grid): {gap:.3g} at t = {other.get('gap_t_max', float('nan')):.3g}"
            + (f", {gap / floor:.1f}× the larger of their error floors ({floor:.2g})" if floor
               else "")
            + "."
        )  # fmt: skip
    tasks = [t for t in res.get("tasks", []) if t.get("diverged_at") is None]
    for metric, r in (res.get("other_rates") or {}).items():
        if r.get("slope") is not None:
            lines.append(
                f"Distance to the {name} limit ({metric}): error ∝ N^{r['slope']:.3f}, 95% CI "
                f"{ci95_text(r)} ({r.get('n_points', '?')} runs); it cannot fall much below the "
                "gap between the two limits, where it must level off."
            )
    widths = sorted({t["N"] for t in tasks})
    own = _mean_error(tasks, widths[-1], "sup_rms_grid") if widths else None
    far = _mean_error(tasks, widths[-1], "other_sup_rms_grid") if widths else None
    if gap is not None and own is not None and far is not None:
        head = (
            f"At the widest N = {widths[-1]} the networks are {own:.3g} from the {gradient} "
            f"limit and {far:.3g} from the {name} limit, the gap being {gap:.3g}: "
        )
        if own < gap / 2:  # then, by the triangle inequality, far ≥ gap − own > own
            lines.append(head + f"they resolve the two limits and follow the {gradient} one.")
        else:
            lines.append(
                head + "their distance to either exceeds half the gap, so these widths cannot "
                "tell the two limits apart yet" + _width_for(res.get("rate") or {}, gap / 2) + "."
            )
    return lines


def _width_for(rate: dict[str, Any], target: float) -> str:
    """``"; the fitted rate reaches <target> near N ≈ …"`` (empty without a decreasing fit)."""
    slope, c = rate.get("slope"), rate.get("intercept")
    if slope is None or c is None or not slope < 0 or not c > 0:
        return ""
    return f"; the fitted rate reaches half the gap near N ≈ {(target / c) ** (1 / slope):.3g}"


def reading(run: RunData) -> list[str]:
    """A short reading of the numbers, generated from the run's data (one sentence each).

    Nothing is read from what diverged: diverged runs are named and left out of the means and
    the fit; a diverged limit is named and no contraction, error estimate or rate is claimed.
    """
    res, lines = run.results, []
    res.setdefault("tasks", [])
    rate, lim, floor = res.get("rate") or {}, res.get("limit") or {}, error_floor(res)
    config = res.get("config") or {}
    gradient = res.get("gradient") or (config.get("training") or {}).get("gradient", "truncated")
    lines += _divergence_lines(res, gradient)
    if lim and not lim.get("diverged") and gradient == "rtrl":
        lines.append(
            "The networks are trained by RTRL and compared with the RTRL limit (§4b), the limit "
            "of their own gradient."
        )
    rates = res.get("rates") or ({rate.get("metric", "sup_rms_grid"): rate} if rate else {})
    for metric, r in rates.items():
        if r.get("slope") is None:
            continue
        lines.append(_rate_line(metric, r, res["tasks"], ""))
    ok = [t for t in res["tasks"] if t.get("diverged_at") is None]
    metrics = [m for m in ("sup_rms_grid", "sup_l2_pi") if any(t.get(m) for t in ok)]
    for N in sorted({t["N"] for t in ok if metrics}):
        parts = []
        for m in metrics:
            if (e := _mean_error(ok, N, m)) is not None:
                parts.append(f"{m} = {e:.3g}" + (f" ({e / floor:.1f}× the floor)" if floor else ""))
        if parts:
            lines.append(f"N = {N}: " + ", ".join(parts) + ".")
    if floor and metrics:
        errs = [t[metrics[0]] for t in ok if t.get(metrics[0]) is not None]
        near = sum(e < 2 * floor for e in errs)
        where = "reaches" if errs and min(errs) < 2 * floor else "stays above"
        lines.append(
            f"The widest networks' error {where} the limit's error floor {floor:.2g}"
            + (
                f"; {near} of {len(errs)} runs lie within twice the floor, where the solver's "
                "own error flattens the fitted slope"
                if near
                else ""
            )
            + "."
        )
    lines += _other_limit_lines(res, gradient)
    by_N = tasks_by_N(run.tasks)
    if by_N:
        N, task = max(by_N), by_N[max(by_N)][0]
        if len(task["loss"]) and np.isfinite(task["loss"][[0, -1]]).all():
            lines.append(
                f"Training loss (N = {N}): {task['loss'][0]:.3g} in the first window, "
                f"{task['loss'][-1]:.3g} at the end."
            )
    if run.limit is not None and len(run.limit.get("loss", [])):
        ll = run.limit["loss"]
        lines.append(f"Limit loss L(t): {ll[0]:.3g} at t = 0, {ll[-1]:.3g} at t = T.")
    lip = lim.get("lipschitz_max")
    if lip is None and run.limit is not None and len(run.limit.get("lipschitz", [])):
        lip = float(np.max(run.limit["lipschitz"]))
    has_limit = (bool(lim) and not lim.get("diverged")) or (not lim and run.limit is not None)
    if has_limit and (lip is None or not np.isfinite(lip)):
        lines.append(
            "WARNING: the Lipschitz constant of s ↦ ψ(h_t(x, s)) could not be measured (not a "
            "number): the contraction of the memory map, and so the memory law, is unverified."
        )
    elif has_limit:
        verdict = "< 1: the memory map is a contraction, the memory law is well posed"
        lines.append(
            f"Max Lipschitz constant of s ↦ ψ(h_t(x, s)) over t: {lip:.3g} "
            + (f"{verdict}." if lip < 1 else "≥ 1: NOT a contraction (the run was forced).")
        )
    if lim.get("error"):
        parts = ", ".join(f"{k} {_fmt(v)}" for k, v in lim["error"].items())
        lines.append(f"The limit solver's own error estimate (max over t, RMS): {parts}.")
        warnings = lim.get("warnings")
        if warnings is None:  # a run directory written before the warnings were stored
            scale = (
                None if run.limit is None or "h" not in run.limit else limit_scale(run.limit["h"])
            )
            warnings = solver_warnings(lim["error"], scale, None)
        lines += [f"WARNING: {w}." for w in warnings]
    elif has_limit and "error" in lim:
        lines.append(
            "The limit solver's own error was not estimated (limit.estimate_error = false): the "
            "error floor, and so how close a network can be shown to get, is unknown."
        )
    other = res.get("other_limit") or {}
    for w in other.get("warnings") or []:
        lines.append(f"WARNING ({other.get('gradient')} limit): {w}.")
    walls = [f"limit {lim['wall_time']:.1f} s"] if lim.get("wall_time") is not None else []
    for N in sorted({t["N"] for t in res.get("tasks", []) if t.get("wall_time") is not None}):
        w = sum(t["wall_time"] for t in res["tasks"] if t["N"] == N and t.get("wall_time"))
        walls.append(f"N = {N} {w:.1f} s")
    if walls:
        lines.append("Wall times (finite networks: summed over seeds): " + ", ".join(walls) + ".")
    return lines


def recorded_reading(run_dir: str | os.PathLike[str]) -> list[str]:
    """The forecast scores and the re-reading warning of a recorded run (``forecast.json``);
    empty for a simulated stream."""
    path = Path(run_dir) / "forecast.json"
    if not path.is_file():
        return []
    fc = json.loads(path.read_text())
    groups: dict[str, list[dict]] = {}
    for r in fc["table"]:
        name = r["model"] if r.get("N") is None else f"network N = {r['N']}"
        groups.setdefault(name, []).append(r)
    parts = []
    for name, rows in groups.items():
        seeds = f" (mean of {len(rows)} seeds)" if len(rows) > 1 else ""
        rmse, mae = (float(np.mean([r[k] for r in rows])) for k in ("rmse", "mae"))
        parts.append(f"{name} {rmse:.3g} / {mae:.3g}{seeds}")
    lines = []
    if parts:
        lines.append(
            f"One-step forecasts on the held-out tail ({fc['n_tail']} samples), RMSE / MAE in "
            f"{fc['recording']['units']}: " + "; ".join(parts) + "."
        )
    diag = fc["diagnostics"]
    tau = ", ".join(f"{k} {v:.4g}" for k, v in diag["tau"].items())
    ess = ", ".join(f"{k} {v:.4g}" for k, v in diag["ess"].items())
    lines.append(
        f"Recording: {diag['n_train']} training examples; integrated autocorrelation time "
        f"{tau}; effective sample size {ess}."
    )
    if diag.get("coverage"):
        cover = ", ".join(f"N = {n}: {c:.3g}" for n, c in diag["coverage"].items())
        lines.append(
            f"Share of the training span each width reads in order (T·N / L): {cover}; below 1 "
            "a network sees a stretch of the recording, the limit all of it."
        )
    if diag.get("warning"):
        lines.append(f"Warning: {diag['warning']}.")
    return lines
