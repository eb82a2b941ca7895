"""UCR/UEA classification and regression: ``RNNKernelClassifier``/``RNNKernelRegressor`` vs ROCKET.

Every dataset that ships offline inside aeon, on its standard train/test split:

- classification, the nine: GunPoint, ItalyPowerDemand, ArrowHead, BasicMotions,
  JapaneseVowels, OSULeaf, PickupGestureWiimoteZ, UnitTest, ACSF1;
- regression: Covid3Month (RMSE).

Ours is one ``fit`` with the estimator's defaults (the procedure lives in
:mod:`rnnlimit.seqmodels`; nothing is chosen on the test split). Baselines, in the same run and
with the same ``n_jobs``: aeon's ``RocketClassifier``/``RocketRegressor`` (10,000 kernels), fed
zero-padded series where lengths differ (ROCKET needs equal lengths; ours takes the list of
unequal-length series). Times are fit + predict in seconds, wall clock.

The design choices of the kernel family were made on the development pool ``DEV`` only (see
``ucr_extra.py``); ``HELD_OUT`` was not looked at before the final run.

Run: ``.venv/bin/python benchmarks/bench_ucr.py`` (appends a section to benchmarks/RESULTS.md);
``--seeds n`` repeats both random methods with seeds 0..n-1; ``--datasets`` a subset.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from limitbench import load_average

from rnnlimit.datasets import as_sequences, load_aeon
from rnnlimit.estimators import RNNKernelClassifier, RNNKernelRegressor

DEV = ("OSULeaf", "ACSF1", "ItalyPowerDemand", "BasicMotions")
HELD_OUT = ("GunPoint", "ArrowHead", "JapaneseVowels", "PickupGestureWiimoteZ", "UnitTest")
NINE = DEV + HELD_OUT
REGRESSION = ("Covid3Month",)

Loader = Callable[[str, str], tuple[Any, np.ndarray]]


def padded(x_train, x_test) -> tuple[np.ndarray, np.ndarray]:
    """Both splits as 3-D (n, channels, L) arrays, zero-padded to one common length."""
    (a, _), (b, _) = as_sequences(x_train), as_sequences(x_test)
    length = max(a.shape[1], b.shape[1])

    def pad(x: np.ndarray) -> np.ndarray:
        x = np.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0)))
        return np.ascontiguousarray(np.transpose(x, (0, 2, 1)))

    return pad(a), pad(b)


def timed(model, x_train, y_train, x_test) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    pred = model.fit(x_train, y_train).predict(x_test)
    return pred, time.perf_counter() - t0


def timed_rocket(regression: bool, seed: int, n_jobs: int, x_train, y_train, x_test):
    """aeon's RocketClassifier / RocketRegressor (defaults) fitted on zero-padded series:
    ``(predictions, fit + predict seconds)``."""
    from aeon.classification.convolution_based import RocketClassifier
    from aeon.regression.convolution_based import RocketRegressor

    rocket = (RocketRegressor if regression else RocketClassifier)(random_state=seed, n_jobs=n_jobs)
    ptr, pte = padded(x_train, x_test)
    return timed(rocket, ptr, y_train, pte)


def run(name: str, seed: int, n_jobs: int, baseline: bool = True, load: Loader = load_aeon) -> dict:
    """Ours and ROCKET on one dataset; accuracy (classification) or RMSE (regression).

    ``load(name, split)`` returns ``(X, y)`` in aeon's layout (default: the copy inside aeon;
    ``unseen_ucr.py`` passes the loader of the sets carried by other packages' wheels).
    """
    (xtr, ytr), (xte, yte) = load(name, "train"), load(name, "test")
    regression = name in REGRESSION
    ours = (RNNKernelRegressor if regression else RNNKernelClassifier)(
        random_state=seed, n_jobs=n_jobs
    )

    def score(pred: np.ndarray) -> float:
        if regression:
            return float(np.sqrt(np.mean((np.asarray(pred, float) - yte.astype(float)) ** 2)))
        return float(np.mean(pred == yte))

    pred, t = timed(ours, xtr, ytr, xte)
    out = {"ours": score(pred), "ours_s": t, "choice": f"{'+'.join(ours.representations_)} "
           f"[{'+'.join(ours.pools_)}] "
           f"α={ours.alpha_:.3g} loo={ours.loo_score_:.3f}"}  # fmt: skip
    if baseline:
        pred, t = timed_rocket(regression, seed, n_jobs, xtr, ytr, xte)
        out |= {"rocket": score(pred), "rocket_s": t}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="*", default=list(NINE + REGRESSION))
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        runs = [run(name, s, args.n_jobs) for s in range(args.seeds)]
        rows.append((name, runs))
        print(name, runs, flush=True)
    load = load_average()
    lines = [
        "",
        f"## RNNKernelClassifier / RNNKernelRegressor vs ROCKET — bench_ucr.py, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"CPU ({os.cpu_count()} cores, load average {load}), n_jobs={args.n_jobs} for both; "
        f"ours: one `fit` with the defaults; ROCKET: aeon defaults (10,000 kernels); seeds "
        f"0..{args.seeds - 1} (ω draw; ROCKET random_state), means over the seeds. Times: "
        "fit + predict, s. DEV: the pool the design choices looked at; HELD-OUT: not looked "
        "at before this run.",
        "",
        "| dataset | pool | ours | ROCKET | ours s | ROCKET s | ours choice (seed 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    mean = lambda runs, k: float(np.mean([r[k] for r in runs]))  # noqa: E731
    for name, runs in rows:
        pool = "regression (RMSE)" if name in REGRESSION else "dev" if name in DEV else "held-out"
        lines.append(
            f"| {name} | {pool} | {mean(runs, 'ours'):.4f} | {mean(runs, 'rocket'):.4f} "
            f"| {mean(runs, 'ours_s'):.1f} | {mean(runs, 'rocket_s'):.1f} | {runs[0]['choice']} |"
        )
    for label, names in (("nine", NINE), ("dev", DEV), ("held-out", HELD_OUT)):
        sel = [runs for name, runs in rows if name in names]
        if sel:
            o = np.mean([mean(r, "ours") for r in sel])
            k = np.mean([mean(r, "rocket") for r in sel])
            slower = sum(mean(r, "ours_s") > mean(r, "rocket_s") for r in sel)
            lines.append(
                f"| **mean {label}** ({len(sel)}) | | **{o:.4f}** | {k:.4f} | "
                f"{sum(mean(r, 'ours_s') for r in sel):.1f} total | "
                f"{sum(mean(r, 'rocket_s') for r in sel):.1f} total | ours slower on {slower} |"
            )
    lines.append("")
    with open(args.results, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
