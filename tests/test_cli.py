"""Tests for the rnnlimit command line (rnnlimit.cli) via typer's CliRunner, on tiny configs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import rnnlimit
from rnnlimit import cli, compare, studylimits
from rnnlimit.config import ExperimentConfig, load_config, validate_config
from rnnlimit.errors import ContractionError, DivergenceError

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("demo", "train", "limit", "converge", "report", "config")
TINY = """\
[training]
T = 0.5

[limit]
M = 256
grid = 9
dt = 0.1
burn_in = 50
estimate_error = false

[study]
widths = [40, 80]
seeds = [0]
n_pi = 50
n_times = 6
"""
runner = CliRunner()


def _invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args), catch_exceptions=False)


def _inline(real: Any) -> Any:
    """``real`` with the tasks run in this process (no worker start-up, shared jit caches)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, "executor": "inline"})

    return run


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """``rnnlimit demo --quick`` once for the module."""
    out = tmp_path_factory.mktemp("demo") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare, "run_study", _inline(compare.run_study))
        result = _invoke("demo", "--quick", "--out", str(out))
    yield out, result


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _one_line_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_quick_demo_writes_run_dir_and_report(quick_demo: tuple[Path, Any]) -> None:
    out, result = quick_demo
    assert result.exit_code == 0, result.output
    for name in ("config.toml", "results.json", "limit.npz", "report.md", "report.html"):
        assert (out / name).is_file(), name
    assert "Fitted rate of sup_rms_grid" in result.output
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} == {"h_t", "error_vs_N", "loss", "memory", "kernel"}
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, png.name
        assert ET.parse(png.with_suffix(".svg")).getroot().tag.endswith("svg")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs) and 'src="figures/' not in html


def test_resume_keeps_finished_tasks_and_report_redraws(quick_demo: tuple[Path, Any]) -> None:
    out, _ = quick_demo
    tasks = sorted((out / "tasks").glob("*.npz"))
    before = [p.stat().st_mtime_ns for p in tasks]
    config = str(out / "config.toml")  # a run's config (with its provenance) loads as is
    result = _invoke("converge", config, "--executor", "inline", "--resume", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert [p.stat().st_mtime_ns for p in tasks] == before
    (out / "report.md").unlink()
    (out / "figures" / "loss.png").unlink()
    result = _invoke("report", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and (out / "figures" / "loss.png").is_file()


def test_existing_run_dir_without_resume_is_a_one_line_error(quick_demo: tuple[Path, Any]) -> None:
    out, _ = quick_demo
    result = _invoke("converge", str(out / "config.toml"), "--out", str(out))
    _one_line_error(result, "already holds a run")


def test_train_and_limit_commands_on_a_tiny_config(tiny: Path, tmp_path: Path) -> None:
    result = _invoke("train", str(tiny), "--executor", "inline", "--out", str(tmp_path / "t"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "t" / "tasks").glob("*.npz")) == [
        "N40_seed0.npz",
        "N80_seed0.npz",
    ]
    assert not (tmp_path / "t" / "figures" / "kernel.png").exists()
    result = _invoke("limit", str(tiny), "--out", str(tmp_path / "l"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "l" / "limit.npz").is_file()
    assert (tmp_path / "l" / "figures" / "kernel.png").is_file()
    assert "Limit loss L(t)" in (tmp_path / "l" / "report.md").read_text()


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[network]\nbeta = 2.0\n", "network.beta"),
        ("[study]\nwidths = [40, 41]\n", "study.widths[1]"),
        ("[network]\nbetta = 0.5\n", "network.betta: unknown key"),
        ("[network\nbeta = 0.5\n", "not valid TOML"),
    ],
)
def test_bad_config_is_a_one_line_error_naming_the_key(
    tmp_path: Path, toml: str, needle: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    for command in ("converge", "train", "limit"):
        result = _invoke(command, str(bad), "--out", str(tmp_path / command))
        _one_line_error(result, needle)
        assert not (tmp_path / command).exists()


def test_missing_config_and_missing_run_dir_are_one_line_errors(tmp_path: Path) -> None:
    _one_line_error(_invoke("converge", str(tmp_path / "none.toml")), "none.toml")
    _one_line_error(_invoke("report", str(tmp_path / "none")), "RUN_DIR")
    _one_line_error(_invoke("config"), "--example")


@pytest.mark.parametrize("exc", [ContractionError(1.2), KeyboardInterrupt()])
def test_failure_during_computation_is_one_line_naming_the_run_dir(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise exc

    monkeypatch.setattr(compare, "write_limit_run", fail)
    result = _invoke("limit", str(tiny), "--out", str(tmp_path / "run"))
    _one_line_error(result, "kept in", str(tmp_path / "run"))


def test_config_example_loads_with_load_config(tmp_path: Path) -> None:
    result = _invoke("config", "--example")
    assert result.exit_code == 0
    path = tmp_path / "example.toml"
    path.write_text(result.output)
    assert load_config(path) == ExperimentConfig()  # the example shows the defaults
    assert result.output.count("# ") > 10  # commented


def test_config_check_prints_the_resolved_config(tiny: Path, tmp_path: Path) -> None:
    result = _invoke("config", str(tiny))
    assert result.exit_code == 0
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(result.output)
    assert load_config(resolved).study.widths == [40, 80]
    assert "sigma_w" in result.output  # defaults filled in


def test_float64_is_enabled_when_the_config_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(rnnlimit, "enable_float64", lambda enable=True: calls.append(enable))
    cli._set_precision(validate_config({"training": {"dtype": "float32"}}))
    assert calls == []
    cli._set_precision(validate_config({"training": {"dtype": "float64"}}))
    assert calls == [True]


def test_default_run_dir_is_runs_command_timestamp() -> None:
    path = cli._run_dir(None, "converge")
    assert re.fullmatch(r"runs/converge-\d{8}-\d{6}", path.as_posix())


def test_every_command_has_help_saying_what_it_does() -> None:
    top = _invoke("--help")
    assert top.exit_code == 0
    for command in COMMANDS:
        assert command in top.output
        result = _invoke(command, "--help")
        assert result.exit_code == 0
        assert re.search(r"Writes|Print", result.output), command


def test_cli_docs_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts/gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render()
    assert (ROOT / "docs" / "cli.md").read_text() == expected, (
        "docs/cli.md is out of date: run `python scripts/gen_cli_docs.py`"
    )


def test_python_dash_m_rnnlimit_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rnnlimit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "converge" in done.stdout


def test_alpha_900_is_refused_with_one_line_naming_dt_and_alpha(tmp_path: Path) -> None:
    # the config allows alpha up to 1000; the limit's time step is then far beyond stability
    path = tmp_path / "a900.toml"
    path.write_text(TINY.replace("T = 0.5\n", "T = 0.5\nalpha = 900.0\n"))
    out = tmp_path / "run"
    result = _invoke("converge", str(path), "--executor", "inline", "--out", str(out))
    _one_line_error(result, "limit.dt: must be <=", "training.alpha")
    assert not (out / "results.json").exists()  # refused before anything was computed


def _last_line_error(result: Any, *needles: str) -> str:
    """Exit 2, one ``error:`` line, the last one (progress bars may precede it on stderr)."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and result.output.strip().splitlines()[-1] == errors[0]
    assert result.stdout.strip() == ""  # no reading of the numbers, no claims
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_a_limit_that_diverges_writes_a_report_and_ends_with_one_line(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg = "the limit h_t grew beyond |h| = 1000 by time step 3 (t = 0.3)"

    def raising(*args: Any, **kwargs: Any) -> None:
        err = DivergenceError(3, None, "the limit h_t")
        err.args = (msg,)
        raise err

    monkeypatch.setattr(studylimits, "run_limit", raising)
    out = tmp_path / "run"
    result = _invoke("converge", str(tiny), "--executor", "inline", "--out", str(out))
    _last_line_error(result, msg, "the report says what diverged")
    results = json.loads((out / "results.json").read_text())
    assert results["limit"]["diverged"] == {"step": 3, "t": 0.30000000000000004, "message": msg}
    report = (out / "report.md").read_text()
    assert "DIVERGED: " + msg in report and "is a contraction" not in report
    assert "Fitted rate" not in report and not (out / "tasks").exists()


def test_networks_that_diverge_are_named_in_one_line_and_in_the_report(tmp_path: Path) -> None:
    path = tmp_path / "relu.toml"
    path.write_text(
        TINY.replace("T = 0.5\n", "T = 1.0\nalpha = 1000.0\n")
        + '\n[network]\nactivation = "relu"\n'
    )
    out = tmp_path / "run"
    result = _invoke("train", str(path), "--executor", "inline", "--out", str(out))
    line = _last_line_error(result, "networks diverged", "training.alpha (1000.0)")
    assert "N = 40 seed 0 at step" in line
    report = (out / "report.md").read_text()
    assert "finite runs DIVERGED" in report


def test_the_example_config_is_the_demo_study() -> None:
    from rnnlimit.config import demo_config

    example = runner.invoke(cli.app, ["config", "--example"]).output
    assert "widths = [250, 1000, 4000, 16000]" in example and "seeds = [0, 1]" in example
    assert demo_config() == ExperimentConfig().resolved()
