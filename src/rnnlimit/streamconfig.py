"""The stream section of an experiment (docs/model.md §1): ``[stream]`` and its
``[stream.recording]`` table, and the section base every config section shares.

:class:`StreamConfig` validates the inputs ``X_k`` (clipped AR(1)/VAR(1), a finite chain or a
recorded series) and the targets ``Y_k``; :class:`RecordingConfig` reads a recorded series
(:mod:`rnnlimit.recorded`). ``build_chain()`` and ``build_target()`` hand the validated values
to :mod:`rnnlimit.chains`. :mod:`rnnlimit.config` assembles these into the whole experiment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rnnlimit import recorded, recording_io
from rnnlimit.chains import AR1Chain, Chain, FilterTarget, FiniteChain, LagTarget, Target
from rnnlimit.errors import ParameterError

TARGET_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "sin2": lambda x: jnp.sin(2.0 * x),
    "sin": jnp.sin,
    "cos": jnp.cos,
    "tanh": jnp.tanh,
    "identity": lambda x: x,
    "square": lambda x: x * x,
}
TargetFunction = Literal["sin2", "sin", "cos", "tanh", "identity", "square"]


class _Section(BaseModel):
    """Common settings: unknown keys rejected, no silent type coercion, no NaN/inf."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
    key: ClassVar[str] = ""

    def _rekey(self, err: ParameterError) -> ParameterError:
        """Prefix a builder's parameter name with this section's key."""
        name = err.parameter if "." in err.parameter else f"{self.key}.{err.parameter}"
        return ParameterError(name, str(err).split(": ", 1)[-1])


class RecordingConfig(_Section):
    """A recorded series as the stream (:mod:`rnnlimit.recorded`): file, columns, lags, target,
    horizon, training span and scaling. ``d = len(columns)·len(lags)``, ``m = 1``."""

    key: ClassVar[str] = "stream.recording"
    path: str = Field(description="a CSV or .npy file (relative: to the config file)")
    columns: list[str | int] = Field(
        min_length=1, max_length=16, description="input columns: header names or 0-based indices"
    )
    lags: list[int] = Field([0], min_length=1, max_length=16, description="distinct lags >= 0")
    target: str | int | None = Field(None, description="target column (default: columns[0])")
    horizon: int = Field(1, ge=0, le=10**6, description="an integer in [0, 1e6]")
    train_span: list[int] | None = Field(
        None, min_length=2, max_length=2, description="[start, stop) rows (default: first 80%)"
    )
    scaling: Literal["minmax", "quantile", "none"] = "minmax"
    quantile: float = Field(0.01, gt=0.0, lt=0.5, description="a number in (0, 0.5)")
    delimiter: str | None = Field(None, description="CSV delimiter (default: sniffed)")

    @model_validator(mode="after")
    def _readable(self) -> RecordingConfig:
        self.build()
        return self

    def build(self) -> recorded.RecordedSeries:
        """The stream of the recording (read once per file version)."""
        if len(set(self.columns)) != len(self.columns):
            raise ParameterError("stream.recording.columns", "must name distinct columns")
        extra = [] if self.target is None else [self.target]
        wanted = list(dict.fromkeys([*self.columns, *extra]))
        try:
            table = recording_io.load_table(self.path, wanted, self.delimiter)
            # the table holds the wanted columns, in order, under their names
            target = None if self.target is None else table.names[wanted.index(self.target)]
            return recorded.recorded_series(
                table, list(table.names[: len(self.columns)]), self.lags, target, self.horizon,
                self.train_span, self.scaling, self.quantile,
            )  # fmt: skip
        except ParameterError as err:
            raise self._rekey(err) from None


class StreamConfig(_Section):
    """Inputs ``X_k`` (clipped AR(1)/VAR(1), finite chain or recording) and targets ``Y_k``."""

    key: ClassVar[str] = "stream"
    chain: Literal["ar1", "var1", "finite", "recorded"] = "ar1"
    d: int = Field(1, ge=1, le=16, description="an integer in [1, 16]")
    rho: float | list[list[float]] = Field(0.6, description="ar1: ρ in (-1, 1); var1: d×d matrix")
    noise: float = Field(1.0, ge=0.0, description="a number >= 0")
    P: list[list[float]] | None = Field(None, description="finite: a row-stochastic matrix")
    values: list[list[float]] | None = Field(
        None, description="finite: one row in [-1,1]^d per state"
    )
    target: Literal["filter", "memoryless", "lag"] = "filter"
    a: float = Field(0.6, ge=0.0, lt=1.0, description="a number in [0, 1)")
    f: TargetFunction = "sin2"
    lag: int = Field(1, ge=1, le=1000, description="an integer in [1, 1000]")
    m: int = Field(1, ge=1, le=16, description="an integer in [1, d]")
    burn_in: int = Field(200, ge=0, le=10**7, description="an integer in [0, 1e7]")
    recording: RecordingConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _recorded_dims(cls, data: Any) -> Any:
        """A recording fixes ``d = len(columns)·len(lags)`` and ``m = 1``: fill them in."""
        rec = data.get("recording") if isinstance(data, dict) else None
        if data.get("chain") == "recorded" and isinstance(rec, dict):
            cols, lags = rec.get("columns"), rec.get("lags", [0])
            if isinstance(cols, list) and isinstance(lags, list):
                data = {"d": len(cols) * len(lags), "m": 1, **data}
        return data

    @model_validator(mode="after")
    def _buildable(self) -> StreamConfig:
        if (self.chain == "recorded") != (self.recording is not None):
            raise ParameterError(
                "stream.recording", "must be given exactly when stream.chain = 'recorded'"
            )
        if self.recording is not None:
            want = len(self.recording.columns) * len(self.recording.lags)
            if (self.d, self.m) != (want, 1):
                raise ParameterError(
                    "stream.d", f"must be len(columns)·len(lags) = {want} with m = 1 for a "
                    f"recording (or left out), got d = {self.d}, m = {self.m}",
                )  # fmt: skip
        if self.m > self.d:
            raise ParameterError("stream.m", f"must be an integer in [1, d={self.d}], got {self.m}")
        if self.chain == "ar1" and not isinstance(self.rho, float):
            raise ParameterError("stream.rho", "must be a number in (-1, 1) for chain 'ar1'")
        if self.chain == "var1":
            rho = np.asarray(self.rho if isinstance(self.rho, list) else [[self.rho]], dtype=object)
            if rho.shape != (self.d, self.d):
                raise ParameterError("stream.rho", f"must be a {self.d}x{self.d} matrix for var1")
        if self.chain == "finite":
            for name in ("P", "values"):
                rows = getattr(self, name)
                if rows is None or len({len(r) for r in rows}) != 1 or not rows[0]:
                    raise ParameterError(f"stream.{name}", "must be a non-empty rectangular matrix")
            if len(self.values[0]) != self.d:
                raise ParameterError("stream.values", f"rows must have d={self.d} entries")
        try:
            self.build_chain()
            self.build_target()
        except ParameterError as err:
            raise self._rekey(err) from None
        return self

    def build_chain(self) -> Chain:
        """The input chain of docs/model.md §1."""
        if self.recording is not None:
            return self.recording.build().chain
        if self.chain == "finite":
            return FiniteChain(np.asarray(self.P, float), np.asarray(self.values, float))
        rho = np.asarray(self.rho, float) if self.chain == "var1" else self.rho
        return AR1Chain(rho=rho, noise=self.noise, d=self.d)

    def build_target(self) -> Target:
        """``Y_k = a·Y_{k-1} + (1-a)·f(X_k)`` (filter), ``f(X_k)``, ``X_{k-lag}`` or recorded."""
        if self.recording is not None:
            return self.recording.build().target
        if self.target == "lag":
            return LagTarget(lag=self.lag, m=self.m, d=self.d)
        fn, m = TARGET_FUNCTIONS[self.f], self.m
        a = self.a if self.target == "filter" else 0.0
        return FilterTarget(a=a, f=lambda x: fn(x[:m]), m=m)
