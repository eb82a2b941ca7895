"""The ``rnnlimit`` command line (the typer app ``rnnlimit.cli:app``) and its commands.

Every command that computes writes one run directory (docs/results-format.md) and then its
report; ``report`` re-draws a report from an existing run directory. Any
:class:`rnnlimit.errors.RnnlimitError`, and any config parse/validation error, ends the command
with one line ``error: <message>`` on stderr and exit code 2; what was already written stays.
A run in which anything diverged (the limit, or a finite network) writes its report, which says
what diverged, and then ends the same way: one line naming the cause, exit code 2. What the
commands print (errors, progress, the reading of a report) is :mod:`rnnlimit.clioutput`; with
it, this is the only module of the package that prints.
"""

from __future__ import annotations

import datetime as dt
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from rnnlimit.clioutput import (
    divergence_reported,
    errors_as_one_line,
    fail,
    out,
    progress_bars,
    report_run,
)

app = typer.Typer(
    name="rnnlimit",
    help=(
        "Wide output-feedback RNNs trained online on one ergodic stream, and their "
        "infinite-width limit h_t (see docs/model.md). Start with `rnnlimit demo`; write your "
        "own study with `rnnlimit config --example > my.toml` and `rnnlimit converge my.toml`. "
        "A run in which something diverged writes its report, then exits with code 2 and one "
        "line naming the cause."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: paragraphs re-wrapped, [default: ...] kept
)

ConfigArg = Annotated[
    Path,
    typer.Argument(
        metavar="CONFIG", help="Experiment config (TOML); see `rnnlimit config --example`."
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Run directory to write [default: runs/<command>-<time>]."),
]


class Executor(StrEnum):
    """Where the (N, seed) tasks run (see :func:`rnnlimit.sweep.run_tasks`)."""

    local = "local"
    dask = "dask"
    inline = "inline"


ExecutorOpt = Annotated[
    Executor,
    typer.Option(
        help="Where the (N, seed) tasks run: worker processes on this machine (local), a dask "
        "cluster (dask), or one after another in this process (inline)."
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(help="Dask scheduler address (tcp://host:8786); default: a local dask cluster."),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Keep the finished tasks of --out and run the rest.")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Parallel workers [default: one per core, at most one per task]."),
]


def _workers(workers: int | None, cfg: Any) -> int:
    """Default: one worker process per core, at most one per (N, seed) task."""
    n_tasks = len(cfg.study.widths) * len(cfg.study.seeds)
    return workers or max(1, min(os.cpu_count() or 1, n_tasks))


def _run_dir(out_dir: Path | None, command: str) -> Path:
    if out_dir is not None:
        return out_dir
    return Path("runs") / f"{command}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _load(config: Path) -> Any:
    """Load and validate the config, then switch JAX to float64 if it asks for it."""
    from rnnlimit.config import load_config

    cfg = load_config(config)
    _set_precision(cfg)
    return cfg


def _set_precision(cfg: Any) -> None:
    """Enable float64 (``rnnlimit.enable_float64``) before any computation if the config asks."""
    import rnnlimit

    if cfg.training.dtype == "float64":
        rnnlimit.enable_float64()


@app.command()
def demo(
    out_dir: OutOpt = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smaller study that runs in seconds (smoke test).")
    ] = False,
    data: Annotated[
        str | None,
        typer.Option(
            help="Run the study on a built-in real recorded series instead (seattle-temps: "
            "8759 hourly temperatures); the report adds forecasts and data diagnostics."
        ),
    ] = None,
) -> None:
    """Run the built-in convergence study and write its report.

    Trains finite networks of several widths N on one clipped AR(1) stream with the filter
    target Y_k = 0.6 Y_{k-1} + 0.4 sin(2 X_k) (docs/model.md §5), solves the limit h_t, and shows
    the distance between them shrinking like N^(-1/2). Writes the run directory (config.toml,
    results.json, errors.csv, loss.csv, limit.npz, tasks/) plus figures/, report.md and
    report.html. The full study takes a few minutes on 2 CPU cores. With --data NAME the
    stream is a real recorded series shipped with the package (docs/recorded-data.md) and the
    run also writes forecast.json and forecast.npz: forecasts on its held-out tail.
    """
    from rnnlimit.compare import run_study
    from rnnlimit.config import demo_config, recorded_demo_config

    run_dir = _run_dir(out_dir, "demo")
    with errors_as_one_line(run_dir):
        cfg = demo_config(quick) if data is None else recorded_demo_config(data, quick)
        _set_precision(cfg)
        out.print(f"demo study -> {run_dir}", markup=False)
        with divergence_reported(run_dir), progress_bars(cfg) as progress:
            run_study(cfg, run_dir, workers=_workers(None, cfg), progress=progress)
        report_run(run_dir)


@app.command()
def train(
    config: ConfigArg,
    executor: ExecutorOpt = Executor.local,
    scheduler: SchedulerOpt = None,
    resume: ResumeOpt = False,
    workers: WorkersOpt = None,
    out_dir: OutOpt = None,
) -> None:
    """Train the finite networks of CONFIG (every width N and seed) online on the stream.

    Computes g^N_k on the evaluation grid at the record times, the training loss and the
    memory statistics for each (N, seed), without the limit. Writes the run directory (kind
    "train": config.toml, results.json, loss.csv, tasks/) and its report.
    """
    from rnnlimit.compare import write_train_run

    run_dir = _run_dir(out_dir, "train")
    with errors_as_one_line(run_dir):
        cfg = _load(config)
        with progress_bars(cfg) as progress:
            write_train_run(
                cfg,
                run_dir,
                progress=progress,
                executor=executor.value,
                scheduler=scheduler,
                resume=resume,
                workers=_workers(workers, cfg),
            )
        report_run(run_dir)


@app.command()
def limit(config: ConfigArg, out_dir: OutOpt = None) -> None:
    """Solve the infinite-width limit of CONFIG: the ODE for h_t coupled with the memory law π_t.

    Computes h_t on the evaluation points, the limit loss L(t), the Lipschitz constant of the
    memory map, samples of π_t, a kernel slice and the solver's own error estimate (Δt, M, lag,
    basis). Writes the run directory (kind "limit": config.toml, results.json, limit.npz) and
    its report.
    """
    from rnnlimit.compare import write_limit_run

    run_dir = _run_dir(out_dir, "limit")
    with errors_as_one_line(run_dir):
        cfg = _load(config)
        with divergence_reported(run_dir), progress_bars(cfg) as progress:
            write_limit_run(cfg, run_dir, progress=progress)
        report_run(run_dir)


@app.command()
def converge(
    config: ConfigArg,
    executor: ExecutorOpt = Executor.local,
    scheduler: SchedulerOpt = None,
    resume: ResumeOpt = False,
    workers: WorkersOpt = None,
    out_dir: OutOpt = None,
) -> None:
    """Measure the convergence of the finite networks to the limit as N grows.

    Solves the limit of the networks' own gradient (training.gradient: truncated or rtrl; with
    limit.both_gradients the other one too), trains every (N, seed) of CONFIG, and measures sup
    over t of the RMS distance between g^N and h_t on the evaluation grid and at points drawn
    from π_t; fits the rate (slope of log error vs log N, with a 95% CI and a verdict) over the
    runs that did not diverge, next to the limit's own error floor. Writes the full run
    directory (config.toml, results.json, errors.csv, errors_t.csv, loss.csv, limit.npz,
    tasks/) and its report. With --resume, finished tasks are not recomputed.
    """
    from rnnlimit.compare import run_study

    run_dir = _run_dir(out_dir, "converge")
    with errors_as_one_line(run_dir):
        cfg = _load(config)
        with divergence_reported(run_dir), progress_bars(cfg) as progress:
            run_study(
                cfg,
                run_dir,
                executor=executor.value,
                scheduler=scheduler,
                resume=resume,
                workers=_workers(workers, cfg),
                progress=progress,
            )
        report_run(run_dir)


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="A run directory written by rnnlimit.")
    ],
) -> None:
    """(Re)write the report of RUN_DIR from its files alone, without recomputing anything.

    Writes RUN_DIR/figures/*.png|svg (h_t vs the finite networks, error vs N, loss curves,
    memory law, kernel slice — whichever the run holds data for), report.md and report.html
    (self-contained), and prints the reading of the numbers.
    """
    with errors_as_one_line():
        report_run(run_dir)


@app.command("config")
def config_cmd(
    config: Annotated[
        Path | None,
        typer.Argument(
            metavar="CONFIG", help="A config to validate and print with defaults filled in."
        ),
    ] = None,
    example: Annotated[
        bool, typer.Option("--example", help="Print the commented example config (TOML).")
    ] = False,
) -> None:
    """Print the commented example config, or CONFIG resolved with every default filled in.

    `rnnlimit config --example > my.toml` gives a starting point; edit it, then
    `rnnlimit config my.toml` checks it (a bad key or value is reported by its dotted path).
    """
    from rnnlimit.config import config_to_toml, example_config_toml, load_config

    with errors_as_one_line():
        if example:
            typer.echo(example_config_toml(), nl=False)
        elif config is not None:
            typer.echo(config_to_toml(load_config(config)), nl=False)
        else:
            fail("pass --example to print the example config, or a CONFIG file to check")


def main() -> None:
    """Entry point of ``python -m rnnlimit``."""
    app(prog_name="rnnlimit")
