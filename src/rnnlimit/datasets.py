"""Sets of sequences for the sequence kernel: padding with true lengths, per-series scaling, and
the UCR/UEA classification problems that ship offline inside ``aeon`` (optional extra).

Layout everywhere in ``rnnlimit``: a sequence is ``(L, d)`` (time first, ``X_k ∈ R^d``); a set of
sequences is ``(xs, lengths)`` with ``xs`` (n, L_max, d) zero-padded after each true length.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from rnnlimit.errors import ParameterError, check_choice

UCR_LOADERS: dict[str, str] = {
    "GunPoint": "load_gunpoint",
    "ItalyPowerDemand": "load_italy_power_demand",
    "ArrowHead": "load_arrow_head",
    "BasicMotions": "load_basic_motions",
    "JapaneseVowels": "load_japanese_vowels",
    "OSULeaf": "load_osuleaf",
    "PickupGestureWiimoteZ": "load_pickup_gesture_wiimoteZ",
    "UnitTest": "load_unit_test",
    "ACSF1": "load_acsf1",
}
REGRESSION_LOADERS: dict[str, str] = {
    "Covid3Month": "load_covid_3month",
    "CardanoSentiment": "load_cardano_sentiment",
}


def as_batch(x: Any, dim_in: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sequences → ``(xs, lengths)``: ``xs`` (n, L_max, d) zero-padded, ``lengths`` (n,) int.

    Accepts an array (n, L) or (n, L, d) of equal-length sequences, a list of arrays (L_i,) or
    (L_i, d), or an ``(xs, lengths)`` pair (returned as arrays).
    """
    if isinstance(x, tuple) and len(x) == 2:
        xs, lengths = np.asarray(x[0], np.float64), np.asarray(x[1], np.int64)
        return (xs[..., None] if xs.ndim == 2 else xs), lengths
    if hasattr(x, "ndim") and np.ndim(x) in (2, 3):
        xs = np.asarray(x, np.float64)
        xs = xs[..., None] if xs.ndim == 2 else xs
        return xs, np.full(xs.shape[0], xs.shape[1], np.int64)
    seqs = [np.asarray(s, np.float64) for s in x]
    seqs = [s[:, None] if s.ndim == 1 else s for s in seqs]
    if not seqs:
        raise ParameterError("X", "must hold at least one sequence")
    d = seqs[0].shape[1] if dim_in is None else dim_in
    lengths = np.array([len(s) for s in seqs], np.int64)
    if lengths.min() < 1 or any(s.ndim != 2 or s.shape[1] != d for s in seqs):
        raise ParameterError("X", f"every sequence needs length >= 1 and {d} channels")
    xs = np.zeros((len(seqs), int(lengths.max()), d))
    for i, s in enumerate(seqs):
        xs[i, : len(s)] = s
    return xs, lengths


def flatten_padded(xs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``(xs, lengths)`` → 2-D (n, L_max·d), time-major, NaN after each true length.

    This is the scikit-learn-facing encoding (:func:`unflatten` inverts it).
    """
    n, length, d = xs.shape
    out = xs.astype(np.float64).copy()
    out[np.arange(length)[None, :] >= lengths[:, None]] = np.nan
    return out.reshape(n, length * d)


def unflatten(x2d: np.ndarray, dim_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`flatten_padded`; only trailing NaN (whole time steps) may pad.

    Raises :class:`ParameterError` on ±inf, on NaN inside a sequence, or on an empty sequence.
    """
    x2d = np.asarray(x2d, np.float64)
    n, width = x2d.shape
    if width % dim_in:
        raise ParameterError("X", f"has {width} columns, not a multiple of n_channels={dim_in}")
    xs = x2d.reshape(n, width // dim_in, dim_in)
    if np.isinf(xs).any():
        raise ParameterError("X", "must not hold infinite values")
    missing = np.isnan(xs).any(axis=2)
    lengths = np.where(missing.any(axis=1), missing.argmax(axis=1), xs.shape[1])
    if (missing.sum(axis=1) != xs.shape[1] - lengths).any() or np.isnan(
        xs[np.arange(xs.shape[1])[None, :] >= lengths[:, None]]
    ).sum() != missing.sum() * dim_in:
        raise ParameterError("X", "NaN is allowed only as trailing padding of whole time steps")
    if (lengths < 1).any():
        raise ParameterError("X", "every sequence needs at least one finite time step")
    return np.nan_to_num(xs, nan=0.0), lengths.astype(np.int64)


def znormalize(xs: np.ndarray, lengths: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Per series and channel: subtract the mean and divide by the sd over the true length,
    then multiply by ``scale`` (padding stays 0). Constant channels map to 0."""
    mask = (np.arange(xs.shape[1])[None, :] < lengths[:, None])[..., None]
    cnt = lengths[:, None, None].astype(np.float64)
    mean = (xs * mask).sum(axis=1, keepdims=True) / cnt
    var = (((xs - mean) * mask) ** 2).sum(axis=1, keepdims=True) / cnt
    sd = np.sqrt(var)
    z = np.where(sd > 1e-8, (xs - mean) / np.where(sd > 1e-8, sd, 1.0), 0.0)
    return z * mask * scale


def load_aeon(name: str, split: str) -> tuple[Any, np.ndarray]:
    """``(X, y)`` in aeon's layout for one of ``UCR_LOADERS`` (classification) or
    ``REGRESSION_LOADERS`` and ``split`` in ``("train", "test")``: ``X`` a 3-D array
    (n_cases, n_channels, n_timepoints), or a list of 2-D arrays when lengths differ.

    Reads the copy that ships inside ``aeon`` (no download). ``aeon`` is the optional extra
    ``datasets``; without it this raises ``ModuleNotFoundError`` saying how to install it.
    """
    loaders = UCR_LOADERS | REGRESSION_LOADERS
    check_choice("name", name, tuple(loaders))
    check_choice("split", split, ("train", "test"))
    try:
        aeon_datasets = importlib.import_module("aeon.datasets")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the UCR/UEA loader needs the optional dependency aeon: "
            "pip install 'rnnlimit[datasets]' (or pip install 'aeon>=1.0,<2')"
        ) from exc
    x, y = getattr(aeon_datasets, loaders[name])(split=split)
    return x, np.asarray(y)


def load_ucr(name: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xs, lengths, y)`` (time-first, zero-padded) of :func:`load_aeon`'s split."""
    x, y = load_aeon(name, split)
    return (*as_sequences(x), y)


def as_sequences(x: Any, n_channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Estimator input → ``(xs, lengths)`` (n, L_max, d), zero-padded after each true length.

    Accepted layouts (``X`` is named in every error):

    - aeon's: a 3-D array ``(n_cases, n_channels, n_timepoints)``, or a list of 2-D arrays
      ``(n_channels, n_timepoints_i)`` (1-D arrays for one channel) when lengths differ (a
      list of 1-D rows of one length is read as a 2-D array, as scikit-learn does);
    - the flat encoding (:func:`flatten_padded`): a 2-D array ``(n_cases, L·n_channels)``, time
      major, NaN after a shorter series' end. With ``n_channels=1`` it is aeon's 2-D univariate
      layout ``(n_cases, n_timepoints)``.
    """
    if isinstance(x, (list, tuple)) and x and all(np.ndim(s) == 1 for s in x):
        if len({len(s) for s in x}) == 1:  # rows of equal length: a 2-D array (scikit-learn)
            x = np.asarray(x)
    if isinstance(x, (list, tuple)):
        if not x:
            raise ParameterError("X", "must hold at least one series")
        seqs = [np.asarray(s, np.float64) for s in x]
        if any(s.ndim not in (1, 2) for s in seqs):
            raise ParameterError("X", "a list must hold 2-D arrays (n_channels, n_timepoints_i)")
        seqs = [s[None, :] if s.ndim == 1 else s for s in seqs]
        if len({s.shape[0] for s in seqs}) > 1 or min(s.shape[1] for s in seqs) < 1:
            raise ParameterError("X", "every series needs the same channels and >= 1 step")
        if any(not np.isfinite(s).all() for s in seqs):
            raise ParameterError("X", "must not hold NaN or infinite values inside a list")
        return as_batch([s.T for s in seqs])
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ParameterError("X", f"must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 3:
        if arr.shape[0] < 1 or arr.shape[2] < 1:
            raise ParameterError("X", f"needs >= 1 case and >= 1 time point, got {arr.shape}")
        return unflatten(np.transpose(arr, (0, 2, 1)).reshape(len(arr), -1), arr.shape[1])
    if arr.ndim == 2:
        return unflatten(arr, n_channels)
    raise ParameterError(
        "X",
        f"Reshape your data: X must be 3-D (n_cases, n_channels, n_timepoints), a list of 2-D "
        f"arrays, or the 2-D "
        f"flat encoding (n_cases, n_timepoints·n_channels); got an array of {arr.ndim} dims",
    )


def channel_stats(xs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd (d,) of each channel over all true time steps of a set (e.g. a train split)."""
    mask = (np.arange(xs.shape[1])[None, :] < lengths[:, None])[..., None]
    cnt = mask.sum(axis=(0, 1))
    mean = (xs * mask).sum(axis=(0, 1)) / cnt
    sd = np.sqrt((((xs - mean) * mask) ** 2).sum(axis=(0, 1)) / cnt)
    return mean, np.where(sd > 1e-8, sd, 1.0)


def standardize(
    xs: np.ndarray, lengths: np.ndarray, mean: np.ndarray, sd: np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """Per-channel standardisation with given statistics (see :func:`channel_stats`), times
    ``scale``; unlike :func:`znormalize` it keeps each series' level and amplitude (padding 0)."""
    mask = (np.arange(xs.shape[1])[None, :] < lengths[:, None])[..., None]
    return (xs - mean) / sd * mask * scale


def reverse(xs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each sequence reversed in time within its true length (padding stays at the end)."""
    idx = lengths[:, None] - 1 - np.arange(xs.shape[1])[None, :]
    out = np.take_along_axis(xs, np.maximum(idx, 0)[..., None], axis=1)
    return out * (idx >= 0)[..., None]
