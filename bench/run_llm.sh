#!/usr/bin/env bash
# LLM text-encoder forward: sdc (bench/bench_llm.c) against transformers
# (tools/goldens/bench_llm_torch.py) on the same model file, the same token
# ids and the same thread count, in the same run. The model is the "mid"
# Qwen2.5-VL language model (hidden 1024 = 8 heads x 128, 2 key/value heads,
# MLP 5504, 4 layers; random weights, made on the first run into
# $BUILD/bench-models/llm-mid), 256 tokens. Two modes:
#   same      the same computation on both sides: all 4 layers + final norm
#             on the 256 tokens (the headline number);
#   pipeline  what each side runs to encode a 256-token prompt: sdc the
#             valid tokens through the layers hidden state -3 needs; diffusers
#             the whole model (every layer, lm_head) on 1034 padded tokens.
# Processes alternate (sdc, torch, torch, sdc, ...) so drift on a noisy
# machine hits both; the ratio is torch median / sdc median of the
# per-process medians (above 1: sdc faster), for wall time and for process
# CPU time (less disturbed by other load). Both print mean |out|; the result
# records their relative difference.
# Writes bench/results/llm_encoder_<UTC date>.json and prints a table. This
# script builds nothing: run `make` first.
#
# Environment:
#   BUILD               build directory (default build)
#   SDC_PYTHON          Python with torch + transformers (default: the goldens venv)
#   SDC_BENCH_ROUNDS    processes per implementation and thread count (default 3)
#   SDC_BENCH_THREADS   thread counts (default "1 2")
#   SDC_BENCH_TOKENS    sequence length (default 256)
#   SDC_BENCH_OUT       result file (default bench/results/llm_encoder_<date>.json)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
BIN=$BUILD/bench/bench_llm
ROUNDS=${SDC_BENCH_ROUNDS:-3}
THREADS=${SDC_BENCH_THREADS:-1 2}
TOKENS=${SDC_BENCH_TOKENS:-256}
TORCH_SCRIPT=tools/goldens/bench_llm_torch.py
MODEL=$BUILD/bench-models/llm-mid
DATE=$(date -u +%Y-%m-%d)
OUT=${SDC_BENCH_OUT:-bench/results/llm_encoder_$DATE.json}
REPS=5
WARMUP=1

die() { echo "bench: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "$BIN not found; run 'make' first"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "SDC_BENCH_ROUNDS must be a positive integer"

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}
json_num() { grep -o "\"$2\": *[-0-9.eE+]*" <<<"$1" | head -n1 | sed 's/.*: *//'; }
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

PY=${SDC_PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x /work/venv-goldens/v/bin/python ]; then PY=/work/venv-goldens/v/bin/python
    else PY=tools/goldens/.venv/bin/python; fi
fi
TORCH_REASON=""
if ! "$PY" -c 'import torch, transformers' >/dev/null 2>&1; then
    TORCH_REASON="$PY cannot import torch and transformers"
    echo "bench: torch side skipped: $TORCH_REASON" >&2
    PY=""
fi
if [ ! -f "$MODEL/config.json" ]; then
    [ -n "$PY" ] || die "$MODEL is missing and no Python with torch to make it"
    "$PY" "$TORCH_SCRIPT" make-model --out "$MODEL" --config mid
fi

results=()
table=()
for mode in same pipeline; do
    if [ "$mode" = same ]; then sdc_args=(--skip 0); torch_args=(--mode same); reps=$REPS
    else sdc_args=(--skip 2); torch_args=(--mode pipeline); reps=3; fi
    for t in $THREADS; do
        sdc_runs=() torch_runs=() sdc_t=() torch_t=() sdc_c=() torch_c=()
        for ((r = 1; r <= ROUNDS; r++)); do
            if ((r % 2)); then order="sdc torch"; else order="torch sdc"; fi
            for impl in $order; do
                if [ "$impl" = sdc ]; then
                    echo "bench: llm $mode, $t threads, round $r/$ROUNDS: sdc" >&2
                    line=$("$BIN" --model-dir "$MODEL" --tokens "$TOKENS" --threads "$t" "${sdc_args[@]}" \
                        --reps "$reps" --warmup $WARMUP --json)
                    sdc_runs+=("$line")
                    sdc_t+=("$(json_num "$line" median_s)")
                    sdc_c+=("$(json_num "$line" cpu_median_s)")
                elif [ -n "$PY" ]; then
                    echo "bench: llm $mode, $t threads, round $r/$ROUNDS: torch" >&2
                    line=$("$PY" "$TORCH_SCRIPT" run --model-dir "$MODEL" --tokens "$TOKENS" --threads "$t" \
                        "${torch_args[@]}" --reps "$reps" --warmup $WARMUP --json 2>/dev/null)
                    torch_runs+=("$line")
                    torch_t+=("$(json_num "$line" median_s)")
                    torch_c+=("$(json_num "$line" cpu_median_s)")
                fi
            done
        done
        sdc_med=$(median "${sdc_t[@]}")
        sdc_cpu=$(median "${sdc_c[@]}")
        torch_json=null ratio=null cpu_ratio=null agree=null torch_med=- torch_cpu=-
        if [ -n "$PY" ]; then
            torch_med=$(median "${torch_t[@]}")
            torch_cpu=$(median "${torch_c[@]}")
            ratio=$(awk -v a="$torch_med" -v b="$sdc_med" 'BEGIN { printf "%.2f", a / b }')
            cpu_ratio=$(awk -v a="$torch_cpu" -v b="$sdc_cpu" 'BEGIN { printf "%.2f", a / b }')
            agree=$(awk -v a="$(json_num "${sdc_runs[0]}" out_mean_abs)" -v b="$(json_num "${torch_runs[0]}" out_mean_abs)" \
                'BEGIN { d = a - b; if (d < 0) d = -d; printf "%.3g", d / b }')
            torch_json="{\"median_s\": $torch_med, \"cpu_median_s\": $torch_cpu, \"runs\": [$(IFS=,; echo "${torch_runs[*]}")]}"
        fi
        results+=("{\"mode\": \"$mode\", \"threads\": $t, \"tokens\": $TOKENS, \"ratio\": $ratio, \"cpu_ratio\": $cpu_ratio, \"out_mean_abs_rel_diff\": $agree, \"sdc\": {\"median_s\": $sdc_med, \"cpu_median_s\": $sdc_cpu, \"runs\": [$(IFS=,; echo "${sdc_runs[*]}")]}, \"torch\": $torch_json}")
        table+=("$(printf '%-9s %7s %7s %9s %9s %7s %9s %9s %7s %9s' "$mode" "$t" "$TOKENS" "$sdc_med" "$torch_med" \
            "${ratio/null/-}" "$sdc_cpu" "$torch_cpu" "${cpu_ratio/null/-}" "${agree/null/-}")")
    done
done

cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
cpus=$(getconf _NPROCESSORS_ONLN)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
torch_ver=null transformers_ver=null
if [ -n "$PY" ]; then
    torch_ver=$(json_str "$("$PY" -c 'import torch; print(torch.__version__)')")
    transformers_ver=$(json_str "$("$PY" -c 'import transformers; print(transformers.__version__)')")
fi
if [ -n "${MAKELEVEL:-}" ]; then invocation="make bench"; else invocation="bench/run_llm.sh"; fi
load=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$OUT")"
{
    echo "{"
    echo "  \"benchmark\": \"llm_encoder\","
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"machine\": {\"cpu\": $(json_str "$cpu"), \"cpus_online\": $cpus, \"kernel\": $(json_str "$(uname -r)"), \"loadavg_at_end\": $(json_str "$load")},"
    echo "  \"command\": $(json_str "$invocation"),"
    echo "  \"settings\": {\"rounds\": $ROUNDS, \"reps\": {\"same\": $REPS, \"pipeline\": 3}, \"warmup\": $WARMUP, \"threads\": [$(echo $THREADS | tr ' ' ',')], \"tokens\": $TOKENS, \"model\": \"mid: Qwen2.5-VL language model, hidden 1024 (8 heads x 128, 2 kv heads), intermediate 5504, 4 layers + final norm, vocab 32768, random BF16 weights run in float32\"},"
    echo "  \"versions\": {\"sdc\": \"$commit\", \"cc\": $(json_str "$(cc --version | head -n1)"), \"torch\": $torch_ver, \"transformers\": $transformers_ver},"
    [ -n "$TORCH_REASON" ] && echo "  \"torch_reason\": $(json_str "$TORCH_REASON"),"
    echo "  \"ratio_meaning\": \"torch median time / sdc median time (cpu_ratio: the same with process CPU time); above 1: sdc faster\","
    echo "  \"results\": ["
    for i in "${!results[@]}"; do
        sep=","
        [ "$i" -eq $((${#results[@]} - 1)) ] && sep=""
        echo "    ${results[$i]}$sep"
    done
    echo "  ]"
    echo "}"
} >"$OUT"

printf '%-9s %7s %7s %9s %9s %7s %9s %9s %7s %9s\n' mode threads tokens sdc_s torch_s ratio sdc_cpu torch_cpu cpu_rat out_diff
printf '%s\n' "${table[@]}"
echo "bench: wrote $OUT" >&2
