"""Running the (N, seed) tasks of a study and keeping their results on disk.

Each task is a plain function call ``fn(*args)`` whose arguments and result are numpy arrays,
dicts and scalars (no JAX objects cross a process boundary), so the same task runs

- ``"local"``: in worker processes of a ``ProcessPoolExecutor`` started with ``spawn`` (JAX
  and ``fork`` do not mix); one worker by default, since JAX already uses every core;
- ``"dask"``: on a Dask distributed cluster (``Client(scheduler)``, or a ``LocalCluster`` of
  single-threaded worker processes when no address is given);
- ``"inline"``: in this process (debugging; nothing is pickled).

Results are written as each task completes, atomically (temporary name in the same directory,
then ``os.replace``): first ``tasks/<stem>.npz`` (arrays), then ``tasks/<stem>.json``
(scalars), so a task counts as finished exactly when its ``.json`` exists and a killed sweep
never leaves a half-written file. ``resume`` skips the finished tasks.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from rnnlimit.errors import ParameterError, RnnlimitError, check_choice, check_int

EXECUTORS = ("local", "dask", "inline")
Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- atomic files


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with open(tmp, "wb") as fh:
        fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)


def save_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """Arrays to an uncompressed ``.npz``, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_atomic(path, buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def jsonable(obj: Any) -> Any:
    """Nested dicts/lists of plain Python values; non-finite floats become ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented, strictly valid JSON (NaN/inf as ``null``), atomically."""
    write_atomic(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A tidy CSV (floats with ``repr`` precision, ``None`` as empty), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    write_atomic(path, buf.getvalue())


# --------------------------------------------------------------------------- task files


def task_stem(N: int, seed: int) -> str:
    """File stem of task ``(N, seed)``: ``N<N>_seed<seed>``."""
    return f"N{N}_seed{seed}"


def finished_tasks(run_dir: str | Path) -> set[tuple[int, int]]:
    """``(N, seed)`` of every task whose scalar file exists (written last, so it is complete)."""
    done = set()
    for p in (Path(run_dir) / "tasks").glob("N*_seed*.json"):
        n, s = p.stem[1:].split("_seed")
        if n.isdigit() and s.isdigit() and (p.with_suffix(".npz")).exists():
            done.add((int(n), int(s)))
    return done


def write_task(run_dir: str | Path, result: dict[str, Any]) -> None:
    """Arrays of a task result to ``tasks/<stem>.npz``, then its scalars to ``<stem>.json``."""
    stem = Path(run_dir) / "tasks" / task_stem(result["N"], result["seed"])
    arrays = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}
    if "wall_time" in scalars:
        arrays["wall_time"] = np.asarray(scalars["wall_time"], float)
    save_npz(stem.with_suffix(".npz"), arrays)
    save_json(stem.with_suffix(".json"), scalars)


def read_task(run_dir: str | Path, N: int, seed: int) -> dict[str, Any]:
    """A finished task's arrays and scalars as one dict."""
    stem = Path(run_dir) / "tasks" / task_stem(N, seed)
    out: dict[str, Any] = load_npz(stem.with_suffix(".npz"))
    out.update(json.loads(stem.with_suffix(".json").read_text(encoding="utf-8")))
    return out


# --------------------------------------------------------------------------- executors


def run_tasks(
    fn: Callable[..., dict[str, Any]],
    jobs: Sequence[tuple],
    on_done: Callable[[dict[str, Any]], None],
    *,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
) -> None:
    """Call ``fn(*args)`` for every ``args`` in ``jobs``; ``on_done(result)`` runs here, in this
    process, as each call completes (in completion order).

    ``fn`` must be a module-level function (it is pickled by reference). A task that raises
    stops the sweep after the tasks already finished have been handed to ``on_done``.
    """
    check_choice("executor", executor, EXECUTORS)
    if workers is not None:
        check_int("workers", workers, 1, 1024)
    if scheduler is not None and executor != "dask":
        raise ParameterError("scheduler", "a scheduler address needs executor='dask'")
    if not jobs:
        return
    if executor == "inline":
        for args in jobs:
            on_done(fn(*args))
    elif executor == "local":
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers or 1, mp_context=ctx) as pool:
            futures = [pool.submit(fn, *args) for args in jobs]
            try:
                for fut in as_completed(futures):
                    on_done(fut.result())
            finally:
                for fut in futures:
                    fut.cancel()
    else:
        _run_dask(fn, jobs, on_done, scheduler, workers)


def _run_dask(
    fn: Callable[..., dict[str, Any]],
    jobs: Sequence[tuple],
    on_done: Callable[[dict[str, Any]], None],
    scheduler: str | None,
    workers: int | None,
) -> None:
    """The same tasks on a Dask cluster: ``Client(scheduler)`` or a fresh ``LocalCluster``."""
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:  # pragma: no cover - depends on the environment
        raise RnnlimitError(
            "executor 'dask' needs dask.distributed: pip install 'rnnlimit[dask]'"
        ) from None
    cluster = None
    try:
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=workers or 1,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout="30s")
            except OSError as exc:
                raise ParameterError(
                    "scheduler", f"cannot reach a Dask scheduler at {scheduler!r}: {exc}"
                ) from None
        with client:
            futures = [client.submit(fn, *args, pure=False) for args in jobs]
            try:
                for fut in dask_completed(futures):
                    on_done(fut.result())
            finally:
                client.cancel(futures)
    finally:
        if cluster is not None:
            cluster.close()
