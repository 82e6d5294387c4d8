#!/usr/bin/env bash
# The GPU checks in one command, for a machine with an NVIDIA GPU and the
# CUDA toolkit (make test runs none of this: CI has no GPU).
#   1. build everything with the CUDA backend (make CUDA=1);
#   2. the conformance suite: every op of the cuda backend against the cpu
#      backend, and the determinism contract on the device;
#   3. the tiny-model goldens end to end on the GPU: test_dit and
#      test_pipeline with SDC_TEST_BACKEND=cuda;
#   4. a DiT forward benchmark, GPU and CPU on the same inputs, written to
#      bench/results/dit_forward_cuda_<UTC date>.json.
# Prints "N passed, N failed" at the end; exits 77 when there is no GPU.
# Without a GPU, tests/gpu/emu/run.sh runs steps 2 and 3 under a CPU
# emulation of CUDA.
#   tests/gpu/run.sh [--no-bench]
# Environment: BUILD (default build), SDC_CUDA_TF32=1 to test the TF32 mode,
# SDC_BENCH_OUT (the result file).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export SDC_TEST_DATA="$PWD/tests/data"
passed=0
failed=0
failed_names=()

make --no-print-directory -j"$(nproc)" CUDA=1 BUILD="$BUILD" all >/dev/null ||
    { echo "tests/gpu: the build failed (make CUDA=1 all)"; exit 1; }

tally() { # label status output-file: counts PASS / FAIL lines like tests/run.sh
    local label=$1 rc=$2 out=$3 p f
    p=$(grep -c '^PASS ' "$out")
    f=$(grep -c '^FAIL ' "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL $label (exit status $rc)" >>"$out"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        failed_names+=("$label")
        echo "--- $label: $p passed, $f failed"
        cat "$out"
    else
        echo "--- $label: $p passed"
    fi
}

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run_one() { # label command...
    local label=$1; shift
    "$@" >"$OUT" 2>&1
    tally "$label" $? "$OUT"
}

"$BUILD/tests-gpu/test_backend_conformance" >"$OUT" 2>&1
rc=$?
if [ "$rc" -eq 77 ]; then
    cat "$OUT"
    echo "tests/gpu: skipped: no CUDA device"
    exit 77
fi
tally test_backend_conformance "$rc" "$OUT"
SDC_TEST_BACKEND=cuda run_one "test_dit (cuda)" "$BUILD/tests/test_dit"
SDC_TEST_BACKEND=cuda run_one "test_pipeline (cuda)" "$BUILD/tests/test_pipeline"

# --- benchmark -----------------------------------------------------------------
bench() {
    local bin=$BUILD/bench/bench_dit out date lines=() line cfg dir h w n1 n2 reps warm be
    date=$(date -u +%Y-%m-%d)
    out=${SDC_BENCH_OUT:-bench/results/dit_forward_cuda_$date.json}
    # name | model dir | latent H | W | LLM tokens | ByT5 tokens | reps | warmup
    # (mid exists once bench/run.sh has made it; see bench/README.md)
    local configs=("tiny tests/data/tiny-hunyuanimage/transformer 8 12 40 16 30 10"
                   "mid $BUILD/bench-models/mid 32 32 224 32 10 2"
                   "mid-2048 $BUILD/bench-models/mid 64 64 1000 128 5 1")
    for c in "${configs[@]}"; do
        read -r cfg dir h w n1 n2 reps warm <<<"$c"
        if [ ! -f "$dir/config.json" ]; then
            echo "bench: $cfg skipped: no model at $dir" >&2
            continue
        fi
        for be in cuda cpu; do
            [ "$be" = cpu ] && [ "$cfg" = mid-2048 ] && continue # minutes on a CPU
            line=$("$bin" --model-dir "$dir" --height "$h" --width "$w" --text "$n1" \
                   --text2 "$n2" --reps "$reps" --warmup "$warm" --backend "$be" --json) ||
                { echo "bench: bench_dit failed: $cfg on $be" >&2; failed=$((failed + 1)); continue; }
            lines+=("{\"config\": \"$cfg\", \"backend\": \"$be\", \"result\": $line}")
            echo "bench: $cfg $be: $(grep -o '"median_s": *[0-9.eE+-]*' <<<"$line")" >&2
        done
    done
    local gpu commit
    gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1)
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
    mkdir -p "$(dirname "$out")"
    {
        echo "{"
        echo "  \"benchmark\": \"dit_forward_cuda\","
        echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
        echo "  \"gpu\": \"${gpu//\"/}\","
        echo "  \"cpu\": \"$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//; s/"//g')\","
        echo "  \"nvcc\": \"$(nvcc --version 2>/dev/null | tail -n1 | sed 's/"//g')\","
        echo "  \"tf32\": \"${SDC_CUDA_TF32:-0}\","
        echo "  \"sdc\": \"$commit\","
        echo "  \"results\": ["
        for ((i = 0; i < ${#lines[@]}; i++)); do
            sep=","; ((i == ${#lines[@]} - 1)) && sep=""
            echo "    ${lines[i]}$sep"
        done
        echo "  ]"
        echo "}"
    } >"$out"
    echo "wrote $out"
}
[ "${1:-}" = "--no-bench" ] || bench

if [ ${#failed_names[@]} -gt 0 ]; then
    echo "failing: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
