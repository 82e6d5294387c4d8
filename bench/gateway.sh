#!/usr/bin/env bash
# Gateway overhead: requests/s of sdc-gateway measured with wrk (keep-alive
# connections, Lua scripts in bench/wrk/), against a throwaway redis-server
# on a unix socket and no cluster at all ("null stages": nothing consumes
# the queue, so a submission costs the gateway and Redis only).
#   submit   POST /v1/jobs            (bench/wrk/submit.lua)
#   status   GET /v1/jobs/{id}        (bench/wrk/get.lua, one queued job)
# Each case runs SDC_BENCH_ROUNDS times; the result is the median. Rate
# limits are off (--rate 0). Everything shares the machine: wrk, the gateway
# and redis-server; the result records how busy the rest of the machine was.
# Goal: >= 5000 submissions/s on the 2-core development machine.
# Writes bench/results/gateway_<UTC date>.json and prints a table. Builds
# nothing (`make` first); needs wrk (tools/deps.sh --bench installs it).
#
# Environment:
#   BUILD                  build directory (default build)
#   SDC_BENCH_ROUNDS       runs per case (default 3)
#   SDC_GATEWAY_SECONDS    seconds per run (default 10)
#   SDC_GATEWAY_CONNS      wrk connections (default 16)
#   SDC_GATEWAY_THREADS    wrk threads (default 2)
#   SDC_BENCH_OUT          result file (default bench/results/gateway_<date>.json)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
GW=$BUILD/bin/sdc-gateway
ROUNDS=${SDC_BENCH_ROUNDS:-3}
SECONDS_PER_RUN=${SDC_GATEWAY_SECONDS:-10}
CONNS=${SDC_GATEWAY_CONNS:-16}
THREADS=${SDC_GATEWAY_THREADS:-2}
DATE=$(date -u +%Y-%m-%d)
OUT=${SDC_BENCH_OUT:-bench/results/gateway_$DATE.json}

die() { echo "gateway bench: $*" >&2; exit 1; }
[ -x "$GW" ] || die "$GW not found; run 'make' first"
command -v wrk >/dev/null || die "wrk not found (tools/deps.sh --bench installs it)"
command -v redis-server >/dev/null || die "redis-server not found (make deps)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "SDC_BENCH_ROUNDS must be a positive integer"

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# CPU time of the whole machine and of the processes this script started,
# in seconds: the difference is other work during the run.
machine_busy_s() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}
proc_cpu_s() { # pids...
    local p t=0
    for p in "$@"; do
        t=$(awk -v hz="$(getconf CLK_TCK)" -v t="$t" '{ printf "%.2f\n", t + ($14 + $15) / hz }' "/proc/$p/stat")
    done
    echo "$t"
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sdc-gwbench-XXXXXX")
RPID="" GPID=""
cleanup() {
    [ -n "$GPID" ] && kill "$GPID" 2>/dev/null && wait "$GPID" 2>/dev/null
    [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

redis-server --port 0 --unixsocket "$TMP/redis.sock" --unixsocketperm 700 --save "" \
    --appendonly no --dir "$TMP" --loglevel warning >"$TMP/redis.log" 2>&1 &
RPID=$!
for _ in $(seq 1 200); do [ -S "$TMP/redis.sock" ] && break; sleep 0.02; done
[ -S "$TMP/redis.sock" ] || die "redis-server did not start: $(cat "$TMP/redis.log")"
export SDC_BENCH_TOKEN="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$SDC_BENCH_TOKEN" >"$TMP/tokens"
chmod 600 "$TMP/tokens"
GW_ARGS=(--redis "redis+unix://$TMP/redis.sock" -t "$TMP/tokens" --rate 0 -p 0
         --port-file "$TMP/port" --log-level warn)
"$GW" "${GW_ARGS[@]}" >"$TMP/gateway.log" 2>&1 &
GPID=$!
for _ in $(seq 1 200); do [ -s "$TMP/port" ] && break; sleep 0.02; done
[ -s "$TMP/port" ] || die "sdc-gateway did not start: $(cat "$TMP/gateway.log")"
URL="http://127.0.0.1:$(cat "$TMP/port")"
SDC_BENCH_JOB=$(curl -s -X POST "$URL/v1/jobs" -H "Authorization: Bearer $SDC_BENCH_TOKEN" \
    -H 'Content-Type: application/json' -d '{"prompt": "status probe", "size": "1024x1024"}' |
    sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
[ -n "$SDC_BENCH_JOB" ] || die "could not submit the status probe job"
export SDC_BENCH_JOB

results=()
table=()
run_case() { # name path script expected-status
    local name=$1 path=$2 script=$3 r rates=() lats=() p99s=() bad=0 errs=0
    local busy0 ours0 t0 busy1 ours1 t1 bg out
    busy0=$(machine_busy_s) ours0=$(proc_cpu_s "$GPID" "$RPID") t0=$(date +%s.%N)
    local wrk_cpu=0
    for ((r = 1; r <= ROUNDS; r++)); do
        echo "gateway bench: $name round $r/$ROUNDS (${SECONDS_PER_RUN} s)" >&2
        out=$( { /usr/bin/time -f 'cpu %U %S' wrk -t"$THREADS" -c"$CONNS" -d"${SECONDS_PER_RUN}s" \
            --latency -s "bench/wrk/$script" "$URL$path"; } 2>&1)
        rates+=("$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")")
        lats+=("$(awk '/^    Latency/ { print $2 }' <<<"$out")")
        p99s+=("$(awk '$1 == "99%" { print $2 }' <<<"$out")")
        bad=$((bad + $(awk '/Non-2xx or 3xx responses:/ { n = $5 } END { print n + 0 }' <<<"$out")))
        errs=$((errs + $(awk '/Socket errors:/ { gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) s += $i } END { print s + 0 }' <<<"$out")))
        wrk_cpu=$(awk -v a="$wrk_cpu" '/^cpu / { printf "%.2f\n", a + $2 + $3 }' <<<"$out")
    done
    busy1=$(machine_busy_s) ours1=$(proc_cpu_s "$GPID" "$RPID") t1=$(date +%s.%N)
    bg=$(awk -v b0="$busy0" -v b1="$busy1" -v o0="$ours0" -v o1="$ours1" -v w="$wrk_cpu" \
        -v t0="$t0" -v t1="$t1" -v c="$(getconf _NPROCESSORS_ONLN)" \
        'BEGIN { f = ((b1 - b0) - (o1 - o0) - w) / ((t1 - t0) * c); printf "%.2f\n", f < 0 ? 0 : f }')
    local med
    med=$(median "${rates[@]}")
    results+=("{\"case\": \"$name\", \"request\": $(json_str "$path"), \"wrk_script\": \"bench/wrk/$script\", \"requests_per_s\": $med, \"requests_per_s_runs\": [$(IFS=,; echo "${rates[*]}")], \"latency_avg_runs\": [$(printf '"%s",' "${lats[@]}" | sed 's/,$//')], \"latency_p99_runs\": [$(printf '"%s",' "${p99s[@]}" | sed 's/,$//')], \"non_2xx\": $bad, \"socket_errors\": $errs, \"background_cpu\": $bg}")
    table+=("$(printf '%-8s %12s %10s %10s %8s %6s' "$name" "$med" "${lats[0]}" "${p99s[0]}" "$bad" "$bg")")
}

run_case submit /v1/jobs submit.lua
run_case status "/v1/jobs/$SDC_BENCH_JOB" get.lua

queued=$(curl -s "$URL/metrics" -H "Authorization: Bearer $SDC_BENCH_TOKEN" |
    awk '$1 == "sdc_queue_waiting" { print $2 }')
cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
mkdir -p "$(dirname "$OUT")"
{
    echo "{"
    echo "  \"benchmark\": \"gateway\","
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"machine\": {\"cpu\": $(json_str "$cpu"), \"cpus_online\": $(getconf _NPROCESSORS_ONLN), \"kernel\": $(json_str "$(uname -r)"), \"loadavg_at_end\": $(json_str "$(cut -d' ' -f1-3 /proc/loadavg)")},"
    echo "  \"command\": $(json_str "bench/gateway.sh (wrk -t$THREADS -c$CONNS -d${SECONDS_PER_RUN}s --latency -s bench/wrk/<script> <url>; sdc-gateway ${GW_ARGS[*]//$TMP/TMP})"),"
    echo "  \"versions\": {\"sdc\": $(json_str "$commit"), \"wrk\": $(json_str "$(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)"), \"redis\": $(json_str "$(redis-server --version | cut -d' ' -f3)"), \"libmicrohttpd\": $(json_str "$(dpkg-query -W -f='${Version}' libmicrohttpd12 2>/dev/null || echo unknown)")},"
    echo "  \"settings\": {\"rounds\": $ROUNDS, \"seconds\": $SECONDS_PER_RUN, \"connections\": $CONNS, \"wrk_threads\": $THREADS, \"rate_limit\": \"off\", \"workers\": 0},"
    echo "  \"jobs_queued_at_end\": ${queued:-null},"
    echo "  \"goal\": {\"submit_requests_per_s\": 5000},"
    echo "  \"results\": ["
    for ((i = 0; i < ${#results[@]}; i++)); do
        sep=","; ((i == ${#results[@]} - 1)) && sep=""
        echo "    ${results[i]}$sep"
    done
    echo "  ]"
    echo "}"
} >"$OUT"

echo
echo "sdc-gateway, median requests/s over $ROUNDS runs of ${SECONDS_PER_RUN} s (wrk -t$THREADS -c$CONNS)"
printf '%-8s %12s %10s %10s %8s %6s\n' case req/s lat_avg lat_p99 non_2xx other
printf '%s\n' "${table[@]}"
echo "other: CPU share of other processes during the case; above ~0.1 the figures are low"
echo "wrote $OUT"
