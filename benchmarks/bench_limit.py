"""Finite networks against the limit in the docs/model.md §5 setting, and the limit solver's speed.

Setting: d = m = 1, erf, σ_w = σ_b = σ_u = 1, Rademacher c, antisymmetric init, β = 1/2,
α = 1, T = 3, clipped AR(1) inputs (ρ = 0.6, noise 1.0), target ``Y_k = 0.6 Y_{k−1} +
0.4 sin(2 X_k)``. Prints, for N = 5·10², 5·10³, 5·10⁴, the max-over-t RMS distance to the limit on
a 9×9 grid of z, the fitted log-log slope in N, the limit's own error estimate, the wall time of
the limit (with its error estimate, warm, fastest of 3 calls) against training one N = 5·10⁴
network to T = 3 (warm, fastest of the 2 seeds; the core trainer, native where built), and the
kernel throughput (float64, 4000 × 4000 Gram).

Run: ``.venv/bin/python benchmarks/bench_limit.py`` (``--quick`` for a smoke run,
``--train-backend jax`` for the XLA trainer, e.g. on a GPU). Appends a
dated section to ``benchmarks/RESULTS.md``; the section prints
``ratio limit_speedup_vs_N5e4 <value>``.

Second section (:func:`rtrl_section`, docs/model.md §4b): the same setting with RTRL training.
RTRL-trained networks at N = 5·10², 5·10³, 5·10⁴ (3 seeds) against both limits, the RTRL one
(their own) and the truncated one; the fitted slopes of both distances in N (goal: −0.5 ± 0.15
to the RTRL limit, while the distance to the truncated limit stalls near the gap between the
limits); and the RTRL limit with its error estimate (warm, fastest of 3) against training one
N = 5·10⁴ RTRL network to T = 3 (warm, fastest of the seeds). Its last line is
``ratio rtrl_limit_speedup_vs_N5e4 <value>`` (goal ≥ 20). ``--section rtrl`` runs it alone.

Sections of their own (``benchmarks/limit_highdim.py``, each appends its own dated section):
``--section tanh``: Gram throughput of the tabulated tanh kernel next to erf's closed form (same
run, entries/s) and a d = 1, m = 2 tanh limit solved end to end; ``--section d4``: d = 4, m = 1,
a VAR(1) chain on ``[-1,1]^4`` and a filter target, the limit in the Nyström basis with its error
estimate against training the N = 5·10⁴ network to the same T in the same run, last line
``ratio limit_speedup_vs_N5e4_d4 <value>`` (goal ≥ 20, error estimate ≤ 0.005). The default
(``--section all``) runs truncated, rtrl, tanh, d4 in this order.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from limit_highdim import highdim_case, tanh_case  # noqa: E402
from limitbench import loglog_slope, machine, max_rms, stamp  # noqa: E402

from rnnlimit import native  # noqa: E402
from rnnlimit.chains import AR1Chain, FilterTarget, sample_stream  # noqa: E402
from rnnlimit.kernels import time_gram  # noqa: E402
from rnnlimit.kernelspec import KernelSpec  # noqa: E402
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
    N: int,
    seed: int,
    chain: AR1Chain,
    target: FilterTarget,
    backend: str = "auto",
    gradient: str = "truncated",
) -> tuple:
    """Train one width-N network to T on its own stream; return (outputs, wall seconds)."""
    spec = NetworkSpec(N=N, d=1, m=1, beta=0.5, activation="erf", antisymmetric=True)
    K = round(T * N)
    stream = sample_stream(
        chain, target, jax.random.PRNGKey(1000 + seed), K, burn_in=1000, dtype=jnp.float64
    )
    params = init_params(spec, jax.random.PRNGKey(seed), jnp.float64)
    kw = dict(eval_points=grid9(), backend=backend, gradient=gradient)
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
    parser.add_argument(
        "--section",
        default="all",
        choices=("all", "truncated", "rtrl", "tanh", "d4"),
        help="which section to run (rtrl: RTRL networks against their own limit; tanh: the "
        "tabulated kernel; d4: d = 4, m = 1 in the Nystrom basis); all runs them in this order",
    )
    args = parser.parse_args()
    if args.section in ("all", "truncated"):
        truncated_section(args)
    if args.section in ("all", "rtrl"):
        rtrl_section(args)
    if args.section in ("all", "tanh"):
        tanh_case(args)
    if args.section in ("all", "d4"):
        highdim_case(args)


def truncated_section(args: argparse.Namespace) -> None:
    """Truncated training against its limit (docs/model.md §4); see the module docstring."""
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
            rms = max_rms(rec, lim)
            rows.append((N, seed, rms, float(rec.loss[0]), float(rec.loss[-1]), wall))
            train_time[N] = min(train_time.get(N, np.inf), wall)
            print(
                f"N={N:>6} seed={seed}: max-over-t RMS {rms:.5f}  loss "
                f"{rec.loss[0]:.4f} -> {rec.loss[-1]:.4f}  train {wall:.2f} s",
                flush=True,
            )
    slope, se = loglog_slope(np.array([r[0] for r in rows], float), np.array([r[2] for r in rows]))
    print(f"fitted slope {slope:.3f} ± {1.96 * se:.3f} (95%, normal approx.)")

    gram = time_gram(KernelSpec(activation="erf"), 1000 if args.quick else 4000)
    print(f"kernel: {gram.entries_per_second:.3e} entries/s ({gram.n}x{gram.n}, {gram.dtype})")
    N_ref = max(widths)
    ratio = train_time[N_ref] / limit_time
    write_results(rows, slope, se, lim, limit_time, train_time[N_ref], N_ref, gram, ratio)
    print(f"ratio limit_speedup_vs_N{'5e4' if N_ref == 50000 else N_ref} {ratio:.2f}")


def write_results(rows, slope, se, lim, limit_time, train_time, N_ref, gram, ratio) -> None:
    lines = [
        f"\n## bench_limit — {stamp()}\n",
        f"Machine: {machine()}. "
        "docs/model.md §5 setting (AR(1) noise 1.0), 9×9 grid of z, 31 record times.\n",
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


def rtrl_section(args: argparse.Namespace) -> None:
    """RTRL training against both limits (docs/model.md §4b); see the module docstring."""
    widths = [100, 400] if args.quick else [500, 5000, 50000]
    seeds = [0] if args.quick else [0, 1, 2]
    chain, target = AR1Chain(0.6, 1.0), FilterTarget(0.6)
    solvers = {
        g: limit_solver(LimitProblem(chain, target, KernelSpec(activation="erf"), gradient=g))
        for g in ("rtrl", "truncated")
    }
    numerics = LimitNumerics(T=T)
    truncated = solvers["truncated"](numerics, grid9(), TIMES)
    solvers["rtrl"](numerics, grid9(), TIMES)  # compile every stage shape once
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        lim = solvers["rtrl"](numerics, grid9(), TIMES)
        walls.append(time.perf_counter() - start)
    limit_time = min(walls)
    gap = np.sqrt(np.mean((lim.h - truncated.h) ** 2, axis=(1, 2))).max()
    print("rtrl limit: walls " + ", ".join(f"{w:.3f}" for w in walls) + " s")
    print(f"rtrl limit: wall {limit_time:.3f} s with error estimate {lim.error}")
    print(
        f"rtrl limit: loss {lim.loss[0]:.4f} -> {lim.loss[-1]:.4f}; max-over-t RMS gap to the "
        f"truncated limit {gap:.5f} (its error estimate {truncated.error['total']:.2e})"
    )

    rows, train_time = [], {}
    for N in widths:
        for seed in seeds:
            rec, wall = train_network(N, seed, chain, target, args.train_backend, "rtrl")
            d_rtrl, d_trunc = max_rms(rec, lim), max_rms(rec, truncated)
            rows.append((N, seed, d_rtrl, d_trunc, float(rec.loss[0]), float(rec.loss[-1]), wall))
            train_time[N] = min(train_time.get(N, np.inf), wall)
            print(
                f"N={N:>6} seed={seed}: max-over-t RMS to rtrl limit {d_rtrl:.5f}, to truncated "
                f"limit {d_trunc:.5f}  loss {rec.loss[0]:.4f} -> {rec.loss[-1]:.4f}  "
                f"train {wall:.2f} s",
                flush=True,
            )
    Ns = np.array([r[0] for r in rows], float)
    slopes = {
        name: loglog_slope(Ns, np.array([r[col] for r in rows]))
        for name, col in (("rtrl", 2), ("truncated", 3))
    }
    for name, (slope, se) in slopes.items():
        print(f"fitted slope to the {name} limit {slope:.3f} ± {1.96 * se:.3f} (95%)")
    N_ref = max(widths)
    ratio = train_time[N_ref] / limit_time
    write_rtrl_results(rows, slopes, lim, gap, limit_time, train_time[N_ref], N_ref, ratio, args)
    print(f"ratio rtrl_limit_speedup_vs_N{'5e4' if N_ref == 50000 else N_ref} {ratio:.2f}")


def write_rtrl_results(rows, slopes, lim, gap, limit_time, train_time, N_ref, ratio, args) -> None:
    command = "benchmarks/bench_limit.py --section rtrl" + (" --quick" if args.quick else "")
    lines = [
        f"\n## bench_limit, RTRL section — {stamp()}\n",
        f"Command: `{command}`. Machine: {machine()}. docs/model.md §5 setting with RTRL "
        "training, 9×9 grid of z, 31 record times.\n",
        "| N | seed | to RTRL limit | to truncated limit | loss start | loss end | train wall s |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {N} | {s} | {a:.5f} | {b:.5f} | {l0:.4f} | {l1:.4f} | {w:.2f} |"
            for N, s, a, b, l0, l1, w in rows
        ],
        "",
        "Fitted slopes in N: "
        + "; ".join(
            f"to the {k} limit {v[0]:.3f} ± {1.96 * v[1]:.3f} (95%)" for k, v in slopes.items()
        )
        + f". Gap between the two limits (max-over-t RMS): {gap:.5f}.",
        "RTRL limit error estimate (max-over-t RMS): "
        + ", ".join(f"{k} {v:.2e}" for k, v in lim.error.items())
        + ".",
        f"RTRL limit wall time with error estimate (warm): {limit_time:.3f} s; training one "
        f"RTRL network N={N_ref} to T=3 (warm): {train_time:.2f} s; ratio {ratio:.1f} (goal ≥ 20).",
    ]
    with RESULTS.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
