"""Property: every `rnnlimit converge` over the whole allowed config space ends one of two ways.

Either it exits 0 with finite numbers and a coherent report (no divergence anywhere, a verdict
for every fitted rate, the contraction claim backed by a measured L < 1), or it exits 2 with one
line ``error: ...`` naming the cause, and whatever report it wrote says what diverged and claims
no contraction from a diverged limit. Hypothesis draws α up to 1000, the noise, β, ψ, σ's, every
chain (AR(1), VAR(1), finite, the shipped recording) and target (filter, memoryless, lag) kind,
both gradients, and
small widths, horizons and limit numerics. ``make test`` runs a few derandomised examples (the
same ones on every machine); the slow-marked variant draws many more, at larger sizes.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rnnlimit import cli
from rnnlimit.recording_io import bundled_path

VERDICTS = ("consistent with the theoretical", "NOT consistent", "inconclusive", "no rate")
_SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking a whole-pipeline run takes minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _unit(draw: Any, lo: float = -1.0, hi: float = 1.0) -> float:
    return draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))


def _simulated(draw: Any, chain: str, big: bool) -> tuple[dict[str, Any], int, int]:
    """A simulated stream: the chain's parameters, a target of every kind; and ``d``, ``m``."""
    d = 2 if chain == "var1" else draw(st.integers(1, 2))
    m = draw(st.integers(1, d)) if d + 2 <= 3 or big else 1
    stream: dict[str, Any] = dict(
        chain=chain, d=d, m=m, noise=_unit(draw, 0.0, 3.0),
        target=draw(st.sampled_from(["filter", "memoryless", "lag"])), a=_unit(draw, 0.0, 0.99),
        f=draw(st.sampled_from(["sin2", "sin", "cos", "tanh", "identity", "square"])),
        lag=draw(st.integers(1, 3)), burn_in=draw(st.integers(0, 50)),
    )  # fmt: skip
    if chain == "ar1":
        stream["rho"] = _unit(draw, -0.95, 0.95)
    elif chain == "var1":
        stream["rho"] = [[_unit(draw, -0.45, 0.45) for _ in range(d)] for _ in range(d)]
    else:
        n = draw(st.integers(2, 3))
        rows = [[draw(st.floats(0.05, 1.0)) for _ in range(n)] for _ in range(n)]
        stream["P"] = [[v / sum(r) for v in r] for r in rows]
        stream["values"] = [[_unit(draw) for _ in range(d)] for _ in range(n)]
    return stream, d, m


@st.composite
def experiments(draw: Any, big: bool = False) -> dict[str, Any]:
    """A config within the validator's ranges (any failure left is the CLI's to report)."""
    chain = draw(st.sampled_from(["ar1", "var1", "finite", "recorded"]))
    if chain == "recorded":  # the real series shipped with the package
        lags = [0, 1][: draw(st.integers(1, 2))]
        recording = dict(
            path=str(bundled_path("seattle-temps")), columns=["temp"], lags=lags,
            horizon=draw(st.integers(0, 2)),
            scaling=draw(st.sampled_from(["minmax", "quantile"])),
        )  # fmt: skip
        stream: dict[str, Any] = dict(chain=chain, recording=recording)
        d, m = len(lags), 1
    else:
        stream, d, m = _simulated(draw, chain, big)
    activation = draw(st.sampled_from(["erf", "tanh", "relu"]))
    if activation == "tanh" and d + m > 2 and not big:
        activation = "erf"  # the quadrature kernel on a refined 3-D grid takes minutes
    network = dict(
        activation=activation, sigma_w=_unit(draw, 0.1, 100.0), sigma_b=_unit(draw, 0.0, 100.0),
        sigma_u=_unit(draw, 0.1, 100.0), beta=_unit(draw, 0.5, 0.99),
        c_init=draw(st.sampled_from(["rademacher", "gaussian"])),
        antisymmetric=draw(st.booleans()), clip=draw(st.sampled_from(["hard", "smooth"])),
    )  # fmt: skip
    T = _unit(draw, 0.1, 1.0 if big else 0.4)
    training = dict(
        alpha=draw(
            st.one_of(
                st.floats(0.01, 3.0), st.floats(0.01, 1000.0), st.sampled_from([1.0, 40.0, 900.0])
            )
        ),
        gradient=draw(st.sampled_from(["truncated", "truncated", "rtrl"])), T=T,
        dtype=draw(st.sampled_from(["float64", "float32"])),
    )  # fmt: skip
    M = draw(st.integers(16, 256 if big else 48))
    limit = dict(
        dt=T / draw(st.integers(2, 6)), M=M, chain_steps=draw(st.integers(1, 4)),
        burn_in=draw(st.integers(0, 30)), grid=draw(st.integers(3, 9 if big else 5)),
        scheme=draw(st.sampled_from(["heun", "euler"])),
        estimate_error=draw(st.booleans()),
        both_gradients=draw(st.sampled_from([False, False, True])),
    )  # fmt: skip
    n_widths = draw(st.integers(1, 3 if big else 2))
    widths = sorted(draw(st.sets(st.integers(2, 200 if big else 30), min_size=n_widths,
                                 max_size=n_widths)))  # fmt: skip
    if network["antisymmetric"]:
        widths = sorted({2 * w for w in widths})
    study = dict(
        widths=widths, seeds=[0, 1][: draw(st.integers(1, 2))],
        eval_grid=draw(st.integers(2, 3)), n_times=draw(st.integers(2, 4)),
        n_pi=draw(st.integers(1, min(M, 20))),
    )  # fmt: skip
    return dict(stream=stream, network=network, training=training, limit=limit, study=study)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def check_converge(data: dict[str, Any]) -> None:
    """Run `rnnlimit converge` on ``data`` and check it ends in one of the two allowed ways."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "study.toml", Path(tmp) / "run"
        path.write_text(tomli_w.dumps(data))
        args = ["converge", str(path), "--executor", "inline", "--out", str(out)]
        result = CliRunner().invoke(cli.app, args, catch_exceptions=False)
        assert "Traceback" not in result.output
        report = (out / "report.md").read_text() if (out / "report.md").is_file() else None
        if result.exit_code == 2:
            errors = [ln for ln in _lines(result.output) if ln.startswith("error: ")]
            assert len(errors) == 1 and _lines(result.output)[-1] == errors[0], result.output
            assert len(errors[0]) > len("error: ") + 10
            assert result.stdout.strip() == "", result.stdout  # no reading of the numbers
            if report is not None:  # a divergence: the report names it, claims nothing else
                assert "DIVERGED" in report and "diverged" in errors[0], errors[0]
                results = json.loads((out / "results.json").read_text())
                if (results.get("limit") or {}).get("diverged"):
                    assert "is a contraction" not in report and "Fitted rate" not in report
            return
        assert result.exit_code == 0, result.output
        assert report is not None and "DIVERGED" not in report, report
        results = json.loads((out / "results.json").read_text())
        lim = results["limit"]
        if lim["lipschitz_max"] is None:  # not measurable (NaN): the report must say so
            assert "is unverified" in report and "is a contraction" not in report, report
        else:
            assert lim["lipschitz_max"] < 1.0, lim
            assert "the memory map is a contraction" in report, report
        if data["limit"]["estimate_error"]:
            assert all(_finite(v) for v in lim["error"].values()), lim["error"]
        n_tasks = len(data["study"]["widths"]) * len(data["study"]["seeds"])
        assert len(results["tasks"]) == n_tasks, results["tasks"]
        for task in results["tasks"]:
            assert task["diverged_at"] is None
            assert _finite(task["sup_rms_grid"]) and _finite(task["sup_l2_pi"]), task
        for metric, rate in results["rates"].items():
            if rate["slope"] is not None:
                line = next(ln for ln in _lines(report) if f"Fitted rate of {metric}:" in ln)
                assert any(v in line for v in VERDICTS), line
        assert "report:" in result.stdout, result.stdout


@settings(max_examples=5, **_SETTINGS)
@given(experiments())
def test_every_converge_completes_coherently_or_names_its_failure(data: dict[str, Any]) -> None:
    check_converge(data)


@pytest.mark.slow
@settings(max_examples=80, **_SETTINGS)
@given(experiments(big=True))
def test_every_converge_completes_coherently_or_names_its_failure_large(
    data: dict[str, Any],
) -> None:
    check_converge(data)
