#!/usr/bin/env bash
# One prepared, lease-sized check on a GPU machine (H100/H200): every stage has its own
# timeout inside the command's budget, and a summary (JSON + a short table) is written even when
# a stage fails or times out, so what ran is never lost.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--stages LIST] [--budget SECONDS] OUTDIR
#   STAGES=build,bench bash benchmarks/gpu_check.sh OUTDIR        (same as --stages)
#
# Stages, in this order (preflight always runs first):
#   preflight  python packages, nvcc against torch.version.cuda, compute-sanitizer, the GPU and
#              the arch to build for; exits early with a one-line reason when something is missing
#   build      python setup.py build_ext --inplace for the GPU's arch, all cores
#   test       only the CUDA tests (pytest -m cuda: tests/conftest.py marks every one), no -x;
#              junit XML and log to OUTDIR
#   sanitize   compute-sanitizer over benchmarks/sanitize_cases.py with
#              PYTORCH_NO_CUDA_MEMORY_CACHING=1: memcheck (every kernel) and initcheck (ours) over
#              every case, racecheck and synccheck (ours) over the CTC cases: the CTC kernels are
#              the only ones with barriers
#   bench      python benchmarks/report.py --device cuda (ratio table, JSON, PNG into OUTDIR)
#
# The lease: about 15 minutes of GPU time with machine starts and idle time, one command at most
# 10 minutes, and a machine idle for 30 s is reset (a build does not survive it). README "GPU
# check" says how to spend it:
#   1st command (default stages preflight,build,test,sanitize), budget 540 s:
#       bash benchmarks/gpu_check.sh $OUT
#   2nd command, only with time left: STAGES=bench (machine still warm) or STAGES=build,bench,
#   with --budget set to what is left; build,bench fits 540 s
# Stage budgets (seconds; each is also cut to what is left of --budget, minus SUMMARY_RESERVE):
#   preflight 30, build 200, test 150, sanitize 150 (memcheck 45, initcheck 40, racecheck 35,
#   synccheck 30: each starts torch under the sanitizer), bench 300.
#   Default command: 30 + 200 + 150 + 150 = 530 <= 540. build,bench: 30 + 200 + 300 = 530.
#
# --dry-run runs on a CPU machine (CI does, in .ci/run): the preflight without the GPU checks,
# the CUDA test collection (non-empty, and holding tests of every kernel family), the argument
# and stage plumbing (each stage's command is printed, not run) and the summary.
set -uo pipefail

usage() { echo "usage: gpu_check.sh [--dry-run] [--stages LIST] [--budget SECONDS] OUTDIR" >&2; exit 2; }

DRY=0
STAGES_ARG=${STAGES:-}
BUDGET=${GPU_CHECK_BUDGET:-540}
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --stages) [ $# -ge 2 ] || usage; STAGES_ARG=$2; shift ;;
    --stages=*) STAGES_ARG=${1#--stages=} ;;
    --budget) [ $# -ge 2 ] || usage; BUDGET=$2; shift ;;
    --budget=*) BUDGET=${1#--budget=} ;;
    -h|--help) awk 'NR > 1 && /^set -uo/ {exit} NR > 1' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT=$1 ;;
  esac
  shift
done
[ -n "$OUT" ] || usage
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu_check: --budget must be a whole number of seconds" >&2; exit 2; }

ALL_STAGES="build test sanitize bench"
STAGES_ARG=${STAGES_ARG:-build,test,sanitize}
[ "$STAGES_ARG" = "all" ] && STAGES_ARG=${ALL_STAGES// /,}
declare -A WANT=()
for s in ${STAGES_ARG//,/ }; do
  case " $ALL_STAGES preflight " in
    *" $s "*) WANT[$s]=1 ;;
    *) echo "gpu_check: unknown stage '$s' (stages: preflight ${ALL_STAGES})" >&2; exit 2 ;;
  esac
done

# stage budgets in seconds (README "GPU check" repeats them)
declare -A BUDGET_OF=([preflight]=30 [build]=200 [test]=150 [memcheck]=45 [initcheck]=40
                      [racecheck]=35 [synccheck]=30 [bench]=300)
SUMMARY_RESERVE=10
# The lease brings back at most 8 files from OUTDIR: the four sanitizer runs share one log.
# Command 1 leaves build.log, test.log, tests.xml, sanitize.log, summary.json, summary.txt;
# command 2 build.log, bench.log, report-cuda.json, report-cuda.png and the two summaries.
declare -A LOG_OF=([memcheck]=sanitize [initcheck]=sanitize [racecheck]=sanitize [synccheck]=sanitize)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/sanitize.log"   # the sanitizer runs append to it
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
command -v "$PY" > /dev/null || PY=python
START=$(date +%s)
ORDER=()
declare -A RC=() SECS=() NOTE=() LIMIT=()
SUMMARY_DONE=0
CURRENT=""

left() { echo $(( START + BUDGET - SUMMARY_RESERVE - $(date +%s) )); }

record() {  # record NAME RC SECONDS NOTE
  ORDER+=("$1"); RC[$1]=$2; SECS[$1]=$3; NOTE[$1]=$4
}

# run_stage NAME COMMAND...: runs under min(its budget, what is left), output to OUTDIR/NAME.log
run_stage() {
  local name=$1; shift
  local secs=${BUDGET_OF[$name]} remaining
  remaining=$(left)
  (( remaining < secs )) && secs=$remaining
  (( secs < 0 )) && secs=0
  LIMIT[$name]=$secs
  if (( secs <= 0 )); then
    record "$name" -1 0 "not run: the ${BUDGET} s budget is spent"
    echo "--- $name: not run (budget spent)"
    return 1
  fi
  echo "=== $name (timeout ${secs} s): $*"
  # straight into OUTDIR, so a stage cut short still leaves its log
  local log="$OUT/${LOG_OF[$name]:-$name}.log"
  [ -n "${LOG_OF[$name]:-}" ] || : > "$log"
  echo "=================== $name (timeout ${secs} s): $*" >> "$log"
  local t0=$(date +%s) rc
  CURRENT=$name
  if (( DRY )); then
    echo "dry run: not run" >> "$log"
    rc=0
  else
    timeout -k 10 "$secs" "$@" >> "$log" 2>&1
    rc=$?
  fi
  CURRENT=""
  local dt=$(( $(date +%s) - t0 )) note=""
  case $rc in
    0) note="ok" ;;
    124|137) note="TIMED OUT after ${secs} s" ;;
    *) note="failed (exit $rc)" ;;
  esac
  (( DRY )) && note="dry run"
  record "$name" "$rc" "$dt" "$note"
  echo "=================== $name: $note, ${dt} s" >> "$log"
  tail -n 15 "$log"
  echo "--- $name: $note, ${dt} s"
  return $rc
}

skip_stage() { record "$1" -1 0 "skipped: $2"; echo "--- $1: skipped: $2"; }

summary() {
  (( SUMMARY_DONE )) && return
  SUMMARY_DONE=1
  local total=$(( $(date +%s) - START ))
  {
    echo "{"
    echo "  \"dry_run\": $DRY, \"stages\": \"$STAGES_ARG\", \"budget_s\": $BUDGET, \"total_s\": $total,"
    echo "  \"gpu\": \"${GPU_NAME:-}\", \"arch\": \"${ARCH:-}\", \"torch\": \"${TORCH_VERSION:-}\","
    echo "  \"nvcc\": \"${NVCC_VERSION:-}\", \"driver\": \"${DRIVER:-}\", \"compute_sanitizer\": \"${SANITIZER:-}\","
    echo "  \"tests\": \"${TEST_LINE:-}\","
    echo "  \"results\": ["
    local i n=${#ORDER[@]} k
    for (( i = 0; i < n; i++ )); do
      k=${ORDER[$i]}
      printf '    {"stage": "%s", "rc": %s, "seconds": %s, "limit_s": %s, "note": "%s"}%s\n' \
        "$k" "${RC[$k]}" "${SECS[$k]}" "${LIMIT[$k]:-0}" "${NOTE[$k]//\"/\'}" \
        "$([ $i -lt $((n - 1)) ] && echo ,)"
    done
    echo "  ]"
    echo "}"
  } > "$OUT/summary.json"
  {
    echo "=== gpu_check summary ($( ((DRY)) && echo 'dry run, ' )stages: $STAGES_ARG, ${total} s of ${BUDGET} s)"
    echo "gpu: ${GPU_NAME:-?}  arch: ${ARCH:-?}  driver: ${DRIVER:-?}  torch: ${TORCH_VERSION:-?}  nvcc: ${NVCC_VERSION:-?}"
    printf '%-10s %5s %7s %7s  %s\n' stage rc seconds limit note
    for k in "${ORDER[@]}"; do
      printf '%-10s %5s %7s %7s  %s\n' "$k" "${RC[$k]}" "${SECS[$k]}" "${LIMIT[$k]:-0}" "${NOTE[$k]}"
    done
    [ -n "${TEST_LINE:-}" ] && echo "tests: $TEST_LINE"
    [ -f "$OUT/bench.log" ] && (( ! DRY )) && grep -E "x$" "$OUT/bench.log" | head -n 60
  } | tee "$OUT/summary.txt"
}
trap summary EXIT
# a signal (the lease's own limit, ^C) still leaves the summary, naming the stage it cut short
trap 'echo "gpu_check: interrupted"; [ -n "$CURRENT" ] && record "$CURRENT" 130 0 "interrupted"; exit 130' INT TERM

fail_early() {  # one-line reason, then the summary (by the EXIT trap)
  record abort 1 0 "$1"
  echo "gpu_check: $1"
  exit 1
}

# ------------------------------------------------------------------ preflight (a few seconds)
echo "=== preflight (timeout ${BUDGET_OF[preflight]} s)"
LIMIT[preflight]=${BUDGET_OF[preflight]}
# one Python start (importing torch is most of the cost): packages, torch's CUDA, the GPU
PROBE=$(GPU_CHECK_DRY=$DRY timeout "${BUDGET_OF[preflight]}" "$PY" - <<'EOF' 2>&1
import importlib, os
missing = []
for name in ("torch", "pytest", "hypothesis", "numpy", "ninja"):
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure means missing
        missing.append(f"{name} ({type(e).__name__})")
print("MISSING=" + ", ".join(missing))
if "torch (" not in " ".join(missing):
    import torch
    print(f"TORCH_VERSION={torch.__version__}")
    print(f"TORCH_CUDA={torch.version.cuda or ''}")
    if os.environ["GPU_CHECK_DRY"] != "1":
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            print(f"GPU_NAME={p.name} ({p.total_memory // 2**30} GiB)")
            print(f"GPU_ARCH={p.major}.{p.minor}")
        else:
            print("GPU_NAME=")
try:
    import nvidia
    print("NV_INC=" + os.path.join(list(nvidia.__path__)[0], "cu13", "include"))
except Exception:  # noqa: BLE001 - the wheels' headers are optional
    pass
EOF
)
probe() { printf '%s\n' "$PROBE" | sed -n "s/^$1=//p" | tail -n 1; }
grep -q "^MISSING=" <<< "$PROBE" || fail_early "the Python probe failed or timed out: $(tail -n 1 <<< "$PROBE")"
MISSING=$(probe MISSING)
[ -z "$MISSING" ] || fail_early "missing Python packages: $MISSING"
TORCH_VERSION=$(probe TORCH_VERSION)
TORCH_CUDA=$(probe TORCH_CUDA)
[ -n "$TORCH_CUDA" ] || fail_early "torch $TORCH_VERSION has no CUDA (torch.version.cuda is None)"

if [ -z "${CUDA_HOME:-}" ]; then   # as torch.utils.cpp_extension looks for it
  if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_HOME=/usr/local/cuda
  elif command -v nvcc > /dev/null; then CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  else CUDA_HOME=/usr/local/cuda; fi
fi
export CUDA_HOME
NVCC="$CUDA_HOME/bin/nvcc"
[ -x "$NVCC" ] || fail_early "nvcc not found (CUDA_HOME=$CUDA_HOME, PATH has none)"
NVCC_VERSION=$("$NVCC" --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p')
if [ "${NVCC_VERSION%%.*}" != "${TORCH_CUDA%%.*}" ]; then
  fail_early "nvcc $NVCC_VERSION ($NVCC) and torch's CUDA $TORCH_CUDA differ in major version: the extension would not load; point CUDA_HOME at a CUDA ${TORCH_CUDA%%.*} toolkit"
fi
SANITIZER=$(command -v compute-sanitizer || true)
[ -z "$SANITIZER" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ] && SANITIZER="$CUDA_HOME/bin/compute-sanitizer"
[ -z "$SANITIZER" ] && [ -x "$CUDA_HOME/compute-sanitizer/compute-sanitizer" ] && SANITIZER="$CUDA_HOME/compute-sanitizer/compute-sanitizer"
# ATen's CUDA headers may want the nvidia wheels' headers (cusparse.h, ...), as in .ci/run
NV_INC=$(probe NV_INC)
if [ -n "$NV_INC" ] && [ -d "$NV_INC" ]; then export CPATH="$NV_INC${CPATH:+:$CPATH}"; fi

if (( DRY )); then
  GPU_NAME="(dry run: no GPU)"
  ARCH=${TORCH_CUDA_ARCH_LIST:-9.0}
else
  GPU_NAME=$(probe GPU_NAME)
  [ -n "$GPU_NAME" ] || fail_early "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
  ARCH=${TORCH_CUDA_ARCH_LIST:-$(probe GPU_ARCH)}
  DRIVER=$(timeout 10 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1 | head -n 1)
fi
export TORCH_CUDA_ARCH_LIST=$ARCH
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
echo "python: $("$PY" --version 2>&1)  torch: $TORCH_VERSION (CUDA $TORCH_CUDA)  nvcc: $NVCC_VERSION ($NVCC)"
echo "gpu: $GPU_NAME  building for: $ARCH with MAX_JOBS=$MAX_JOBS"
echo "compute-sanitizer: ${SANITIZER:-NOT FOUND (the sanitize stage will be skipped)}"

FAMILIES="test_ctc test_decode test_lstm"   # every kernel family must have CUDA tests
# The CUDA test selection, collected without running (the dry run's check; on the GPU machine
# the test stage's junit XML is checked the same way, at no extra cost). The packages the GPU
# machine lacks (lmdb, rapidfuzz, captcha) are hidden, as there: no CUDA test may need them.
check_collection() {
  "$PY" -c "import sys; sys.modules.update(dict.fromkeys(('lmdb', 'rapidfuzz', 'captcha'))); import pytest; sys.exit(pytest.main(['--collect-only', '-q', '-m', 'cuda', '-p', 'no:cacheprovider', 'tests']))" \
    > "$OUT/collect.log" 2>&1
  local rc=$? count family
  count=$(grep -c "::" "$OUT/collect.log")
  (( rc == 0 && count > 0 )) || { echo "CUDA test collection failed (pytest exit $rc, $count tests)"; return 1; }
  for family in $FAMILIES; do
    grep -q "^tests/$family.py::" "$OUT/collect.log" || { echo "no CUDA test collected from tests/$family.py"; return 1; }
  done
  echo "$count CUDA tests collected (CTC loss, decoding and LSTM among them)"
}
record preflight 0 $(( $(date +%s) - START )) "ok"
if (( DRY )); then   # what the dry run checks in place of the GPU stages
  T0=$(date +%s)
  COLLECT=$(check_collection) || fail_early "$COLLECT (see $OUT/collect.log)"
  echo "$COLLECT"
  bash -n "$0" || fail_early "gpu_check.sh has a syntax error"
  "$PY" -m py_compile benchmarks/sanitize_cases.py benchmarks/report.py || fail_early "a benchmark script does not compile"
  "$PY" benchmarks/sanitize_cases.py --list > "$OUT/sanitize_cases.txt" 2>&1 || fail_early "sanitize_cases.py --list failed"
  record collect 0 $(( $(date +%s) - T0 )) "$COLLECT"
fi

# ------------------------------------------------------------------ build
if [ -n "${WANT[build]:-}" ]; then
  # the build, then proof that it holds the CUDA kernels, inside the stage's timeout
  run_stage build bash -c '"$0" setup.py build_ext --inplace && "$0" -c "import json, fastcrnn; i = fastcrnn.build_info(); print(json.dumps(i)); assert i[\"cuda\"], \"built without the CUDA kernels\""' "$PY" \
    || fail_early "the build failed or holds no CUDA kernels (see $OUT/build.log)"
fi

# ------------------------------------------------------------------ CUDA tests
if [ -n "${WANT[test]:-}" ]; then
  # no -x: one failure must not hide the others; --continue-on-collection-errors: a module that
  # needs a package this machine lacks must not stop the CUDA tests of the others
  run_stage test "$PY" -m pytest -m cuda -q -rfEs -p no:cacheprovider \
      --continue-on-collection-errors --junitxml="$OUT/tests.xml" tests
  TEST_LINE=$(grep -E "[0-9]+ (passed|failed|error|skipped)" "$OUT/test.log" | tail -n 1)
  if (( ! DRY )); then
    for family in $FAMILIES; do
      grep -q "classname=\"tests.$family\"" "$OUT/tests.xml" 2>/dev/null \
        || TEST_LINE="$TEST_LINE; NO CUDA test of tests/$family.py ran"
    done
  fi
fi

# ------------------------------------------------------------------ compute-sanitizer
if [ -n "${WANT[sanitize]:-}" ]; then
  SAN=$SANITIZER
  (( DRY )) && SAN=${SAN:-compute-sanitizer}     # a dry run prints the commands only
  if [ -z "$SAN" ]; then
    skip_stage sanitize "compute-sanitizer not found"
  else
    # only our kernels (their mangled names hold the namespace fastcrnn): torch's own kernels
    # are not what this checks, and skipping their instrumentation saves time. Older
    # compute-sanitizers call the option --filter.
    if (( DRY )) || "$SAN" --help 2>&1 | grep -q -- "--kernel-name"; then OURS=(--kernel-name kns=fastcrnn)
    else OURS=(--filter kns=fastcrnn); fi
    export PYTORCH_NO_CUDA_MEMORY_CACHING=1   # each tensor its own allocation: overruns are seen
    # memcheck: out-of-bounds and misaligned accesses in every kernel the cases launch
    run_stage memcheck "$SAN" --tool memcheck --error-exitcode 9 \
        "$PY" benchmarks/sanitize_cases.py
    # initcheck: reads of device memory nothing wrote (correctness relies on the -inf fills)
    run_stage initcheck "$SAN" --tool initcheck --error-exitcode 9 "${OURS[@]}" \
        "$PY" benchmarks/sanitize_cases.py
    # the CTC kernels are the only ones with barriers (__syncthreads, __syncthreads_or):
    # racecheck watches shared-memory hazards, synccheck the barriers' use
    run_stage racecheck "$SAN" --tool racecheck --error-exitcode 9 "${OURS[@]}" \
        "$PY" benchmarks/sanitize_cases.py --cases ctc
    run_stage synccheck "$SAN" --tool synccheck --error-exitcode 9 "${OURS[@]}" \
        "$PY" benchmarks/sanitize_cases.py --cases ctc
    unset PYTORCH_NO_CUDA_MEMORY_CACHING
  fi
fi

# ------------------------------------------------------------------ benchmarks
if [ -n "${WANT[bench]:-}" ]; then
  run_stage bench "$PY" benchmarks/report.py --device cuda --out "$OUT"
fi

FAILED=0
for k in "${ORDER[@]}"; do
  [ "${RC[$k]}" = "0" ] || [ "${RC[$k]}" = "-1" ] || FAILED=1
done
summary
exit $FAILED
