"""Reading a recorded series (docs/model.md §1) into a :class:`Table`: CSV text, ``.npy`` or an
array.

Only the columns asked for are parsed, so a date or a label column next to them does no harm.
Every problem is one :class:`~rnnlimit.errors.RecordingError` whose message names the file, the
row (the file's line for CSV) and the column: an unreadable or truncated file, a short row, a
cell that is not a number, NaN or ±inf. Reading has no side effect, so nothing is ever written
half. The series shipped with the package (:data:`BUNDLED`) live in ``rnnlimit/data``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnlimit.errors import ParameterError, RecordingError

DATA_DIR = Path(__file__).resolve().parent / "data"
#: Built-in recorded series: name -> (file in ``rnnlimit/data``, its value column). Provenance
#: and licence in ``rnnlimit/data/README.md``.
BUNDLED: dict[str, tuple[str, str]] = {"seattle-temps": ("seattle_temps_2010.csv", "temp")}


@dataclass(frozen=True, eq=False)
class Table:
    """Recorded values in data units: ``values (L, c)`` in time order, one per column ``names``.

    ``source`` names the file in messages; ``lines[j]`` is the file line of row ``j`` (CSV) or
    ``None`` (rows are then named by their 0-based index).
    """

    values: np.ndarray
    names: tuple[str, ...]
    source: str
    lines: np.ndarray | None = None

    @property
    def length(self) -> int:
        return int(self.values.shape[0])

    def row_name(self, j: int) -> str:
        return f"row {j}" if self.lines is None else f"line {int(self.lines[j])}"

    def resolve(self, column: str | int, parameter: str) -> str:
        """The name of ``column`` (a name, or a 0-based index into ``names``)."""
        if isinstance(column, str) and column in self.names:
            return column
        if isinstance(column, int) and not isinstance(column, bool):
            if 0 <= column < len(self.names):
                return self.names[column]
        raise ParameterError(
            parameter, f"{self.source} has no column {column!r}; it has {list(self.names)}"
        )

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]


def _check_finite(values: np.ndarray, names: tuple[str, ...], source: str, lines: Any) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        j, c = (int(v) for v in np.argwhere(bad)[0])
        where = f"row {j}" if lines is None else f"line {int(lines[j])}"
        raise RecordingError(
            "path", f"{source}, {where}, column {names[c]!r}: {values[j, c]} (NaN and infinite "
            "values are not allowed; fill or drop them first)",
        )  # fmt: skip


def table_from_array(values: Any, names: Any = None, source: str = "array") -> Table:
    """A :class:`Table` from an array ``(L,)`` or ``(L, c)`` (columns named ``names`` or
    ``"0", "1", …``), after checking that it is numeric and finite."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise RecordingError("values", f"{source}: not a numeric array") from None
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise RecordingError("values", f"{source}: must be a non-empty (L, c) array")
    cols = tuple(str(i) for i in range(arr.shape[1])) if names is None else tuple(map(str, names))
    if len(cols) != arr.shape[1]:
        raise ParameterError("names", f"must name the {arr.shape[1]} columns, got {len(cols)}")
    _check_finite(arr, cols, source, None)
    return Table(arr, cols, source)


def _read_npy(path: Path, columns: list[str | int]) -> Table:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise RecordingError(
            "path", f"{path}: not a readable .npy array, the file may be truncated ({exc})"
        ) from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise RecordingError("path", f"{path}: holds {arr.dtype} values, not numbers")
    table = table_from_array(arr, source=str(path))
    keep = [table.resolve(int(c) if str(c).isdigit() else c, "columns") for c in columns]
    idx = [table.names.index(c) for c in keep]
    return Table(table.values[:, idx], tuple(keep), str(path))


def _sniff(line: str) -> str:
    """The delimiter of a header or first row: comma, semicolon or tab (default comma)."""
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path: Path, columns: list[str | int], delimiter: str | None) -> Table:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise RecordingError("path", f"{path}: not a UTF-8 text (CSV) file") from None
    numbered = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not numbered:
        raise RecordingError("path", f"{path}: the file is empty")
    delim = delimiter or _sniff(numbered[0][1])
    rows = list(csv.reader((ln for _, ln in numbered), delimiter=delim))
    header = [c.strip() for c in rows[0]]
    has_header = any(_number(c) is None for c in header)
    names = tuple(header) if has_header else tuple(str(i) for i in range(len(header)))
    skip = 1 if has_header else 0
    body, line_no = rows[skip:], [n for n, _ in numbered[skip:]]
    if not body:
        raise RecordingError("path", f"{path}: holds a header but no data rows")
    table = Table(np.zeros((0, len(names))), names, str(path))
    wanted = [table.resolve(int(c) if not has_header and str(c).isdigit() else c, "columns")
              for c in columns]  # fmt: skip
    idx = [names.index(c) for c in wanted]
    out = np.empty((len(body), len(idx)))
    for j, (row, ln) in enumerate(zip(body, line_no, strict=True)):
        if len(row) != len(names):
            what = (
                f"column {names[len(row)]!r} is missing: the file looks truncated"
                if len(row) < len(names)
                else "more fields than the header"
            )
            raise RecordingError(
                "path", f"{path}, line {ln}: {len(row)} field(s) where the header has "
                f"{len(names)} ({what})",
            )  # fmt: skip
        for k, c in enumerate(idx):
            v = _number(row[c])
            if v is None or not math.isfinite(v):
                cell = row[c].strip()
                why = (
                    "an empty cell" if not cell
                    else f"{cell!r} is not a number" if v is None
                    else f"{cell} (NaN and infinite values are not allowed; fill or drop them)"
                )  # fmt: skip
                raise RecordingError("path", f"{path}, line {ln}, column {names[c]!r}: {why}")
            out[j, k] = v
    return Table(out, tuple(wanted), str(path), np.asarray(line_no))


def read_table(path: str | Path, columns: list[str | int], delimiter: str | None = None) -> Table:
    """The ``columns`` (header names, or 0-based indices) of a CSV/text file or a ``.npy`` array.

    CSV: the first non-empty line is a header unless every field is a number; the delimiter
    is a comma, semicolon or tab (sniffed from that line unless given); blank lines are skipped.
    """
    p = Path(path)
    if not p.is_file():
        raise RecordingError("path", f"{p}: no such file")
    return _read_npy(p, columns) if p.suffix == ".npy" else _read_csv(p, columns, delimiter)


@functools.lru_cache(maxsize=8)
def _cached(path: str, stamp: tuple[int, int], columns: tuple, delimiter: str | None) -> Table:
    del stamp  # part of the key only: a changed file is read again
    return read_table(path, list(columns), delimiter)


def load_table(path: str | Path, columns: list[str | int], delimiter: str | None = None) -> Table:
    """:func:`read_table`, cached per file version (a config is validated, then built, several
    times per run)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise RecordingError("path", f"{p}: no such file") from None
    return _cached(str(p.resolve()), (st.st_mtime_ns, st.st_size), tuple(columns), delimiter)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (a run records which data it saw)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def bundled_path(name: str) -> Path:
    """The file of a built-in recorded series (see :data:`BUNDLED`)."""
    if name not in BUNDLED:
        raise ParameterError("data", f"must be one of {sorted(BUNDLED)}, got {name!r}")
    return DATA_DIR / BUNDLED[name][0]
