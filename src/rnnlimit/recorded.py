"""A recorded series as the stream (docs/model.md §1): the cyclic shift on its indices.

A table of recorded values ``v[j, c]`` (rows ``j = 0..L−1`` in time order, columns ``c``) becomes
a stream in three steps:

1. scaling: each used column is mapped by ``v ↦ clip((v − a_c) / b_c, −1, 1)`` with ``a_c, b_c``
   fitted on the training span alone — min–max (``a = (max+min)/2``, ``b = (max−min)/2``) or a
   robust quantile clip (the same with the ``q`` and ``1−q`` quantiles; values beyond clip);
   ``none`` (``a = 0``, ``b = 1``) for data already in ``[-1, 1]``;
2. lag embedding: ``x_j = (v_{c1}[j − l_1], …, v_{c1}[j − l_p], v_{c2}[j − l_1], …)``, so
   ``d = n_columns · n_lags``; the target ``y_j = v_target[j + horizon]`` (``m = 1``);
3. the chain: the index moves by the cyclic shift ``J_{k+1} = J_k + 1 mod L_train`` over the
   training examples and is observed as ``(x_J, y_J)``. Its stationary law is uniform on the
   indices: the finite network reads the recording in order from ``J_0`` (wrapping around when
   ``T·N > L_train``), the limit's particles start at independent uniform indices.

Examples whose rows all lie in the training span ``[start, stop)`` train; examples at ``j ≥ stop``
form the held-out tail of the forecasts (:mod:`rnnlimit.forecast`). Files are read by
:mod:`rnnlimit.recording_io`; every problem with the data is a :class:`RecordingError` naming the
file, the row and the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from rnnlimit.chains import effective_sample_size, integrated_autocorrelation_time
from rnnlimit.errors import ParameterError, RecordingError, check_choice, check_int, check_range
from rnnlimit.recording_io import Table

Array = jax.Array
SCALINGS = ("minmax", "quantile", "none")
#: Fewest training examples a recorded stream accepts.
MIN_TRAIN = 64
#: ``T·N`` above this many times the training length re-reads the data: the report warns.
REREAD_WARNING = 4.0


# --------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class Scaling:
    """``u = clip((v − center) / half_width, −1, 1)`` per column; back ``v = center + half_width·u``

    ``names`` are the columns the entries belong to; ``method`` and ``quantile`` say how
    ``center, half_width`` were fitted on the training span.
    """

    names: tuple[str, ...]
    center: np.ndarray
    half_width: np.ndarray
    method: str = "minmax"
    quantile: float = 0.0

    def apply(self, values: Any, columns: Any = None) -> np.ndarray:
        """Scaled values (clipped into ``[-1, 1]``) of ``values (n, len(columns))``."""
        idx = self._idx(columns)
        v = np.asarray(values, float)
        return np.clip((v - self.center[idx]) / self.half_width[idx], -1.0, 1.0)

    def inverse(self, scaled: Any, columns: Any = None) -> np.ndarray:
        """Data units of scaled values (not clipped: a forecast may leave ``[-1, 1]``)."""
        idx = self._idx(columns)
        return self.center[idx] + self.half_width[idx] * np.asarray(scaled, float)

    def _idx(self, columns: Any) -> np.ndarray:
        if columns is None:
            return np.arange(len(self.names))
        cols = [columns] if isinstance(columns, str) else list(columns)
        return np.asarray([self.names.index(c) for c in cols], int)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a run stores so forecasts map back to data units)."""
        return dict(
            names=list(self.names), center=self.center.tolist(),
            half_width=self.half_width.tolist(), method=self.method, quantile=self.quantile,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaling:
        return cls(
            tuple(data["names"]), np.asarray(data["center"], float),
            np.asarray(data["half_width"], float), data["method"], float(data["quantile"]),
        )  # fmt: skip


def fit_scaling(
    table: Table, columns: list[str], span: tuple[int, int], method: str = "minmax",
    quantile: float = 0.01,
) -> Scaling:  # fmt: skip
    """Fit ``center, half_width`` of ``columns`` on the rows ``span = [start, stop)`` of ``table``.

    A column that is constant over the span cannot be scaled, and ``none`` needs every value
    of the table in ``[-1, 1]``: :class:`RecordingError`.
    """
    check_choice("scaling", method, SCALINGS)
    check_range("quantile", quantile, 0.0, 0.5, low_open=True, high_open=True)
    start, stop = span
    centers, widths = [], []
    for name in columns:
        if method == "none":
            _check_unit_range(table, name)
            centers.append(0.0)
            widths.append(1.0)
            continue
        v = table.column(name)[start:stop]
        lo, hi = (
            (float(v.min()), float(v.max()))
            if method == "minmax"
            else tuple(float(q) for q in np.quantile(v, [quantile, 1.0 - quantile]))
        )
        if not hi - lo > 1e-12 * max(1.0, abs(lo), abs(hi)):
            what = "constant" if v.min() == v.max() else f"constant between its {method} bounds"
            raise RecordingError(
                "columns",
                f"{table.source}, column {name!r}: {what} (= {lo:.6g}) over the training span "
                f"({table.row_name(start)} to {table.row_name(stop - 1)}), so it cannot be scaled "
                "into [-1, 1]",
            )
        centers.append(0.5 * (hi + lo))
        widths.append(0.5 * (hi - lo))
    q = quantile if method == "quantile" else 0.0
    return Scaling(tuple(columns), np.asarray(centers), np.asarray(widths), method, q)


def _check_unit_range(table: Table, name: str) -> None:
    v = table.column(name)
    if np.any(np.abs(v) > 1.0):
        j = int(np.argmax(np.abs(v) > 1.0))
        raise RecordingError(
            "scaling", f"{table.source}, {table.row_name(j)}, column {name!r}: {v[j]:.6g} lies "
            "outside [-1, 1], so scaling = 'none' cannot be used (choose 'minmax' or 'quantile')",
        )  # fmt: skip


# --------------------------------------------------------------------------- lag embedding


def lag_embed(
    values: np.ndarray, lags: tuple[int, ...], target: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x_j = (values[j − l, c])_{c, l}`` (column-major: every lag of column 0 first) and
    ``y_j = target[j + horizon]`` for every ``j`` where both exist.

    Returns ``x (n, c·len(lags))``, ``y (n, 1)`` and the rows ``j (n,)``.
    """
    values = np.asarray(values, float).reshape(len(values), -1)
    L, j0 = values.shape[0], max(lags)
    j1 = L - horizon
    rows = np.arange(j0, max(j0, j1))
    x = np.stack([values[rows - lag, c] for c in range(values.shape[1]) for lag in lags], axis=1)
    y = np.asarray(target, float).reshape(L)[rows + horizon][:, None]
    return x.reshape(len(rows), values.shape[1] * len(lags)), y, rows


# --------------------------------------------------------------------------- chain and target


@dataclass(frozen=True, eq=False)
class RecordedChain:
    """The cyclic shift ``J_{k+1} = J_k + 1 mod L`` on the indices of ``x (L, d)``, observed as
    ``x_J``; ``J_0`` uniform on ``0..L−1`` (the stationary law), so M copies started by
    ``particles.init_particles`` sit at independent uniform indices."""

    x: np.ndarray

    @property
    def d(self) -> int:
        return int(self.x.shape[1])

    @property
    def length(self) -> int:
        return int(self.x.shape[0])

    def init(self, key: Array) -> Array:
        return jax.random.randint(key, (), 0, self.length)

    def step(self, key: Array, state: Array) -> Array:
        del key
        return (state + 1) % self.length

    def step_many(self, key: Array, states: Array) -> Array:
        """One step of M copies: the shift is deterministic, so no random draw."""
        del key
        return (states + 1) % self.length

    def observe(self, state: Array) -> Array:
        return jnp.asarray(self.x)[state]


@dataclass(frozen=True, eq=False)
class RecordedTarget:
    """``Y = y_J``: the recording's target at the chain's index ``J`` (it has no state of its own:
    ``r`` is empty and only carries the dtype)."""

    y: np.ndarray
    reads_chain_state: ClassVar[bool] = True

    @property
    def m(self) -> int:
        return int(self.y.shape[1])

    def init(self, dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((0,), dtype)

    def step_state(self, r: Array, state: Array) -> tuple[Array, Array]:
        return r, jnp.asarray(self.y, r.dtype)[state]

    def step(self, r: Array, x: Array) -> tuple[Array, Array]:
        raise ParameterError(
            "target", "a recorded target reads the recording at the chain's index: pair it "
            "with its RecordedChain (the stream functions of rnnlimit.chains do)",
        )  # fmt: skip


# --------------------------------------------------------------------------- the series


@dataclass(frozen=True, eq=False)
class RecordedSeries:
    """A table made into a stream: the scaling, the embedded training examples (the chain) and
    the held-out tail. ``x_*`` and ``y_*`` are scaled; ``rows_*`` the rows ``j`` of ``x_j``
    (``x_all``: every example, the rows between the span and the tail included)."""

    table: Table
    inputs: tuple[str, ...]
    lags: tuple[int, ...]
    target_column: str
    horizon: int
    span: tuple[int, int]
    scaling: Scaling
    x_train: np.ndarray
    y_train: np.ndarray
    rows_train: np.ndarray
    x_tail: np.ndarray
    y_tail: np.ndarray
    rows_tail: np.ndarray
    x_all: np.ndarray
    rows_all: np.ndarray
    chain: RecordedChain = field(init=False)
    target: RecordedTarget = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", RecordedChain(self.x_train))
        object.__setattr__(self, "target", RecordedTarget(self.y_train))

    @property
    def d(self) -> int:
        return int(self.x_train.shape[1])

    def to_data(self, y_scaled: Any) -> np.ndarray:
        """Target values (or forecasts) in the data's own units."""
        return self.scaling.inverse(y_scaled, [self.target_column])

    def truth(self) -> np.ndarray:
        """The tail's targets ``v_target[j + horizon]`` in data units (not clipped)."""
        return self.table.column(self.target_column)[self.rows_tail + self.horizon][:, None]

    def raw_examples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``x_j, y_j`` and ``j`` of every example in data units (the same embedding, unscaled)."""
        raw = np.stack([self.table.column(c) for c in self.inputs], 1)
        return lag_embed(raw, self.lags, self.table.column(self.target_column), self.horizon)

    def persistence(self) -> np.ndarray:
        """The persistence forecast of ``y_j`` on the tail, in data units: the target column at
        the last row known when forecasting (``j`` for ``horizon ≥ 1``, ``j − 1`` for 0)."""
        rows = self.rows_tail + min(self.horizon, 1) - 1
        return self.table.column(self.target_column)[rows][:, None]

    def describe(self) -> dict[str, Any]:
        """What a run stores about its recording (the scaling maps forecasts back)."""
        return dict(
            source=self.table.source, rows=self.table.length, inputs=list(self.inputs),
            lags=list(self.lags), target=self.target_column, horizon=self.horizon,
            train_span=list(self.span), n_train=len(self.rows_train), n_tail=len(self.rows_tail),
            scaling=self.scaling.to_dict(),
        )  # fmt: skip


def recorded_series(
    table: Table,
    inputs: list[str | int],
    lags: list[int] | tuple[int, ...] = (0,),
    target: str | int | None = None,
    horizon: int = 1,
    span: tuple[int, int] | list[int] | None = None,
    scaling: str = "minmax",
    quantile: float = 0.01,
) -> RecordedSeries:
    """The stream of ``table``: inputs ``x_j`` (columns ``inputs`` at ``j − l`` for each lag
    ``l``), target ``y_j`` (column ``target``, default the first input, at ``j + horizon``),
    scaling fitted on ``span = [start, stop)`` (default: the first 80% of the rows)."""
    names = [table.resolve(c, "columns") for c in inputs]
    if not names or len(set(names)) != len(names):
        raise ParameterError("columns", f"must name distinct columns of {table.source}")
    lag_t = tuple(int(v) for v in lags)
    if not lag_t or len(set(lag_t)) != len(lag_t) or min(lag_t) < 0:
        raise ParameterError("lags", f"must be distinct integers >= 0, got {list(lags)}")
    tgt = names[0] if target is None else table.resolve(target, "target")
    check_int("horizon", horizon, 0)
    L = table.length
    start, stop = (0, round(0.8 * L)) if span is None else (int(span[0]), int(span[1]))
    if not 0 <= start < stop <= L:
        raise ParameterError(
            "train_span", f"must be [start, stop] with 0 <= start < stop <= {L} (the rows of "
            f"{table.source}), got {[start, stop]}",
        )  # fmt: skip
    used = list(dict.fromkeys([*names, tgt]))
    sc = fit_scaling(table, used, (start, stop), scaling, quantile)
    scaled = sc.apply(np.stack([table.column(c) for c in used], 1), used)
    x, y, rows = lag_embed(scaled[:, : len(names)], lag_t, scaled[:, used.index(tgt)], horizon)
    train = (rows - max(lag_t) >= start) & (rows + horizon < stop)
    tail = rows >= stop
    if int(train.sum()) < MIN_TRAIN:
        raise RecordingError(
            "train_span", f"{table.source}: too short: the training span "
            f"({table.row_name(start)} to {table.row_name(stop - 1)}) holds {int(train.sum())} "
            f"examples after lags up to {max(lag_t)} and horizon {horizon}; at least "
            f"{MIN_TRAIN} are needed",
        )  # fmt: skip
    return RecordedSeries(
        table, tuple(names), lag_t, tgt, horizon, (start, stop), sc,
        x[train], y[train], rows[train], x[tail], y[tail], rows[tail], x, rows,
    )  # fmt: skip


# --------------------------------------------------------------------------- diagnostics


def recording_diagnostics(series: RecordedSeries, T: float, widths: list[int]) -> dict[str, Any]:
    """The recording's integrated autocorrelation time ``τ = 1 + 2 Σ_ℓ ρ(ℓ)`` and effective sample
    size ``L_train / τ`` (target and each input column at lag 0), how much of the training span
    each width reads (``coverage``: ``T·N / L_train``) and how many times the widest does
    (``reads``), with a warning above :data:`REREAD_WARNING`."""
    L = len(series.rows_train)
    lag0 = series.lags.index(min(series.lags))
    cols = {f"target {series.target_column}": series.y_train[:, 0]}
    for i, name in enumerate(series.inputs):
        if name != series.target_column or series.horizon:
            cols[f"input {name}"] = series.x_train[:, i * len(series.lags) + lag0]
    tau = {k: float(integrated_autocorrelation_time(v)) for k, v in cols.items()}
    ess = {k: float(effective_sample_size(v)) for k, v in cols.items()}
    N = max(widths) if widths else 0
    reads = T * N / L
    warning = None
    if reads > REREAD_WARNING:
        warning = (
            f"T·N = {T * N:.0f} steps of the widest network (N = {N}) read the {L} training "
            f"examples {reads:.1f} times over: it re-reads the same data (the limit averages "
            "over the recording, so the comparison stands, but the data hold fewer "
            "independent samples than the steps suggest)"
        )
    coverage = {str(n): T * n / L for n in sorted(widths)}  # the fraction each width reads
    return dict(
        n_train=L, tau=tau, ess=ess, reads=reads, widest=N, coverage=coverage, warning=warning
    )
