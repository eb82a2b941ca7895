"""Run directories (docs/results-format.md): what a study leaves on disk, and how it resumes.

A run directory holds ``config.toml`` (the resolved config with its provenance, written
first), ``limit.npz`` (the limit, cached so a resumed run reads it back), ``tasks/`` (one
``.npz`` and ``.json`` per finished ``(N, seed)``, see :mod:`rnnlimit.sweep`), the tidy CSVs
``errors.csv``, ``errors_t.csv``, ``loss.csv`` and ``results.json``. This module only keeps
the books: what is computed (the limit, the tasks, the rates) comes from
:mod:`rnnlimit.compare`, which calls it.
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

import rnnlimit
from rnnlimit import sweep
from rnnlimit.config import ExperimentConfig, config_to_toml, load_config
from rnnlimit.errors import ParameterError

SCHEMA_VERSION = 2  # 2: limit/gradient columns, other_limit, other_*, verdicts, diverged_*
METRICS = ("sup_rms_grid", "sup_l2_pi")
Progress = Callable[[str, int, int], None] | None


def versions() -> dict[str, str]:
    """Versions that determine the numbers: rnnlimit, JAX, numpy, python."""
    return dict(
        rnnlimit=rnnlimit.__version__, jax=jax.__version__, numpy=np.__version__,
        python=platform.python_version(),
    )  # fmt: skip


def run_kind(run_dir: str | Path) -> str | None:
    """The ``kind`` recorded in a run directory's ``config.toml`` provenance."""
    data = tomllib.loads((Path(run_dir) / "config.toml").read_text(encoding="utf-8"))
    return data.get("provenance", {}).get("kind")


def prepare(cfg: ExperimentConfig, run_dir: str | Path, kind: str, resume: bool) -> Path:
    """Create ``run_dir`` and check that it is new (or, with ``resume``, holds this same run);
    write the resolved config with its provenance. Returns the directory as a ``Path``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.toml"
    if path.exists():
        if not resume:
            raise ParameterError(
                "run_dir", f"{run_dir} already holds a run: resume it or choose a new directory"
            )
        old = load_config(path)
        old_kind = run_kind(run_dir)
        if old != cfg or old_kind != kind:
            raise ParameterError(
                "config", f"differs from the run being resumed in {run_dir} (kind {old_kind!r})"
            )
        return run_dir
    if (run_dir / "tasks").exists() or (run_dir / "results.json").exists():
        raise ParameterError("run_dir", f"{run_dir} holds results but no config.toml")
    prov = dict(
        kind=kind, **versions(), platform=platform.platform(), command=" ".join(sys.argv),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    sweep.write_atomic(path, config_to_toml(cfg, extra={"provenance": prov}))
    return run_dir


def read_limit(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The cached ``limit.npz`` of ``run_dir``, or ``None`` if there is none yet."""
    path = run_dir / "limit.npz"
    return sweep.load_npz(path) if path.exists() else None


def write_limit(run_dir: Path, limit: dict[str, np.ndarray]) -> None:
    """``limit.npz``, atomically."""
    sweep.save_npz(run_dir / "limit.npz", limit)


def limit_summary(limit: dict[str, np.ndarray]) -> dict[str, Any]:
    """The limit's scalars (``summary_json`` of ``limit.npz``): error, wall time, notes, ..."""
    return json.loads(str(limit["summary_json"]))


def complete_tasks(
    run_dir: Path,
    task: Callable[..., dict[str, Any]],
    jobs: dict[tuple[int, int], tuple],
    *,
    resume: bool,
    executor: str,
    scheduler: str | None,
    workers: int | None,
    progress: Progress = None,
) -> list[dict[str, Any]]:
    """Run ``task(*jobs[N, seed])`` for every ``(N, seed)`` not yet finished (all of them
    unless ``resume``), writing each result to ``tasks/`` as it completes; return every task
    read back from disk, in the order of ``jobs``."""
    done = sweep.finished_tasks(run_dir) if resume else set()
    todo = [args for key, args in jobs.items() if key not in done]
    count = [len(jobs) - len(todo)]
    if progress is not None and jobs:
        progress("tasks", count[0], len(jobs))

    def finished(result: dict[str, Any]) -> None:
        sweep.write_task(run_dir, result)
        count[0] += 1
        if progress is not None:
            progress("tasks", count[0], len(jobs))

    sweep.run_tasks(task, todo, finished, executor=executor, scheduler=scheduler, workers=workers)
    return [sweep.read_task(run_dir, N, s) for N, s in jobs]


def _rows(head: tuple, ts: Any, values: Any, metric: str | None = None) -> list[tuple]:
    """Tidy rows ``(*head, t, [metric,] value)``."""
    mid = () if metric is None else (metric,)
    return [(*head, float(t), *mid, float(v)) for t, v in zip(ts, values, strict=True)]


def write_results(
    cfg: ExperimentConfig,
    run_dir: Path,
    kind: str,
    lim: dict | None,
    tasks: Sequence[dict],
    rates: dict[str, dict[str, Any]],
    *,
    other_rates: dict[str, dict[str, Any]] | None = None,
    limit_failure: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``errors.csv``, ``errors_t.csv``, ``loss.csv`` and ``results.json`` from the task files
    and the fitted ``rates`` (per metric; ``rate`` is that of ``sup_rms_grid``).

    The ``limit`` column of the error CSVs names the gradient of the limit measured against:
    ``training.gradient`` (the reference) and, with ``limit.both_gradients``, the other one
    (``other_*`` task values, ``other_rates``). ``limit_failure`` stands in for the limit's
    summary when it diverged."""
    own, other = cfg.training.gradient, cfg.other_gradient
    err_rows, err_t_rows, loss_rows = [], [], []
    for t in tasks:
        N, s = t["N"], t["seed"]
        loss_rows += _rows(("network", N, s), t["window_t"], t["loss"])
        if lim is None:
            continue
        for g, pre in ((own, ""), (other, "other_")):
            if f"{pre}rms_grid_t" not in t:
                continue
            err_rows += [(N, s, g, m, t[pre + m]) for m in METRICS]
            err_t_rows += _rows((N, s, g), t["eval_times"], t[f"{pre}rms_grid_t"], "rms_grid")
            err_t_rows += _rows((N, s, g), lim["memory_times"], t[f"{pre}l2_pi_t"], "l2_pi")
    summary = limit_failure
    other_summary = None
    if lim is not None:
        summary = limit_summary(lim)
        other_summary = summary.pop("other", None)
        loss_rows += _rows(("limit", None, None), lim["loss_t"], lim["loss"])
        if "other_loss" in lim:
            loss_rows += _rows(("other_limit", None, None), lim["other_loss_t"], lim["other_loss"])
    head = ("N", "seed", "limit")
    sweep.write_csv(run_dir / "errors.csv", (*head, "metric", "value"), err_rows)
    sweep.write_csv(run_dir / "errors_t.csv", (*head, "t", "metric", "value"), err_t_rows)
    sweep.write_csv(run_dir / "loss.csv", ("source", "N", "seed", "t", "loss"), loss_rows)
    scalars = (
        "N", "seed", *METRICS, *(f"other_{m}" for m in METRICS), "wall_time", "steps",
        "diverged_at", "diverged_t", "diverged_what", "loss_first", "loss_last",
    )  # fmt: skip
    rows = [{k: t.get(k) for k in scalars if k in t or not k.startswith("other_")} for t in tasks]
    results = dict(
        schema_version=SCHEMA_VERSION, kind=kind, gradient=own,
        config=cfg.model_dump(exclude_none=True), limit=summary, other_limit=other_summary,
        tasks=rows, rate=rates.get("sup_rms_grid"), rates=rates, other_rates=other_rates or {},
        versions=versions(),
    )  # fmt: skip
    sweep.save_json(run_dir / "results.json", results)
    return sweep.jsonable(results)
