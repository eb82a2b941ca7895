"""Ours (one or more kernel families) against ROCKET on DEV2 or HELD2 of the second pool.

``--pool dev2`` is the development loop: each ``--variant NAME=JSON`` is an
``RNNKernelClassifier(kernel=KernelFamily(**JSON))``; ROCKET's results are cached per set and
seed (``$RNNLIMIT_WHEEL_CACHE/../rocket``) so that variants can be compared without rerunning
it, and nothing is written to RESULTS.md unless ``--results`` is given. ``--pool held2`` is the
pre-registered check (RESULTS.md, "Pre-registration: the second unseen pool"): ROCKET is run
afresh, ours with the final defaults (``final``) and with main's defaults before the session
(``before``), and a section is appended to RESULTS.md. ``--pool reserve-a`` is the same check on
19 larger sets of the reserve (``pool2.reserve_a``), pre-registered after the HELD2 run.

Run: ``nice -n 10 .venv/bin/python benchmarks/pool2_run.py --pool held2 --seeds 3 --n-jobs 2``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import bench_ucr
import numpy as np
from limitbench import load_average, machine
from pool2 import family, reserve_a, split
from unseen_data import cache_dir, load_unseen

from rnnlimit.estimators import KernelFamily, RNNKernelClassifier, RNNKernelRegressor

#: main's kernel family before this session (95d80ba), spelled out
BEFORE = {"pools": ["ppv", "max", "mean"], "optional_pools": [], "sigma_w": 2.0, "normalize": "all"}
#: the unseen regression set of the pre-registered check (RMSE)
REGRESSION = "Tecator"


def regression(seed: int, n_jobs: int, variants: dict[str, dict]) -> dict[str, dict]:
    """RMSE and time of ours (each variant) and of aeon's RocketRegressor on ``REGRESSION``."""
    (xtr, ytr), (xte, yte) = load_unseen(REGRESSION, "train"), load_unseen(REGRESSION, "test")
    rmse = lambda p: float(np.sqrt(np.mean((np.asarray(p, float) - yte) ** 2)))  # noqa: E731
    out = {}
    for v, fam in variants.items():
        model = RNNKernelRegressor(kernel=KernelFamily(**fam), random_state=seed, n_jobs=n_jobs)
        pred, t = bench_ucr.timed(model, xtr, ytr, xte)
        out[v] = {"rmse": rmse(pred), "s": t}
    pred, t = bench_ucr.timed_rocket(True, seed, n_jobs, xtr, ytr, xte)
    out["rocket"] = {"rmse": rmse(pred), "s": t}
    return out


def rocket(name: str, seed: int, n_jobs: int, cached: bool) -> dict:
    """ROCKET's accuracy and time on one set (cached on disk for the DEV loop)."""
    path = cache_dir().parent / "rocket" / f"{name}_{seed}.json"
    if cached and path.exists():
        return json.loads(path.read_text())
    (xtr, ytr), (xte, yte) = load_unseen(name, "train"), load_unseen(name, "test")
    pred, t = bench_ucr.timed_rocket(False, seed, n_jobs, xtr, ytr, xte)
    out = {"acc": float(np.mean(pred == yte)), "s": t}
    if cached:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out))
    return out


def ours(name: str, seed: int, n_jobs: int, fam: dict) -> dict:
    (xtr, ytr), (xte, yte) = load_unseen(name, "train"), load_unseen(name, "test")
    model = RNNKernelClassifier(kernel=KernelFamily(**fam), random_state=seed, n_jobs=n_jobs)
    pred, t = bench_ucr.timed(model, xtr, ytr, xte)
    return {"acc": float(np.mean(pred == yte)), "s": t}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", choices=("dev2", "held2", "reserve-a"), default="dev2")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON (dev2)")
    parser.add_argument("--datasets", nargs="*", help="a subset of the pool")
    parser.add_argument("--results", help="append a section to this file")
    args = parser.parse_args()
    dev2, held2 = split()
    names = {"dev2": dev2, "held2": held2}.get(args.pool) or reserve_a()
    if args.datasets:
        names = tuple(n for n in names if n in args.datasets)
    if args.pool in ("held2", "reserve-a"):
        variants = {"final": {}, "before": BEFORE}
    else:
        variants = {v.split("=", 1)[0]: json.loads(v.split("=", 1)[1]) for v in args.variant}
        variants = variants or {"default": {}}
    start = datetime.now(UTC)
    res: dict[str, dict[str, list[dict]]] = {}
    for name in names:
        row = res[name] = {"rocket": []} | {v: [] for v in variants}
        for seed in range(args.seeds):
            for v, fam in variants.items():
                row[v].append(ours(name, seed, args.n_jobs, fam))
            row["rocket"].append(rocket(name, seed, args.n_jobs, cached=args.pool == "dev2"))
        accs = " ".join(f"{k} {np.mean([r['acc'] for r in rs]):.4f}" for k, rs in row.items())
        print(f"{name}: {accs}", flush=True)
    cols = [*variants, "rocket"]
    acc = {c: np.array([np.mean([r["acc"] for r in res[n][c]]) for n in names]) for c in cols}
    secs = {c: sum(np.mean([r["s"] for r in res[n][c]]) for n in names) for c in cols}
    fams = sorted({family(n) for n in names})
    fam_mean = {
        c: np.mean([np.mean([a for n, a in zip(names, acc[c], strict=True) if family(n) == f])
                    for f in fams])
        for c in cols
    }  # fmt: skip
    lines = [
        "",
        f"## {args.pool.upper()}: RNNKernelClassifier vs ROCKET — pool2_run.py, "
        f"{start:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `nice -n 10 .venv/bin/python benchmarks/{Path(sys.argv[0]).name} "
        f"{' '.join(sys.argv[1:])}`. {machine()}; n_jobs={args.n_jobs}; seeds "
        f"0..{args.seeds - 1}; accuracy: seed mean (min–max); times: fit + predict, s, seed mean. "
        f"Variants: {json.dumps(variants)}.",
        "",
        "| dataset | " + " | ".join(cols) + " | " + " | ".join(f"{c} s" for c in cols) + " |",
        "|---|" + "---|" * (2 * len(cols)),
    ]
    for n in names:
        cells = []
        for c in cols:
            a = [r["acc"] for r in res[n][c]]
            cells.append(f"{np.mean(a):.4f} ({min(a):.3f}–{max(a):.3f})")
        times = [f"{np.mean([r['s'] for r in res[n][c]]):.1f}" for c in cols]
        lines.append(f"| {n} | " + " | ".join(cells + times) + " |")
    lines.append(
        f"| **mean** ({len(names)}) | " + " | ".join(f"**{acc[c].mean():.4f}**" for c in cols)
        + " | " + " | ".join(f"{secs[c]:.1f} total" for c in cols) + " |"
    )  # fmt: skip
    lines.append(
        f"| mean over families ({len(fams)}) | " + " | ".join(f"{fam_mean[c]:.4f}" for c in cols)
        + " |" + " |" * len(cols)
    )  # fmt: skip
    for c in variants:
        d = acc[c] - acc["rocket"]
        slower = sum(
            np.mean([r["s"] for r in res[n][c]]) > np.mean([r["s"] for r in res[n]["rocket"]])
            for n in names
        )
        lines.append(
            f"\n{c} vs ROCKET: ahead on {int((d > 0).sum())}, tied on {int((d == 0).sum())}, "
            f"behind on {int((d < 0).sum())}; mean difference {d.mean():+.4f}; slower on "
            f"{slower} of {len(names)}."
        )
    if args.pool == "held2" and not args.datasets:
        runs = [regression(seed, args.n_jobs, variants) for seed in range(args.seeds)]
        cells = []
        for c in cols:
            e = [r[c]["rmse"] for r in runs]
            s = np.mean([r[c]["s"] for r in runs])
            cells.append(f"{c} {np.mean(e):.4f} ({min(e):.4f}–{max(e):.4f}), {s:.1f} s")
        lines.append(f"\n{REGRESSION} RMSE (lower is better), seed mean (min–max), fit + "
                     f"predict time: " + "; ".join(cells) + ".")  # fmt: skip
    text = "\n".join(lines) + "\n"
    if args.results:
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write(text)
    print(text)
    print(f"load average {load_average()} at the end", file=sys.stderr)


if __name__ == "__main__":
    main()
