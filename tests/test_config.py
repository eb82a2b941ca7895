"""Tests for rnnlimit.config: TOML round trips and key-path validation of bad experiments."""

from __future__ import annotations

import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlimit.config import (
    ExperimentConfig,
    config_to_toml,
    demo_config,
    example_config_toml,
    load_config,
    validate_config,
)
from rnnlimit.errors import ParameterError

SECTIONS = {name: sorted(ExperimentConfig.model_fields[name].annotation.model_fields) for name in
            ExperimentConfig.model_fields}  # fmt: skip


def test_example_toml_loads_to_the_model_section5_defaults(tmp_path):
    path = tmp_path / "example.toml"
    path.write_text(example_config_toml())
    cfg = load_config(path)
    assert cfg == ExperimentConfig()
    assert cfg.stream.noise == 1.0 and cfg.network.beta == 0.5 and cfg.training.T == 3.0
    assert "#" in example_config_toml()  # it is commented


@pytest.mark.parametrize("cfg", [ExperimentConfig(), demo_config(), demo_config(quick=True)])
def test_config_to_toml_round_trips_to_an_equal_model(tmp_path, cfg):
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg, extra={"provenance": {"jax": "x"}}))
    assert load_config(path) == cfg


def test_finite_chain_and_var1_round_trip(tmp_path):
    cfg = validate_config(
        {
            "stream": {
                "chain": "finite", "P": [[0.9, 0.1], [0.2, 0.8]], "values": [[-0.5], [0.5]],
                "target": "memoryless", "f": "tanh",
            }
        }
    )  # fmt: skip
    assert cfg.stream.build_chain().P.shape == (2, 2)
    var1 = validate_config(
        {"stream": {"chain": "var1", "d": 2, "m": 2, "rho": [[0.5, 0.1], [0.0, 0.3]]},
         "study": {"eval_grid": 3}}
    )  # fmt: skip
    for c in (cfg, var1):
        (tmp_path / "c.toml").write_text(config_to_toml(c))
        assert load_config(tmp_path / "c.toml") == c


def test_resolved_fills_seven_l2_times_in_0_T():
    l2 = ExperimentConfig().resolved().study.l2_times
    assert len(l2) == 7 and l2[-1] == 3.0 and l2[0] > 0


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"network": {"beta": 1.0}}, "network.beta"),
        ({"network": {"beta": "0.5"}}, "network.beta"),
        ({"study": {"widths": [40, 41]}}, "study.widths[1]"),
        ({"study": {"widths": [40, -2]}}, "study.widths[1]"),
        ({"stream": {"rho": 1.0}}, "stream.rho"),
        ({"stream": {"colour": "red"}}, "stream.colour"),
        ({"trainign": {}}, "trainign"),
        ({"limit": {"dt": 3.0}}, "limit.dt"),
        ({"study": {"l2_times": [0.5, 0.0]}}, "study.l2_times[1]"),
        ({"stream": {"chain": "finite", "P": [[0.5, 0.6], [0.5, 0.5]], "values": [["a"], [1]]}},
         "stream.values[0][0]"),
        ({"stream": {"chain": "finite", "P": [[0.5, 0.6], [0.5, 0.5]], "values": [[0.0], [1.0]]}},
         "stream.P"),
    ],
)  # fmt: skip
def test_bad_values_name_their_key_path(data, path):
    with pytest.raises(ParameterError) as info:
        validate_config(data)
    assert info.value.parameter == path
    assert str(info.value).startswith(path + ": ")


def test_unreadable_and_invalid_toml_are_parameter_errors(tmp_path):
    with pytest.raises(ParameterError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[network\nbeta = ")
    with pytest.raises(ParameterError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


_junk = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.one_of(st.integers(-5, 10**6), st.floats(-2, 2), st.text(max_size=2)), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.lists(st.floats(-2, 2), max_size=3), max_size=3),
)


@st.composite
def _mutated(draw):
    """A default experiment with one key set to junk, or one unknown key added."""
    data = tomllib.loads(example_config_toml())
    section = draw(st.sampled_from(sorted(SECTIONS)))
    if draw(st.integers(0, 5)) == 0:
        key = draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in SECTIONS[section]))
        data[section][key] = draw(_junk)
        return data, section, key
    key = draw(st.sampled_from(SECTIONS[section]))
    data[section][key] = draw(_junk)
    return data, section, key


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_random_bad_configs_give_a_parameter_error_with_a_key_path(case):
    data, section, _key = case
    try:
        cfg = validate_config(data)
    except ParameterError as err:
        assert err.parameter.split(".")[0].split("[")[0] in SECTIONS
        assert str(err).startswith(err.parameter + ": ") and len(str(err)) > len(err.parameter) + 4
        # a key whose own value is fine may still break a cross-check naming another key
        assert err.parameter.startswith(f"{section}.") or err.parameter in {
            "stream.rho", "stream.m", "stream.P", "stream.values", "limit.dt", "study.n_pi",
        } or err.parameter.startswith(("study.widths[", "study.l2_times["))  # fmt: skip
    else:
        assert isinstance(cfg, ExperimentConfig)
        assert all(math.isfinite(v) for v in cfg.study.widths)


@pytest.mark.parametrize("T", [0.1995277731189261, 0.3, 1.0 / 3.0, 2.9999999999999996])
def test_resolved_l2_times_stay_in_0_T_so_a_resolved_config_validates_again(T):
    # found by the pipeline property test: T·7/7 rounded above T and the run refused its own
    # resolved config
    cfg = validate_config({"training": {"T": T}}).resolved()
    assert max(cfg.study.l2_times) <= T
    assert validate_config(cfg.model_dump()) == cfg
