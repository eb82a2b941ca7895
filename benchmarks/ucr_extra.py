"""Design checks of the sequence estimators on the development pool (prints; writes nothing).

Every choice of the kernel family (:mod:`rnnlimit.seqfamily`) was made by running this script
on ``bench_ucr.DEV`` (OSULeaf, ACSF1, ItalyPowerDemand, BasicMotions) and, for regression, on
CardanoSentiment; the held-out pool ``bench_ucr.HELD_OUT`` and Covid3Month are for
``bench_ucr.py``'s final run only. ``--family '{"window": 7}'`` overrides fields of
``KernelFamily`` (JSON) to compare a variant with the defaults.

Run: ``.venv/bin/python benchmarks/ucr_extra.py [--datasets ...] [--family JSON] [--rocket]``.
"""

from __future__ import annotations

import argparse
import json
import os

import bench_ucr
import numpy as np

from rnnlimit.datasets import load_aeon
from rnnlimit.estimators import KernelFamily, RNNKernelClassifier, RNNKernelRegressor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="*", default=[*bench_ucr.DEV, "CardanoSentiment"])
    parser.add_argument("--family", default="{}", help="KernelFamily fields as JSON")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--rocket", action="store_true", help="also run ROCKET (slow)")
    args = parser.parse_args()
    fields = json.loads(args.family)
    family = KernelFamily(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    n_jobs = os.cpu_count() or 1
    for name in args.datasets:
        (xtr, ytr), (xte, yte) = load_aeon(name, "train"), load_aeon(name, "test")
        regression = name in bench_ucr.REGRESSION or name == "CardanoSentiment"
        cls = RNNKernelRegressor if regression else RNNKernelClassifier
        scores, secs = [], []
        for seed in range(args.seeds):
            model = cls(kernel=family, random_state=seed, n_jobs=n_jobs)
            pred, t = bench_ucr.timed(model, xtr, ytr, xte)
            scores.append(
                float(np.sqrt(np.mean((pred - yte.astype(float)) ** 2)))
                if regression
                else float(np.mean(pred == yte))
            )
            secs.append(t)
        line = (f"{name}: {'rmse' if regression else 'acc'} {np.mean(scores):.4f} "
                f"{[round(s, 4) for s in scores]} {np.mean(secs):.1f}s | "
                f"{'+'.join(model.representations_)} α={model.alpha_:.3g} "
                f"loo={model.loo_score_:.3f}")  # fmt: skip
        if args.rocket and not regression:
            line += f" | ROCKET {bench_ucr.run(name, 0, n_jobs)['rocket']:.4f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
