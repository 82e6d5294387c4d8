#!/usr/bin/env bash
# Tokenizer throughput: sdc's Qwen2.5 BPE against HF `tokenizers`, both on
# one thread, on the same deterministic mixed Chinese/English text (4 MiB by
# default), in the same run. Two modes: the whole text in one encode call,
# and one call per line (prompt-sized inputs). Processes alternate (sdc, hf,
# hf, sdc, ...) so drift on a noisy machine hits both; the ratio is
# sdc MB/s over HF MB/s of the medians (above 1: sdc faster). Both sides print
# an ids checksum; the result records whether they agree.
# Writes bench/results/tokenizer_<UTC date>.json and prints a table. This
# script builds nothing: run `make` first.
#
# Environment:
#   BUILD               build directory (default build)
#   SDC_PYTHON          Python with `tokenizers` and numpy (default: the goldens venv)
#   SDC_BENCH_ROUNDS    processes per implementation and mode (default 3)
#   SDC_BENCH_TEXT_MB   text size in MiB (default 4)
#   SDC_BENCH_OUT       result file (default bench/results/tokenizer_<date>.json)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
BIN=$BUILD/bench/bench_tokenizer
TOK=tests/data/qwen2.5-tokenizer
ROUNDS=${SDC_BENCH_ROUNDS:-3}
MB=${SDC_BENCH_TEXT_MB:-4}
HF_SCRIPT=tools/goldens/bench_tokenizer_hf.py
DATE=$(date -u +%Y-%m-%d)
OUT=${SDC_BENCH_OUT:-bench/results/tokenizer_$DATE.json}
TEXT=$BUILD/bench-tokenizer-text-${MB}mb.txt

die() { echo "bench: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "$BIN not found; run 'make' first"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "SDC_BENCH_ROUNDS must be a positive integer"

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}
json_num() { grep -o "\"$2\": *[-0-9.eE+]*" <<<"$1" | head -n1 | sed 's/.*: *//'; }
json_text() { grep -o "\"$2\": *\"[^\"]*\"" <<<"$1" | head -n1 | sed 's/.*: *"//; s/"$//'; }
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

PY=${SDC_PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x /work/venv-goldens/v/bin/python ]; then PY=/work/venv-goldens/v/bin/python
    else PY=tools/goldens/.venv/bin/python; fi
fi
HF_REASON=""
if ! "$PY" -c 'import tokenizers, numpy' >/dev/null 2>&1; then
    HF_REASON="$PY cannot import tokenizers and numpy"
    echo "bench: HF side skipped: $HF_REASON" >&2
    PY=""
fi

mkdir -p "$BUILD"
[ -f "$TEXT" ] || "$BIN" --make-text "$TEXT" --mb "$MB"

results=()
table=()
for mode in whole lines; do
    flag=()
    [ "$mode" = lines ] && flag=(--lines)
    sdc_runs=() hf_runs=() sdc_t=() hf_t=()
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order="sdc hf"; else order="hf sdc"; fi
        for impl in $order; do
            if [ "$impl" = sdc ]; then
                echo "bench: tokenizer $mode round $r/$ROUNDS: sdc" >&2
                line=$("$BIN" --tokenizer "$TOK" --text "$TEXT" "${flag[@]}" --reps 5 --warmup 1 --json)
                sdc_runs+=("$line")
                sdc_t+=("$(json_num "$line" median_s)")
            elif [ -n "$PY" ]; then
                echo "bench: tokenizer $mode round $r/$ROUNDS: hf" >&2
                line=$("$PY" "$HF_SCRIPT" --tokenizer "$TOK" --text "$TEXT" "${flag[@]}" --reps 3 --warmup 1 --json)
                hf_runs+=("$line")
                hf_t+=("$(json_num "$line" median_s)")
            fi
        done
    done
    bytes=$(json_num "${sdc_runs[0]}" bytes)
    tokens=$(json_num "${sdc_runs[0]}" tokens)
    sdc_med=$(median "${sdc_t[@]}")
    sdc_mbps=$(awk -v b="$bytes" -v t="$sdc_med" 'BEGIN { printf "%.3f", b / 1e6 / t }')
    sdc_tps=$(awk -v n="$tokens" -v t="$sdc_med" 'BEGIN { printf "%.0f", n / t }')
    hf_json=null ratio=null match=null hf_mbps=- hf_tps=-
    if [ -n "$PY" ]; then
        hf_med=$(median "${hf_t[@]}")
        hf_mbps=$(awk -v b="$bytes" -v t="$hf_med" 'BEGIN { printf "%.3f", b / 1e6 / t }')
        hf_tps=$(awk -v n="$tokens" -v t="$hf_med" 'BEGIN { printf "%.0f", n / t }')
        ratio=$(awk -v a="$hf_med" -v b="$sdc_med" 'BEGIN { printf "%.2f", a / b }')
        match=false
        [ "$(json_text "${sdc_runs[0]}" ids_checksum)" = "$(json_text "${hf_runs[0]}" ids_checksum)" ] &&
            [ "$(json_num "${hf_runs[0]}" tokens)" = "$tokens" ] && match=true
        hf_json="{\"median_s\": $hf_med, \"mb_per_s\": $hf_mbps, \"tokens_per_s\": $hf_tps, \"runs\": [$(IFS=,; echo "${hf_runs[*]}")]}"
    fi
    results+=("{\"mode\": \"$mode\", \"bytes\": $bytes, \"tokens\": $tokens, \"ids_match\": $match, \"ratio\": $ratio, \"sdc\": {\"median_s\": $sdc_med, \"mb_per_s\": $sdc_mbps, \"tokens_per_s\": $sdc_tps, \"runs\": [$(IFS=,; echo "${sdc_runs[*]}")]}, \"hf\": $hf_json}")
    table+=("$(printf '%-6s %9s %9s %10s %10s %12s %12s %7s %6s' "$mode" "$bytes" "$tokens" \
        "$sdc_mbps" "$hf_mbps" "$sdc_tps" "$hf_tps" "${ratio/null/-}" "${match/null/-}")")
done

cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
cpus=$(getconf _NPROCESSORS_ONLN)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
hf_ver=null
[ -n "$PY" ] && hf_ver=$(json_str "$("$PY" -c 'import tokenizers; print(tokenizers.__version__)')")
if [ -n "${MAKELEVEL:-}" ]; then invocation="make bench"; else invocation="bench/run_tokenizer.sh"; fi

mkdir -p "$(dirname "$OUT")"
{
    echo "{"
    echo "  \"benchmark\": \"tokenizer\","
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"machine\": {\"cpu\": $(json_str "$cpu"), \"cpus_online\": $cpus, \"kernel\": $(json_str "$(uname -r)")},"
    echo "  \"command\": $(json_str "$invocation"),"
    echo "  \"settings\": {\"rounds\": $ROUNDS, \"text_mb\": $MB, \"threads\": 1, \"tokenizer\": $(json_str "$TOK"), \"text\": \"bench_tokenizer --make-text (mixed Chinese/English prompts)\"},"
    echo "  \"versions\": {\"sdc\": $(json_str "$commit"), \"cc\": $(json_str "$(${CC:-cc} --version 2>/dev/null | head -n1)"), \"tokenizers\": $hf_ver},"
    [ -n "$HF_REASON" ] && echo "  \"hf_reason\": $(json_str "$HF_REASON"),"
    echo "  \"ratio_meaning\": \"HF median time / sdc median time = sdc MB/s / HF MB/s; above 1: sdc faster\","
    echo "  \"results\": ["
    for ((i = 0; i < ${#results[@]}; i++)); do
        sep=","; ((i == ${#results[@]} - 1)) && sep=""
        echo "    ${results[i]}$sep"
    done
    echo "  ]"
    echo "}"
} >"$OUT"

echo
echo "Tokenizer throughput, one thread, medians over $ROUNDS processes each; ratio = sdc / HF speed"
printf '%-6s %9s %9s %10s %10s %12s %12s %7s %6s\n' mode bytes tokens sdc_MB/s hf_MB/s sdc_tok/s hf_tok/s ratio same
printf '%s\n' "${table[@]}"
echo "wrote $OUT"
