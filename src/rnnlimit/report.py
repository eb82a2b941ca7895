"""The report of a run (MODEL.md §5): figures, ``report.md`` and ``report.html`` from a run dir.

``write_report`` reads ONLY the files of the run directory (docs/results-format.md) and never
recomputes what :mod:`rnnlimit.compare` owns: the errors, the fitted rate and the limit's own
error come from ``results.json``; the curves from ``limit.npz`` and ``tasks/*.npz``. Figures use
matplotlib's Agg canvas (no display, no pyplot state). Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from rnnlimit.errors import ParameterError
from rnnlimit.sweep import load_npz, write_atomic

Block = tuple[str, Any]  # ("h2"|"p"|"ul"|"table"|"fig", payload): rendered to MD and HTML
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


def _save(fig: Figure, fig_dir: Path, name: str) -> dict[str, Path]:
    fig.tight_layout()
    out = {}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120)
        out[f"{name}_{fmt}"] = fig_dir / f"{name}.{fmt}"
        write_atomic(out[f"{name}_{fmt}"], buf.getvalue())
    return out


def _colors(n: int) -> list[Any]:
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.1, 0.85, n)]


def _by_N(run: RunData) -> dict[int, list[dict[str, np.ndarray]]]:
    out: dict[int, list[dict[str, np.ndarray]]] = {}
    for (N, _seed), task in sorted(run.tasks.items()):
        out.setdefault(N, []).append(task)
    return out


def figure_h_t(run: RunData) -> Figure | None:
    """(a) ``h_t`` at a few evaluation points over time: the limit with its error band
    (``error_t_total``) and the finite networks' ``g^N`` for each N."""
    lim, by_N = run.limit, _by_N(run)
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


def _ci(rate: dict[str, Any]) -> str:
    lo, hi = (rate.get("ci95") or [None, None])[:2]
    return "n/a" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def _floor(run: RunData) -> float | None:
    """The limit solver's own error (``rate.floor``, else ``limit.error.total``)."""
    rate, lim = run.results.get("rate") or {}, run.results.get("limit") or {}
    return rate.get("floor") or (lim.get("error") or {}).get("total")


def figure_error_vs_N(run: RunData) -> Figure | None:
    """(b) Distance to the limit vs N (log-log) with the fitted slope, its 95% CI, a reference
    ``N^(-1/2)`` line and the limit's own error floor."""
    rate = run.results.get("rate") or {}
    metric = rate.get("metric", "sup_rms_grid")
    rows = [t for t in run.results.get("tasks", []) if t.get(metric) is not None]
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
        label = f"fit: slope {rate['slope']:.3f}, 95% CI {_ci(rate)}"
        ax.loglog(grid, fit, "-", color="C3", label=label)
    ref = means[0] * (grid / Ns[0]) ** -0.5
    ax.loglog(grid, ref, "--", color="gray", label="reference $N^{-1/2}$")
    if floor := _floor(run):
        ax.axhline(floor, color="C2", lw=1)
        label = f"limit error floor ({floor:.2g})"
        ax.axhspan(min(floor, err.min()) / 3, floor, color="C2", alpha=0.15, label=label)
    ax.set_xlabel("width N")
    ax.set_ylabel(f"{metric}  (max over t)")
    ax.legend(fontsize=7)
    return fig


def figure_loss(run: RunData) -> Figure | None:
    """(c) The training loss of the finite networks per N and the limit's ``L(t)``."""
    by_N = _by_N(run)
    lim = run.limit if run.limit is not None and "loss" in run.limit else None
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


def finite_memory_samples(task: dict[str, np.ndarray], times: np.ndarray) -> list[np.ndarray]:
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


def _memory_times(run: RunData) -> np.ndarray:
    """The π_t times: the limit's ``memory_times``, else the finite traces' last times."""
    if run.limit is not None and "memory_times" in run.limit:
        return np.atleast_1d(run.limit["memory_times"]).astype(float)
    for task in run.tasks.values():
        tt = np.asarray(task.get("trace_t", []), float)
        if tt.ndim == 2 and np.isfinite(tt).any(axis=1).all():
            return np.nanmax(tt, axis=1)
    return np.zeros(0)


def figure_memory(run: RunData, max_panels: int = 4) -> Figure | None:
    """(d) Histograms of the memory law π_t (first memory component): the finite networks'
    ``trace_s`` against the limit's particles ``memory_<i>_s`` at (up to 4 of) the π_t times."""
    times, lim, by_N = _memory_times(run), run.limit or {}, _by_N(run)
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


def figure_kernel(run: RunData) -> Figure | None:
    """(e) A slice of the kernel ``A(z, z₀)`` (``kernel_slice_z`` / ``kernel_slice_values``):
    a heat map when the slice is a square grid over two coordinates, else a curve."""
    lim = run.limit
    if lim is None or "kernel_slice_z" not in lim or "kernel_slice_values" not in lim:
        return None
    z = np.asarray(lim["kernel_slice_z"], float)
    z = z.reshape(len(z), -1)
    v = np.asarray(lim["kernel_slice_values"], float).reshape(len(z), -1)[:, 0]
    d = int(((run.results.get("config") or {}).get("stream") or {}).get("d", z.shape[1] - 1))
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


FIGURES: dict[str, tuple[Callable[[RunData], Figure | None], str]] = {
    "h_t": (figure_h_t, "Finite networks g^N vs the limit h_t at chosen evaluation points"),
    "error_vs_N": (figure_error_vs_N, "Distance to the limit vs width N (log-log)"),
    "loss": (figure_loss, "Training loss: finite networks and the limit L(t)"),
    "memory": (figure_memory, "Memory law π_t: finite networks vs the limit"),
    "kernel": (figure_kernel, "A slice of the kernel A"),
}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def reading(run: RunData) -> list[str]:
    """A short reading of the numbers, generated from the run's data (one sentence each)."""
    res, lines = run.results, []
    res.setdefault("tasks", [])
    rate, lim, floor = res.get("rate") or {}, res.get("limit") or {}, _floor(run)
    rates = res.get("rates") or ({rate.get("metric", "sup_rms_grid"): rate} if rate else {})
    for metric, r in rates.items():
        if r.get("slope") is None:
            continue
        lo, hi = (r.get("ci95") or [None, None])[:2]
        if lo is None or hi is None:
            verdict = "too few widths for a confidence interval"
        elif lo <= -0.5 <= hi:
            verdict = "consistent with the theoretical N^-0.5"
        else:
            verdict = "NOT consistent with the theoretical N^-0.5 (the CI excludes -0.5)"
        lines.append(
            f"Fitted rate of {metric}: error ∝ N^{r['slope']:.3f}, 95% CI {_ci(r)} "
            f"({r.get('n_points', '?')} runs): {verdict}."
        )
    metrics = [m for m in ("sup_rms_grid", "sup_l2_pi") if any(t.get(m) for t in res["tasks"])]
    for N in sorted({t["N"] for t in res.get("tasks", []) if metrics}):
        parts = []
        for m in metrics:
            vals = [t[m] for t in res["tasks"] if t["N"] == N and t.get(m) is not None]
            if vals:
                e = float(np.mean(vals))
                parts.append(f"{m} = {e:.3g}" + (f" ({e / floor:.1f}× the floor)" if floor else ""))
        lines.append(f"N = {N}: " + ", ".join(parts) + ".")
    if floor and metrics:
        best = min(t[metrics[0]] for t in res["tasks"] if t.get(metrics[0]) is not None)
        where = "reaches" if best < 2 * floor else "stays above"
        lines.append(f"The widest networks' error {where} the limit's error floor {floor:.2g}.")
    for t in res.get("tasks", []):
        if t.get("diverged_at") is not None:
            lines.append(f"N = {t['N']}, seed {t['seed']} diverged at step {t['diverged_at']}.")
    by_N = _by_N(run)
    if by_N:
        N, task = max(by_N), by_N[max(by_N)][0]
        if len(task["loss"]):
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
    if lip is not None:
        verdict = "< 1: the memory map is a contraction, the memory law is well posed"
        lines.append(
            f"Max Lipschitz constant of s ↦ ψ(h_t(x, s)) over t: {lip:.3g} "
            + (f"{verdict}." if lip < 1 else "≥ 1: NOT a contraction (the run was forced).")
        )
    if lim.get("error"):
        parts = ", ".join(f"{k} {_fmt(v)}" for k, v in lim["error"].items())
        lines.append(f"The limit solver's own error estimate (max over t, RMS): {parts}.")
    walls = [f"limit {lim['wall_time']:.1f} s"] if lim.get("wall_time") is not None else []
    for N in sorted({t["N"] for t in res.get("tasks", []) if t.get("wall_time") is not None}):
        w = sum(t["wall_time"] for t in res["tasks"] if t["N"] == N and t.get("wall_time"))
        walls.append(f"N = {N} {w:.1f} s")
    if walls:
        lines.append("Wall times (finite networks: summed over seeds): " + ", ".join(walls) + ".")
    return lines


def _blocks(run: RunData, drawn: set[str]) -> list[Block]:
    res = run.results
    blocks: list[Block] = [
        ("p", f"Run directory `{run.run_dir.name}`, kind **{run.kind}**."),
        ("h2", "Reading of the numbers"),
        ("ul", reading(run) or ["Nothing to read yet: the run holds no results."]),
    ]
    tasks = res.get("tasks", [])
    if tasks:
        cols = ["N", "seed", "sup_rms_grid", "sup_l2_pi", "wall_time", "steps", "diverged_at"]
        blocks += [
            ("h2", "Finite networks"),
            ("table", (cols, [[_fmt(t.get(c)) for c in cols] for t in tasks])),
        ]
    lim = res.get("limit") or {}
    if lim:
        rows = [[k, _fmt(v)] for k, v in (lim.get("error") or {}).items()]
        rows += [[k, _fmt(lim.get(k))] for k in ("representation", "kernel_method", "wall_time")]
        rows += [["note", n] for n in lim.get("notes", [])]
        blocks += [("h2", "The limit"), ("table", (["quantity", "value"], rows))]
    blocks.append(("h2", "Figures"))
    for name, (_fn, caption) in FIGURES.items():
        skipped = ("p", f"*{caption}*: skipped, the run directory holds no data for it.")
        blocks.append(("fig", (name, caption)) if name in drawn else skipped)
    return blocks


def _to_markdown(title: str, blocks: list[Block]) -> str:
    out = [f"# {title}", ""]
    for kind, body in blocks:
        if kind == "h2":
            out += [f"## {body}", ""]
        elif kind == "p":
            out += [body, ""]
        elif kind == "ul":
            out += [f"- {line}" for line in body] + [""]
        elif kind == "table":
            cols, rows = body
            out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        elif kind == "fig":
            name, caption = body
            out += [
                f"![{caption}](figures/{name}.png)",
                "",
                f"*{caption}* ([SVG](figures/{name}.svg))",
                "",
            ]
    return "\n".join(out)


def _inline_md(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    return re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)


def _to_html(title: str, blocks: list[Block], fig_dir: Path) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
        "max-width:60em;margin:2em auto;padding:0 1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for kind, body in blocks:
        if kind == "h2":
            out.append(f"<h2>{html.escape(body)}</h2>")
        elif kind == "p":
            out.append(f"<p>{_inline_md(body)}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_md(x)}</li>" for x in body) + "</ul>")
        elif kind == "table":
            cols, rows = body
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            cells = ["".join(f"<td>{html.escape(x)}</td>" for x in r) for r in rows]
            out.append(
                f"<table><tr>{head}</tr>" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table>"
            )
        elif kind == "fig":
            name, caption = body
            data = base64.b64encode((fig_dir / f"{name}.png").read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>'
                f"{html.escape(caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``figures/*.png|svg``, ``report.md`` and ``report.html`` into ``run_dir``.

    Reads only the run directory's files; figures whose data is absent (e.g. no kernel slice,
    no limit for a ``train`` run) are skipped with a note in the report. Returns the paths
    written, keyed ``<figure>_png``, ``<figure>_svg``, ``report_md``, ``report_html``.
    """
    run = load_run(run_dir)
    fig_dir = run.run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    paths: dict[str, Path] = {}
    for name, (make, _caption) in FIGURES.items():
        if (fig := make(run)) is not None:
            paths.update(_save(fig, fig_dir, name))
    title = f"rnnlimit report: {run.run_dir.name}"
    blocks = _blocks(run, {k.rsplit("_", 1)[0] for k in paths})
    paths["report_md"] = run.run_dir / "report.md"
    write_atomic(paths["report_md"], _to_markdown(title, blocks).encode())
    paths["report_html"] = run.run_dir / "report.html"
    write_atomic(paths["report_html"], _to_html(title, blocks, fig_dir).encode())
    return paths
