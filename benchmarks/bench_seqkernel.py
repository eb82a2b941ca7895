"""Throughput of the diagonal-RNN sequence NTK Gram (docs/model.md §6) against the matmul peak.

n = 2000 univariate sequences of length 100, 4096 ω samples (QMC), NTK part, last-state readout,
float32. End-to-end = features (one fused scan: the native C scan where it is built, the
``backend="auto"`` default) + Gram product, after a warm-up call that compiles. The JAX scan's
time on the same data is printed next to it (``features_speedup_native_vs_jax``).
``ratio gram_vs_matmul_peak`` = (2 n² F / end-to-end time) / (flop rate of a plain general
matmul ``Φ Ψᵀ`` of the same shapes measured in this run: the faster of jitted ``jnp`` and
host-BLAS ``numpy`` gemm); best of ``REPEATS`` for every timing. The kernel's Gram is the
symmetric product ``Φ Φᵀ`` (numpy calls BLAS syrk for it: half the flops of the gemm), whose
time is reported too; the flops counted are always ``2 n² F``.
Run: ``.venv/bin/python benchmarks/bench_seqkernel.py [--n 2000 --length 100 --n-theta 4096]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime

import jax
import jax.numpy as jnp
import numpy as np
from limitbench import load_average

from rnnlimit.seqfeatures import resolve_backend
from rnnlimit.seqkernel import OmegaLaw, sample_omega, sequence_features, sequence_kernel

REPEATS = 3


def best_time(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--n-theta", type=int, default=4096)
    parser.add_argument("--results", default=None, help="append the numbers to this markdown file")
    args = parser.parse_args()
    n, length, p = args.n, args.length, args.n_theta
    rng = np.random.default_rng(0)
    xs = np.clip(rng.normal(0, 0.5, (n, length, 1)), -1, 1).astype(np.float32)
    key = jax.random.PRNGKey(0)
    kernel_fn = sequence_kernel(1, key=key, n_theta=p, method="qmc", dtype="float32")

    t0 = time.perf_counter()
    gram = kernel_fn(xs)
    first = time.perf_counter() - t0
    e2e = best_time(lambda: kernel_fn(xs))

    omega = sample_omega(key, p, 1, OmegaLaw(), method="qmc", dtype="float32")
    feats = lambda: sequence_features(omega, xs)  # noqa: E731
    phi = feats()
    t_feat = best_time(feats)
    backend = resolve_backend(omega, "erf")
    feats_jax = lambda: sequence_features(omega, xs, backend="jax")  # noqa: E731
    feats_jax()
    t_jax = best_time(feats_jax)
    f_len = phi.shape[1]
    matmul = jax.jit(lambda a: a @ a.T)
    jax.block_until_ready(matmul(phi))
    t_jnp = best_time(lambda: matmul(phi))
    phi_np = np.asarray(phi)
    psi_np = phi_np.copy()  # a distinct operand: numpy's gemm, not its syrk shortcut
    t_np = best_time(lambda: phi_np @ psi_np.T)
    t_syrk = best_time(lambda: phi_np @ phi_np.T)
    t_mm = min(t_jnp, t_np)
    flops = 2.0 * n * n * f_len
    rate_e2e, rate_mm = flops / e2e, flops / t_mm
    assert gram.shape == (n, n) and np.isfinite(gram).all()
    ref = phi_np.astype(np.float64) @ phi_np.T.astype(np.float64)
    err = float(np.abs(gram - ref).max() / np.abs(ref).max())
    assert err < 1e-4, err

    lines = [
        f"# device {jax.devices()[0].platform}, {os.cpu_count()} cpus, {platform.machine()}, "
        f"load average {load_average()}",
        f"n {n} length {length} n_theta {p} feature_length {f_len} dtype float32",
        f"first_call_s {first:.3f} (includes compilation)",
        f"features_s {t_feat:.3f} (backend {backend}) features_jax_s {t_jax:.3f} "
        f"features_speedup_native_vs_jax {t_jax / t_feat:.2f}",
        f"matmul_jnp_s {t_jnp:.3f} matmul_numpy_gemm_s {t_np:.3f} "
        f"numpy_syrk_s {t_syrk:.3f} (symmetric product, as used by the kernel)",
        f"matmul_s {t_mm:.3f} matmul_gflops {rate_mm / 1e9:.1f} (faster of the two)",
        f"end_to_end_s {e2e:.3f} gram_gflops {rate_e2e / 1e9:.1f}",
        f"pairs_per_s {n * n / e2e:.4g}",
        f"ratio gram_vs_matmul_peak {rate_e2e / rate_mm:.3f}",
    ]
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write(
                f"\n## Sequence-NTK Gram throughput — bench_seqkernel.py, {stamp} UTC\n\n```\n"
            )
            fh.write("\n".join(lines) + "\n```\n")
    print("\n".join(lines))


if __name__ == "__main__":
    jnp.zeros(1).block_until_ready()
    main()
