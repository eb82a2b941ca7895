"""Tests for rnnlimit.forecast: the tail forecasts against independent routes."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlimit import forecast
from rnnlimit.config import validate_config
from rnnlimit.limit import LimitNumerics, LimitResult
from rnnlimit.network import init_params, output
from rnnlimit.recorded import recorded_series
from rnnlimit.recording_io import table_from_array


@pytest.fixture
def cfg(tmp_path: Path):
    rng = np.random.default_rng(1)
    v = np.cumsum(rng.normal(size=900)) * 0.1 + np.sin(np.arange(900) / 5)
    path = tmp_path / "walk.csv"
    path.write_text("v\n" + "\n".join(f"{a:.6f}" for a in v))
    rec = {"path": str(path), "columns": ["v"], "lags": [0, 2], "train_span": [0, 600]}
    stream = {"chain": "recorded", "recording": rec}
    return validate_config({"stream": stream, "limit": {"grid": 9}})


def _fake_limit(h) -> LimitResult:
    """A LimitResult whose ``h_T`` is the given function of ``z = (x, s)``."""
    return LimitResult(
        eval_points=np.zeros((1, 3)), times=np.array([1.0]), h=np.zeros((1, 1, 1)),
        loss_t=np.zeros(0), loss=np.zeros(0), lipschitz=np.zeros(1), memory={},
        representation="grid", kernel_method="closed", numerics=LimitNumerics(T=1.0),
        wall_time=0.0, evaluate=lambda z, i: h(np.asarray(z)),
    )  # fmt: skip


def _sequential(x: np.ndarray, g) -> np.ndarray:
    """``ŷ_k = g(X_k, S_k)``, ``S_{k+1} = clip(ŷ_k)``, ``S_0 = 0``: the memory, step by step."""
    s, out = np.zeros(1), []
    for xk in x:
        y = g(xk, s)
        out.append(y)
        s = np.clip(y, -1.0, 1.0)
    return np.asarray(out)


def test_limit_forecast_fixed_point_equals_the_step_by_step_memory(cfg) -> None:
    def h(z: np.ndarray) -> np.ndarray:  # contraction in s with L = 0.7
        return (0.5 * np.tanh(3 * z[:, 0]) - 0.2 * z[:, 1] + 0.7 * z[:, 2])[:, None]

    got = forecast.limit_forecast(cfg, _fake_limit(h))["forecast_tail"]
    x, start = forecast._along_tail(cfg.stream.recording.build())
    want = _sequential(x, lambda xk, s: h(np.concatenate([xk, s])[None])[0])[start:]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_network_forecast_equals_the_step_by_step_memory(cfg) -> None:
    spec = cfg.network_spec(64)
    params = init_params(spec, jax.random.PRNGKey(0), jnp.float32)
    got = forecast.network_forecast(cfg, spec, params)["forecast_tail"]
    x, start = forecast._along_tail(cfg.stream.recording.build())

    def g(xk: np.ndarray, s: np.ndarray) -> np.ndarray:
        return np.asarray(output(spec, params, jnp.asarray(xk, jnp.float32), jnp.asarray(s)))

    np.testing.assert_allclose(got, _sequential(x, g)[start:], rtol=1e-5, atol=1e-6)
    assert len(got) == len(cfg.stream.recording.build().rows_tail)


def test_linear_ar_recovers_a_noiseless_linear_recording() -> None:
    rng = np.random.default_rng(2)
    v = rng.normal(size=400)
    target = np.empty(400)
    target[:] = 2.0 + 0.5 * v - 0.25 * np.roll(v, 3)  # y_j = 2 + 0.5 v_j - 0.25 v_{j-3}
    table = table_from_array(np.c_[v, target], ["v", "y"])
    series = recorded_series(table, ["v"], [0, 3], "y", 0, (0, 300))
    pred = forecast.linear_ar(series)
    np.testing.assert_allclose(pred, series.truth(), atol=1e-10)
    # persistence with horizon 0 is the target's previous value
    np.testing.assert_array_equal(series.persistence()[:, 0], target[series.rows_tail - 1])
