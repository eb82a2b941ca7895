"""Held-out UCR datasets for checking changes to bench_ucr.py's procedure.

These ship offline inside aeon (``aeon/datasets/data``) but are NOT among the five that
bench_ucr.py reports, so a change to the procedure can be checked on them without tuning it to
the reported test splits: OSULeaf (6 classes, 200/242 series of length 427), PickupGestureWiimoteZ
(10 classes, 50/50 series of lengths 29–361), UnitTest (a 20/22-series, length-24 subset of
Chinatown), ACSF1 (10 classes, 100/100 series of length 1460; slow).

Run: ``.venv/bin/python benchmarks/ucr_extra.py --seeds 3 [--datasets ...]`` (prints, writes
nothing into the repository): the same ``ours`` and baselines as bench_ucr.py on these splits.
"""

from __future__ import annotations

import argparse
import os

import bench_ucr
import numpy as np

from rnnlimit.datasets import as_batch

EXTRA = ("OSULeaf", "PickupGestureWiimoteZ", "UnitTest", "ACSF1")


def load_extra(name: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xs, lengths, y)`` of one split of a held-out dataset, like ``load_ucr``."""
    import aeon.datasets
    from aeon.datasets import load_from_ts_file

    path = os.path.join(os.path.dirname(aeon.datasets.__file__), "data", name)
    x, y = load_from_ts_file(os.path.join(path, f"{name}_{split.upper()}.ts"))
    xs, lengths = as_batch([np.asarray(s, np.float64).T for s in x])
    return xs, lengths, np.asarray(y)


def load_padded(name: str) -> tuple[tuple, tuple]:
    """Like ``bench_ucr.load_padded`` for the held-out datasets (the five still work)."""
    if name not in EXTRA:
        return _load_padded_five(name)
    return bench_ucr.pad_splits(load_extra(name, "train"), load_extra(name, "test"))


_load_padded_five = bench_ucr.load_padded
bench_ucr.load_padded = load_padded  # ours() and baseline() look it up at call time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="*", default=list(EXTRA[:3]))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-theta", type=int, default=bench_ucr.N_THETA)
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    bench_ucr.N_THETA = args.n_theta
    means = []
    for name in args.datasets:
        runs = [bench_ucr.ours(name, seed) for seed in range(args.seeds)]
        acc = [r["acc"] for r in runs]
        line = f"{name}: ours {np.mean(acc):.4f} {[round(a, 4) for a in acc]}"
        if not args.no_baselines:
            dtw = bench_ucr.baseline(name, "dtw")["acc"]
            rocket = [bench_ucr.baseline(name, "rocket", s)["acc"] for s in range(args.seeds)]
            line += f" | DTW {dtw:.4f} | ROCKET {np.mean(rocket):.4f}"
        print(line, "|", runs[0]["choice"], flush=True)
        means.append(np.mean(acc))
    print(f"mean ours over {args.datasets}: {np.mean(means):.4f}")


if __name__ == "__main__":
    main()
