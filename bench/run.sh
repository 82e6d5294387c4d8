#!/usr/bin/env bash
# The benchmark behind `make bench` (which builds first; this script builds
# nothing): one DiT forward, sdc's CPU backend against PyTorch running the
# diffusers module on the same weights and thread count, in one run.
# Processes alternate (sdc, torch, torch, sdc, ...) so drift on a noisy
# machine hits both; the ratio is taken between medians of the same run.
# Writes bench/results/dit_forward_<UTC date>.json and prints a table.
# bench/README.md explains the fields.
#
# Environment:
#   BUILD               build directory (default build)
#   SDC_PYTHON          Python with torch + diffusers (default: the goldens venv)
#   SDC_BENCH_ROUNDS    processes per implementation and case (default 3)
#   SDC_BENCH_THREADS   thread counts (default "1 2")
#   SDC_BENCH_CONFIGS   configs to run (default "tiny mid")
#   SDC_BENCH_OUT       result file (default bench/results/dit_forward_<date>.json)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
BIN=$BUILD/bench/bench_dit
MODELS=$BUILD/bench-models
ROUNDS=${SDC_BENCH_ROUNDS:-3}
THREADS_LIST=${SDC_BENCH_THREADS:-1 2}
CONFIGS=${SDC_BENCH_CONFIGS:-tiny mid}
TORCH_SCRIPT=tools/goldens/bench_dit_torch.py
DATE=$(date -u +%Y-%m-%d)
OUT=${SDC_BENCH_OUT:-bench/results/dit_forward_$DATE.json}

# name | model dir | latent H | W | LLM tokens | ByT5 tokens | reps | warmup
# Text masks are all valid, so trimming padded tokens (sdc's default) does not
# change the work: both sides run the same token counts.
config_line() {
    case $1 in
    tiny) echo "tests/data/tiny-hunyuanimage/transformer 8 12 40 16 30 10" ;;
    mid) echo "$MODELS/mid 32 32 224 32 3 1" ;;
    *) return 1 ;;
    esac
}

die() { echo "bench: $*" >&2; exit 1; }

[ -x "$BIN" ] || die "$BIN not found; run 'make bench' (it builds first)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "SDC_BENCH_ROUNDS must be a positive integer"

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/ }
    printf '"%s"' "$s"
}

# Number or string-free array fields of one-line JSON written by the two
# benchmark programs.
json_num() { grep -o "\"$2\": *[-0-9.eE+]*" <<<"$1" | head -n1 | sed 's/.*: *//'; }
json_list() { grep -o "\"$2\": *\[[^]]*\]" <<<"$1" | head -n1 | sed 's/.*\[//; s/\]//; s/,/ /g'; }

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
cell() { local v; v=$(json_num "$1" "$2"); echo "${v:--}"; } # a table cell, "-" if absent
maxof() { printf '%s\n' "$@" | sort -g | tail -n1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a / b }'; }

# Other work on the machine during a case, as a fraction of all its CPUs:
# (busy CPU time from /proc/stat - CPU time of this script's children) /
# (wall time x CPUs). Timings taken while it is high are not worth much.
TIMES_TMP=$(mktemp)
trap 'rm -f "$TIMES_TMP"' EXIT
machine_busy_s() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}
children_cpu() { # sets CHILD_CPU; $(times) would time a subshell, not this shell
    times >"$TIMES_TMP"
    CHILD_CPU=$(tail -n1 "$TIMES_TMP" | awk '{ for (i = 1; i <= NF; i++) { f = $i; sub(/s$/, "", f); split(f, p, "m"); t += p[1] * 60 + p[2] } printf "%.2f\n", t }')
}
now_s() { date +%s.%N; }
background_fraction() { # busy0 busy1 ours0 ours1 wall0 wall1
    awk -v b0="$1" -v b1="$2" -v o0="$3" -v o1="$4" -v w0="$5" -v w1="$6" \
        -v c="$(getconf _NPROCESSORS_ONLN)" 'BEGIN {
            f = ((b1 - b0) - (o1 - o0)) / ((w1 - w0) * c)
            printf "%.2f\n", f < 0 ? 0 : f }'
}

# --- Python with torch + diffusers ------------------------------------------
PY=""
TORCH_REASON=""
if [ -n "${SDC_PYTHON:-}" ]; then
    PY=$SDC_PYTHON
elif [ -x /work/venv-goldens/v/bin/python ]; then
    PY=/work/venv-goldens/v/bin/python
else
    PY=tools/goldens/.venv/bin/python
fi
if [ ! -x "$PY" ] && ! command -v "$PY" >/dev/null 2>&1; then
    TORCH_REASON="no Python at $PY (set SDC_PYTHON to one with torch and diffusers)"
    PY=""
elif ! "$PY" -c 'import torch, diffusers, numpy' >/dev/null 2>&1; then
    TORCH_REASON="$PY cannot import torch, diffusers and numpy"
    PY=""
fi
[ -n "$TORCH_REASON" ] && echo "bench: torch side skipped: $TORCH_REASON" >&2

# --- models -----------------------------------------------------------------
ensure_model() { # config -> 0 when its transformer dir is usable
    local dir=$1 cfg=$2
    [ -f "$dir/config.json" ] && return 0
    [ "$cfg" = tiny ] && { echo "bench: $dir missing (tests/data not generated)" >&2; return 1; }
    [ -n "$PY" ] || { echo "bench: cannot create $dir without Python ($TORCH_REASON)" >&2; return 1; }
    mkdir -p "$MODELS"
    echo "bench: creating the $cfg model in $dir (once; cached)" >&2
    "$PY" "$TORCH_SCRIPT" make-model --out "$dir" --config "$cfg" >&2
}

# --- runs -------------------------------------------------------------------
results=()   # one JSON object per (config, threads)
table=()
skipped=()

# Accumulators of the current case, keyed by implementation (sdc, torch):
# the processes' JSON lines (comma-joined), their wall and CPU times per
# forward and peak RSS values (space-joined).
declare -A RUNS TIMES CPUS RSS

run_one() { # impl args... : one process, its JSON line folded into the accumulators
    local impl=$1 line
    shift
    if [ "$impl" = sdc ]; then
        line=$("$BIN" "$@" --json) || die "bench_dit failed: $BIN $*"
    else
        line=$("$PY" "$TORCH_SCRIPT" run "$@" --json) || die "$TORCH_SCRIPT failed: run $*"
    fi
    RUNS[$impl]+="${RUNS[$impl]:+,}$line"
    TIMES[$impl]+=" $(json_list "$line" times_s)"
    CPUS[$impl]+=" $(json_list "$line" cpu_times_s)"
    RSS[$impl]+=" $(json_num "$line" peak_rss_mb)"
    LAST_MEDIAN=$(json_num "$line" median_s)
}

summary() { # impl -> JSON object over all its processes in this case
    local impl=$1 tm cp rs
    read -ra tm <<<"${TIMES[$impl]}"
    read -ra cp <<<"${CPUS[$impl]}"
    read -ra rs <<<"${RSS[$impl]}"
    printf '{"median_s": %s, "min_s": %s, "cpu_median_s": %s, "samples": %d, "peak_rss_mb": %s, "out_mean_abs": %s, "runs": [%s]}' \
        "$(median "${tm[@]}")" "$(printf '%s\n' "${tm[@]}" | sort -g | head -n1)" \
        "$(median "${cp[@]}")" "${#tm[@]}" "$(maxof "${rs[@]}")" \
        "$(json_num "${RUNS[$impl]}" out_mean_abs)" "${RUNS[$impl]}"
}

bench_case() { # config threads dir H W text text2 reps warmup
    local cfg=$1 t=$2 dir=$3 h=$4 w=$5 n1=$6 n2=$7 reps=$8 warm=$9
    local args=(--model-dir "$dir" --height "$h" --width "$w" --text "$n1" --text2 "$n2"
                --threads "$t" --reps "$reps" --warmup "$warm")
    local impls="sdc" order r impl sdc_m torch_m round_ratios=() busy0 ours0 wall0 bg
    [ -n "$PY" ] && impls="sdc torch"
    RUNS=() TIMES=() CPUS=() RSS=()
    children_cpu
    busy0=$(machine_busy_s) ours0=$CHILD_CPU wall0=$(now_s)
    for ((r = 1; r <= ROUNDS; r++)); do
        order=$impls
        ((r % 2)) || order=$(echo "$impls" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
        for impl in $order; do
            echo "bench: $cfg threads=$t round $r/$ROUNDS: $impl" >&2
            run_one "$impl" "${args[@]}"
            if [ "$impl" = sdc ]; then sdc_m=$LAST_MEDIAN; else torch_m=$LAST_MEDIAN; fi
        done
        [ -n "$PY" ] && round_ratios+=("$(ratio "$torch_m" "$sdc_m")")
    done
    children_cpu
    bg=$(background_fraction "$busy0" "$(machine_busy_s)" "$ours0" "$CHILD_CPU" "$wall0" "$(now_s)")

    local sdc_json torch_json=null rat=null rat_cpu=null rr=null rr_med=null
    sdc_json=$(summary sdc)
    if [ -n "$PY" ]; then
        torch_json=$(summary torch)
        rat=$(ratio "$(json_num "$torch_json" median_s)" "$(json_num "$sdc_json" median_s)")
        rat_cpu=$(ratio "$(json_num "$torch_json" cpu_median_s)" "$(json_num "$sdc_json" cpu_median_s)")
        rr="[$(IFS=,; echo "${round_ratios[*]}")]"
        rr_med=$(median "${round_ratios[@]}")
    fi
    results+=("{\"config\": \"$cfg\", \"model_dir\": $(json_str "$dir"), \"latent\": [$h, $w], \"image_tokens\": $((h * w)), \"text_tokens\": [$n1, $n2], \"threads\": $t, \"background_cpu\": $bg, \"ratio\": $rat, \"ratio_cpu\": $rat_cpu, \"ratio_per_round\": $rr, \"ratio_per_round_median\": $rr_med, \"sdc\": $sdc_json, \"torch\": $torch_json}")
    table+=("$(printf '%-5s %7s %8s %9s %9s %6s %6s %7s %7s %10s %10s %5s' "$cfg" "$t" \
        "$((h * w))+$((n1 + n2))" "$(cell "$sdc_json" median_s)" "$(cell "$torch_json" median_s)" \
        "${rat/null/-}" "${rat_cpu/null/-}" \
        "$(cell "$sdc_json" peak_rss_mb)" "$(cell "$torch_json" peak_rss_mb)" \
        "$(cell "$sdc_json" out_mean_abs)" "$(cell "$torch_json" out_mean_abs)" "$bg")")
}

for cfg in $CONFIGS; do
    line=$(config_line "$cfg") || die "unknown config '$cfg' (known: tiny mid)"
    read -r dir h w n1 n2 reps warm <<<"$line"
    if ! ensure_model "$dir" "$cfg"; then
        skipped+=("{\"config\": \"$cfg\", \"reason\": $(json_str "model $dir unavailable")}")
        continue
    fi
    for t in $THREADS_LIST; do
        bench_case "$cfg" "$t" "$dir" "$h" "$w" "$n1" "$n2" "$reps" "$warm"
    done
done

# --- result file --------------------------------------------------------------
cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
cpus=$(getconf _NPROCESSORS_ONLN)
mem_gb=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
cc_ver=$(${CC:-cc} --version 2>/dev/null | head -n1)
gomp_ver=$(dpkg-query -W -f='${Version}' libgomp1 2>/dev/null || echo unknown)
torch_ver=null
[ -n "$PY" ] && torch_ver=$("$PY" -c 'import json, platform, torch, diffusers, numpy
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                  "diffusers": diffusers.__version__, "numpy": numpy.__version__}))')
if [ -n "${MAKELEVEL:-}" ]; then invocation="make bench"; else invocation="bench/run.sh"; fi

mkdir -p "$(dirname "$OUT")"
{
    echo "{"
    echo "  \"benchmark\": \"dit_forward\","
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"machine\": {\"cpu\": $(json_str "$cpu"), \"cpus_online\": $cpus, \"mem_gb\": $mem_gb, \"kernel\": $(json_str "$(uname -r)")},"
    echo "  \"command\": $(json_str "$invocation"),"
    echo "  \"settings\": {\"rounds\": $ROUNDS, \"threads\": [$(echo "$THREADS_LIST" | tr ' ' ',')], \"configs\": $(json_str "$CONFIGS")},"
    echo "  \"versions\": {\"sdc\": $(json_str "$commit"), \"cc\": $(json_str "$cc_ver"), \"libgomp\": $(json_str "$gomp_ver"), \"torch_side\": $torch_ver},"
    if [ -n "$PY" ]; then echo "  \"torch\": {\"python\": $(json_str "$PY")},"
    else echo "  \"torch\": null, \"torch_reason\": $(json_str "$TORCH_REASON"),"; fi
    echo "  \"skipped\": [$(IFS=,; echo "${skipped[*]}")],"
    echo "  \"results\": ["
    for ((i = 0; i < ${#results[@]}; i++)); do
        sep=","; ((i == ${#results[@]} - 1)) && sep=""
        echo "    ${results[i]}$sep"
    done
    echo "  ]"
    echo "}"
} >"$OUT"

echo
echo "DiT forward, median seconds over $ROUNDS processes each; ratio = torch / sdc (>1: sdc faster)"
printf '%-5s %7s %8s %9s %9s %6s %6s %7s %7s %10s %10s %5s\n' config threads tokens sdc_s torch_s ratio \
    r_cpu sdc_MB torch_MB "sdc_|out|" "torch_|out|" other
printf '%s\n' "${table[@]}"
echo "r_cpu: the same ratio of CPU time per forward (all threads; counts spin-waiting too)"
echo "other: CPU share taken by other processes during the case; above ~0.1 the timings are unreliable"
[ -n "$TORCH_REASON" ] && echo "torch: skipped ($TORCH_REASON)"
echo "wrote $OUT"

# Cluster benchmarks: coordinator overhead and pipeline efficiency (bench/cluster.sh).
bench/cluster.sh all || echo "bench: a cluster benchmark did not run (see above)"
# Fault tolerance: kill -9 of a DiT stage -> the first requeued job's next step.
bench/recovery.sh || echo "bench: the recovery benchmark did not run (see above)"

# Text side and transport: tokenizer vs HF tokenizers, LLM encoder vs
# transformers, UCX path vs ucx_perftest.
bench/run_tokenizer.sh || echo "bench: the tokenizer benchmark did not run (see above)"
bench/run_llm.sh || echo "bench: the LLM encoder benchmark did not run (see above)"
bench/transport.sh || echo "bench: the transport benchmark did not run (see above)"

# HTTP gateway overhead: submissions and status reads per second (wrk).
bench/gateway.sh || echo "bench: the gateway benchmark did not run (see above)"
