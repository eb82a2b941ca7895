"""Sections of ``bench_limit.py`` beyond d = 1 (issue: the limit in higher dimension, and
kernels without a closed form): ``--section d4`` (:func:`highdim_case`) and ``--section tanh``
(:func:`tanh_case`). Run through ``benchmarks/bench_limit.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from limitbench import machine, max_rms, stamp

from rnnlimit.chains import AR1Chain, FilterTarget, sample_stream
from rnnlimit.kernels import ntk, time_gram
from rnnlimit.kernelspec import KernelSpec
from rnnlimit.limit import LimitNumerics, LimitProblem, limit_solver
from rnnlimit.network import NetworkSpec, init_params
from rnnlimit.train import train

RESULTS = Path(__file__).with_name("RESULTS.md")

# --------------------------------------------------------------------------- d = 4, m = 1

D4_T = 2.0
#: VAR(1) on [-1, 1]^4 (spectral radius ~0.55) and the direction of the target's sine
D4_A = 0.5 * np.eye(4) + 0.15 * np.eye(4, k=1) - 0.1 * np.eye(4, k=-1)
D4_W = np.array([1.0, -0.7, 0.5, 0.3])


def _d4_f(x: jax.Array) -> jax.Array:
    """``f(x) = sin(2 w·x)`` in ``[-1, 1]``: the memoryless part of the d = 4 filter target."""
    return jnp.sin(2.0 * (x @ jnp.asarray(D4_W, x.dtype)))[..., None]


def highdim_case(args: argparse.Namespace) -> None:
    """d = 4, m = 1: the limit (Nyström basis, with its error estimate) against training N = 5·10⁴.

    Chain ``X_{k+1} = clip(A X_k + 0.5 ξ)`` with ``A = D4_A``; target ``Y_k = 0.6 Y_{k−1} +
    0.4 sin(2 w·X_k)``; erf, σ = 1, β = 1/2, α = 1, antisymmetric init, T = 2. The limit: 64 Sobol
    inducing points, M = 1024 particles, 8 chain steps per Heun stage, Δt = 0.2 (record times on
    the Δt grid), timed warm with its error estimate (fastest of 3); the network: the core trainer
    (native where built), warm, one seed. Distances on 256 uniform points of
    ``[-1, 1]^5``.
    """
    chain = AR1Chain(D4_A, 0.5, d=4)
    target = FilterTarget(0.6, f=_d4_f, m=1)
    kernel = KernelSpec("erf", d=4, m=1)
    problem = LimitProblem(chain, target, kernel, alpha=1.0)
    points = np.random.default_rng(5).uniform(-1.0, 1.0, (256, 5))
    times = np.linspace(0.0, D4_T, 11)
    numerics = LimitNumerics(
        T=D4_T, dt=0.2, M=1024, chain_steps=8, burn_in=50, representation="nystrom",
        n_inducing=64,
    )  # fmt: skip
    solver = limit_solver(problem)
    solver(numerics, points, times)  # compile every stage shape once
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        lim = solver(numerics, points, times)
        walls.append(time.perf_counter() - start)
    limit_time = min(walls)
    print("d4 limit: walls " + ", ".join(f"{w:.3f}" for w in walls) + " s (with error estimate)")
    print("d4 limit: error estimate " + ", ".join(f"{k} {v:.2e}" for k, v in lim.error.items()))
    print(
        f"d4 limit: loss {lim.loss[0]:.4f} -> {lim.loss[-1]:.4f}, max |h| {np.abs(lim.h).max():.3f}"
    )

    widths = [500, 2000] if args.quick else [5000, 50000]
    rows, train_time = [], {}
    for N in widths:
        for seed in [0]:
            spec = NetworkSpec(N=N, d=4, m=1, beta=0.5, activation="erf", antisymmetric=True)
            K = round(D4_T * N)
            key = jax.random.PRNGKey(1000 + seed)
            stream = sample_stream(chain, target, key, K, burn_in=1000, dtype=jnp.float64)
            params = init_params(spec, jax.random.PRNGKey(seed), jnp.float64)
            kw = dict(eval_points=points, backend=args.train_backend)
            train(spec, params, stream, n_steps=min(K, 2 * N), eval_times=[0.0], **kw)
            start = time.perf_counter()
            rec = train(spec, params, stream, eval_times=times, **kw)
            wall = time.perf_counter() - start
            rms = max_rms(rec, lim)
            rows.append((N, seed, rms, wall))
            train_time[N] = min(train_time.get(N, np.inf), wall)
            print(f"d4 N={N:>6} seed={seed}: max-over-t RMS to limit {rms:.5f}  train {wall:.2f} s")
    N_ref = max(widths)
    ratio = train_time[N_ref] / limit_time
    label = "5e4" if N_ref == 50000 else str(N_ref)
    _append(
        "bench_limit d = 4, m = 1",
        [
            "VAR(1) on [-1,1]^4, filter target 0.6 Y + 0.4 sin(2 w·x), erf, T = 2; limit in the "
            f"Nyström basis ({numerics.n_inducing} Sobol points, M = {numerics.M}, "
            f"{numerics.chain_steps} chain steps per Heun stage, dt = {numerics.dt}).",
            "",
            "| N | seed | max-over-t RMS to limit | train wall s |",
            "|---|---|---|---|",
            *[f"| {N} | {s} | {e:.5f} | {w:.2f} |" for N, s, e, w in rows],
            "",
            "Limit error estimate (max-over-t RMS): "
            + ", ".join(f"{k} {v:.2e}" for k, v in lim.error.items())
            + f". Limit wall with error estimate (warm, fastest of 3): {limit_time:.3f} s; "
            f"training N={N_ref} to T={D4_T} (warm): {train_time[N_ref]:.2f} s; ratio "
            f"{ratio:.1f} (goal ≥ 20, error estimate ≤ 0.005).",
        ],
    )
    print(f"d4 limit: error estimate total {lim.error['total']:.5f} (goal <= 0.005)")
    print(f"ratio limit_speedup_vs_N{label}_d4 {ratio:.2f}")


# --------------------------------------------------------------------------- tanh


def tanh_case(args: argparse.Namespace) -> None:
    """The tabulated tanh kernel: Gram entries/s next to erf's closed form (same run, d = m = 1,
    float64, n × n Gram of uniform points), its table build time, and a d = 1, m = 2 tanh limit
    (grid basis, 11³ nodes) solved end to end with its error estimate."""
    n = 1000 if args.quick else 4000
    start = time.perf_counter()
    ntk(KernelSpec("tanh"))  # builds the table
    build = time.perf_counter() - start
    rates = {a: time_gram(KernelSpec(a), n) for a in ("erf", "tanh")}
    for a, g in rates.items():
        print(f"tanh kernel: {a} {g.entries_per_second:.3e} entries/s ({g.method_used}, {n}x{n})")
    print(f"tanh kernel: table built in {build:.2f} s")
    chain = AR1Chain(0.6, 1.0)
    target = FilterTarget(0.6, f=lambda x: jnp.stack([jnp.sin(2.0 * x[0]), jnp.cos(x[0])]), m=2)
    problem = LimitProblem(chain, target, KernelSpec("tanh", d=1, m=2), alpha=1.0)
    numerics = LimitNumerics(T=1.0 if args.quick else 2.0, dt=0.05, M=1024, grid=11)
    points = np.random.default_rng(2).uniform(-1.0, 1.0, (125, 3))
    times = np.linspace(0.0, numerics.T, 11 if args.quick else 21)  # on the Δt grid
    start = time.perf_counter()
    lim = limit_solver(problem)(numerics, points, times)
    wall = time.perf_counter() - start
    print(
        f"tanh d1 m2: wall {wall:.2f} s (first call, compilation included), kernel "
        f"{lim.kernel_method}, error " + ", ".join(f"{k} {v:.2e}" for k, v in lim.error.items())
    )
    _append(
        "bench_limit tanh kernel",
        [
            f"Gram throughput ({n}×{n}, float64, d = m = 1, same run): "
            + "; ".join(f"{a} {g.entries_per_second:.3e} entries/s ({g.method_used})"
                        for a, g in rates.items())
            + f". Table build (tanh, a ∈ [1, √3]): {build:.2f} s.",
            f"d = 1, m = 2 tanh limit (grid 11³, M = 1024, T = {numerics.T}), end to end with its "
            f"error estimate: {wall:.2f} s (first call); error "
            + ", ".join(f"{k} {v:.2e}" for k, v in lim.error.items()) + ".",
        ],
    )  # fmt: skip
    rate = rates["tanh"].entries_per_second / rates["erf"].entries_per_second
    print(f"ratio tanh_vs_erf_gram_rate {rate:.3f}")


def _append(title: str, lines: list[str]) -> None:
    """Append a dated section to RESULTS.md with the machine line."""
    head = [
        f"\n## {title} — {stamp()}\n",
        f"Machine: {machine()}. Command: "
        f"`python benchmarks/bench_limit.py {' '.join(sys.argv[1:])}`.\n",
    ]
    with RESULTS.open("a") as fh:
        fh.write("\n".join(head + lines) + "\n")
