#!/usr/bin/env bash
# One run on a GPU machine (torch preinstalled, no Ray, no registry): versions, imports, the GPU
# tests, then bench/gpu.py. Run from the repository root; results land in $OUT (or
# ./gpu_verify_out). Build .gpudeps first on the dev machine (bash bench/gpu_deps.sh) and carry it.
#
#     bash bench/gpu_verify.sh                       # tests + bench --quick
#     BENCH=full TESTS=0 bash bench/gpu_verify.sh    # the full benchmark alone
#     PHASES=epoch,reid BENCH=full bash bench/gpu_verify.sh
#
# Knobs: BUDGET_S (whole run, default 540), TEST_S (tests' cap, default 240), BENCH=quick|full|
# skip, PHASES (bench/gpu.py --phases), TESTS=1|0. pytest runs without -x: every GPU test is
# independent, and one failure must not hide the others.
set -u
cd "$(dirname "$0")/.." || exit 2
START=$SECONDS
BUDGET_S=${BUDGET_S:-540}
TEST_S=${TEST_S:-240}
BENCH=${BENCH:-quick}
TESTS=${TESTS:-1}
PHASES=${PHASES:-}
OUT=${OUT:-$PWD/gpu_verify_out}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
[ -d .gpudeps ] && export PYTHONPATH="$PWD/.gpudeps${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-$(command -v python || command -v python3)}
left() { echo $(( BUDGET_S - (SECONDS - START) )); }
stage() { printf '\n==== [%4ss] %s\n' "$(( SECONDS - START ))" "$*"; }

{
stage "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 | head -3
"$PY" - <<'PYEOF'
import importlib, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version(), "| GPU", torch.cuda.is_available() and
      torch.cuda.get_device_name(0))
for name in ("numpy", "yaml", "pydantic", "pydantic_core", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"  ok      {name:14s} {getattr(module, '__version__', '?')}")
    except Exception as err:
        print(f"  MISSING {name:14s} {type(err).__name__}: {err}")
sys.path.insert(0, ".")
import mgkd.training.steps, mgkd.distill.learner, bench.gpu_work  # noqa: E401,F401
print("  ok      mgkd and bench.gpu_work import")
PYEOF
} 2>&1 | tee "$OUT/verify_env.log"

TEST_RC=skipped
if [ "$TESTS" = 1 ]; then
    T=$(( TEST_S < $(left) - 120 ? TEST_S : $(left) - 120 )); [ "$T" -lt 60 ] && T=60
    stage "pytest tests/test_gpu_graphs.py (at most ${T}s)" | tee "$OUT/verify_tests.log"
    # SIGINT at the limit: pytest still prints the summary of what ran.
    timeout -s INT -k 20 "$T" "$PY" -m pytest -q -rfEs --durations=10 -p no:cacheprovider \
        tests/test_gpu_graphs.py 2>&1 | tee -a "$OUT/verify_tests.log"
    TEST_RC=${PIPESTATUS[0]}
fi

BENCH_RC=skipped
if [ "$BENCH" != skip ]; then
    T=$(( $(left) - 10 )); [ "$T" -lt 60 ] && T=60
    ARGS=()
    [ "$BENCH" = quick ] && ARGS+=(--quick)
    [ -n "$PHASES" ] && ARGS+=(--phases "$PHASES")
    stage "bench/gpu.py ${ARGS[*]} (at most ${T}s; figures in \$OUT/gpu_bench.json)" \
        | tee "$OUT/verify_bench.log"
    # Each phase saves its figures as it ends: a timeout keeps what finished.
    timeout -s INT -k 20 "$T" "$PY" bench/gpu.py "${ARGS[@]}" 2>&1 | tee -a "$OUT/verify_bench.log"
    BENCH_RC=${PIPESTATUS[0]}
fi
stage "done: pytest exit $TEST_RC, bench exit $BENCH_RC (124: timed out), $(( SECONDS - START ))s" \
    | tee -a "$OUT/verify_env.log"
[ "$TEST_RC" = 0 -o "$TEST_RC" = skipped ] && [ "$BENCH_RC" = 0 -o "$BENCH_RC" = skipped ]
