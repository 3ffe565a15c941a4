#!/usr/bin/env bash
# One prepared run on a GPU machine (H100/H200): build for sm_90 with all cores, print build_info,
# run the test suite with CUDA, compute-sanitizer memcheck, and the GPU benchmarks.
#   bash benchmarks/gpu_check.sh OUTDIR
# Each stage runs under its own timeout; logs and JSON go to OUTDIR; a summary table ends it.
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
declare -A STATUS

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  local start=$(date +%s)
  echo "=== $name (timeout ${secs}s) ===" | tee -a "$OUT/summary.log"
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  STATUS[$name]="rc=$rc $(( $(date +%s) - start ))s"
  tail -n 25 "$OUT/$name.log"
  echo "--- $name: ${STATUS[$name]}" | tee -a "$OUT/summary.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
stage build 420 python -m pip install --no-deps --no-build-isolation -v -e .
stage build_info 60 python -c "import json, fastcrnn; i = fastcrnn.build_info(); print(json.dumps(i, indent=1)); json.dump(i, open('$OUT/build_info.json', 'w'), indent=1); assert i['cuda']"
stage tests 600 python -m pytest -q -x --junitxml="$OUT/tests.xml" -p no:cacheprovider tests
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$SANITIZER" ]; then
  stage memcheck 300 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck \
      --error-exitcode 9 python benchmarks/sanitize_cases.py
else
  echo "compute-sanitizer not found: memcheck skipped" | tee -a "$OUT/summary.log"
fi
stage bench 480 python benchmarks/report.py --device cuda --out "$OUT"

echo "=== summary ===" | tee -a "$OUT/summary.log"
for k in build build_info tests memcheck bench; do
  printf "%-10s %s\n" "$k" "${STATUS[$k]:-not run}" | tee -a "$OUT/summary.log"
done
grep -E "passed|failed|error" "$OUT/tests.log" | tail -n 1 | tee -a "$OUT/summary.log"
[ -f "$OUT/bench.log" ] && sed -n '1,200p' "$OUT/bench.log" | grep -E "x$|ratio" | tee -a "$OUT/summary.log"
exit 0
