"""A recorded series in the config (``stream.chain = "recorded"``) and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnlimit import cli, compare
from rnnlimit.config import config_to_toml, load_config, recorded_demo_config, validate_config
from rnnlimit.errors import ParameterError
from rnnlimit.recorded import RecordedChain

runner = CliRunner()
TINY = """\
[stream]
chain = "recorded"

[stream.recording]
path = "{path}"
columns = ["load", "temp"]
lags = [0, 3]
target = "load"
horizon = 1
train_span = [0, 400]
scaling = "quantile"

[training]
T = 0.5

[limit]
M = 128
n_features = 128
dt = 0.1
burn_in = 20
chain_steps = 2
estimate_error = false

[study]
widths = [40, 80]
seeds = [0]
n_pi = 20
n_times = 4
eval_grid = 2
"""


def _user_csv(path: Path, n: int = 500) -> Path:
    """A user's recording: a date, a load with a daily cycle and noise, a temperature."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    load = 100 + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 2, n)
    temp = 15 + 5 * np.cos(2 * np.pi * t / 24) + rng.normal(0, 0.5, n)
    rows = [f"2024-01-{1 + i // 24:02d}T{i % 24:02d}:00,{a:.3f},{b:.3f}"
            for i, (a, b) in enumerate(zip(load, temp, strict=True))]  # fmt: skip
    path.write_text("\n".join(["when,load,temp", *rows]) + "\n")
    return path


@pytest.fixture
def user_config(tmp_path: Path) -> Path:
    _user_csv(tmp_path / "mydata.csv")
    cfg = tmp_path / "study.toml"
    cfg.write_text(TINY.format(path="mydata.csv"))  # relative: to the config file
    return cfg


def _inline(real: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, "executor": "inline"})

    return run


def test_recorded_config_fills_d_and_m_and_round_trips(user_config: Path, tmp_path: Path) -> None:
    cfg = load_config(user_config)
    assert (cfg.stream.d, cfg.stream.m) == (4, 1)  # 2 columns × 2 lags, one target
    assert Path(cfg.stream.recording.path).is_absolute()
    assert isinstance(cfg.stream.build_chain(), RecordedChain)
    (tmp_path / "again.toml").write_text(config_to_toml(cfg, extra={"provenance": {"k": 1}}))
    assert load_config(tmp_path / "again.toml") == cfg
    demo = recorded_demo_config("seattle-temps")
    (tmp_path / "demo.toml").write_text(config_to_toml(demo))
    assert load_config(tmp_path / "demo.toml") == demo


@pytest.mark.parametrize(
    ("change", "key", "needle"),
    [
        ({"columns": ["load", "nope"]}, "stream.recording.columns", "no column 'nope'"),
        ({"lags": [0, 0]}, "stream.recording.lags", "distinct"),
        ({"lags": [0, -1]}, "stream.recording.lags", ">= 0"),
        ({"train_span": [0, 10_000]}, "stream.recording.train_span", "<= 500"),
        ({"horizon": -1}, "stream.recording.horizon", "[0, 1e6]"),
        ({"scaling": "zscore"}, "stream.recording.scaling", "minmax"),
        ({"path": "missing.csv"}, "stream.recording.path", "no such file"),
        ({"bogus": 1}, "stream.recording.bogus", "unknown key"),
    ],
)
def test_bad_recording_settings_name_their_key(
    tmp_path: Path, change: dict, key: str, needle: str
) -> None:
    csv = _user_csv(tmp_path / "d.csv")
    rec = {"path": str(csv), "columns": ["load"], "lags": [0, 1], **change}
    if "path" in change:
        rec["path"] = str(tmp_path / change["path"])
    with pytest.raises(ParameterError) as info:
        validate_config({"stream": {"chain": "recorded", "recording": rec}})
    assert info.value.parameter == key, str(info.value)
    assert needle in str(info.value)


def test_recording_needs_chain_recorded_and_a_matching_d(tmp_path: Path) -> None:
    rec = {"path": str(_user_csv(tmp_path / "d.csv")), "columns": ["load"]}
    with pytest.raises(ParameterError, match=r"stream\.recording: must be given exactly"):
        validate_config({"stream": {"chain": "ar1", "recording": rec}})
    with pytest.raises(ParameterError, match=r"stream\.recording: must be given exactly"):
        validate_config({"stream": {"chain": "recorded"}})
    with pytest.raises(ParameterError, match=r"stream\.d: must be len\(columns\)·len\(lags\) = 1"):
        validate_config({"stream": {"chain": "recorded", "d": 2, "recording": rec}})


def test_cli_converge_runs_on_a_user_csv(
    user_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compare, "run_study", _inline(compare.run_study))
    out = tmp_path / "run"
    result = runner.invoke(cli.app, ["converge", str(user_config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    fc = json.loads((out / "forecast.json").read_text())
    models = {r["model"] for r in fc["table"]}
    assert models == {"limit", "network", "persistence", "linear_ar"}
    assert fc["n_tail"] == 500 - 400 - 1 + 1 - 1  # rows 400..498 (the last has no j+1 target)
    assert fc["recording"]["scaling"]["method"] == "quantile"
    assert all(np.isfinite(r["rmse"]) and r["rmse"] >= r["mae"] > 0 for r in fc["table"])
    report = (out / "report.md").read_text()
    assert "Forecasts on the held-out tail" in report and "figures/forecast.png" in report
    assert "One-step forecasts on the held-out" in result.output


@pytest.mark.parametrize(
    ("bad_line", "needles"),
    [
        ("2024-02-01T00:00,12.5", ["mydata.csv", "line 102", "'temp'", "truncated"]),
        ("2024-02-01T00:00,n/a,3.0", ["mydata.csv", "line 102", "'load'", "'n/a'"]),
        ("2024-02-01T00:00,NaN,3.0", ["mydata.csv", "line 102", "'load'", "NaN"]),
    ],
)
def test_bad_csv_is_one_line_error_and_nothing_is_written(
    user_config: Path, tmp_path: Path, bad_line: str, needles: list[str]
) -> None:
    data = tmp_path / "mydata.csv"
    lines = data.read_text().splitlines()
    data.write_text("\n".join([*lines[:101], bad_line, *lines[101:]]) + "\n")
    out = tmp_path / "run"
    result = runner.invoke(cli.app, ["converge", str(user_config), "--out", str(out)])
    assert result.exit_code == 2, result.output
    text = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(text) == 1 and text[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in text[0], text[0]
    assert not out.exists()  # refused before the run directory was made


def test_constant_column_is_a_one_line_cli_error(user_config: Path, tmp_path: Path) -> None:
    data = tmp_path / "mydata.csv"
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0], *(ln.rsplit(",", 1)[0] + ",4" for ln in lines[1:])]))
    result = runner.invoke(cli.app, ["converge", str(user_config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "column 'temp': constant (= 4)" in result.output
    assert not (tmp_path / "r").exists()


def test_quick_demo_on_bundled_data_writes_forecasts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compare, "run_study", _inline(compare.run_study))
    out = tmp_path / "demo"
    result = runner.invoke(cli.app, ["demo", "--quick", "--data", "seattle-temps", "-o", str(out)])
    assert result.exit_code == 0, result.output
    fc = json.loads((out / "forecast.json").read_text())
    assert fc["recording"]["rows"] == 8759 and fc["n_tail"] > 1000
    assert fc["diagnostics"]["tau"]["target temp"] > 100  # a seasonal series: long memory
    persistence = next(r for r in fc["table"] if r["model"] == "persistence")
    assert persistence["rmse"] < 2.0  # °F, hourly: the smooth series barely moves in an hour
    bad = runner.invoke(cli.app, ["demo", "--data", "nope", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "data: must be one of ['seattle-temps']" in bad.output


def test_cli_train_with_rtrl_on_a_user_csv_forecasts_without_a_limit(
    user_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compare, "write_train_run", _inline(compare.write_train_run))
    text = user_config.read_text().replace("T = 0.5", 'T = 0.5\ngradient = "rtrl"')
    user_config.write_text(text)
    out = tmp_path / "run"
    result = runner.invoke(cli.app, ["train", str(user_config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    fc = json.loads((out / "forecast.json").read_text())
    assert {r["model"] for r in fc["table"]} == {"network", "persistence", "linear_ar"}
    assert all(np.isfinite(r["rmse"]) for r in fc["table"])


def test_a_grid_whose_gram_cannot_fit_in_memory_is_refused(tmp_path: Path) -> None:
    # d = 2 (lags 0 and 1), m = 1: the default 17^3 grid's error estimate would re-solve on
    # 33^3 = 35937 nodes, a 35937² Gram of 9.6 GiB (the run was killed for memory before)
    rec = {"path": str(_user_csv(tmp_path / "d.csv")), "columns": ["load"], "lags": [0, 1]}
    with pytest.raises(ParameterError, match=r"limit\.grid: a grid of 33\^3 .* 9\.6 GiB") as info:
        validate_config({"stream": {"chain": "recorded", "recording": rec}})
    assert "limit.grid <= 13 for d + m = 3" in str(info.value)
    for limit in ({"grid": 13}, {"estimate_error": False}, {"representation": "features"}):
        validate_config({"stream": {"chain": "recorded", "recording": rec}, "limit": limit})
