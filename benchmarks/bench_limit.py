"""Finite networks against the limit in the MODEL.md §5 setting, and the limit solver's speed.

Setting: d = m = 1, erf, σ_w = σ_b = σ_u = 1, Rademacher c, antisymmetric init, β = 1/2,
α = 1, T = 3, clipped AR(1) inputs (ρ = 0.6, noise 1.0), target ``Y_k = 0.6 Y_{k−1} +
0.4 sin(2 X_k)``. Prints, for N = 5·10², 5·10³, 5·10⁴, the max-over-t RMS distance to the limit on
a 9×9 grid of z, the fitted log-log slope in N, the limit's own error estimate, the wall time of
the limit (with its error estimate, warm, fastest of 3 calls) against training one N = 5·10⁴
network to T = 3 (warm, fastest of the 2 seeds; the core trainer, native where built), and the
kernel throughput (float64, 4000 × 4000 Gram).

Run: ``.venv/bin/python benchmarks/bench_limit.py`` (``--quick`` for a smoke run,
``--train-backend jax`` for the XLA trainer, e.g. on a GPU). Appends a
dated section to ``benchmarks/RESULTS.md``; the last printed line is
``ratio limit_speedup_vs_N5e4 <value>``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rnnlimit import native  # noqa: E402
from rnnlimit.chains import AR1Chain, FilterTarget, sample_stream  # noqa: E402
from rnnlimit.kernels import KernelSpec, time_gram  # noqa: E402
from rnnlimit.limit import LimitNumerics, LimitProblem, limit_solver  # noqa: E402
from rnnlimit.network import NetworkSpec, init_params  # noqa: E402
from rnnlimit.train import train  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
T = 3.0
TIMES = np.linspace(0.0, T, 31)


def grid9() -> np.ndarray:
    g = np.linspace(-1.0, 1.0, 9)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def train_network(
    N: int, seed: int, chain: AR1Chain, target: FilterTarget, backend: str = "auto"
) -> tuple:
    """Train one width-N network to T on its own stream; return (outputs, wall seconds)."""
    spec = NetworkSpec(N=N, d=1, m=1, beta=0.5, activation="erf", antisymmetric=True)
    K = round(T * N)
    stream = sample_stream(
        chain, target, jax.random.PRNGKey(1000 + seed), K, burn_in=1000, dtype=jnp.float64
    )
    params = init_params(spec, jax.random.PRNGKey(seed), jnp.float64)
    kw = dict(eval_points=grid9(), backend=backend)
    train(spec, params, stream, n_steps=min(K, 2 * N), eval_times=[0.0], **kw)
    start = time.perf_counter()
    rec = train(spec, params, stream, eval_times=TIMES, **kw)
    return rec, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small widths, for a smoke run")
    parser.add_argument(
        "--train-backend",
        default="auto",
        choices=("auto", "native", "jax"),
        help="the trainer's backend (jax: the XLA loop, e.g. on a GPU)",
    )
    args = parser.parse_args()
    widths = [100, 400] if args.quick else [500, 5000, 50000]
    seeds = [0] if args.quick else [0, 1]
    chain, target = AR1Chain(0.6, 1.0), FilterTarget(0.6)
    problem = LimitProblem(chain, target, KernelSpec(activation="erf"), alpha=1.0)
    solver = limit_solver(problem)
    numerics = LimitNumerics(T=T)
    solver(numerics, grid9(), TIMES)  # compile every stage shape once
    walls = []
    for _ in range(3):  # the fastest of 3, as the trainer's time is the fastest of its seeds
        start = time.perf_counter()
        lim = solver(numerics, grid9(), TIMES)
        walls.append(time.perf_counter() - start)
    limit_time = min(walls)
    stages = "native" if native.available() else f"jax ({native.unavailable_reason()})"
    print(f"limit: stages {stages}, walls " + ", ".join(f"{w:.3f}" for w in walls) + " s")
    print(f"limit: wall {limit_time:.3f} s with error estimate {lim.error}")
    print(
        f"limit: loss {lim.loss[0]:.4f} -> {lim.loss[-1]:.4f}, max Lipschitz "
        f"{lim.lipschitz.max():.3f}"
    )

    rows, train_time = [], {}
    for N in widths:
        for seed in seeds:
            rec, wall = train_network(N, seed, chain, target, args.train_backend)
            idx = np.searchsorted(lim.times, rec.eval_times - 1e-12)
            rms = np.sqrt(np.mean((rec.outputs - lim.h[idx]) ** 2, axis=(1, 2)))
            rows.append((N, seed, float(rms.max()), float(rec.loss[0]), float(rec.loss[-1]), wall))
            train_time[N] = min(train_time.get(N, np.inf), wall)
            print(
                f"N={N:>6} seed={seed}: max-over-t RMS {rms.max():.5f}  loss "
                f"{rec.loss[0]:.4f} -> {rec.loss[-1]:.4f}  train {wall:.2f} s",
                flush=True,
            )
    logN = np.log([r[0] for r in rows])
    logE = np.log([r[2] for r in rows])
    slope, intercept = np.polyfit(logN, logE, 1)
    resid = logE - (slope * logN + intercept)
    se = np.sqrt(resid @ resid / max(1, len(rows) - 2) / np.sum((logN - logN.mean()) ** 2))
    print(f"fitted slope {slope:.3f} ± {1.96 * se:.3f} (95%, normal approx.)")

    gram = time_gram(KernelSpec(activation="erf"), 1000 if args.quick else 4000)
    print(f"kernel: {gram.entries_per_second:.3e} entries/s ({gram.n}x{gram.n}, {gram.dtype})")
    N_ref = max(widths)
    ratio = train_time[N_ref] / limit_time
    write_results(rows, slope, se, lim, limit_time, train_time[N_ref], N_ref, gram, ratio)
    print(f"ratio limit_speedup_vs_N{'5e4' if N_ref == 50000 else N_ref} {ratio:.2f}")


def write_results(rows, slope, se, lim, limit_time, train_time, N_ref, gram, ratio) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"\n## bench_limit — {now}\n",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} ({jax.default_backend()}), load average {load}. "
        "MODEL.md §5 setting (AR(1) noise 1.0), 9×9 grid of z, 31 record times.\n",
        "| N | seed | max-over-t RMS to limit | loss start | loss end | train wall s |",
        "|---|---|---|---|---|---|",
        *[
            f"| {N} | {s} | {e:.5f} | {l0:.4f} | {l1:.4f} | {w:.2f} |"
            for N, s, e, l0, l1, w in rows
        ],
        "",
        f"Fitted slope in N: {slope:.3f} ± {1.96 * se:.3f} (95%). Limit error estimate "
        f"(max-over-t RMS): " + ", ".join(f"{k} {v:.2e}" for k, v in lim.error.items()) + ".",
        f"Limit wall time with error estimate (warm): {limit_time:.3f} s; training N={N_ref} to "
        f"T=3 (warm): {train_time:.2f} s; ratio {ratio:.1f} (goal ≥ 20).",
        f"Kernel throughput: {gram.entries_per_second:.3e} entries/s ({gram.n}×{gram.n}, "
        f"{gram.dtype}, {gram.method_used}).",
    ]
    with RESULTS.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
