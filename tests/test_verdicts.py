"""Tests for rnnlimit.verdicts: what a study may claim (rate verdicts, runaway, solver warnings)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlimit.studylimits import task_divergence
from rnnlimit.verdicts import (
    MAX_CI_WIDTH,
    RUNAWAY,
    first_runaway,
    fit_rate,
    limit_scale,
    rate_verdict,
    runaway,
    solver_warnings,
    study_rates,
)


def test_the_issue_fit_one_seed_three_widths_is_inconclusive_and_says_why():
    # the fit that a report once called "consistent with N^-0.5"
    rate = {"slope": -0.62, "ci95": [-1.20, -0.05], "n_points": 3}
    v = rate_verdict(rate, n_widths=3, n_seeds=1)
    assert v["verdict"] == "inconclusive"
    assert "1.15 wide" in v["reason"] and "one seed" in v["reason"]
    assert "1 degree of freedom" in v["reason"]


def test_a_tight_fit_on_n_to_the_minus_half_is_consistent_and_a_wrong_slope_is_not():
    rng = np.random.default_rng(1)
    Ns = np.repeat([250, 1000, 4000, 16000], 2)
    errors = Ns**-0.5 * np.exp(0.1 * rng.standard_normal(Ns.size))
    fit = fit_rate(Ns, errors)
    assert fit["ci95"][1] - fit["ci95"][0] < MAX_CI_WIDTH
    assert rate_verdict(fit, 4, 2)["verdict"] == "consistent"
    flat = fit_rate(Ns, Ns**-0.2 * np.exp(0.02 * rng.standard_normal(Ns.size)))
    v = rate_verdict(flat, 4, 2)
    assert v["verdict"] == "inconsistent" and "excludes -0.5" in v["reason"]


def test_two_widths_or_no_slope_give_no_verdict_of_consistency():
    two = fit_rate([100, 100, 400, 400], [0.1, 0.11, 0.05, 0.052])
    assert rate_verdict(two, 2, 2)["verdict"] == "inconclusive"
    assert "only 2 widths" in rate_verdict(two, 2, 2)["reason"]
    assert rate_verdict(fit_rate([100], [0.1]), 1, 1)["verdict"] == "none"


def test_study_rates_leave_diverged_tasks_out_and_list_them():
    tasks = [
        {"N": N, "seed": s, "sup_rms_grid": N**-0.5, "sup_l2_pi": N**-0.5, "diverged_at": None}
        for N in (100, 400, 1600)
        for s in (0, 1)
    ]
    tasks.append({"N": 50, "seed": 0, "sup_rms_grid": 1e3, "sup_l2_pi": 1e3, "diverged_at": 7})
    rates = study_rates(tasks, ("sup_rms_grid", "sup_l2_pi"), floor=1e-3)
    r = rates["sup_rms_grid"]
    assert r["n_points"] == 6 and r["excluded"] == [[50, 0]]
    assert np.isclose(r["slope"], -0.5) and r["n_widths"] == 3 and r["n_seeds"] == 2


def test_runaway_flags_non_finite_and_huge_values_only():
    assert not runaway(np.full(5, RUNAWAY)) and runaway([0.0, RUNAWAY * 1.01])
    assert runaway([0.0, np.nan]) and runaway([np.inf]) and not runaway(np.zeros(0))
    h = np.zeros((4, 3, 1))
    h[2, 1] = 1e30
    assert first_runaway(h) == 2 and first_runaway(np.zeros((4, 3))) is None
    assert limit_scale(h) is None
    assert np.isclose(limit_scale(np.full((2, 3, 1), 0.3)), 0.3)


class _Rec:
    """A stand-in TrainRecord: outputs at eval_times, loss per window."""

    def __init__(self, outputs: np.ndarray, loss: np.ndarray) -> None:
        self.eval_times = np.linspace(0.0, 1.0, len(outputs))
        self.outputs = outputs
        self.window_t = np.linspace(0.1, 1.0, len(loss))
        self.loss = loss


def test_task_divergence_finds_runaway_growth_the_trainer_let_through():
    N = 100
    out = np.zeros((5, 2, 1))
    out[3] = 5e4  # finite, but far beyond any target in [-1, 1]
    step, what = task_divergence(_Rec(out, np.full(10, 0.1)), N, None, None)
    assert step == 75 and "beyond" in what  # the record at t = 0.75
    loss = np.full(10, 0.1)
    loss[1] = 1e12  # the window ending at t = 0.2
    step, _ = task_divergence(_Rec(np.zeros((5, 2, 1)), loss), N, None, None)
    assert step == 20
    assert task_divergence(_Rec(np.zeros((5, 2, 1)), np.full(10, 0.1)), N, None, None) == (
        None,
        None,
    )
    assert task_divergence(_Rec(out, loss), N, 3, "non-finite") == (3, "non-finite")


def test_solver_warnings_name_the_part_and_the_remedy():
    # the alpha = 40 report: a dt error of 0.14 listed without comment
    warnings = solver_warnings({"dt": 0.14, "M": 1e-3, "basis": 2e-4}, scale=0.3, loss_T=0.014)
    assert len(warnings) == 1
    assert "dt error 0.14" in warnings[0] and "lower limit.dt" in warnings[0]
    assert "47%" in warnings[0] and "sqrt(2 L(T))" in warnings[0]
    bad = solver_warnings({"M": float("nan"), "lag": 1e40}, scale=0.3, loss_T=None)
    assert len(bad) == 2 and all("diverged" in w for w in bad)
    assert "limit.M" in bad[0] and "limit.chain_steps" in bad[1]
    assert solver_warnings({"dt": 1e-5}, scale=0.3, loss_T=0.01) == []


@pytest.mark.parametrize("part", ["dt", "M", "basis", "lag"])
def test_each_part_has_its_own_remedy(part):
    (w,) = solver_warnings({part: 1.0}, scale=1.0, loss_T=None)
    assert f"{part} error" in w and "limit." in w


def test_the_solvers_non_finite_check_becomes_a_divergence_naming_time_and_remedy():
    from rnnlimit.config import validate_config
    from rnnlimit.studylimits import limit_failure, nonfinite_limit

    cfg = validate_config({"training": {"T": 1.0, "alpha": 700.0}, "limit": {"dt": 0.1}})
    err = nonfinite_limit(cfg, "rtrl", "dt: the limit solve became non-finite by step 4")
    assert err.step == 4 and "by t = 0.4" in str(err) and "training.alpha (700)" in str(err)
    assert limit_failure(cfg, err) == {"step": 4, "t": 0.4, "message": str(err)}
