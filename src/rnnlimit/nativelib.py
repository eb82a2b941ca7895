"""The native kernels' shared library (``_native/*.c``): found, loaded with ctypes, and
checked (docs/model.md §3, §4, §6 run in it).

One library holds the three kernels of :mod:`rnnlimit.native` (the trainer ``fused_train.c``,
the grid limit stages ``limit_pic.c``, the sequence feature scan ``seq_features.c``). Its ABI
version and the size limits compiled into its C code (``rnnlimit_native.h``: the trainer's
``d, m ≤ MAX_DM``, the grid kernel's ``d + m ≤ PIC_MAX_D`` and ``m ≤ PIC_MAX_M``, the scan's
``SEQ_LANES`` ω samples per block) are read back at load time and must equal the constants
here, or the library is refused; ``ACTIVATIONS``, ``CLIPS`` and ``GRADIENTS`` are the codes its
entry points take for σ, the clip ψ and the gradient. This module needs only numpy.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import importlib.util
import os
from pathlib import Path

import numpy as np

_MODULE = "rnnlimit._native.fused_train"
_ABI = 5
ACTIVATIONS = {"erf": 0, "tanh": 1, "relu": 2}
CLIPS = {"hard": 0, "smooth": 1}
GRADIENTS = {"truncated": 0, "rtrl": 1}
#: Largest d and m of the native trainer (``MAX_DM`` in ``rnnlimit_native.h``).
MAX_DM = 64
#: Largest ``d + m`` and ``m`` of the native grid limit kernel (``limit_pic.c``).
PIC_MAX_D, PIC_MAX_M = 3, 2
#: Lanes (ω samples) per block of the native feature scan (``_native/seq_features.c``).
SEQ_LANES = 128
#: Why the library is not used when ``RNNLIMIT_NATIVE=0`` is set.
DISABLED = "disabled by RNNLIMIT_NATIVE=0"

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int
_DBL = ctypes.c_double


def _library_path() -> Path | None:
    """The built extension file, or None."""
    try:
        spec = importlib.util.find_spec(_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        return Path(spec.origin)
    folder = Path(__file__).with_name("_native")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"fused_train{suffix}"
        if path.is_file():
            return path
    return None


def _check_limits(lib: ctypes.CDLL) -> str:
    """'' when the library's compiled size limits equal this module's, else what differs."""
    limits = {"MAX_DM": MAX_DM, "PIC_MAX_D": PIC_MAX_D, "PIC_MAX_M": PIC_MAX_M}
    limits["LANES"] = SEQ_LANES
    lib.rnnlimit_limits.restype = None
    lib.rnnlimit_limits.argtypes = [_P]
    got = np.zeros(len(limits), np.int64)
    lib.rnnlimit_limits(got.ctypes.data)
    bad = [f"{k} = {v} (expected {want})" for (k, want), v in zip(limits.items(), got, strict=True)
           if v != want]  # fmt: skip
    return "" if not bad else "the library's size limits differ: " + ", ".join(bad)


@functools.cache
def load() -> tuple[ctypes.CDLL | None, str]:
    """The library with its entry points typed, and ``""``; or ``None`` and why it is refused."""
    path = _library_path()
    if path is None:
        return None, "the extension rnnlimit._native.fused_train is not built"
    try:
        lib = ctypes.CDLL(str(path))
        if lib.rnnlimit_abi_version() != _ABI:
            return None, f"{path.name} has ABI {lib.rnnlimit_abi_version()}, expected {_ABI}"
        why = _check_limits(lib)
    except (OSError, AttributeError) as exc:
        return None, f"cannot load {path}: {exc}"
    if why:
        return None, f"{path.name}: {why}"
    lib.rnnlimit_train.restype = _I64
    lib.rnnlimit_train.argtypes = [_I64, *[_INT] * 5, *[_P] * 6, _I64, _I64, _I64]
    lib.rnnlimit_train.argtypes += [_DBL, _DBL, _DBL, *[_P] * 5, _I64, _INT]
    lib.rnnlimit_threads_supported.restype = _INT
    lib.rnnlimit_act.restype = _INT
    lib.rnnlimit_act.argtypes = [_INT, _I64, _P, _P, _P]
    lib.rnnlimit_exp.restype = _INT
    lib.rnnlimit_exp.argtypes = [_I64, _P, _P]
    lib.rnnlimit_pic_run.restype = _INT
    lib.rnnlimit_pic_run.argtypes = [_INT, _INT, _INT, _I64, _I64, _I64, _INT, _DBL, _DBL]
    lib.rnnlimit_pic_run.argtypes += [_INT, _INT, *[_P] * 8, _INT, _P, _P, _P, _P, _I64]
    lib.rnnlimit_seq_features.restype = _INT
    lib.rnnlimit_seq_features.argtypes = [_INT, _INT, *[_I64] * 5, *[_P] * 5, _INT, _I64]
    lib.rnnlimit_seq_features.argtypes += [ctypes.c_float, _P, _P]
    lib.rnnlimit_seq_act.restype = _INT
    lib.rnnlimit_seq_act.argtypes = [_INT, _I64, _P, _P, _P]
    return lib, ""


def disabled() -> bool:
    """Whether ``RNNLIMIT_NATIVE`` (0, false, no, off) switches the native kernels off."""
    return os.environ.get("RNNLIMIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def library() -> ctypes.CDLL:
    """The loaded library; ``RuntimeError`` saying why when it is disabled or refused."""
    if disabled():
        raise RuntimeError(f"native kernel unavailable: {DISABLED}")
    lib, why = load()
    if lib is None:
        raise RuntimeError(f"native kernel unavailable: {why}")
    return lib
