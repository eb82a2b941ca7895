"""Unit-steps per second of the fused online trainer against the idiomatic JAX loop.

A unit-step is one hidden unit advanced by one SGD step, so the rate is ``N × steps / second``.
The idiomatic baseline is :func:`rnnlimit.train.reference_truncated_step` (a jitted
``value_and_grad`` update) called from a Python loop over pre-split stream rows, blocking once
at the end. The fused trainer is :func:`rnnlimit.train.train` over one interval with
``backend="auto"`` (the native C kernel of :mod:`rnnlimit.native` for truncated float64 when it is
built, else JAX); ``fused jax`` is the same call with ``backend="jax"`` (the jitted XLA loop).
All are warmed up first (compile time excluded) and timed as the best of a few repeats.

A second section times the native kernel alone at N = 10^4, float64, in one run (the cases
interleaved, best of repeats): truncated d = m = 1 (the fused pass), RTRL d = m = 1, truncated
d = 4, m = 1 (the blocked generic pass) and RTRL d = 4, m = 1.

Run: ``.venv/bin/python benchmarks/bench_train.py`` (add ``--quick`` for a smoke run,
``--native-only`` for the second section alone). Appends dated tables to
``benchmarks/RESULTS.md``; the last printed lines are ``ratio train_vs_idiomatic_N1e4_f64
<value>`` (not with ``--native-only``), ``ratio rtrl_vs_truncated_native_N1e4_f64 <value>``
(goal >= 0.5) and ``ratio generic_d4_vs_d1_native_N1e4_f64 <value>`` (goal >= 0.5).
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
from limitbench import load_average  # noqa: E402

from rnnlimit import native  # noqa: E402
from rnnlimit.chains import AR1Chain, FilterTarget, sample_stream  # noqa: E402
from rnnlimit.network import NetworkSpec, init_params  # noqa: E402
from rnnlimit.train import reference_truncated_step, train  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_one(N: int, dtype, fused_work: float, ref_work: float, repeats: int) -> dict:
    spec = NetworkSpec(N=N, d=1, m=1, activation="erf", antisymmetric=True)
    K = max(200, int(fused_work / N))
    K_ref = max(100, int(ref_work / N))
    K_rtrl = max(100, K // 2)
    params = init_params(spec, jax.random.PRNGKey(0), dtype)
    stream = sample_stream(
        AR1Chain(rho=0.6, noise=0.5), FilterTarget(a=0.6), jax.random.PRNGKey(1), K, dtype=dtype
    )

    def fused(n: int, gradient: str = "truncated", backend: str = "auto", threads: int = 0) -> None:
        rec = train(
            spec, params, stream, alpha=1.0, gradient=gradient, n_steps=n, window=n,
            backend=backend, native_threads=threads,
        )  # fmt: skip
        jax.block_until_ready(rec.params.u)

    fused(50)
    t_fused = _best(lambda: fused(K), repeats)
    ns_t = {1: float("nan"), 2: float("nan")}
    if dtype == jnp.float64 and native.available():
        for th in (1, 2):
            fused(50, backend="native", threads=th)
            ns_t[th] = 1e9 * _best(lambda th=th: fused(K, backend="native", threads=th), repeats)
            ns_t[th] /= N * K
    fused(50, backend="jax")
    t_jax = _best(lambda: fused(K, backend="jax"), repeats)
    fused(50, "rtrl")
    t_rtrl = _best(lambda: fused(K_rtrl, "rtrl"), repeats)

    step = reference_truncated_step(spec)
    eta = jnp.asarray(spec.eta(1.0), dtype)
    xs, ys = list(stream.x[:K_ref]), list(stream.y[:K_ref])

    def idiomatic(n: int) -> None:
        p = jax.tree_util.tree_map(jnp.copy, params)
        s = jnp.zeros((spec.m,), dtype)
        for k in range(n):
            p, s, _ = step(p, s, xs[k], ys[k], eta)
        jax.block_until_ready(p.u)

    idiomatic(20)
    t_ref = _best(lambda: idiomatic(K_ref), repeats)
    rate = N * K / t_fused
    rate_jax = N * K / t_jax
    rate_ref = N * K_ref / t_ref
    rate_rtrl = N * K_rtrl / t_rtrl
    return dict(
        N=N,
        dtype=jnp.dtype(dtype).name,
        fused=rate,
        fused_jax=rate_jax,
        idiomatic=rate_ref,
        rtrl=rate_rtrl,
        ratio=rate / rate_ref,
        ratio_jax=rate_jax / rate_ref,
        ns_fused=1e9 / rate,
        ns_jax=1e9 / rate_jax,
        ns_idiomatic=1e9 / rate_ref,
        ns_1t=ns_t[1],
        ns_2t=ns_t[2],
        threads=native.resolve_threads(0, N) if ns_t[1] == ns_t[1] else 0,
    )


def _mean_target(x: jax.Array) -> jax.Array:
    """``sin(2 mean(x))``: the d = 1 target of the first section for any d."""
    return jnp.sin(2.0 * jnp.mean(x))


NATIVE_CASES = (
    ("truncated d=1", 1, "truncated"),
    ("rtrl d=1", 1, "rtrl"),
    ("truncated d=4", 4, "truncated"),
    ("rtrl d=4", 4, "rtrl"),
)


def bench_native(N: int, work: float, repeats: int) -> dict[str, float]:
    """Unit-steps/s of ``train(backend="native")`` per case of :data:`NATIVE_CASES` (m = 1,
    erf, float64, auto threads), the cases interleaved within each repeat so that a load
    change on the machine hits all of them alike."""
    K = max(200, int(work / N))
    runs = {}
    for name, d, gradient in NATIVE_CASES:
        spec = NetworkSpec(N=N, d=d, m=1, activation="erf", antisymmetric=True)
        params = init_params(spec, jax.random.PRNGKey(0), jnp.float64)
        stream = sample_stream(
            AR1Chain(rho=0.6, noise=0.5, d=d), FilterTarget(a=0.6, f=_mean_target),
            jax.random.PRNGKey(1), K,
            dtype=jnp.float64,
        )  # fmt: skip

        def run(n: int, spec=spec, params=params, stream=stream, gradient=gradient) -> None:
            train(spec, params, stream, gradient=gradient, n_steps=n, window=n, backend="native")

        run(50)
        runs[name] = run
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(K)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: N * K / t for name, t in best.items()}


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = load_average()
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.default_backend()}), load average {load}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--native-only", action="store_true", help="only the native section")
    args = ap.parse_args()
    fused_work, ref_work, repeats = (2e6, 4e5, 1) if args.quick else (1e8, 2e7, 3)
    rows = []
    for N in () if args.native_only else (1_000, 10_000, 100_000):
        for dtype in (jnp.float64, jnp.float32):
            r = bench_one(N, dtype, fused_work, ref_work, repeats)
            rows.append(r)
            print(
                f"N={N:>6} {r['dtype']}: fused {r['fused']:.3e} unit-steps/s "
                f"({r['ns_fused']:.2f} ns), fused jax {r['ns_jax']:.2f} ns, idiomatic "
                f"{r['idiomatic']:.3e} ({r['ns_idiomatic']:.2f} ns), ratio {r['ratio']:.1f}x "
                f"(jax {r['ratio_jax']:.1f}x), rtrl fused {r['rtrl']:.3e}, native 1 thread "
                f"{r['ns_1t']:.2f} ns, 2 threads {r['ns_2t']:.2f} ns (auto {r['threads']})",
                flush=True,
            )
    info = machine_info()
    nat = bench_native(10_000, fused_work / 2, 2 * repeats + 1) if native.available() else {}
    for name, rate in nat.items():
        print(f"native N=10000 float64 {name}: {rate:.3e} unit-steps/s ({1e9 / rate:.2f} ns)")
    if not args.no_write and rows:
        lines = [
            f"\n## bench_train — {datetime.datetime.now().isoformat(timespec='seconds')}\n",
            f"Machine: {info}\n",
            "Truncated gradient, erf, d = m = 1; unit-steps per second (N × steps / s), "
            "best of repeats, compile excluded. Fused = `train(backend='auto')`: the native C "
            f"kernel for float64 (native available: {native.available()}), the jitted XLA loop "
            "for float32; fused jax = `train(backend='jax')`. Idiomatic = jitted "
            "`value_and_grad` step (`reference_truncated_step`) from a Python loop; "
            "ratios are against it. The native kernel's thread count is the auto choice "
            f"(2 threads for N >= {native.THREADS_MIN_N} on >= 2 cores); native 1t / 2t are "
            "the same call forced to 1 / 2 threads, timed in the same run (wall clock).\n",
            "| N | dtype | fused (unit-steps/s) | ns/unit-step | fused jax ns/unit-step "
            "| idiomatic (unit-steps/s) | ns/unit-step | ratio | ratio jax "
            "| rtrl fused (unit-steps/s) | native threads (auto) | native 1t ns | native 2t ns |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['N']} | {r['dtype']} | {r['fused']:.3e} | {r['ns_fused']:.2f} "
                f"| {r['ns_jax']:.2f} | {r['idiomatic']:.3e} | {r['ns_idiomatic']:.2f} "
                f"| {r['ratio']:.1f}x | {r['ratio_jax']:.1f}x | {r['rtrl']:.3e} "
                f"| {r['threads']} | {r['ns_1t']:.2f} | {r['ns_2t']:.2f} |"
            )
        with RESULTS.open("a") as fh:
            fh.write("\n".join(lines) + "\n")
    if not args.no_write and nat:
        cmd = "python benchmarks/bench_train.py" + " --quick" * args.quick
        cmd += " --native-only" * args.native_only
        now = datetime.datetime.now().isoformat(timespec="seconds")
        lines = [
            f"\n## bench_train native section — {now}\n",
            f"Machine: {info}\n",
            f"Command: `{cmd}`. Native kernel alone, N = 10^4, float64, erf, m = 1, auto threads "
            f"({native.resolve_threads(0, 10_000)}); unit-steps per second (N × steps / s), best "
            "of repeats with the cases interleaved, compile excluded.\n",
            "| case | unit-steps/s | ns/unit-step |",
            "|---|---|---|",
            *(f"| {name} | {rate:.3e} | {1e9 / rate:.2f} |" for name, rate in nat.items()),
            "",
            f"rtrl_vs_truncated_native_N1e4_f64 = {nat['rtrl d=1'] / nat['truncated d=1']:.3f} "
            "(goal >= 0.5); generic_d4_vs_d1_native_N1e4_f64 = "
            f"{nat['truncated d=4'] / nat['truncated d=1']:.3f} (goal >= 0.5).",
        ]
        with RESULTS.open("a") as fh:
            fh.write("\n".join(lines) + "\n")
    print(f"machine {info}")
    key = next((r for r in rows if r["N"] == 10_000 and r["dtype"] == "float64"), None)
    if key is not None:
        print(f"ratio train_vs_idiomatic_N1e4_f64 {key['ratio']:.3f}")
    if nat:
        r_rtrl = nat["rtrl d=1"] / nat["truncated d=1"]
        r_d4 = nat["truncated d=4"] / nat["truncated d=1"]
        print(f"ratio rtrl_vs_truncated_native_N1e4_f64 {r_rtrl:.3f}")
        print(f"ratio generic_d4_vs_d1_native_N1e4_f64 {r_d4:.3f}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
