"""Tests for rnnlimit.report on synthetic run directories that follow docs/results-format.md."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from rnnlimit.errors import ParameterError
from rnnlimit.report import finite_memory_samples, load_run, reading, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTHS = (100, 400, 1600)


def _limit_npz(rng: np.random.Generator, n: int = 9, R: int = 11) -> dict[str, np.ndarray]:
    times = np.linspace(0.0, 1.0, R)
    axis = np.linspace(-1, 1, 21)
    z = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    eval_points = rng.uniform(-1, 1, (n, 2))
    h = (1 - np.exp(-times))[:, None, None] * np.sin(2 * eval_points[:, :1])[None]
    arrays = {
        "times": times,
        "eval_points": eval_points,
        "h": h,
        "loss_t": np.linspace(0.0, 1.0, 20),
        "loss": np.linspace(0.25, 0.1, 20),
        "lipschitz": np.linspace(0.1, 0.4, R),
        "error_t_dt": np.full(R, 1e-3),
        "error_t_total": np.full(R, 3e-3),
        "memory_times": np.array([0.5, 1.0]),
        "kernel_slice_z": z,
        "kernel_slice_values": np.exp(-np.sum(z**2, axis=1)),
    }
    for i in range(2):
        arrays[f"memory_{i}_x"] = rng.uniform(-1, 1, (256, 1))
        arrays[f"memory_{i}_s"] = np.tanh(rng.normal(0, 0.5, (256, 1)))
        arrays[f"pi_points_{i}"] = rng.uniform(-1, 1, (16, 2))
        arrays[f"h_pi_{i}"] = rng.normal(0, 0.1, (16, 1))
    return arrays


def make_run_dir(root: Path, kind: str = "converge", seeds: int = 2) -> Path:
    """Write a run dir of ``kind`` with errors decaying like N^(-1/2) above a floor."""
    rng = np.random.default_rng(0)
    run = root / f"run-{kind}"
    (run / "tasks").mkdir(parents=True)
    lim = _limit_npz(rng)
    tasks = []
    if kind in ("converge", "train"):
        for N in WIDTHS:
            for seed in range(seeds):
                err = 0.9 * N**-0.5 * (1 + 0.05 * seed)
                noise = rng.normal(0, err, lim["h"].shape)
                arrays = {
                    "eval_times": lim["times"],
                    "outputs": lim["h"] + noise,
                    "window_t": np.linspace(0.1, 1.0, 10),
                    "loss": np.linspace(0.26, 0.11, 10) + rng.normal(0, 0.01, 10),
                    "memory_mean": np.zeros((10, 1)),
                    "memory_std": np.full((10, 1), 0.3),
                    "trace_s": np.tanh(rng.normal(0, 0.5, (2, 200, 1))),
                    "trace_t": np.stack([np.linspace(0.3, 0.5, 200), np.linspace(0.8, 1, 200)]),
                    "wall_time": np.array(0.5),
                }
                arrays["trace_s"][:, :20] = np.nan  # compare pads short traces with NaN
                np.savez(run / "tasks" / f"N{N}_seed{seed}.npz", **arrays)
                meta = {
                    "N": N,
                    "seed": seed,
                    "sup_rms_grid": err,
                    "sup_l2_pi": 1.1 * err,
                    "wall_time": 0.5 * N / 100,
                    "steps": N,
                    "diverged_at": None,
                }
                (run / "tasks" / f"N{N}_seed{seed}.json").write_text(json.dumps(meta))
                tasks.append(meta)
    if kind in ("converge", "limit"):
        np.savez(run / "limit.npz", **lim)
    results = {
        "schema_version": 1,
        "kind": kind,
        "config": {"stream": {"d": 1}},
        "tasks": tasks,
        "limit": None,
        "rate": None,
        "versions": {"rnnlimit": "0.1.0"},
    }
    if kind != "train":
        results["limit"] = {
            "wall_time": 0.4,
            "representation": "grid",
            "kernel_method": "closed",
            "notes": ["grid basis 9^2"],
            "lipschitz_max": 0.4,
            "error": {"dt": 1e-3, "M": 1.5e-3, "basis": 5e-4, "total": 3e-3},
        }
    if kind == "converge":
        rate = {
            "metric": "sup_rms_grid",
            "slope": -0.49,
            "ci95": [-0.56, -0.42],
            "intercept": 0.9,  # e ≈ C N^slope
            "n_points": 6,
            "floor": 3e-3,
        }
        no_ci = {**rate, "metric": "sup_l2_pi", "ci95": [None, None]}
        results["rate"], results["rates"] = rate, {"sup_rms_grid": rate, "sup_l2_pi": no_ci}
    (run / "results.json").write_text(json.dumps(results))
    return run


def _check_images(paths: dict[str, Path]) -> None:
    for key, path in paths.items():
        assert path.is_file(), key
        if key.endswith("_png"):
            data = path.read_bytes()
            assert data.startswith(PNG_MAGIC) and len(data) > 5000, key
        elif key.endswith("_svg"):
            assert ET.parse(path).getroot().tag.endswith("svg"), key


def test_converge_report_writes_all_figures_md_and_html(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, "converge")
    paths = write_report(run)
    for name in ("h_t", "error_vs_N", "loss", "memory", "kernel"):
        assert f"{name}_png" in paths and f"{name}_svg" in paths
    _check_images(paths)
    md = paths["report_md"].read_text()
    assert "figures/error_vs_N.png" in md and "-0.490" in md
    html = paths["report_html"].read_text()
    assert html.count("data:image/png;base64,") == 5
    assert "figures/" not in html  # self-contained
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_reading_states_rate_floor_contraction_and_wall_times(tmp_path: Path) -> None:
    lines = " ".join(reading(load_run(make_run_dir(tmp_path, "converge"))))
    assert "consistent with the theoretical" in lines and "NOT consistent" not in lines
    assert "sup_l2_pi: error ∝ N^-0.490, 95% CI n/a (6 runs): inconclusive" in lines  # no CI
    assert "N = 1600" in lines and "floor" in lines
    assert "contraction" in lines and "Wall times" in lines and "Limit loss" in lines


def test_reading_flags_rate_inconsistent_with_theory(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, "converge")
    res = json.loads((run / "results.json").read_text())
    res["rates"]["sup_rms_grid"]["ci95"] = [-0.3, -0.2]
    res["limit"]["lipschitz_max"] = 1.2
    (run / "results.json").write_text(json.dumps(res))
    lines = " ".join(reading(load_run(run)))
    assert "NOT consistent" in lines and "NOT a contraction" in lines


@pytest.mark.parametrize("kind", ["train", "limit"])
def test_partial_kinds_write_the_parts_that_exist(tmp_path: Path, kind: str) -> None:
    run = make_run_dir(tmp_path, kind)
    if kind == "limit":  # and a limit without a kernel slice: that figure is skipped
        lim = dict(np.load(run / "limit.npz"))
        del lim["kernel_slice_z"], lim["kernel_slice_values"]
        np.savez(run / "limit.npz", **lim)
    paths = write_report(run)
    _check_images(paths)
    has = {k.rsplit("_", 1)[0] for k in paths if k.endswith("_png")}
    md = paths["report_md"].read_text()
    if kind == "train":
        assert has == {"h_t", "error_vs_N", "loss", "memory"}
        assert "A slice of the kernel A*: skipped" in md
    else:
        assert has == {"h_t", "loss", "memory"}
        assert "Distance to the limit vs width N (log-log)*: skipped" in md
        assert "A slice of the kernel A*: skipped" in md


def test_killed_run_without_results_json_is_still_read(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, "converge")
    (run / "results.json").unlink()
    loaded = load_run(run)
    assert loaded.kind == "partial" and len(loaded.results["tasks"]) == 6
    assert "N = 100: sup_rms_grid" in " ".join(reading(loaded))


def test_not_a_run_dir_raises_parameter_error(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="RUN_DIR"):
        write_report(tmp_path / "nope")
    with pytest.raises(ParameterError, match="not a run dir"):
        write_report(tmp_path)


def test_finite_memory_samples_accepts_blocked_and_timed_traces() -> None:
    times = np.array([0.5, 1.0])
    blocked = {"trace_s": np.zeros((2, 7, 1))}
    assert [len(b) for b in finite_memory_samples(blocked, times)] == [7, 7]
    timed = {"trace_s": np.zeros((6, 1)), "trace_t": np.array([0.4, 0.5, 0.6, 0.9, 1.0, 1.1])}
    assert [len(b) for b in finite_memory_samples(timed, times)] == [3, 3]
    padded = {"trace_s": np.array([[[np.nan], [0.1]], [[0.2], [0.3]]])}
    assert [len(b) for b in finite_memory_samples(padded, times)] == [1, 2]
    assert finite_memory_samples({}, times) == []


def test_a_diverged_task_is_named_and_left_out_of_means_and_the_floor_line(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, "converge")
    res = json.loads((run / "results.json").read_text())
    bad = res["tasks"][0]  # N = 100, seed 0
    bad.update(diverged_at=37, diverged_t=0.37, sup_rms_grid=None, sup_l2_pi=None,
               diverged_what="network output became non-finite at step k=37")  # fmt: skip
    res["rates"]["sup_rms_grid"]["excluded"] = [[100, 0]]
    (run / "results.json").write_text(json.dumps(res))
    lines = reading(load_run(run))
    text = " ".join(lines)
    assert lines[0].startswith("1 of 6 finite runs DIVERGED")
    assert "N = 100 seed 0 at step 37 (t = 0.37): network output became non-finite" in lines[0]
    other = next(t["sup_rms_grid"] for t in res["tasks"] if t["N"] == 100 and t["seed"] == 1)
    assert f"N = 100: sup_rms_grid = {other:.3g}" in text  # the mean of the seed that did not
    assert "1 diverged runs left out" in text
    md = write_report(run)["report_md"].read_text()
    assert "| 100 | 0 | – | – |" in md and "| 37 | 0.37 |" in md


def test_a_diverged_limit_claims_no_contraction_error_or_rate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    msg = "the truncated limit h_t diverged by t = 0.2 (|h_t| reached 1e+30 ...)"
    diverged = {"step": 2, "t": 0.2, "message": msg}
    results = {"schema_version": 2, "kind": "converge", "gradient": "truncated", "tasks": [],
               "config": {"training": {"alpha": 900.0}}, "rate": None, "rates": {},
               "limit": {"gradient": "truncated", "diverged": diverged}}  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    text = " ".join(reading(load_run(run)))
    assert text.startswith("DIVERGED: " + msg) and "were not trained" in text
    assert "is a contraction" not in text and "Lipschitz" not in text and "Fitted" not in text
    md = write_report(run)["report_md"].read_text()
    assert "| diverged | " + msg in md


def test_solver_error_large_against_the_limit_scale_is_a_warning(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, "converge")
    res = json.loads((run / "results.json").read_text())
    res["limit"]["error"] = {"dt": 0.14, "M": 1e-3, "basis": 5e-4, "lag": 1e-4, "total": 0.14}
    (run / "results.json").write_text(json.dumps(res))  # schema 1: warnings recomputed
    warnings = [ln for ln in reading(load_run(run)) if ln.startswith("WARNING")]
    assert len(warnings) == 1 and "dt error 0.14" in warnings[0] and "limit.dt" in warnings[0]
