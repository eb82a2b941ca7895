#!/usr/bin/env bash
# One run on a lent GPU machine (see benchmarks/RESULTS.md): the float64 test modules that need
# no optional dependency, then the benchmarks, each under its own time limit. Everything lands
# under $OUT. The package runs from src/ (nothing is installed there; the native CPU kernel is
# not built, so the trainer uses its JAX path on the GPU).
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=src RNNLIMIT_NATIVE=0 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/env.txt" 2>&1
run() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name rc=$? wall=$((SECONDS - t0))s" >> "$OUT/summary.txt"
}
run tests 150 $PY -m pytest -p no:cacheprovider tests/test_kernels.py tests/test_memory.py \
  tests/test_limit.py tests/test_chains.py tests/test_network.py
run bench_limit 140 $PY benchmarks/bench_limit.py
run bench_train 120 $PY benchmarks/bench_train.py
run bench_seqkernel 50 $PY benchmarks/bench_seqkernel.py
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
cat "$OUT/summary.txt"
