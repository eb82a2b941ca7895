#!/usr/bin/env bash
# One run on a lent GPU machine (see benchmarks/RESULTS.md): the limit tests, then bench_limit
# with the trainer on the GPU (XLA loop) and the limit's stages in the native kernel on the
# machine's CPU, each under its own time limit. Everything lands under $OUT. The package runs
# from src/ (nothing is installed there). The native kernels are plain C loaded by ctypes, so
# the library built here (carried along) is copied to the device Python's extension name.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=src XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
built=$(ls src/rnnlimit/_native/fused_train.*.so 2>/dev/null | head -1)
suffix=$($PY -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
if [ -n "$built" ] && [ ! -e "src/rnnlimit/_native/fused_train$suffix" ]; then
  cp "$built" "src/rnnlimit/_native/fused_train$suffix"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import jax; print('jax', jax.__version__, jax.devices())"
  $PY -c "import rnnlimit.native as n; print('native', n.available(), n.unavailable_reason())"
  nproc; } > "$OUT/env.txt" 2>&1
run() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name rc=$? wall=$((SECONDS - t0))s" >> "$OUT/summary.txt"
}
run tests 120 $PY -m pytest -p no:cacheprovider -q tests/test_limit.py tests/test_native.py
run bench_limit 150 $PY benchmarks/bench_limit.py --train-backend jax
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
cat "$OUT/env.txt" "$OUT/summary.txt"
tail -4 "$OUT/bench_limit.txt"
