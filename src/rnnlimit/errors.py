"""The exception hierarchy of ``rnnlimit``.

Library code raises these and never prints; the CLI turns them into one-line messages.
Every message names the offending parameter and the allowed range or values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class RnnlimitError(Exception):
    """Base class of every error raised on purpose by ``rnnlimit``."""


class ParameterError(RnnlimitError, ValueError):
    """A parameter lies outside its allowed range or has the wrong shape/type.

    ``parameter`` is the name as the user wrote it (a key path for configs).
    """

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class StreamError(ParameterError):
    """A data stream holds non-finite values or values outside ``[-1, 1]``."""


class RecordingError(StreamError):
    """A recorded series cannot be used: unreadable, truncated, non-numeric, NaN/inf, a constant
    column or too short. The message names the file, the row and the column."""


#: Size beyond which an output or ``h_t`` has run away (targets lie in ``[-1, 1]^m``: a thousand
#: times their bound is no plausible prediction). The limit solver stops there
#: (``limitsolve.H_MAX``) and the study's verdicts mark runs there (``verdicts.RUNAWAY``).
DIVERGENCE_BOUND = 1e3


class DivergenceError(RnnlimitError):
    """Training (or the limit solver) produced a non-finite value, or one beyond any plausible
    size (runaway growth).

    ``step`` is the first step whose output was non-finite (or beyond the bound, as ``how``
    says); ``record`` holds everything computed before it, so nothing already computed is lost.
    """

    def __init__(
        self, step: int, record: Any, what: str = "network output", how: str = "became non-finite"
    ) -> None:
        self.step = step
        self.record = record
        super().__init__(
            f"{what} {how} at step k={step}; the record up to that step is kept "
            "in this exception's .record (lower alpha or the learning rate)"
        )


class ContractionError(RnnlimitError):
    """The memory map ``s ↦ ψ(h(x, s))`` is not a contraction (Lipschitz constant ≥ 1)."""

    def __init__(self, lipschitz: float) -> None:
        self.lipschitz = lipschitz
        super().__init__(
            f"memory map s -> psi(h(x, s)) has Lipschitz constant {lipschitz:.4g} >= 1, so the "
            "memory fixed point is not well posed; pass force=True to proceed anyway"
        )


def check_range(
    parameter: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise :class:`ParameterError` unless ``low (<)≤ value (<)≤ high`` and value is finite."""
    lo_br = "(" if low_open or low is None else "["
    hi_br = ")" if high_open or high is None else "]"
    allowed = f"{lo_br}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_br}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(parameter, f"must be a number in {allowed}, got {value!r}") from None
    bad = not math.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        raise ParameterError(parameter, f"must be in {allowed}, got {value!r}")


def check_int(parameter: str, value: int, low: int, high: int | None = None) -> None:
    """Raise :class:`ParameterError` unless ``value`` is an integer in ``[low, high]``."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ParameterError(parameter, f"must be {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ParameterError(parameter, f"must be {allowed}, got {value!r}")


def check_choice(parameter: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`ParameterError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(map(repr, choices))
        raise ParameterError(parameter, f"must be one of {allowed}, got {value!r}")
