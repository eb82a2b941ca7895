"""Tests for rnnlimit.recorded and rnnlimit.recording_io: a recording as the cyclic-shift chain."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlimit.chains import (
    AR1Chain,
    FilterTarget,
    sample_stream,
)
from rnnlimit.errors import ParameterError, RecordingError
from rnnlimit.kernelspec import KernelSpec
from rnnlimit.limit import LimitNumerics, LimitProblem, limit_solver
from rnnlimit.particles import advance_particles, init_particles
from rnnlimit.recorded import (
    MIN_TRAIN,
    REREAD_WARNING,
    Scaling,
    fit_scaling,
    lag_embed,
    recorded_series,
    recording_diagnostics,
)
from rnnlimit.recording_io import BUNDLED, bundled_path, load_table, read_table, table_from_array


def _series(L: int = 50, d: int = 1, seed: int = 0, **kw):
    values = np.random.default_rng(seed).normal(size=(L + 1, d))
    return recorded_series(table_from_array(values), list(range(d)), span=(0, L + 1), **kw)


# --------------------------------------------------------------------------- the chain


def test_particle_law_on_a_recording_is_uniform_over_indices() -> None:
    series = recorded_series(table_from_array(np.sin(np.arange(100.0))), [0], span=(0, 100))
    chain, target = series.chain, series.target
    L, M = chain.length, 40_000
    parts = init_particles(chain, target, jax.random.PRNGKey(0), M, jnp.float32)
    for step in range(3):  # uniform at the start and after every shift (it is stationary)
        counts = np.bincount(np.asarray(parts.state), minlength=L)
        expected = M / L
        chi2 = float(np.sum((counts - expected) ** 2 / expected))
        # chi-square with L-1 = 98 dof: mean 98, sd 14; 98 + 7 sd is never reached by chance,
        # and a law off uniform by 10% on half the indices gives chi2 ~ 400
        assert chi2 < 98 + 7 * 14, (step, chi2)
        parts, _, _ = advance_particles(chain, target, parts, jax.random.PRNGKey(step))
    # a different law (all copies at index 0) would fail the same statistic
    counts = np.bincount(np.zeros(M, int), minlength=L)
    assert float(np.sum((counts - M / L) ** 2 / (M / L))) > 98 + 7 * 14


def test_particles_observe_the_recording_at_their_index_and_shift_by_one() -> None:
    series = _series(L=80, lags=[0, 2], horizon=1)
    chain, target = series.chain, series.target
    parts = init_particles(chain, target, jax.random.PRNGKey(1), 64, jnp.float64)
    start = np.asarray(parts.state)
    new, x, y = advance_particles(chain, target, parts, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(np.asarray(x), series.x_train[start])
    np.testing.assert_array_equal(np.asarray(y), series.y_train[start])
    np.testing.assert_array_equal(np.asarray(new.state), (start + 1) % chain.length)


def test_network_stream_reads_in_order_from_a_start_index_and_wraps_around() -> None:
    series = _series(L=70)
    L = series.chain.length
    stream = sample_stream(series.chain, series.target, jax.random.PRNGKey(3), 3 * L)
    x = np.asarray(stream.x)
    j0 = int(np.argmin(np.abs(series.x_train[:, 0] - x[0, 0])))  # float32 stream
    idx = (j0 + np.arange(3 * L)) % L
    np.testing.assert_allclose(x, series.x_train[idx], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(stream.y), series.y_train[idx], rtol=1e-6)


# --------------------------------------------------------------------------- embedding, scaling


def test_lag_embedding_and_scaling_round_trip() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=(300, 2)) * [3.0, 0.1] + [10.0, -5.0]
    table = table_from_array(values, names=["a", "b"])
    lags, horizon = (0, 2, 5), 3
    for method in ("minmax", "quantile"):
        series = recorded_series(table, ["a", "b"], lags, "b", horizon, (0, 300), method, 0.05)
        sc = series.scaling
        # x_j's channel (column c, lag l) is column c at row j - l, back in data units
        for c, name in enumerate(["a", "b"]):
            for i, lag in enumerate(lags):
                col = c * len(lags) + i
                raw = values[series.rows_all - lag, c]
                inside = np.abs(sc.apply(raw, [name])) < 1.0  # the quantile clip bites outside
                back = sc.inverse(series.x_all[:, col], [name])
                np.testing.assert_allclose(back[inside], raw[inside], rtol=1e-12, atol=1e-12)
                if method == "minmax":
                    assert inside.mean() > 0.98
        y_back = series.to_data(series.y_train)
        raw_y = values[series.rows_train + horizon, 1][:, None]
        ok = np.abs(series.y_train) < 1.0
        np.testing.assert_allclose(y_back[ok], raw_y[ok], rtol=1e-12, atol=1e-12)
    # what a run stores (forecast.json) maps back to the same data units
    stored = Scaling.from_dict(json.loads(json.dumps(series.scaling.to_dict())))
    np.testing.assert_array_equal(stored.inverse(series.y_train, ["b"]), y_back)
    # the min-max scaling reaches exactly -1 and 1 on the training span
    sc = fit_scaling(table, ["a"], (0, 300))
    u = sc.apply(values[:, 0], ["a"])
    assert u.min() == pytest.approx(-1.0, abs=1e-15) and u.max() == pytest.approx(1.0, abs=1e-15)
    # and lag_embed itself: y_j = target[j + h], x_j = values[j - l]
    x, y, rows = lag_embed(values[:, :1], (0, 4), values[:, 1], 2)
    assert rows[0] == 4 and rows[-1] == 300 - 2 - 1
    np.testing.assert_array_equal(x[:, 1], values[rows - 4, 0])
    np.testing.assert_array_equal(y[:, 0], values[rows + 2, 1])


def test_scaling_is_fitted_on_the_training_span_only() -> None:
    values = np.concatenate([np.linspace(0.0, 1.0, 200), np.full(50, 5.0)])
    series = recorded_series(table_from_array(values), [0], span=(0, 200), horizon=0)
    assert series.scaling.center[0] == pytest.approx(0.5)
    assert series.scaling.half_width[0] == pytest.approx(0.5)
    assert np.all(series.x_tail == 1.0)  # tail values beyond the span's range clip
    np.testing.assert_allclose(series.truth()[:, 0], 5.0)  # the truth is not clipped


def test_none_scaling_keeps_unit_data_and_refuses_data_outside() -> None:
    series = _series(L=100)
    assert series.scaling.method == "minmax"
    vals = np.random.default_rng(5).uniform(-1, 1, 200)
    kept = recorded_series(table_from_array(vals), [0], span=(0, 200), scaling="none", horizon=0)
    np.testing.assert_array_equal(kept.x_train[:, 0], vals[kept.rows_train])
    with pytest.raises(RecordingError, match=r"row 3, column '0': 1\.5 lies outside"):
        recorded_series(table_from_array(np.r_[0, 0.2, 0.1, 1.5, vals]), [0], scaling="none")


# --------------------------------------------------------------------------- the limit


@pytest.mark.parametrize("L", [40_000])
def test_a_long_clipped_ar1_recording_has_the_ar1_chains_limit(L: int) -> None:
    """The recorded limit averages over uniform indices of one AR(1) path (docs/model.md §5 chain
    and filter target); for a long path this is μ, so the limits agree up to two errors: the
    particle noise (the ``M`` estimate: RMS difference of the M and 2M solves) and the
    recording's own sampling error, a fixed draw per recording, measured by the spread between
    the limits of two independent recordings (≈ √2 times one recording's error). Same Δt, basis
    and chain steps: the discretisation errors are shared and cancel."""
    chain, target = AR1Chain(rho=0.6, noise=1.0), FilterTarget(a=0.6, m=1)
    kernel = KernelSpec(d=1, m=1)
    num = LimitNumerics(T=1.0, dt=0.1, M=1024, chain_steps=4, burn_in=50, grid=9)
    z = np.stack(np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 7)), -1).reshape(-1, 2)

    def solve(ch, tg):
        return limit_solver(LimitProblem(ch, tg, kernel))(num, z, [1.0], estimate_error=["M"])

    def recording(seed: int):
        key = jax.random.PRNGKey(seed)
        s = sample_stream(chain, target, key, L, burn_in=100, dtype=jnp.float64)
        table = table_from_array(np.c_[np.asarray(s.x), np.asarray(s.y)], ["x", "y"])
        rec = recorded_series(table, ["x"], [0], "y", 0, (0, L), "none")
        return solve(rec.chain, rec.target)

    def rms(a, b) -> float:
        return float(np.sqrt(np.mean((a.h[-1] - b.h[-1]) ** 2)))

    ref, rec1, rec2 = solve(chain, target), recording(7), recording(8)
    noise = max(ref.error["M"], rec1.error["M"], rec2.error["M"])
    spread = rms(rec1, rec2)
    # each recorded limit is within ~1 σ of the chain's, spread ≈ √2 σ: 2·spread is a ~3σ bound
    tol = 2 * spread + 3 * noise
    assert max(rms(ref, rec1), rms(ref, rec2)) < tol, (rms(ref, rec1), rms(ref, rec2), tol)
    # not a test that cannot fail: another chain's limit lies far outside that band
    other = solve(AR1Chain(rho=-0.6, noise=0.3), target)
    assert rms(ref, other) > 4 * tol, (rms(ref, other), tol)


# --------------------------------------------------------------------------- bad input


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _good_rows(n: int = 200) -> list[str]:
    return [f"2020-01-01 {i:04d},{np.sin(i / 7):.6f},{i % 5}" for i in range(n)]


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        # truncated: the last row stops before its last field
        (["time,value,count", *_good_rows(), "2020-01-02 0000,0.5"],
         ["bad.csv", "line 202", "'count'", "truncated"]),
        (["time,value,count", *_good_rows(100), "2020-01-02 0000,abc,1", *_good_rows(100)],
         ["bad.csv", "line 102", "'value'", "'abc' is not a number"]),
        (["time,value,count", *_good_rows(50), "x,nan,1", *_good_rows(150)],
         ["bad.csv", "line 52", "'value'", "NaN"]),
        (["time,value,count", *_good_rows(50), "x,-inf,1", *_good_rows(150)],
         ["bad.csv", "line 52", "'value'", "-inf"]),
        (["time,value,count", *_good_rows(50), "x,,1", *_good_rows(150)],
         ["bad.csv", "line 52", "'value'", "empty cell"]),
    ],
)  # fmt: skip
def test_bad_cells_are_one_line_errors_naming_file_row_and_column(
    tmp_path: Path, body: list[str], needles: list[str]
) -> None:
    path = _write(tmp_path, "bad.csv", "\n".join(body) + "\n")
    with pytest.raises(RecordingError) as info:
        read_table(path, ["value", "count"])
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_constant_column_and_too_short_input_are_one_line_errors(tmp_path: Path) -> None:
    rows = [f"{i},{np.cos(i):.5f},7" for i in range(300)]
    path = _write(tmp_path, "flat.csv", "\n".join(["t,v,c", *rows]))
    table = read_table(path, ["v", "c"])
    with pytest.raises(RecordingError, match=r"flat\.csv, column 'c': constant \(= 7\)") as info:
        recorded_series(table, ["v", "c"])
    assert "line 2 to line 241" in str(info.value)  # the training span, as file lines
    with pytest.raises(RecordingError, match=rf"too short.*at least {MIN_TRAIN}"):
        recorded_series(table_from_array(np.arange(60.0), source="short"), [0])
    with pytest.raises(RecordingError, match=r"short: too short.* holds 0 examples"):
        recorded_series(table_from_array(np.arange(20.0), source="short"), [0], lags=[0, 30])
    with pytest.raises(ParameterError, match="no column 'w'"):
        read_table(path, ["w"])


def test_npy_files_read_and_truncated_npy_is_an_error(tmp_path: Path) -> None:
    arr = np.random.default_rng(8).normal(size=(500, 3))
    np.save(tmp_path / "ok.npy", arr)
    table = read_table(tmp_path / "ok.npy", [2, 0])
    np.testing.assert_array_equal(table.values, arr[:, [2, 0]])
    raw = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RecordingError, match=r"cut\.npy.*truncated"):
        read_table(tmp_path / "cut.npy", [0])
    arr[17, 1] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(RecordingError, match=r"nan\.npy, row 17, column '1'"):
        read_table(tmp_path / "nan.npy", [0])


def test_headerless_semicolon_csv_and_the_cache_rereads_a_changed_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "h.csv", "\n".join(f"{i};{i * 2}" for i in range(100)))
    table = load_table(path, [1])
    assert table.names == ("1",) and table.values[3, 0] == 6.0 and table.row_name(0) == "line 1"
    path.write_text("\n".join(f"{i};{i * 3}" for i in range(101)))
    assert load_table(path, [1]).values[3, 0] == 9.0


# --------------------------------------------------------------------------- diagnostics


def test_diagnostics_measure_correlation_and_warn_on_rereading() -> None:
    rng = np.random.default_rng(9)
    white = rng.normal(size=5000)
    series = recorded_series(table_from_array(white), [0], span=(0, 5000), horizon=0)
    diag = recording_diagnostics(series, T=3.0, widths=[100])
    # white noise: τ ≈ 1 (Sokal's estimator has O(sqrt(W/K)) noise), ESS ≈ K
    assert diag["tau"]["target 0"] == pytest.approx(1.0, abs=0.15)
    assert diag["warning"] is None
    many = recording_diagnostics(series, T=3.0, widths=[100, 10_000])
    assert many["reads"] > REREAD_WARNING and "6.0 times over" in many["warning"]
    assert many["coverage"] == {"100": pytest.approx(0.06), "10000": pytest.approx(6.0)}


def test_bundled_series_is_long_real_and_documented() -> None:
    for name, (fname, column) in BUNDLED.items():
        table = read_table(bundled_path(name), [column])
        assert table.length >= 5000
        readme = (bundled_path(name).parent / "README.md").read_text()
        assert fname in readme and "licen" in readme.lower()
