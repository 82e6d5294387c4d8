#!/usr/bin/env bash
# Transport benchmark: sdc's UCX active-message path (build/bench/bench_transport)
# against `ucx_perftest -t ucp_am_bw` moving the same tensor sizes between two
# processes of this host, with the same UCX_TLS, in one invocation. Processes
# alternate (sdc, perftest, then perftest, sdc, ...) so drift on a noisy
# machine hits both; ratios are taken between medians of the same run.
#
# Two UCX configurations, because UCX 1.13 picks different transports for them:
#   peer  endpoints with UCP_ERR_HANDLING_MODE_PEER, as sdc's workers run
#         (perftest -e). On one host UCX 1.13 then has only TCP loopback.
#   none  no error handling (sdc --no-failure-detection, plain perftest):
#         shared memory (sysv/posix) with cma rendezvous. Not what workers
#         use; it shows what the same code does on a faster transport.
#
# Writes bench/results/transport_<UTC date>.json and prints a table; the
# goal is ratio = sdc / perftest >= 0.8. This script builds nothing
# (`make` first).
#
# Environment:
#   BUILD                  build directory (default build)
#   UCX_TLS                passed to both sides unchanged (default: UCX's own, "all")
#   SDC_BENCH_ROUNDS       processes per implementation, size and mode (default 3)
#   SDC_TRANSPORT_SIZES    sizes in MiB (default "1 4 16 64")
#   SDC_TRANSPORT_MODES    "peer none" (default) or one of them
#   SDC_TRANSPORT_MIB      MiB moved per timed run (default 1024): iters = this / size
#   SDC_TRANSPORT_WINDOW   sends in flight (default 32, ucx_perftest's ucp_am_bw default)
#   SDC_BENCH_OUT          result file (default bench/results/transport_<date>.json)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
BIN=$BUILD/bench/bench_transport
PERFTEST=${UCX_PERFTEST:-ucx_perftest}
ROUNDS=${SDC_BENCH_ROUNDS:-3}
SIZES=${SDC_TRANSPORT_SIZES:-1 4 16 64}
MODES=${SDC_TRANSPORT_MODES:-peer none}
PER_RUN_MIB=${SDC_TRANSPORT_MIB:-1024}
WINDOW=${SDC_TRANSPORT_WINDOW:-32}
DATE=$(date -u +%Y-%m-%d)
OUT=${SDC_BENCH_OUT:-bench/results/transport_$DATE.json}

die() { echo "transport: $*" >&2; exit 1; }

[ -x "$BIN" ] || die "$BIN not found; run 'make' first"
command -v "$PERFTEST" >/dev/null || die "$PERFTEST not found (Debian package ucx-utils)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "SDC_BENCH_ROUNDS must be a positive integer"
for m in $MODES; do [[ $m == peer || $m == none ]] || die "unknown mode '$m' (peer, none)"; done

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/ }
    printf '"%s"' "$s"
}
json_num() { grep -o "\"$2\": *[-0-9.eE+]*" <<<"$1" | head -n1 | sed 's/.*: *//'; }
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a / b }'; }
join() { local IFS=,; echo "$*"; }

iters_for() { # size in MiB -> timed iterations
    local n=$((PER_RUN_MIB / $1))
    ((n < 8)) && n=8
    echo "$n"
}
warmup_for() { local n=$(($1 / 10)); ((n < 2)) && n=2; echo "$n"; }

run_sdc() { # mode bytes iters warmup -> MiB/s
    local flag=()
    [ "$1" = none ] && flag=(--no-failure-detection)
    local line
    line=$("$BIN" --size "$2" --iters "$3" --warmup "$4" --window "$WINDOW" "${flag[@]}" --json) ||
        die "bench_transport failed (mode $1, size $2)"
    json_num "$line" mib_s
}

port_listening() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

# One server + client pair; fails (status 1) when the client could not connect.
perftest_once() { # mode bytes iters warmup -> perftest's client output
    local flag=() port spid out rc=0
    [ "$1" = peer ] && flag=(-e)
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 20000))
        port_listening "$port" || break
    done
    "$PERFTEST" -p "$port" "${flag[@]}" >/dev/null 2>&1 &
    spid=$!
    for _ in $(seq 200); do
        port_listening "$port" && break
        sleep 0.05
    done
    out=$("$PERFTEST" localhost -p "$port" -t ucp_am_bw -s "$2" -n "$3" -w "$4" -O "$WINDOW" \
        "${flag[@]}" -f 2>&1) || rc=$?
    if ((rc)); then
        kill "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        echo "$out"
        return 1
    fi
    wait "$spid" || true
    echo "$out"
}

run_perftest() { # mode bytes iters warmup -> MiB/s (perftest's "MB/s" are MiB/s)
    local out bw try
    # The server may lose the race for its port on a busy machine: retry.
    for try in 1 2 3; do
        out=$(perftest_once "$@") && break
        grep -q "connect() failed" <<<"$out" && ((try < 3)) && continue
        die "ucx_perftest failed: $out"
    done
    # Final line: iterations, latency (50%, avg, overall), bandwidth (avg, overall), rates.
    bw=$(awk 'NF == 8 && $1 ~ /^[0-9]+$/ { bw = $6 } END { print bw }' <<<"$out")
    [ -n "$bw" ] || die "no bandwidth in ucx_perftest output: $out"
    echo "$bw"
}

results=()
table=()
for mode in $MODES; do
    for mib in $SIZES; do
        bytes=$((mib * 1048576))
        iters=$(iters_for "$mib")
        warm=$(warmup_for "$iters")
        sdc_runs=()
        pt_runs=()
        round_ratios=()
        for ((r = 1; r <= ROUNDS; r++)); do
            if ((r % 2)); then order="sdc perftest"; else order="perftest sdc"; fi
            for impl in $order; do
                echo "transport: $mode ${mib} MiB x $iters round $r/$ROUNDS: $impl" >&2
                if [ "$impl" = sdc ]; then
                    sdc_runs+=("$(run_sdc "$mode" "$bytes" "$iters" "$warm")")
                else
                    pt_runs+=("$(run_perftest "$mode" "$bytes" "$iters" "$warm")")
                fi
            done
            round_ratios+=("$(ratio "${sdc_runs[-1]}" "${pt_runs[-1]}")")
        done
        sdc_med=$(median "${sdc_runs[@]}")
        pt_med=$(median "${pt_runs[@]}")
        rat=$(ratio "$sdc_med" "$pt_med")
        results+=("{\"mode\": \"$mode\", \"size_mib\": $mib, \"size_bytes\": $bytes, \"iters\": $iters, \"warmup\": $warm, \"sdc_mib_s\": $sdc_med, \"perftest_mib_s\": $pt_med, \"ratio\": $rat, \"ratio_per_round\": [$(join "${round_ratios[@]}")], \"sdc_runs_mib_s\": [$(join "${sdc_runs[@]}")], \"perftest_runs_mib_s\": [$(join "${pt_runs[@]}")]}")
        table+=("$(printf '%-5s %8s %7s %12s %14s %7s' "$mode" "$mib" "$iters" "$sdc_med" "$pt_med" "$rat")")
    done
done

# --- result file --------------------------------------------------------------
cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
cpus=$(getconf _NPROCESSORS_ONLN)
mem_gb=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
ucx_ver=$(ucx_info -v 2>/dev/null | sed -n 's/^# Version //p' | head -n1)
ucx_pkg=$(dpkg-query -W -f='${Package} ${Version}' libucx0 2>/dev/null || true)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
if [ -n "${MAKELEVEL:-}" ]; then invocation="make bench"; else invocation="bench/transport.sh"; fi
sdc_cmd="$BIN --size BYTES --iters N --warmup W --window $WINDOW [--no-failure-detection] --json"
pt_cmd="$PERFTEST -p PORT [-e] &  $PERFTEST localhost -p PORT -t ucp_am_bw -s BYTES -n N -w W -O $WINDOW [-e] -f"

mkdir -p "$(dirname "$OUT")"
{
    echo "{"
    echo "  \"benchmark\": \"transport\","
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"machine\": {\"cpu\": $(json_str "$cpu"), \"cpus_online\": $cpus, \"mem_gb\": $mem_gb, \"kernel\": $(json_str "$(uname -r)")},"
    echo "  \"ucx\": {\"version\": $(json_str "$ucx_ver"), \"package\": $(json_str "$ucx_pkg"), \"UCX_TLS\": $(json_str "${UCX_TLS:-(unset: all)}")},"
    echo "  \"command\": $(json_str "$invocation"),"
    echo "  \"commands\": {\"sdc\": $(json_str "$sdc_cmd"), \"perftest\": $(json_str "$pt_cmd")},"
    echo "  \"settings\": {\"rounds\": $ROUNDS, \"window\": $WINDOW, \"recv_bufs\": 4, \"mib_per_run\": $PER_RUN_MIB, \"modes\": $(json_str "$MODES")},"
    echo "  \"versions\": {\"sdc\": $(json_str "$commit")},"
    echo "  \"goal\": \"ratio = sdc_mib_s / perftest_mib_s >= 0.8\","
    echo "  \"results\": ["
    for ((i = 0; i < ${#results[@]}; i++)); do
        sep=","; ((i == ${#results[@]} - 1)) && sep=""
        echo "    ${results[i]}$sep"
    done
    echo "  ]"
    echo "}"
} >"$OUT"

echo
echo "UCX AM bandwidth between two processes, MiB/s, median of $ROUNDS; ratio = sdc / ucx_perftest"
printf '%-5s %8s %7s %12s %14s %7s\n' mode size_MiB iters sdc perftest ratio
printf '%s\n' "${table[@]}"
echo "wrote $OUT"
