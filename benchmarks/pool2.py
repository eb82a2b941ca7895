"""The second unseen pool (``unseen_data.DATASETS2``) split into DEV2 and HELD2, fixed in advance.

The split is a rule, not a choice: it was written and committed before any model ran on these
sets (see RESULTS.md, "Pre-registration: the second unseen pool").

- **Eligible**: the UCR classification sets of ``DATASETS2`` without missing values whose size
  ``(n_train + n_test) × longest length`` is at most ``MAX_CELLS`` (3·10⁵; ROCKET's transform
  costs about 6·10⁻⁵ s a cell on these 2 cores, so each set takes ≲ 20 s a seed). The larger
  ones are a reserve that nothing here runs.
- **Families**: sets recorded from the same source (the X/Y/Z axes of one gesture recording, the
  phalanx outlines, two train sizes of one recording, …; :func:`family`) go to the same side, so
  that no held-out set has a sibling that shaped a decision. Families related to sets seen
  before (GunPoint's 2018 re-recordings, the pig pressures of PigCVP) go to DEV2.
- **Sides**: the other families are ordered by ``sha256("rnnlimit pool2 " + family)`` and dealt
  alternately, DEV2 first.

DEV2 is the development pool of every decision from now on; HELD2 is run once, at the end, by
``pool2_run.py --pool held2``.
"""

from __future__ import annotations

import hashlib
import re

from unseen_data import DATASETS2, load_unseen

MAX_CELLS = 300_000
RESERVE_A_CELLS = 1_200_000
#: families whose siblings were seen before this pool existed
SEEN_RELATED = ("GunPoint", "Pig")
_FAMILIES = (
    (r"^(Distal|Middle|Proximal)Phalanx.*|^PhalangesOutlinesCorrect$", "Phalanx"),
    (r"^(Cricket|UWaveGestureLibrary|AllGestureWiimote)(X|Y|Z|All)$", r"\1"),
    (r"^(GestureMidAir)D\d$|^(GesturePebble)Z\d$", r"\1\2"),
    (r"^(InsectEPG|Freezer|MixedShapes)(Small|Regular)Train$", r"\1"),
    (r"^(Worms)(TwoClass)?$|^(ToeSegmentation)\d$|^(Lightning)\d$", r"\1\3\4"),
    (r"^(SonyAIBORobotSurface)\d$|^(NonInvasiveFetalECGThorax)\d$", r"\1\2"),
    (r"^(EOG)(Horizontal|Vertical)Signal$|^(DodgerLoop).*$|^(GunPoint).*$|^(Pig).*$", r"\1\3\4\5"),
    (r"^(FaceAll|FacesUCR)$", "Faces"),
    (r"^(FiftyWords|WordSynonyms)$", "Words"),
    (r"^(Computers|LargeKitchenAppliances|SmallKitchenAppliances)$", "Appliances"),
    (r"^(Chinatown|MelbournePedestrian)$", "Pedestrian"),
)


def family(name: str) -> str:
    """The recording a set comes from (sets of one family share a side)."""
    for pattern, repl in _FAMILIES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return name


def sizes(max_cells: int = MAX_CELLS, max_train: int | None = None) -> dict[str, int]:
    """UCR set without missing values -> its size in cells, for sets of at most ``max_cells``
    cells and ``max_train`` training series."""
    out = {}
    for name, (_, fmt, _) in sorted(DATASETS2.items()):
        if not fmt.startswith("ucr_tsv"):
            continue  # the regression sets
        xs = [load_unseen(name, split)[0] for split in ("train", "test")]
        series = [s for x in xs for s in x]
        if any(not (s == s).all() for s in series):  # NaN inside a series
            continue
        cells = len(series) * max(s.shape[-1] for s in series)
        if cells <= max_cells and (max_train is None or len(xs[0]) <= max_train):
            out[name] = cells
    return out


def eligible() -> dict[str, int]:
    """Eligible set -> its size in cells (see the module docstring)."""
    return sizes()


def reserve_a() -> tuple[str, ...]:
    """The first check drawn from the reserve (RESULTS.md, "Pre-registration: RESERVE-A"):
    reserve sets of more than ``MAX_CELLS`` and at most ``RESERVE_A_CELLS`` cells, at most 3000
    training series, no missing values, outside the families related to seen sets."""
    larger = sizes(RESERVE_A_CELLS, max_train=3000)  # eligible sets are those of <= MAX_CELLS
    return tuple(
        n for n, cells in larger.items() if cells > MAX_CELLS and family(n) not in SEEN_RELATED
    )


def split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(DEV2, HELD2)``, each sorted by name."""
    sets = eligible()
    fams: dict[str, list[str]] = {}
    for name in sets:
        fams.setdefault(family(name), []).append(name)
    dev = [n for f in SEEN_RELATED for n in fams.pop(f, [])]
    order = sorted(fams, key=lambda f: hashlib.sha256(f"rnnlimit pool2 {f}".encode()).hexdigest())
    held: list[str] = []
    for i, f in enumerate(order):
        (dev if i % 2 == 0 else held).extend(fams[f])
    return tuple(sorted(dev)), tuple(sorted(held))


if __name__ == "__main__":
    dev2, held2 = split()
    cells_of = eligible()
    for label, names in (("DEV2", dev2), ("HELD2", held2)):
        cells = sum(cells_of[n] for n in names)
        print(f"{label} ({len(names)} sets, {cells / 1e6:.2f} M cells): {' '.join(names)}")
