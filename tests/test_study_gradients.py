"""A study compares each network with the limit of its own gradient; ``limit.both_gradients``
also solves the other gradient's limit, and the run directory, results and report show both."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnlimit.config
from rnnlimit.compare import run_study
from rnnlimit.config import validate_config
from rnnlimit.limit import LimitProblem, limit_solver
from rnnlimit.report import load_run, reading, write_report
from rnnlimit.studylimits import eval_grid, l2_times, record_times
from rnnlimit.sweep import load_npz

STUDY = {
    "training": {"T": 0.5},
    "limit": {"M": 256, "grid": 9, "dt": 0.1, "burn_in": 50, "estimate_error": False},
    "study": {"widths": [40, 80, 160], "seeds": [0], "n_pi": 50, "n_times": 6},
}
ALPHA_SHRINK = 0.25  # the stand-in "rtrl" limit below: the truncated limit at α/4
# The stand-in tests the plumbing of a second limit against a limit known exactly (the truncated
# solver at another α); the last test runs the real RTRL limit (§4b) end to end.


def _stand_in(*args: Any, gradient: str = "truncated", alpha: float = 1.0, **kw: Any) -> Any:
    """A LimitProblem whose "rtrl" limit is the truncated limit at α·ALPHA_SHRINK: a limit that
    certainly differs, so that the plumbing of the other limit is tested on its own."""
    if gradient == "rtrl":
        alpha *= ALPHA_SHRINK
    return LimitProblem(*args, alpha=alpha, **kw)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("both") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rnnlimit.config, "LimitProblem", _stand_in)
        data = {**STUDY, "limit": {**STUDY["limit"], "both_gradients": True}}
        cfg = validate_config(data).resolved()
        results = run_study(cfg, run_dir, executor="inline")
    return run_dir, results


def test_the_other_limit_is_solved_and_its_gap_is_the_rms_difference(both):
    run_dir, results = both
    cfg = validate_config(STUDY).resolved()  # the same study, without the stand-in
    lim = load_npz(run_dir / "limit.npz")
    # an independent solve of the stand-in limit, straight from the solver
    p = LimitProblem(cfg.stream.build_chain(), cfg.stream.build_target(), cfg.kernel_spec(),
                     alpha=ALPHA_SHRINK)  # fmt: skip
    times = np.union1d(record_times(cfg), l2_times(cfg))
    other = limit_solver(p)(cfg.limit_numerics(), eval_grid(cfg), times, estimate_error=False)
    idx = np.searchsorted(other.times, lim["times"] - 1e-12)
    assert np.allclose(lim["other_h"], other.h[idx], rtol=0, atol=1e-12)
    gap = np.sqrt(np.mean((lim["h"] - lim["other_h"]) ** 2, axis=(1, 2)))
    assert np.allclose(lim["gap_t"], gap) and gap.max() > 1e-3
    assert results["other_limit"]["gradient"] == "rtrl"
    assert np.isclose(results["other_limit"]["gap_max"], gap.max())
    assert results["gradient"] == "truncated" and results["limit"]["gradient"] == "truncated"


def test_every_task_is_measured_against_both_limits(both):
    run_dir, results = both
    lim = load_npz(run_dir / "limit.npz")
    for row in results["tasks"]:
        task = load_npz(run_dir / "tasks" / f"N{row['N']}_seed{row['seed']}.npz")
        for pre, h in (("", lim["h"]), ("other_", lim["other_h"])):
            rms = np.sqrt(np.mean((task["outputs"] - h) ** 2, axis=(1, 2)))
            assert np.isclose(row[f"{pre}sup_rms_grid"], rms.max()), pre
            assert row[f"{pre}sup_l2_pi"] > 0
    assert set(results["other_rates"]) == {"other_sup_rms_grid", "other_sup_l2_pi"}
    with open(run_dir / "errors.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["limit"] for r in rows} == {"truncated", "rtrl"} and len(rows) == 3 * 2 * 2
    with open(run_dir / "loss.csv") as fh:
        assert {r["source"] for r in csv.DictReader(fh)} == {"network", "limit", "other_limit"}


def test_the_report_shows_the_gap_and_both_distance_curves(both):
    run_dir, results = both
    paths = write_report(run_dir)
    assert "limit_gap_png" in paths and "error_vs_N_png" in paths
    text = " ".join(reading(load_run(run_dir)))
    assert "Gap between the truncated and the rtrl limits" in text
    assert "Distance to the rtrl limit (other_sup_rms_grid)" in text
    N = max(t["N"] for t in results["tasks"])
    own = np.mean([t["sup_rms_grid"] for t in results["tasks"] if t["N"] == N])
    gap = results["other_limit"]["gap_max"]
    if own < gap / 2:
        assert "they resolve the two limits and follow the truncated one" in text
    else:
        assert "cannot tell the two limits apart yet" in text
    md = paths["report_md"].read_text()
    assert "other_sup_rms_grid" in md and "rtrl limit: lipschitz" not in md


def test_without_both_gradients_there_is_no_other_limit_and_no_gap_figure(tmp_path: Path):
    cfg = validate_config({**STUDY, "study": {**STUDY["study"], "widths": [40]}})
    results = run_study(cfg, tmp_path / "run", executor="inline")
    assert results["other_limit"] is None and results["other_rates"] == {}
    assert "other_sup_rms_grid" not in results["tasks"][0]
    paths = write_report(tmp_path / "run")
    assert "limit_gap_png" not in paths and "two limits" not in paths["report_md"].read_text()


def test_rtrl_networks_are_compared_with_the_rtrl_limit(tmp_path: Path):
    data = {**STUDY, "training": {"T": 0.5, "gradient": "rtrl"}}
    data["limit"] = {**STUDY["limit"], "both_gradients": True}
    cfg = validate_config(data).resolved()
    results = run_study(cfg, tmp_path / "run", executor="inline")
    assert results["gradient"] == "rtrl" and results["limit"]["gradient"] == "rtrl"
    assert results["other_limit"]["gradient"] == "truncated"
    lim = load_npz(tmp_path / "run" / "limit.npz")
    p = LimitProblem(cfg.stream.build_chain(), cfg.stream.build_target(), cfg.kernel_spec(),
                     gradient="rtrl")  # fmt: skip
    times = np.union1d(record_times(cfg), l2_times(cfg))
    ref = limit_solver(p)(cfg.limit_numerics(), eval_grid(cfg), times, estimate_error=False)
    idx = np.searchsorted(ref.times, lim["times"] - 1e-12)
    assert np.allclose(lim["h"], ref.h[idx], rtol=0, atol=1e-12)  # the reference is §4b's
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["rate"]["metric"] == "sup_rms_grid"
    assert "compared with the RTRL limit" in " ".join(reading(load_run(tmp_path / "run")))


def test_plain_init_at_beta_half_starts_both_limits_from_the_networks_own_g0(tmp_path: Path):
    # sigma_b small: the memory map of a random g^N_0 must still be a contraction
    data = {**STUDY, "network": {"antisymmetric": False, "sigma_b": 0.3}, "training": {"T": 0.5}}
    data["limit"] = {**STUDY["limit"], "both_gradients": True}
    data["study"] = {**STUDY["study"], "widths": [41]}
    results = run_study(validate_config(data), tmp_path / "run", executor="inline")
    task = load_npz(tmp_path / "run" / "tasks" / "N41_seed0.npz")
    assert np.abs(task["outputs"][0]).max() > 1e-3  # g^N_0: a Gaussian-process draw, not 0
    # both conditional limits start at the network's own g^N_0, then part from each other
    assert task["rms_grid_t"][0] < 1e-12 and task["other_rms_grid_t"][0] < 1e-12
    row = results["tasks"][0]
    assert 0 < row["sup_rms_grid"] < 0.5 and 0 < row["other_sup_rms_grid"] < 0.5
