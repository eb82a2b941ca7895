"""The report of a run (docs/model.md §5): figures, ``report.md`` and ``report.html`` from a run
dir.

``write_report`` reads ONLY the files of the run directory (docs/results-format.md) and never
recomputes what :mod:`rnnlimit.compare` owns: the errors, the fitted rate and the limit's own
error come from ``results.json``; the curves from ``limit.npz`` and ``tasks/*.npz``. The figures
are drawn by :mod:`rnnlimit.figures` from the loaded arrays. Every file is written atomically.

This module assembles the pages (sections as blocks, rendered to Markdown and HTML); the run
directory's loading and the reading of its numbers live in :mod:`rnnlimit.reportreading` and are
re-exported here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from rnnlimit.figures import (
    CAPTIONS,
    OPTIONAL,
    draw_figures,
    figure_forecast,
    finite_memory_samples,
)
from rnnlimit.reportreading import RunData, _fmt, load_run, reading, recorded_reading
from rnnlimit.sweep import load_npz, write_atomic

__all__ = [
    "RunData",
    "finite_memory_samples",
    "load_run",
    "reading",
    "recorded_reading",
    "write_report",
]

Block = tuple[str, Any]  # ("h2"|"p"|"ul"|"table"|"fig", payload): rendered to MD and HTML


def _save(fig: Figure, fig_dir: Path, name: str) -> dict[str, Path]:
    """``fig`` as ``<name>.png`` and ``<name>.svg`` in ``fig_dir``; their paths, keyed as
    :func:`write_report` returns them."""
    fig.tight_layout()
    out = {}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120)
        out[f"{name}_{fmt}"] = fig_dir / f"{name}.{fmt}"
        write_atomic(out[f"{name}_{fmt}"], buf.getvalue())
    return out


def _blocks(run: RunData, drawn: set[str]) -> list[Block]:
    res = run.results
    blocks: list[Block] = [
        ("p", f"Run directory `{run.run_dir.name}`, kind **{run.kind}**."),
        ("h2", "Reading of the numbers"),
        ("ul", reading(run) or ["Nothing to read yet: the run holds no results."]),
    ]
    tasks = res.get("tasks", [])
    if tasks:
        cols = ["N", "seed", "sup_rms_grid", "sup_l2_pi"]
        if res.get("other_limit"):
            cols += ["other_sup_rms_grid", "other_sup_l2_pi"]
        cols += ["wall_time", "steps", "diverged_at", "diverged_t"]
        blocks += [
            ("h2", "Finite networks"),
            ("table", (cols, [[_fmt(t.get(c)) for c in cols] for t in tasks])),
        ]
    lim = res.get("limit") or {}
    if lim:
        rows = _limit_rows(lim)
        if res.get("other_limit"):
            other = res["other_limit"]
            rows += [[f"{other.get('gradient')} limit: {k}", v] for k, v in _limit_rows(other)]
            rows += [["gap between the limits (max over t)", _fmt(other.get("gap_max"))]]
        blocks += [("h2", "The limit"), ("table", (["quantity", "value"], rows))]
    blocks.append(("h2", "Figures"))
    for name, caption in CAPTIONS.items():
        if name in OPTIONAL and name not in drawn:
            continue
        skipped = ("p", f"*{caption}*: skipped, the run directory holds no data for it.")
        blocks.append(("fig", (name, caption)) if name in drawn else skipped)
    return blocks


def _limit_rows(lim: dict[str, Any]) -> list[list[str]]:
    """The rows of one limit's table: error parts, representation, notes, warnings, divergence."""
    if lim.get("diverged"):
        return [["gradient", _fmt(lim.get("gradient"))], ["diverged", lim["diverged"]["message"]]]
    rows = [[k, _fmt(lim.get(k))] for k in ("gradient",) if lim.get(k)]
    rows += [[k, _fmt(v)] for k, v in (lim.get("error") or {}).items()]
    keys = ("scale", "representation", "kernel_method", "wall_time")
    rows += [[k, _fmt(lim.get(k))] for k in keys if k in lim]
    rows += [["note", n] for n in lim.get("notes", [])]
    rows += [["warning", w] for w in lim.get("warnings") or []]
    return rows


def _recorded_blocks(run_dir: Path, fig_dir: Path) -> tuple[list[Block], dict[str, Path]]:
    """The recording, its diagnostics, the forecast table and figure (``forecast.json`` and
    ``forecast.npz`` of a recorded run); nothing for a simulated stream."""
    if not (run_dir / "forecast.json").is_file():
        return [], {}
    fc = json.loads((run_dir / "forecast.json").read_text())
    rec = fc["recording"]
    sc = rec["scaling"]
    scale = ", ".join(
        f"{n}: center {c:.6g}, half-width {w:.6g}"
        for n, c, w in zip(sc["names"], sc["center"], sc["half_width"], strict=True)
    )
    facts = [
        f"File `{Path(rec['source']).name}` ({rec['rows']} rows, SHA-256 {rec['sha256'][:16]}…).",
        f"Inputs {rec['inputs']} at lags {rec['lags']}; target {rec['target']!r}, "
        f"{rec['horizon']} step(s) ahead; training span rows {rec['train_span']} "
        f"({rec['n_train']} examples), held-out tail {rec['n_tail']} examples.",
        f"Scaling into [-1, 1] ({sc['method']}, fitted on the training span): {scale}.",
        *recorded_reading(run_dir)[1 if fc["table"] else 0 :],
    ]
    cols = ["model", "N", "seed", "RMSE", "MAE"]
    rows = [[_fmt(r["model"]), _fmt(r["N"]), _fmt(r["seed"]), _fmt(r["rmse"]), _fmt(r["mae"])]
            for r in fc["table"]]  # fmt: skip
    blocks: list[Block] = [("h2", "Recorded data"), ("ul", facts)]
    blocks += [("h2", "Forecasts on the held-out tail"), ("p", f"One-step forecasts in "
               f"{rec['units']}: RMSE and MAE over the {fc['n_tail']} tail samples.")]  # fmt: skip
    blocks.append(("table", (cols, rows)))
    fig = figure_forecast(load_npz(run_dir / "forecast.npz"))
    if fig is None:
        return blocks, {}
    caption = "One-step forecasts against the recorded truth (start of the held-out tail)"
    return [*blocks, ("fig", ("forecast", caption))], _save(fig, fig_dir, "forecast")


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
    for name, fig in draw_figures(run.results, run.limit, run.tasks).items():
        paths.update(_save(fig, fig_dir, name))
    title = f"rnnlimit report: {run.run_dir.name}"
    blocks = _blocks(run, {k.rsplit("_", 1)[0] for k in paths})
    more, figs = _recorded_blocks(run.run_dir, fig_dir)
    blocks, paths = blocks + more, paths | figs
    paths["report_md"] = run.run_dir / "report.md"
    write_atomic(paths["report_md"], _to_markdown(title, blocks).encode())
    paths["report_html"] = run.run_dir / "report.html"
    write_atomic(paths["report_html"], _to_html(title, blocks, fig_dir).encode())
    return paths
