"""Selection variants of ``RNNKernelClassifier`` compared on the same features (prints only).

For each dataset and seed the features of every representation are computed once (the
estimator's own draw, preprocessing and feature code), then several ways of choosing the
candidate kernel and the ridge ``α`` by leave-one-out are applied to the same Grams:

- ``base``: the estimator's rule (``ALPHAS`` = 10^[-4, 3], LOO accuracy, ties by LOO squared error);
- ``edge``: as ``base``, but while the choice is the grid's smallest ``α`` the grid is extended
  down by its own ratio (10^0.5) to 1e-8;
- ``se``: LOO squared error of the ±1 one-vs-rest targets alone (a smooth criterion);
- ``1se``: the mean kernel (all representations) unless another candidate's LOO accuracy is
  higher by more than one binomial standard error.

``--few k`` cuts each training set to ``k`` series per class (drawn from ``1000 + seed``), a
stand-in for few-shot, many-class sets; the test split is the standard one. ``--unseen``
reads a set of ``unseen_data.py`` and prints **training-only** diagnostics (LOO accuracy per
candidate and ``α``, the Gram's eigenvalue range, each variant's choice); it never loads the test
split. ``--family`` overrides ``KernelFamily`` fields (JSON).

Run: ``nice -n 10 .venv/bin/python benchmarks/dev_selection.py --seeds 3 [--few 2]``.
"""

from __future__ import annotations

import argparse
import json
import os

import bench_ucr
import numpy as np
from sklearn.utils import check_random_state
from unseen_data import DATASETS as UNSEEN_ONE
from unseen_data import load_unseen

from rnnlimit.datasets import load_aeon
from rnnlimit.estimators import KernelFamily, RNNKernelClassifier
from rnnlimit.kernelridge import EigenRidge
from rnnlimit.seqfamily import Preprocessing, candidate_features
from rnnlimit.seqmodels import ALPHAS

VARIANTS = ("base", "edge", "se", "1se")


def _name(candidate: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return "+".join(candidate[0]) + "/" + "+".join(candidate[1])


def _acc(loo: np.ndarray, t: np.ndarray) -> float:
    return float(np.mean(loo.argmax(1) == t.argmax(1)))


def _key(variant: str, loo: np.ndarray, t: np.ndarray) -> tuple[float, ...]:
    se = -float(np.mean((loo - t) ** 2))
    return (se,) if variant == "se" else (_acc(loo, t), se)


def choose(variant: str, ridges: list[EigenRidge], t: np.ndarray) -> tuple[int, float]:
    """(candidate index, α) chosen by ``variant`` (see the module docstring)."""
    rows = [(_key(variant, r.loo(t, a), t), i, a) for i, r in enumerate(ridges) for a in ALPHAS]
    best = max(rows, key=lambda z: z[0])  # max keeps the first of equal keys, as the estimator
    if variant == "edge":
        lo = min(ALPHAS)
        while best[2] == lo and lo / 10**0.5 >= 1e-8 * (1 - 1e-9):
            lo /= 10**0.5
            row = max(((_key(variant, r.loo(t, lo), t), i, lo) for i, r in enumerate(ridges)),
                      key=lambda z: z[0])  # fmt: skip
            best = row if row[0] > best[0] else best
    if variant == "1se":
        p, n = best[0][0], len(t)
        tol = np.sqrt(max(p * (1 - p), 1 / n) / n)
        near = [z for z in rows if z[1] == len(ridges) - 1 and z[0][0] >= p - tol]
        best = max(near, key=lambda z: z[0]) if near else best
    return best[1], best[2]


def one(name: str, seed: int, args: argparse.Namespace, family: KernelFamily) -> dict:
    if args.unseen:
        xtr, ytr = load_unseen(name, "train")
    elif name in UNSEEN_ONE:  # the first unseen pool, seen since its 05:10 run (a DEV set now)
        (xtr, ytr), (xte, yte) = load_unseen(name, "train"), load_unseen(name, "test")
    else:
        (xtr, ytr), (xte, yte) = load_aeon(name, "train"), load_aeon(name, "test")
    if args.few:
        rng = np.random.default_rng(1000 + seed)
        picks = [rng.choice(np.flatnonzero(ytr == c), args.few, replace=False)
                 for c in np.unique(ytr)]  # fmt: skip
        keep = np.sort(np.concatenate(picks))
        xtr, ytr = [xtr[i] for i in keep], ytr[keep]
    m = RNNKernelClassifier(kernel=family, random_state=seed, n_jobs=os.cpu_count() or 1)
    xs, lengths, y = m._sequences(xtr, ytr, fit=True)
    classes, idx = np.unique(y, return_inverse=True)
    t = -np.ones((len(y), len(classes)))
    t[np.arange(len(y)), idx] = 1.0
    m.family_ = family
    draw = int(check_random_state(seed).randint(2**31 - 1))  # as the estimator
    groups = family.draw(draw, xs.shape[2], int(np.median(lengths)))
    m.omegas_ = [(d, tuple(np.asarray(a) for a in (o.w, o.b, o.u))) for d, o in groups]
    m.prep_ = Preprocessing.of(xs, lengths)
    cands = family.candidates()
    blocks = m._features(xs, lengths, family.representations, family.all_pools)
    phis = [candidate_features(family, blocks, c) for c in cands]
    ridges = [EigenRidge.of(p @ p.T + 1.0) for p in phis]
    out: dict = {}
    if args.unseen:
        for c, r in zip(cands, ridges, strict=True):
            accs = " ".join(f"{a:.0e}:{_acc(r.loo(t, a), t):.3f}" for a in np.logspace(-8, 3, 12))
            print(f"  {name} {_name(c)} λ {r.eigvals.min():.2g}..{r.eigvals.max():.3g} {accs}")
    else:
        xs_te, len_te = m._sequences(xte, fit=False)
        test_blocks = m._features(xs_te, len_te, family.representations, family.all_pools)
    for v in VARIANTS:
        i, a = choose(v, ridges, t)
        row = {"cand": _name(cands[i]), "alpha": a, "loo": _acc(ridges[i].loo(t, a), t)}
        if not args.unseen:
            dual = ridges[i].dual(t, a)
            test_phi = candidate_features(family, test_blocks, cands[i])
            scores = test_phi @ (phis[i].T @ dual) + dual.sum(0)
            row["acc"] = float(np.mean(classes[scores.argmax(1)] == yte))
        out[v] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="*", default=list(bench_ucr.DEV))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--few", type=int, default=0, help="training series kept per class")
    parser.add_argument("--family", default="{}", help="KernelFamily fields as JSON")
    parser.add_argument("--unseen", action="store_true", help="training-only diagnostics")
    args = parser.parse_args()
    family = KernelFamily(**json.loads(args.family))
    res = {v: {} for v in VARIANTS}
    for name in args.datasets:
        for seed in range(args.seeds):
            for v, row in one(name, seed, args, family).items():
                res[v].setdefault(name, []).append(row)
    for v in VARIANTS:
        parts = []
        for name, rows in res[v].items():
            alphas = ",".join(f"{r['alpha']:.0e}" for r in rows)
            loo = np.mean([r["loo"] for r in rows])
            acc = "" if args.unseen else f" acc {np.mean([r['acc'] for r in rows]):.4f}"
            parts.append(f"{name}{acc} loo {loo:.3f} α {alphas} ({rows[0]['cand']})")
        per_set = [np.mean([r.get("acc", np.nan) for r in rows]) for rows in res[v].values()]
        mean = "" if args.unseen else f" mean {np.mean(per_set):.4f}"
        print(f"{v}{mean} | " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
