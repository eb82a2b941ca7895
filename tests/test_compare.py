"""Tests for rnnlimit.compare: evaluation points and times, errors, the rate fit, one task."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlimit.compare import (
    fit_rate,
    study_task,
    task_errors,
    train_task,
    write_limit_run,
    write_train_run,
)
from rnnlimit.config import validate_config
from rnnlimit.errors import ParameterError
from rnnlimit.studylimits import eval_grid, l2_times, record_times, run_limit


def tiny(**study):
    """A study small enough for unit tests (T = 0.5, coarse limit)."""
    return validate_config(
        {
            "training": {"T": 0.5},
            "limit": {"M": 256, "grid": 9, "burn_in": 50, "estimate_error": False},
            "study": {"widths": [40, 80], "seeds": [0], "n_pi": 50, **study},
        }
    ).resolved()


def test_eval_grid_is_the_9x9_grid_of_the_square():
    z = eval_grid(tiny())
    assert z.shape == (81, 2)
    assert z.min() == -1.0 and z.max() == 1.0
    assert len(np.unique(z[:, 0])) == 9


def test_record_and_l2_times_lie_on_the_limit_time_grid():
    cfg = tiny(n_times=7, l2_times=[0.26, 0.5])
    rec, l2 = record_times(cfg), l2_times(cfg)
    dt = cfg.limit.dt
    assert rec[0] == 0.0 and np.isclose(rec[-1], 0.5)
    for t in (*rec, *l2):
        assert np.isclose(t / dt, round(t / dt))
    assert np.allclose(l2, [0.25, 0.5])


def test_fit_rate_recovers_a_known_slope_and_its_ci_covers_it():
    rng = np.random.default_rng(0)
    Ns = np.repeat([100, 400, 1600, 6400, 25600], 3)
    errors = 2.0 * Ns**-0.5 * np.exp(0.05 * rng.standard_normal(Ns.size))
    fit = fit_rate(Ns, errors)
    assert fit["n_points"] == 15
    assert abs(fit["slope"] + 0.5) < 0.03
    assert fit["ci95"][1] - fit["ci95"][0] < 0.1
    assert abs(fit["intercept"] - 2.0) < 0.3
    covered = [
        (lambda f: f["ci95"][0] < -0.5 < f["ci95"][1])(
            fit_rate(Ns, Ns**-0.5 * np.exp(0.2 * rng.standard_normal(Ns.size)))
        )
        for _ in range(400)
    ]
    assert 0.92 < np.mean(covered) < 0.98  # a 95% interval covers the true slope 95% of times


def test_fit_rate_is_exact_on_a_power_law_and_skips_bad_points():
    fit = fit_rate([10, 100, 1000, 5], [0.1, 0.01, 0.001, np.nan])
    assert np.isclose(fit["slope"], -1.0) and np.isclose(fit["intercept"], 1.0)
    assert fit["n_points"] == 3
    two = fit_rate([10, 100], [1.0, 0.1])
    assert np.isclose(two["slope"], -1.0) and np.isnan(two["ci95"][0])
    with pytest.raises(ParameterError, match="errors"):
        fit_rate([1, 2], [1.0])


def test_task_errors_on_synthetic_arrays():
    times = np.array([0.0, 0.5, 1.0])
    h = np.zeros((3, 4, 1))
    g = np.zeros((3, 4, 1))
    g[1] = 0.3  # RMS 0.3 at t = 0.5
    g[2, :2] = 0.4  # RMS 0.4/sqrt(2) at t = 1
    pi = np.zeros((5, 2))
    limit = {"times": times, "h": h, "memory_times": np.array([0.5, 1.0])}
    limit |= {"pi_points_0": pi, "h_pi_0": np.zeros((5, 1)), "h_pi_1": np.ones((5, 1))}
    task = {"eval_times": times, "outputs": g, "outputs_pi_0": np.full((5, 1), 0.2)}
    task["outputs_pi_1"] = np.ones((5, 1))
    err = task_errors(task, limit)
    assert np.allclose(err["rms_grid_t"], [0.0, 0.3, 0.4 / np.sqrt(2)])
    assert np.isclose(err["sup_rms_grid"], 0.3)
    assert np.allclose(err["l2_pi_t"], [0.2, 0.0]) and np.isclose(err["sup_l2_pi"], 0.2)
    task["outputs"] = np.full_like(g, np.nan)
    assert np.isnan(task_errors(task, limit)["sup_rms_grid"])


@pytest.fixture(scope="module")
def limit_result():
    return run_limit(tiny())


def test_train_task_in_process_matches_the_limit_at_small_width(limit_result):
    cfg = tiny()
    task = train_task(cfg, 80, 0, limit_result)
    R = len(record_times(cfg))
    assert task["outputs"].shape == (R, 81, 1) and task["eval_times"].shape == (R,)
    assert task["steps"] == 40 and task["diverged_at"] is None
    assert task["trace_s"].shape[0] == len(l2_times(cfg))
    assert task["outputs_pi_0"].shape == (50, 1)
    assert np.allclose(task["outputs"][0], 0.0, atol=1e-12)  # antisymmetric: g^N_0 = 0 = h_0
    assert 0.0 < task["sup_rms_grid"] < 0.3 and 0.0 < task["sup_l2_pi"] < 0.3
    # the LimitResult route gives the same grid metric as the task's own
    assert np.isclose(task_errors(task, limit_result)["sup_rms_grid"], task["sup_rms_grid"])


def test_a_diverged_task_records_where_and_keeps_its_record():
    cfg = validate_config(
        {
            "network": {"activation": "relu"},
            "training": {"T": 1.0, "alpha": 1000.0},
            "study": {"widths": [40]},
        }
    )
    task = study_task(cfg.model_dump(), 40, 0, None)
    assert task["diverged_at"] is not None and task["steps"] == task["diverged_at"]
    assert np.isnan(task["outputs"][-1]).all()


def test_limit_and_train_runs_write_their_kinds(tmp_path):
    cfg = tiny(widths=[40])
    lim = write_limit_run(cfg, tmp_path / "limit")
    assert lim["kind"] == "limit" and lim["tasks"] == [] and lim["rate"] is None
    assert lim["limit"]["representation"] == "grid"
    assert {p.name for p in (tmp_path / "limit").iterdir()} >= {
        "config.toml", "limit.npz", "results.json", "loss.csv", "errors.csv", "errors_t.csv",
    }  # fmt: skip
    tr = write_train_run(cfg, tmp_path / "train", executor="inline")
    assert tr["kind"] == "train" and tr["limit"] is None
    assert tr["tasks"][0]["N"] == 40 and tr["tasks"][0]["sup_rms_grid"] is None
    assert (tmp_path / "train" / "tasks" / "N40_seed0.npz").exists()
    assert not (tmp_path / "train" / "limit.npz").exists()


def test_plain_init_at_beta_half_is_compared_with_the_limit_started_from_its_own_g0(
    limit_result,
):
    data = tiny().model_dump()
    data["network"]["antisymmetric"] = False
    cfg = validate_config(data)
    task = train_task(cfg, 80, 0, limit_result)
    # g^N_0 is a non-zero Gaussian-process draw, and the conditional limit starts exactly there
    assert np.abs(task["outputs"][0]).max() > 1e-3
    assert task["rms_grid_t"][0] < 1e-12
    assert 0.0 < task["sup_rms_grid"] < 0.3
