"""Tests for rnnlimit.sweep and run directories: executors, atomic task files, resume, SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnlimit.compare import run_study
from rnnlimit.config import config_to_toml, validate_config
from rnnlimit.errors import ParameterError
from rnnlimit.sweep import finished_tasks, load_npz, run_tasks, save_json, write_atomic

RUN_FILES = {"config.toml", "results.json", "errors.csv", "errors_t.csv", "loss.csv", "limit.npz"}
STUDY = {
    "training": {"T": 0.5},
    "limit": {"M": 256, "grid": 9, "burn_in": 50, "estimate_error": False},
    "study": {"widths": [40, 80], "seeds": [0, 1], "n_pi": 50, "n_times": 11},
}


def tiny():
    return validate_config(STUDY).resolved()


def _strip(obj):
    """results.json without wall-clock times (the only thing allowed to differ)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in {"wall_time", "solve_time"}}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical results, data files and task arrays (wall times aside)."""
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    assert _strip(ra) == _strip(rb)
    for name in ("errors.csv", "errors_t.csv", "loss.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for p in sorted((a / "tasks").glob("*.npz")):
        x, y = load_npz(p), load_npz(b / "tasks" / p.name)
        assert x.keys() == y.keys()
        for k in x:
            if k != "wall_time":
                assert x[k].tobytes() == y[k].tobytes(), (p.name, k)
    la, lb = load_npz(a / "limit.npz"), load_npz(b / "limit.npz")
    assert all(la[k].tobytes() == lb[k].tobytes() for k in la if k != "summary_json")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with the default (local process) executor."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    stages = []
    results = run_study(tiny(), run_dir, progress=lambda s, d, t: stages.append((s, d, t)))
    return run_dir, results, stages


def test_run_study_writes_every_file_of_the_run_directory(reference):
    run_dir, results, stages = reference
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    assert finished_tasks(run_dir) == {(N, s) for N in (40, 80) for s in (0, 1)}
    assert results["schema_version"] == 2 and results["kind"] == "converge"
    assert results["gradient"] == "truncated" and results["other_limit"] is None
    assert len(results["tasks"]) == 4 and results["rate"]["n_points"] == 4
    assert results["rate"]["floor"] is None  # estimate_error = false
    assert set(results["rates"]) == {"sup_rms_grid", "sup_l2_pi"}
    assert ("tasks", 4, 4) in stages and stages[0][0] == "limit"
    lim = load_npz(run_dir / "limit.npz")
    for key in ("times", "eval_points", "h", "loss_t", "loss", "lipschitz", "memory_times",
                "memory_0_x", "memory_6_s", "pi_points_0", "h_pi_6", "kernel_slice_z",
                "kernel_slice_values"):  # fmt: skip
        assert key in lim, key
    task = load_npz(run_dir / "tasks" / "N40_seed0.npz")
    for key in ("eval_times", "outputs", "window_t", "loss", "memory_mean", "memory_std",
                "trace_s", "outputs_pi_0", "wall_time"):  # fmt: skip
        assert key in task, key
    assert task["outputs"].shape == (11, 81, 1)
    scalars = json.loads((run_dir / "tasks" / "N40_seed0.json").read_text())
    assert {"sup_rms_grid", "sup_l2_pi", "wall_time", "steps", "diverged_at"} <= set(scalars)
    toml = (run_dir / "config.toml").read_text()
    assert "[provenance]" in toml and "jax = " in toml
    header = (run_dir / "errors.csv").read_text().splitlines()
    assert header[0] == "N,seed,limit,metric,value" and len(header) == 1 + 8
    assert all(row.split(",")[2] == "truncated" for row in header[1:])
    assert not list(run_dir.rglob("*.tmp"))


def test_resume_reruns_only_missing_tasks_and_equals_the_uninterrupted_run(reference, tmp_path):
    ref_dir = reference[0]
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir)
    (run_dir / "tasks" / "N80_seed0.json").unlink()  # as if killed before this task finished
    (run_dir / "results.json").unlink()
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run_dir / "tasks").iterdir()}
    run_study(tiny(), run_dir, resume=True, executor="inline")
    assert_same_run(ref_dir, run_dir)
    for name, (mtime, raw) in kept.items():
        if not name.startswith("N80_seed0"):
            p = run_dir / "tasks" / name
            assert p.stat().st_mtime_ns == mtime and p.read_bytes() == raw


def test_a_used_run_directory_is_refused_without_resume_or_with_another_config(reference, tmp_path):
    with pytest.raises(ParameterError, match="run_dir"):
        run_study(tiny(), reference[0])
    other = validate_config({**STUDY, "training": {"T": 0.4}})
    with pytest.raises(ParameterError, match="config"):
        run_study(other, reference[0], resume=True)


def test_sigkill_mid_sweep_then_resume_equals_the_uninterrupted_run(reference, tmp_path):
    run_dir = tmp_path / "run"
    cfg_path = tmp_path / "study.toml"
    cfg_path.write_text(config_to_toml(tiny()))
    driver = (
        "from rnnlimit.config import load_config\n"
        "from rnnlimit.compare import run_study\n"
        f"run_study(load_config({str(cfg_path)!r}), {str(run_dir)!r})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", driver],
        start_new_session=True,  # its own process group: the worker processes die with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while not finished_tasks(run_dir):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no task finished in time"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = finished_tasks(run_dir)
    assert 1 <= len(done) < 4, "the kill should land mid-sweep"
    assert not (run_dir / "results.json").exists()
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run_dir / "tasks").iterdir()
            if p.suffix in {".npz", ".json"} and not p.name.startswith(".")}  # fmt: skip
    run_study(tiny(), run_dir, resume=True, executor="inline")
    assert_same_run(reference[0], run_dir)
    for N, s in done:
        for suffix in (".npz", ".json"):
            p = run_dir / "tasks" / f"N{N}_seed{s}{suffix}"
            assert (p.stat().st_mtime_ns, p.read_bytes()) == kept[p.name]


def test_dask_local_cluster_gives_the_local_results(reference, tmp_path):
    pytest.importorskip("dask.distributed")
    run_study(tiny(), tmp_path / "run", executor="dask", workers=1)
    assert_same_run(reference[0], tmp_path / "run")


def test_run_tasks_rejects_bad_executor_and_stray_scheduler():
    with pytest.raises(ParameterError, match="executor"):
        run_tasks(max, [(1, 2)], print, executor="threads")
    with pytest.raises(ParameterError, match="scheduler"):
        run_tasks(max, [(1, 2)], print, executor="local", scheduler="tcp://x:1")
    out = []
    run_tasks(max, [(1, 2), (5, 3)], out.append, executor="inline")
    assert out == [2, 5]


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    write_atomic(tmp_path / "a" / "x.txt", "hello")
    save_json(tmp_path / "a" / "y.json", {"v": float("nan"), "w": np.float64(1.5), "z": [np.inf]})
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert json.loads((tmp_path / "a" / "y.json").read_text()) == {"v": None, "w": 1.5, "z": [None]}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.txt", "y.json"]
