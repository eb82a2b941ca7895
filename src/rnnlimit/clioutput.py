"""What the ``rnnlimit`` command line says: one-line errors, progress bars, the reading of a
report, and the line naming what diverged (with :mod:`rnnlimit.cli`, the only modules of the
package that print).

Any :class:`rnnlimit.errors.RnnlimitError`, and any config parse/validation error, ends a
command with one line ``error: <message>`` on stderr and exit code 2 (:func:`errors_as_one_line`);
a :class:`~rnnlimit.errors.ContractionError` says that the memory map
``s ↦ ψ(h_t(x, s))`` has Lipschitz constant ``≥ 1``, so that π_t is not well posed, and names the
remedy. A run in which anything diverged (the limit ``h_t``, or a finite network ``g^N``) writes
its report and then ends the same way (:func:`report_run`, :func:`divergence_reported`).
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rnnlimit.errors import ContractionError, DivergenceError, ParameterError, RnnlimitError

out = Console()
err = Console(stderr=True)


def fail(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with code 2."""
    one_line = " ".join(str(message).split())
    err.print(f"error: {one_line}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _pydantic_message(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "config"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid value')}{more}"


@contextlib.contextmanager
def errors_as_one_line(run_dir: Path | None = None) -> Iterator[None]:
    """Turn the errors a user can cause into ``error: ...`` + exit 2 (never a traceback).

    A failure past the input checks (or Ctrl-C) names ``run_dir``, which keeps what was computed.
    """
    kept = "" if run_dir is None else f" (what was computed is kept in {run_dir}; --resume)"
    try:
        yield
    except ParameterError as exc:
        fail(str(exc))
    except ContractionError as exc:  # the library's "force=True" is no config key: say what is
        when = re.search(r"\(at t = [^)]*\)", str(exc))
        remedy = (
            "lower training.alpha, or network.sigma_b (how strongly the memory feeds back)"
            if when
            else "this is the initial function h_0, before any training: lower network.sigma_b "
            "(how strongly the memory feeds back) or set network.antisymmetric = true"
        )
        fail(
            "the limit's memory map s -> psi(h_t(x, s)) is not a contraction (Lipschitz constant "
            f"{exc.lipschitz:.4g} >= 1{' ' + when[0][1:-1] if when else ' at t = 0'}), so the "
            f"memory law pi_t is not well posed: {remedy}{kept}"
        )
    except RnnlimitError as exc:
        fail(f"{exc}{kept}")
    except pydantic.ValidationError as exc:
        fail(_pydantic_message(exc))
    except tomllib.TOMLDecodeError as exc:
        fail(f"config is not valid TOML: {exc}")
    except FileNotFoundError as exc:
        fail(f"file not found: {exc.filename or exc}")
    except IsADirectoryError as exc:
        fail(f"expected a file, got a directory: {exc.filename or exc}")
    except KeyboardInterrupt:
        fail(f"interrupted{kept}")


STAGES = {
    "limit": "limit h_t (Δt steps)",
    "other_limit": "other gradient's limit",
    "tasks": "networks (N, seed)",
    "train": "training steps",
}


@contextlib.contextmanager
def progress_bars(cfg: Any) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display with one bar per stage, fed by ``progress(stage, done, total)``."""
    bars = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )
    ids: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in ids:
            ids[stage] = bars.add_task(STAGES.get(stage, stage), total=max(total, 1))
        bars.update(ids[stage], completed=done, total=max(total, 1))
        if stage == "limit" and done >= total and cfg.limit.estimate_error:
            bars.console.print(
                "estimating the limit's own error: re-solving with Δt/2, 2M, a finer basis "
                "and twice the chain steps",
                markup=False,
                highlight=False,
            )

    with bars:
        yield update


def diverged_cause(results: dict[str, Any]) -> str | None:
    """One sentence naming what diverged in a run (``results.json``), or ``None``."""
    parts = []
    for key in ("limit", "other_limit"):
        d = (results.get(key) or {}).get("diverged")
        if d:
            parts.append(d.get("message") or f"the {key} diverged")
    tasks = results.get("tasks") or []
    bad = [t for t in tasks if t.get("diverged_at") is not None]
    if bad:
        named = ", ".join(f"N = {t['N']} seed {t['seed']} at step {t['diverged_at']}" for t in bad)
        what = bad[0].get("diverged_what") or "diverged"
        parts.append(
            f"{len(bad)} of {len(tasks)} networks diverged ({named}; first: {what}) and are "
            "left out of the errors and the rate; lower training.alpha "
            f"({(results.get('config') or {}).get('training', {}).get('alpha')})"
        )
    return "; ".join(parts) or None


def report_run(run_dir: Path) -> None:
    """Write the report of ``run_dir`` and print its reading of the numbers; if anything in the
    run diverged, end instead with one line naming it (exit code 2)."""
    from rnnlimit.report import load_run, reading, recorded_reading, write_report

    paths = write_report(run_dir)
    run = load_run(run_dir)
    if cause := diverged_cause(run.results):
        fail(f"{cause}; the report says what diverged: {paths['report_html']}")
    for line in reading(run) + recorded_reading(run_dir):
        out.print(f"  • {line}", markup=False, highlight=False)
    out.print(f"report: {paths['report_html']}  (and {paths['report_md'].name})", markup=False)


@contextlib.contextmanager
def divergence_reported(run_dir: Path) -> Iterator[None]:
    """A limit that diverged stops the study (:class:`DivergenceError`) after ``results.json``
    says so: write the report of what there is, then one line naming the cause."""
    try:
        yield
    except DivergenceError as exc:
        if (run_dir / "results.json").is_file():
            report_run(run_dir)  # ends with the one-line cause
        fail(str(exc))
