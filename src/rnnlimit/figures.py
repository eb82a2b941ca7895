"""The figures of a report (docs/model.md §5), each a function of already-loaded arrays.

``results`` is the content of ``results.json``, ``limit`` that of ``limit.npz`` (or ``None``)
and ``tasks`` maps ``(N, seed)`` to the arrays of ``tasks/N<N>_seed<seed>.npz``
(docs/results-format.md). A figure is a matplotlib :class:`~matplotlib.figure.Figure` on the
Agg canvas (no display, no pyplot state), or ``None`` when the data for it is absent. Nothing
here reads or writes files.
"""

from __future__ import annotations

import math
import re
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from rnnlimit.verdicts import RUNAWAY

Arrays = dict[str, np.ndarray]
Tasks = dict[tuple[int, int], Arrays]

CAPTIONS: dict[str, str] = {
    "h_t": "Finite networks g^N vs the limit h_t at chosen evaluation points",
    "error_vs_N": "Distance to the limit vs width N (log-log)",
    "loss": "Training loss: finite networks and the limit L(t)",
    "memory": "Memory law π_t: finite networks vs the limit",
    "kernel": "A slice of the kernel A",
    "limit_gap": "The two limits (truncated §4, RTRL §4b): their gap over t",
}
#: Figures drawn only when the run asks for them (``limit.both_gradients``): no "skipped" note.
OPTIONAL: frozenset[str] = frozenset({"limit_gap"})


def _colors(n: int) -> list[Any]:
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.1, 0.85, n)]


def tasks_by_N(tasks: Tasks) -> dict[int, list[Arrays]]:
    """The tasks grouped by width N (both in increasing order)."""
    out: dict[int, list[Arrays]] = {}
    for (N, _seed), task in sorted(tasks.items()):
        out.setdefault(N, []).append(task)
    return out


def figure_h_t(limit: Arrays | None, tasks: Tasks) -> Figure | None:
    """(a) ``h_t`` at a few evaluation points over time: the limit with its error band
    (``error_t_total``) and the finite networks' ``g^N`` for each N."""
    lim, by_N = limit, tasks_by_N(tasks)
    if lim is not None and "h" in lim:
        final, n, m = lim["h"][-1], lim["h"].shape[1], lim["h"].shape[2]
    elif by_N:
        final = next(iter(by_N.values()))[0]["outputs"][-1]
        n, m = final.shape[0], final.shape[1]
    else:
        return None
    order = np.argsort(final[:, 0])  # the points where h_T is lowest, median and highest
    idx = list(dict.fromkeys(int(order[q]) for q in (0, n // 2, n - 1)))
    rows = min(m, 2)
    fig = Figure(figsize=(4.0 * len(idx), 3.2 * rows))
    axes = fig.subplots(rows, len(idx), squeeze=False)
    colors = _colors(len(by_N))
    for j, i in enumerate(idx):
        for c in range(rows):
            ax = axes[c, j]
            if lim is not None and "h" in lim:
                t, h = lim["times"], lim["h"][:, i, c]
                ax.plot(t, h, color="black", lw=2, label="limit $h_t$")
                if "error_t_total" in lim:
                    e = np.asarray(lim["error_t_total"], float)
                    ax.fill_between(t, h - e, h + e, color="gray", alpha=0.3, label="limit error")
            for color, (N, tasks) in zip(colors, by_N.items(), strict=True):
                for s, task in enumerate(tasks):
                    if task["outputs"].shape[1] != n:
                        continue
                    ax.plot(
                        task["eval_times"],
                        task["outputs"][:, i, c],
                        "o-",
                        ms=3,
                        lw=0.8,
                        color=color,
                        alpha=0.8,
                        label=f"N = {N}" if s == 0 else None,
                    )
            where = f"point #{i}"
            if lim is not None and "eval_points" in lim:
                where = "z = (" + ", ".join(f"{v:.2f}" for v in lim["eval_points"][i]) + ")"
            ax.set_title(where + (f", output {c}" if m > 1 else ""), fontsize=9)
            ax.set_xlabel("t = k/N")
    axes[0, 0].set_ylabel("output")
    axes[0, 0].legend(fontsize=7)
    return fig


def ci95_text(rate: dict[str, Any]) -> str:
    """A fitted rate's 95% confidence interval as ``[lo, hi]`` (``n/a`` when undefined)."""
    lo, hi = (rate.get("ci95") or [None, None])[:2]
    return "n/a" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def error_floor(results: dict[str, Any]) -> float | None:
    """The limit solver's own error (``rate.floor``, else ``limit.error.total``); ``None`` when
    there is none or it is no number (a refinement solve that diverged)."""
    rate, lim = results.get("rate") or {}, results.get("limit") or {}
    floor = rate.get("floor") or (lim.get("error") or {}).get("total")
    return floor if floor is not None and 0 < floor <= RUNAWAY else None


def figure_error_vs_N(results: dict[str, Any]) -> Figure | None:
    """(b) Distance to the limit vs N (log-log) with the fitted slope, its 95% CI, a reference
    ``N^(-1/2)`` line and the limit's own error floor."""
    rate = results.get("rate") or {}
    metric = rate.get("metric", "sup_rms_grid")
    ok = [t for t in results.get("tasks", []) if t.get("diverged_at") is None]
    rows = [t for t in ok if t.get(metric) is not None and np.isfinite(t[metric])]
    if not rows:
        return None
    N = np.array([t["N"] for t in rows], float)
    err = np.array([t[metric] for t in rows], float)
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
    ax.loglog(N, err, "o", color="C0", alpha=0.5, label=f"{metric} (each seed)")
    Ns = np.unique(N)
    means = np.array([err[N == v].mean() for v in Ns])
    ax.loglog(Ns, means, "s", color="C0", label="mean over seeds")
    grid = np.geomspace(Ns.min(), Ns.max(), 50)
    if rate.get("slope") is not None and rate.get("intercept") is not None:
        fit = rate["intercept"] * grid ** rate["slope"]  # e ≈ C N^slope
        label = f"fit: slope {rate['slope']:.3f}, 95% CI {ci95_text(rate)}"
        ax.loglog(grid, fit, "-", color="C3", label=label)
    ref = means[0] * (grid / Ns[0]) ** -0.5
    ax.loglog(grid, ref, "--", color="gray", label="reference $N^{-1/2}$")
    if floor := error_floor(results):
        ax.axhline(floor, color="C2", lw=1)
        label = f"limit error floor ({floor:.2g})"
        ax.axhspan(min(floor, err.min()) / 3, floor, color="C2", alpha=0.15, label=label)
    _other_limit_points(ax, results, ok, metric)
    ax.set_xticks(Ns, [f"{int(n)}" for n in Ns])  # the widths themselves, not a crowded log scale
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("width N")
    ax.set_ylabel(f"{metric}  (max over t)")
    ax.legend(fontsize=7)
    return fig


def _other_limit_points(ax: Any, results: dict[str, Any], ok: list[dict], metric: str) -> None:
    """On the error-vs-N axes: the distance to the other gradient's limit (``other_<metric>``),
    its fitted slope and the gap between the two limits (``limit.both_gradients``)."""
    other = results.get("other_limit") or {}
    rows = [t for t in ok if t.get(f"other_{metric}") is not None]
    if not other or not rows:
        return
    gradient, name = results.get("gradient", "own"), other.get("gradient", "other")
    N = np.array([t["N"] for t in rows], float)
    err = np.array([t[f"other_{metric}"] for t in rows], float)
    ax.loglog(N, err, "^", mfc="none", color="C1", label=f"distance to the {name} limit")
    rate = (results.get("other_rates") or {}).get(f"other_{metric}") or {}
    if rate.get("slope") is not None and rate.get("intercept") is not None:
        grid = np.geomspace(N.min(), N.max(), 50)
        label = f"fit to the {name} limit: slope {rate['slope']:.3f}, CI {ci95_text(rate)}"
        ax.loglog(grid, rate["intercept"] * grid ** rate["slope"], ":", color="C1", label=label)
    if other.get("gap_max") is not None:
        label = f"gap {gradient} vs {name} limit ({other['gap_max']:.2g})"
        ax.axhline(other["gap_max"], color="C1", lw=1, ls="--", label=label)
    ax.set_title(f"circles: distance to the {gradient} limit (the networks' own)", fontsize=9)


def figure_limit_gap(results: dict[str, Any], limit: Arrays | None) -> Figure | None:
    """(f) The gap between the limit of the networks' gradient and the other gradient's limit
    over t (``gap_t``: RMS over the evaluation points), with each limit's error estimate
    (``error_t_total``, ``other_error_t_total``); drawn with ``limit.both_gradients``."""
    if limit is None or "gap_t" not in limit:
        return None
    other = results.get("other_limit") or {}
    gradient, name = results.get("gradient", "own"), other.get("gradient", "other")
    t = np.asarray(limit["times"], float)
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    ax.plot(t, limit["gap_t"], color="C3", lw=2, label=f"RMS of h_t({gradient}) − h_t({name})")
    for key, label, color in (
        ("error_t_total", f"error estimate, {gradient} limit", "C0"),
        ("other_error_t_total", f"error estimate, {name} limit", "C1"),
    ):
        if key in limit:
            ax.plot(t, limit[key], ls="--", color=color, label=label)
    ax.set_xlabel("t")
    ax.set_ylabel("RMS over the evaluation grid")
    ax.legend(fontsize=7)
    return fig


def figure_loss(limit: Arrays | None, tasks: Tasks) -> Figure | None:
    """(c) The training loss of the finite networks per N and the limit's ``L(t)``."""
    by_N = tasks_by_N(tasks)
    lim = limit if limit is not None and "loss" in limit else None
    if not by_N and lim is None:
        return None
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    for color, (N, tasks) in zip(_colors(len(by_N)), by_N.items(), strict=True):
        for s, task in enumerate(tasks):
            ax.plot(
                task["window_t"],
                task["loss"],
                color=color,
                lw=1,
                alpha=0.8,
                label=f"network, N = {N}" if s == 0 else None,
            )
    if lim is not None:
        ax.plot(lim["loss_t"], lim["loss"], color="black", lw=2, label="limit L(t)")
    ax.set_xlabel("t = k/N")
    ax.set_ylabel("loss ½|Y − ĝ|²")
    ax.legend(fontsize=7)
    return fig


def finite_memory_samples(task: Arrays, times: np.ndarray) -> list[np.ndarray]:
    """The finite network's memory samples ``trace_s`` near each π_t time, as ``(K, m)`` arrays.

    ``trace_s`` is ``(P, K, m)`` (one block per time, NaN-padded) or ``(K, m)`` with ``trace_t``
    giving each sample's time (assigned to the nearest π_t time).
    """
    if "trace_s" not in task or times.size == 0:
        return []
    tr = np.asarray(task["trace_s"], float)
    if tr.ndim == 3 and tr.shape[0] == times.size:
        blocks = [b.reshape(-1, tr.shape[-1]) for b in tr]
    else:
        tr = tr.reshape(tr.shape[0], -1) if tr.ndim >= 2 else tr[:, None]
        tt = np.asarray(task.get("trace_t", []), float).ravel()
        if len(tt) == len(tr):
            near = np.abs(tt[:, None] - times[None, :]).argmin(axis=1)
            blocks = [tr[near == i] for i in range(times.size)]
        else:
            blocks = [tr] if times.size == 1 else []
    return [b[np.all(np.isfinite(b), axis=1)] for b in blocks]


def _memory_times(limit: Arrays | None, tasks: Tasks) -> np.ndarray:
    """The π_t times: the limit's ``memory_times``, else the finite traces' last times."""
    if limit is not None and "memory_times" in limit:
        return np.atleast_1d(limit["memory_times"]).astype(float)
    for task in tasks.values():
        tt = np.asarray(task.get("trace_t", []), float)
        if tt.ndim == 2 and np.isfinite(tt).any(axis=1).all():
            return np.nanmax(tt, axis=1)
    return np.zeros(0)


def figure_memory(limit: Arrays | None, tasks: Tasks, max_panels: int = 4) -> Figure | None:
    """(d) Histograms of the memory law π_t (first memory component): the finite networks'
    ``trace_s`` against the limit's particles ``memory_<i>_s`` at (up to 4 of) the π_t times."""
    times, lim, by_N = _memory_times(limit, tasks), limit or {}, tasks_by_N(tasks)
    if times.size == 0:
        return None
    shown = np.unique(np.round(np.linspace(0, times.size - 1, min(max_panels, times.size))))
    fig = Figure(figsize=(3.6 * shown.size, 3.2))
    axes = fig.subplots(1, shown.size, squeeze=False)[0]
    samples = {N: finite_memory_samples(tasks[0], times) for N, tasks in by_N.items()}
    pooled = [lim[k].ravel() for k in lim if re.fullmatch(r"memory_\d+_s", k)]
    pooled += [b[:, 0] for blocks in samples.values() for b in blocks]
    pooled = np.concatenate([*pooled, [-0.1, 0.1]])
    lo, hi = max(-1.0, pooled.min() - 0.05), min(1.0, pooled.max() + 0.05)
    bins = np.linspace(lo, hi, 41)  # the memory's range, not all of [-1, 1]
    for ax, i in zip(axes, shown.astype(int), strict=True):
        if f"memory_{i}_s" in lim:
            s = np.asarray(lim[f"memory_{i}_s"], float).reshape(len(lim[f"memory_{i}_s"]), -1)
            ax.hist(s[:, 0], bins=bins, density=True, color="gray", alpha=0.5, label="limit π_t")
        for color, N in zip(_colors(len(by_N)), by_N, strict=True):
            if samples[N] and len(samples[N][i]):
                ax.hist(samples[N][i][:, 0], bins=bins, density=True, histtype="step", lw=1.5,
                        color=color, label=f"network, N = {N}")  # fmt: skip
        ax.set_title(f"memory law at t = {times[i]:.3g}", fontsize=9)
        ax.set_xlabel("S")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    return fig


def figure_kernel(limit: Arrays | None, results: dict[str, Any]) -> Figure | None:
    """(e) A slice of the kernel ``A(z, z₀)`` (``kernel_slice_z`` / ``kernel_slice_values``):
    a heat map when the slice is a square grid over two coordinates, else a curve."""
    if limit is None or "kernel_slice_z" not in limit or "kernel_slice_values" not in limit:
        return None
    z = np.asarray(limit["kernel_slice_z"], float)
    z = z.reshape(len(z), -1)
    v = np.asarray(limit["kernel_slice_values"], float).reshape(len(z), -1)[:, 0]
    d = int(((results.get("config") or {}).get("stream") or {}).get("d", z.shape[1] - 1))
    names = [f"x{j}" if j < d else f"s{j - d}" for j in range(z.shape[1])]
    moving = [j for j in range(z.shape[1]) if np.ptp(z[:, j]) > 0]
    fig = Figure(figsize=(5.0, 4.0))
    ax = fig.subplots()
    n = math.isqrt(len(z))
    if len(moving) == 2 and n * n == len(z):
        a, b = moving
        extent = (z[:, a].min(), z[:, a].max(), z[:, b].min(), z[:, b].max())
        grid = v.reshape(n, n)  # rows: the slower-varying coordinate
        img = grid.T if z[1, a] == z[0, a] else grid  # imshow wants [row = b, column = a]
        im = ax.imshow(img, origin="lower", extent=extent, aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax, label="A(z, z₀)")
        ax.set_xlabel(names[a])
        ax.set_ylabel(names[b])
    else:
        j = moving[0] if moving else 0
        ax.plot(z[:, j], v, lw=1.5)
        ax.set_xlabel(names[j] + " (other coordinates fixed)")
        ax.set_ylabel("A(z, z₀)")
    ax.set_title("a slice of the kernel A(z, z₀ = 0), other coordinates of z at 0", fontsize=9)
    return fig


def draw_figures(results: dict[str, Any], limit: Arrays | None, tasks: Tasks) -> dict[str, Figure]:
    """Every figure of :data:`CAPTIONS` (in that order) that the data allows."""
    figures = dict(
        h_t=figure_h_t(limit, tasks), error_vs_N=figure_error_vs_N(results),
        loss=figure_loss(limit, tasks), memory=figure_memory(limit, tasks),
        kernel=figure_kernel(limit, results), limit_gap=figure_limit_gap(results, limit),
    )  # fmt: skip
    return {name: fig for name, fig in figures.items() if fig is not None}


def figure_forecast(curves: Arrays, window: int = 336) -> Figure | None:
    """One-step forecasts against the recorded truth on the first ``window`` samples of the
    held-out tail (``forecast.npz``, data units): the limit ``h_T``, the widest network (its
    first seed), persistence and the linear AR model."""
    if "truth" not in curves or len(curves["truth"]) == 0:
        return None
    n = min(window, len(curves["truth"]))
    rows = np.asarray(curves["rows"])[:n]
    nets = sorted(
        (int(m[1]), int(m[2]), k)
        for k in curves
        if (m := re.fullmatch(r"network_N(\d+)_seed(\d+)", k))
    )
    shown = [("limit", "limit $h_T$", dict(color="black", lw=1.5))]
    if nets:
        N, _, key = max(nets, key=lambda v: (v[0], -v[1]))
        shown.append((key, f"network, N = {N}", dict(color=_colors(1)[0], lw=1.2)))
    shown += [
        ("persistence", "persistence", dict(color="tab:orange", lw=1, ls="--")),
        ("linear_ar", "linear AR (same lags)", dict(color="tab:green", lw=1, ls=":")),
    ]
    fig = Figure(figsize=(9.0, 3.8))
    ax = fig.subplots()
    ax.plot(rows, np.asarray(curves["truth"])[:n, 0], color="gray", lw=3, alpha=0.5, label="truth")
    for key, label, style in shown:
        if key in curves:
            ax.plot(rows, np.asarray(curves[key])[:n, 0], label=label, **style)
    ax.set_xlabel("row of the recording (held-out tail)")
    ax.set_ylabel("target (data units)")
    ax.legend(fontsize=7, ncol=3)
    return fig
