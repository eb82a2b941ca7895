"""One experiment as data: the stream (§1), the network (§2), training (§3), the limit's
numerics (§4) and the convergence study (§5), read from TOML and validated once, here.

Every section is a pydantic model with ``extra="forbid"`` and strict types; :func:`validate_config`
and :func:`load_config` turn any validation failure into :class:`~rnnlimit.errors.ParameterError`
whose ``parameter`` is the dotted key path (``"network.beta"``, ``"study.widths[1]"``) and whose
message gives the allowed range. The builders (``cfg.stream.build_chain()``,
``cfg.network_spec(N)``, ``cfg.limit_problem()``, …) hand the validated values to the numerical
modules, which then assume valid input.

This module holds the network, training, limit and study sections, the whole
:class:`ExperimentConfig`, reading/writing TOML and the built-in demo configs. The ``[stream]``
section (and ``[stream.recording]``) lives in :mod:`rnnlimit.streamconfig`, the commented example
text in :mod:`rnnlimit.configexamples`; both are re-exported here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import tomli_w
from pydantic import BaseModel, Field, ValidationError, model_validator

from rnnlimit import recording_io
from rnnlimit.configexamples import example_config_toml  # re-exported
from rnnlimit.errors import ParameterError
from rnnlimit.kernelspec import KernelSpec
from rnnlimit.limit import LimitNumerics, LimitProblem
from rnnlimit.network import NetworkSpec
from rnnlimit.streamconfig import (  # re-exported, but _Section: the base of every section
    TARGET_FUNCTIONS,
    RecordingConfig,
    StreamConfig,
    TargetFunction,
    _Section,
)

__all__ = [
    "GRAM_BYTES",
    "TARGET_FUNCTIONS",
    "ExperimentConfig",
    "LimitConfig",
    "NetworkConfig",
    "RecordingConfig",
    "StreamConfig",
    "StudyConfig",
    "TargetFunction",
    "TrainingConfig",
    "config_to_toml",
    "demo_config",
    "example_config_toml",
    "load_config",
    "recorded_demo_config",
    "validate_config",
]

#: Largest node Gram matrix of a grid representation that a config may ask for (bytes).
GRAM_BYTES = 2 << 30


class NetworkConfig(_Section):
    """The finite network of docs/model.md §2 (width N comes from ``study.widths``)."""

    key: ClassVar[str] = "network"
    activation: Literal["erf", "tanh", "relu"] = "erf"
    sigma_w: float = Field(1.0, gt=0.0, le=100.0, description="a number in (0, 100]")
    sigma_b: float = Field(1.0, ge=0.0, le=100.0, description="a number in [0, 100]")
    sigma_u: float = Field(1.0, gt=0.0, le=100.0, description="a number in (0, 100]")
    beta: float = Field(0.5, ge=0.5, lt=1.0, description="β in [0.5, 1)")
    c_init: Literal["rademacher", "gaussian"] = "rademacher"
    antisymmetric: bool = True
    clip: Literal["hard", "smooth"] = "hard"


class TrainingConfig(_Section):
    """Online SGD of docs/model.md §3 on ``[0, T]``: ``K = round(T·N)`` steps."""

    key: ClassVar[str] = "training"
    alpha: float = Field(1.0, gt=0.0, le=1e3, description="α in (0, 1000]")
    gradient: Literal["truncated", "rtrl"] = "truncated"
    dtype: Literal["float64", "float32"] = "float64"
    T: float = Field(3.0, gt=0.0, le=1e3, description="T in (0, 1000]")
    window: int | None = Field(None, ge=1, description="an integer >= 1 (default N // 10)")


class LimitConfig(_Section):
    """Numerics of the limit solver (:class:`rnnlimit.limit.LimitNumerics`; ``T`` from training)."""

    key: ClassVar[str] = "limit"
    dt: float = Field(0.05, gt=0.0, description="Δt in (0, T)")
    M: int = Field(2048, ge=2, le=10**7, description="an integer in [2, 1e7]")
    chain_steps: int = Field(8, ge=1, le=10**4, description="an integer in [1, 1e4]")
    burn_in: int = Field(200, ge=0, le=10**6, description="an integer in [0, 1e6]")
    grid: int = Field(17, ge=3, le=257, description="an integer in [3, 257]")
    n_features: int = Field(2048, ge=1, le=10**6, description="an integer in [1, 1e6]")
    n_inducing: int = Field(256, ge=1, le=10**5, description="an integer in [1, 1e5]")
    memory_budget_gb: float = Field(4.0, gt=0.0, description="a number > 0 (GB)")
    scheme: Literal["heun", "euler"] = "heun"
    representation: Literal["auto", "grid", "features", "nystrom"] = "auto"
    seed: int = Field(0, ge=0, le=2**31 - 1, description="an integer in [0, 2^31)")
    estimate_error: bool = True
    # also solve the limit of the other gradient (§4 for RTRL networks, §4b for truncated ones):
    # the networks are still compared with the limit of training.gradient; the report adds the
    # gap between the two limits and the networks' distance to the other one
    both_gradients: bool = False


class StudyConfig(_Section):
    """Widths N and seeds of the study, and where finite networks meet the limit (§5)."""

    key: ClassVar[str] = "study"
    widths: list[int] = Field([250, 1000, 4000, 16000], min_length=1, max_length=64)
    seeds: list[int] = Field([0, 1], min_length=1, max_length=1024)
    eval_grid: int = Field(9, ge=2, le=101, description="an integer in [2, 101]")
    n_times: int = Field(31, ge=2, le=10**4, description="an integer in [2, 1e4]")
    l2_times: list[float] | None = Field(None, min_length=1, max_length=64)
    n_pi: int = Field(200, ge=1, le=10**6, description="an integer in [1, limit.M]")
    stream_seed: int = Field(0, ge=0, le=2**31 - 1, description="an integer in [0, 2^31)")

    @model_validator(mode="after")
    def _lists(self) -> StudyConfig:
        for name, low in (("widths", 2), ("seeds", 0)):
            values = getattr(self, name)
            for i, v in enumerate(values):
                if v < low or v > 10**8:
                    raise ParameterError(f"study.{name}[{i}]", f"must be in [{low}, 1e8], got {v}")
                if v in values[:i]:
                    raise ParameterError(f"study.{name}[{i}]", f"repeats the value {v}")
        return self


class ExperimentConfig(_Section):
    """A whole experiment; defaults are the setting of docs/model.md §5, studied at the widths
    250, 1000, 4000, 16000 with seeds 0 and 1 (the demo: 8 runs over a factor 64 in N)."""

    stream: StreamConfig = StreamConfig()
    network: NetworkConfig = NetworkConfig()
    training: TrainingConfig = TrainingConfig()
    limit: LimitConfig = LimitConfig()
    study: StudyConfig = StudyConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        T = self.training.T
        if self.limit.dt >= T:
            raise ParameterError("limit.dt", f"must be in (0, T={T}), got {self.limit.dt}")
        if self.study.n_pi > self.limit.M:
            raise ParameterError(
                "study.n_pi", f"must be in [1, limit.M={self.limit.M}], got {self.study.n_pi}"
            )
        for i, t in enumerate(self.study.l2_times or ()):
            if not 0.0 < t <= T:
                raise ParameterError(f"study.l2_times[{i}]", f"must be in (0, T={T}], got {t}")
        for i, N in enumerate(self.study.widths):
            if self.network.antisymmetric and N % 2:
                raise ParameterError(
                    f"study.widths[{i}]", f"must be even with network.antisymmetric, got {N}"
                )
        self._check_grid_memory()
        try:
            self.limit_problem()
            self.limit_numerics()
        except ParameterError as err:
            name = err.parameter
            name = {"gradient": "training.gradient", "alpha": "training.alpha"}.get(name, name)
            name = name if "." in name else f"limit.{name}"
            raise ParameterError(name, str(err).split(": ", 1)[-1]) from None
        if self.limit.both_gradients:
            try:
                self.limit_problem(self.other_gradient)
            except ParameterError as err:
                msg = f"the {self.other_gradient} limit cannot be solved here: "
                raise ParameterError("limit.both_gradients", msg + str(err)) from None
        return self

    def _check_grid_memory(self) -> None:
        """Refuse a grid whose node Gram (``(grid^(d+m))²`` floats; the error estimate's finer
        grid has ``2·grid − 1`` nodes per axis) would not fit in :data:`GRAM_BYTES`."""
        lim, dim = self.limit, self.stream.d + self.stream.m
        if lim.representation == "features" or (lim.representation == "auto" and dim > 3):
            return
        per_axis = 2 * lim.grid - 1 if lim.estimate_error else lim.grid
        need = 8 * per_axis ** (2 * dim)
        if need > GRAM_BYTES:
            k = 2 if lim.estimate_error else 1
            ok = [g for g in range(3, lim.grid) if 8 * (k * g - k + 1) ** (2 * dim) <= GRAM_BYTES]
            finer = " (the error estimate re-solves on 2·grid − 1 nodes per axis)"
            hint = f"limit.grid <= {max(ok)} for d + m = {dim}, or " if ok else ""
            raise ParameterError(
                "limit.grid", f"a grid of {per_axis}^{dim} nodes"
                f"{finer if lim.estimate_error else ''} needs a {need / 2**30:.1f} GiB Gram "
                f"matrix: use {hint}limit.representation = 'features'",
            )  # fmt: skip

    # -- builders -----------------------------------------------------------------------------

    def network_spec(self, N: int) -> NetworkSpec:
        """The width-N network of docs/model.md §2."""
        n, s = self.network, self.stream
        return NetworkSpec(
            N=N, d=s.d, m=s.m, beta=n.beta, activation=n.activation, sigma_w=n.sigma_w,
            sigma_b=n.sigma_b, sigma_u=n.sigma_u, c_init=n.c_init,
            antisymmetric=n.antisymmetric, clip=n.clip,
        )  # fmt: skip

    def kernel_spec(self) -> KernelSpec:
        """The NTK ``A`` of docs/model.md §4 for this network's activation and prior scales."""
        n = self.network
        return KernelSpec(
            activation=n.activation, sigma_w=n.sigma_w, sigma_b=n.sigma_b, sigma_u=n.sigma_u,
            d=self.stream.d, m=self.stream.m,
        )  # fmt: skip

    def limit_problem(self, gradient: str | None = None) -> LimitProblem:
        """The limit of this experiment's networks: of ``training.gradient`` by default
        (truncated: ``∂_t h_t = α E_{π_t}[A(z, Z)(Y − h_t(Z))]``, §4; rtrl: the trace-carrying
        limit of §4b), or of ``gradient``."""
        return LimitProblem(
            self.stream.build_chain(), self.stream.build_target(), self.kernel_spec(),
            alpha=self.training.alpha, clip=self.network.clip,
            gradient=gradient or self.training.gradient,
        )  # fmt: skip

    @property
    def other_gradient(self) -> str:
        """The gradient that is not ``training.gradient`` (its limit: ``limit.both_gradients``)."""
        return "truncated" if self.training.gradient == "rtrl" else "rtrl"

    def limit_numerics(self) -> LimitNumerics:
        """The limit solver's discretisation on ``[0, training.T]``."""
        lim = self.limit.model_dump(exclude={"estimate_error", "both_gradients"})
        return LimitNumerics(T=self.training.T, **lim)

    def resolved(self) -> ExperimentConfig:
        """The same experiment with every derived default written out (``study.l2_times``)."""
        if self.study.l2_times is not None:
            return self
        n = 7
        T = self.training.T
        l2 = [float(min(T, T * (i + 1) / n)) for i in range(n)]  # T·n/n may round above T
        return self.model_copy(update={"study": self.study.model_copy(update={"l2_times": l2})})


# --------------------------------------------------------------------------- reading/writing


def _describe(loc: tuple) -> tuple[str, str]:
    """Dotted key path of a pydantic error location and the field's allowed range, if known."""
    path, model, info = "", ExperimentConfig, None
    for tok in loc:
        if isinstance(tok, int):
            path += f"[{tok}]"
        elif model is not None and tok in model.model_fields:
            info = model.model_fields[tok]
            path += f".{tok}" if path else tok
            ann = info.annotation
            ann = next((a for a in get_args(ann) if a is not type(None)), ann)  # X | None -> X
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return path or "config", (info.description or "") if info is not None else ""


def _parameter_error(exc: ValidationError) -> ParameterError:
    """The first validation error as a :class:`ParameterError` naming its key path."""
    errors = exc.errors()
    for err in errors:
        if isinstance(err.get("ctx", {}).get("error"), ParameterError):
            return err["ctx"]["error"]
    err = errors[0]
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        parent = _describe(loc[:-1])[0] if len(loc) > 1 else ""
        path = f"{parent}.{loc[-1]}" if parent else str(loc[-1])
        return ParameterError(
            path, "unknown key (check the spelling; see `rnnlimit config --example`)"
        )
    path, allowed = _describe(loc)
    got = err.get("input")
    got_s = repr(got) if len(repr(got)) < 60 else type(got).__name__
    msg = err["msg"] + (f"; allowed: {allowed}" if allowed else "") + f" (got {got_s})"
    return ParameterError(path, msg)


def validate_config(data: Any) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a nested dict; any problem is a ParameterError."""
    if isinstance(data, ExperimentConfig):
        return data
    if not isinstance(data, dict):
        raise ParameterError("config", f"must be a table of sections, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k != "provenance"}
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise _parameter_error(exc) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a TOML experiment (a run's ``config.toml`` too: its ``[provenance]`` is ignored)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParameterError("config", f"cannot read {p}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ParameterError("config", f"{p} is not valid TOML: {exc}") from None
    return validate_config(_paths_relative_to(data, p.parent))


def _paths_relative_to(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``stream.recording.path`` made absolute against the config file's folder."""
    rec = data.get("stream", {}).get("recording") if isinstance(data.get("stream"), dict) else None
    if isinstance(rec, dict) and isinstance(rec.get("path"), str):
        if not Path(rec["path"]).expanduser().is_absolute():
            rec["path"] = str((base / rec["path"]).resolve())
    return data


def config_to_toml(cfg: ExperimentConfig, extra: dict[str, Any] | None = None) -> str:
    """TOML text that :func:`load_config` reads back to an equal config (``extra``: more tables)."""
    data: dict[str, Any] = cfg.model_dump(exclude_none=True)
    return tomli_w.dumps({**data, **(extra or {})})


def demo_config(quick: bool = False) -> ExperimentConfig:
    """The built-in study: the defaults (the §5 setting at widths 250…16000, seeds 0 and 1),
    i.e. what ``rnnlimit config --example`` prints.

    ``quick``: widths 100 and 400, one seed and a coarse limit (a smoke test of seconds).
    """
    cfg = ExperimentConfig()
    if quick:
        cfg = ExperimentConfig(
            training=TrainingConfig(T=1.0),
            limit=LimitConfig(M=256, grid=9, dt=0.1, chain_steps=4, burn_in=100),
            study=StudyConfig(widths=[100, 400], seeds=[0], n_pi=100),
        )
    return cfg.resolved()


def recorded_demo_config(name: str, quick: bool = False) -> ExperimentConfig:
    """The built-in study on a real recorded series (``recording_io.BUNDLED``): inputs the value
    column at lags 0 and 1, the target one step ahead, widths 250…16000, seeds 0 and 1, a
    9^3 grid for the limit.

    ``quick``: widths 100 and 400, one seed and a coarse limit (a smoke test of seconds).
    """
    path = recording_io.bundled_path(name)
    column = recording_io.BUNDLED[name][1]
    rec = RecordingConfig(path=str(path), columns=[column], lags=[0, 1], horizon=1)
    stream = StreamConfig(chain="recorded", recording=rec, d=2, m=1)
    if quick:
        return ExperimentConfig(
            stream=stream, training=TrainingConfig(T=1.0),
            limit=LimitConfig(M=256, grid=9, dt=0.1, chain_steps=4, burn_in=100),
            study=StudyConfig(widths=[100, 400], seeds=[0], n_pi=100),
        ).resolved()  # fmt: skip
    study = StudyConfig(widths=[250, 1000, 4000, 16000], seeds=[0, 1])
    # d + m = 3: a 9^3 grid (its error check re-solves on 17^3; 17^3 -> 33^3 needs a 10 GB Gram)
    return ExperimentConfig(stream=stream, limit=LimitConfig(grid=9), study=study).resolved()
