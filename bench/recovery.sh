#!/usr/bin/env bash
# Recovery benchmark (after `make`; this script builds nothing): how long a
# cluster takes from a DiT stage's death to the first requeued job's next
# step. Goal: < 5 s.
#
# Each round starts a cluster on a scratch redis-server (unix socket,
# append-only file as deploy/local.sh runs it): a coordinator, a text
# encoder, two pipelines of two DiT stages (the tiny distilled test model,
# real compute) and a VAE node. It submits jobs long enough to be running
# (16x16, SDC_RECOVERY_STEPS steps), waits until every job is past step 5,
# then kills the last stage of pipeline p0 with SIGKILL (nothing restarts
# it) and reads, from the jobs' event streams (timestamps of the Redis
# server's clock, the same host's as the kill's):
#
#   detect_s   kill -> the first job requeued (state queued, attempt 2)
#   recover_s  kill -> the first step a requeued job completes on the
#              healthy pipeline (the goal's figure)
#
#   bench/recovery.sh
#
# Writes bench/results/cluster_recovery_<UTC date>.json and prints a table.
#
# Environment:
#   BUILD                 build directory (default build)
#   SDC_BENCH_ROUNDS      rounds, median reported (default 5)
#   SDC_RECOVERY_JOBS     jobs per round (default 8)
#   SDC_RECOVERY_STEPS    steps per job (default 400)
#   SDC_RECOVERY_ARGS     extra sdc-worker / sdc-coordinator arguments, e.g.
#                         "--dead-after 2" (default none)
#   SDC_RECOVERY_KEEP     1: keep the scratch directory (cluster files, logs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/bin
ROUNDS=${SDC_BENCH_ROUNDS:-5}
JOBS=${SDC_RECOVERY_JOBS:-8}
STEPS=${SDC_RECOVERY_STEPS:-400}
read -ra EXTRA <<<"${SDC_RECOVERY_ARGS:-}"
DATE=$(date -u +%Y-%m-%d)
OUT=bench/results/cluster_recovery_$DATE.json
MODEL=$ROOT/tests/data/tiny-hunyuanimage-distilled
EMBEDS=$ROOT/tests/data/goldens/pipeline_distilled_64x96.safetensors
T=$(mktemp -d)
PIDS=()

die() { echo "recovery-bench: $*" >&2; exit 1; }
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${SDC_RECOVERY_KEEP:-}" ]; then echo "recovery-bench: kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ -x "$BIN/sdc-worker" ] || die "$BIN/sdc-worker not found; run make first"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "SDC_BENCH_ROUNDS must be a positive integer"
command -v redis-server >/dev/null || die "redis-server not found (make deps installs it)"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
now_ms() { date +%s%3N; }

SOCK=$T/redis.sock
redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" --appendonly yes \
    --appendfsync everysec --dir "$T" --loglevel warning >"$T/redis.log" 2>&1 &
PIDS+=($!)
disown $! # killed by cleanup; no job report
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || die "redis-server did not start: $(tail -c 300 "$T/redis.log")"
rcli() { redis-cli -s "$SOCK" "$@"; }
REDIS="redis+unix://$SOCK"

round() { # N: one round; prints "detect_s recover_s requeued"
    local r=$1 prefix="r$1:" i
    cat >"$T/c$r.json" <<EOF
{"redis": "$REDIS", "prefix": "$prefix", "model": "$MODEL", "micro_batch": 4,
 "pipelines": [{"name": "p0", "stages": 2}, {"name": "p1", "stages": 2}],
 "nodes": [{"role": "coordinator"}, {"role": "text-encoder"},
           {"role": "dit-stage", "pipeline": "p0", "stage": 0}, {"role": "dit-stage", "pipeline": "p0", "stage": 1},
           {"role": "dit-stage", "pipeline": "p1", "stage": 0}, {"role": "dit-stage", "pipeline": "p1", "stage": 1},
           {"role": "vae"}]}
EOF
    local pids=()
    for i in 0 1 2 3 4 5 6; do
        local bin=sdc-worker
        [ "$i" = 0 ] && bin=sdc-coordinator
        "$BIN/$bin" --cluster "$T/c$r.json" --node "$i" --threads 1 "${EXTRA[@]}" \
            >"$T/c$r.$i.log" 2>&1 &
        pids+=($!)
        PIDS+=($!)
    done
    for i in $(seq 0 $((JOBS - 1))); do
        echo "{\"id\": \"j$i\", \"embeds\": \"$EMBEDS\", \"width\": 16, \"height\": 16, \"steps\": $STEPS, \"seed\": $i}"
    done >"$T/jobs$r.jsonl"
    "$BIN/sdc-submit" --redis "$REDIS" --prefix "$prefix" -p "$T/jobs$r.jsonl" -o "$T/out$r" -q ||
        die "submitting failed"
    local ok=0 least
    for _ in $(seq 1 600); do
        least=$(for i in $(seq 0 $((JOBS - 1))); do rcli HGET "${prefix}job:j$i" step; done | sort -n | head -n1)
        [ "${least:-0}" -ge 5 ] 2>/dev/null && { ok=1; break; }
        sleep 0.05
    done
    [ "$ok" = 1 ] || die "round $r: the jobs did not start: $(tail -n 3 "$T/c$r".*.log)"
    local t_kill
    t_kill=$(now_ms)
    kill -KILL "${pids[3]}"
    # Wait for every job to be past the kill on attempt 2 or to finish on attempt 1.
    local requeued="" detect="" recover=""
    for _ in $(seq 1 400); do
        requeued=$(for i in $(seq 0 $((JOBS - 1))); do
            [ "$(rcli HGET "${prefix}job:j$i" attempt)" -ge 2 ] && echo "j$i"
        done)
        if [ -n "$requeued" ]; then
            recover=$(for id in $requeued; do
                rcli XRANGE "${prefix}job:$id:events" - + | awk '
                    /^(state|attempt|step|steps|ts|error)$/ { k = $0; next }
                    k == "state" { s = $0 } k == "attempt" { a = $0 } k == "step" { st = $0 }
                    k == "ts" { if (a >= 2 && s == "denoising" && st > 0) { print $0; exit } }
                    { k = "" }'
            done | sort -n | head -n1)
            [ -n "$recover" ] && break
        fi
        sleep 0.05
    done
    [ -n "$recover" ] || die "round $r: no requeued job made a step: $(grep -h 'died\|requeued' "$T/c$r.0.log" | head -n 3)"
    detect=$(for id in $requeued; do
        rcli XRANGE "${prefix}job:$id:events" - + | awk '
            /^(state|attempt|step|steps|ts|error)$/ { k = $0; next }
            k == "state" { s = $0 } k == "attempt" { a = $0 }
            k == "ts" { if (a >= 2 && s == "queued") { print $0; exit } }
            { k = "" }'
    done | sort -n | head -n1)
    for i in "${pids[@]}"; do kill -KILL "$i" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    awk -v k="$t_kill" -v d="$detect" -v r="$recover" -v n="$(echo "$requeued" | wc -w)" \
        'BEGIN { printf "%.3f %.3f %d\n", (d - k) / 1000, (r - k) / 1000, n }'
}

runs=() detects=() recovers=()
for r in $(seq 1 "$ROUNDS"); do
    echo "recovery-bench: round $r/$ROUNDS" >&2
    read -r d rc n <<<"$(round "$r")"
    [ -n "${rc:-}" ] || die "round $r failed"
    detects+=("$d")
    recovers+=("$rc")
    runs+=("{\"detect_s\": $d, \"recover_s\": $rc, \"requeued_jobs\": $n}")
done
md=$(median "${detects[@]}")
mr=$(median "${recovers[@]}")

cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
if [ -n "${MAKELEVEL:-}" ]; then invocation="make bench"; else invocation="bench/recovery.sh"; fi
mkdir -p bench/results
{
    echo "{"
    echo "  \"benchmark\": \"cluster_recovery\","
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    printf '  "machine": {"cpu": %s, "cpus_online": %s, "mem_gb": %s, "kernel": %s, "load_avg_1m": %s}, "versions": {"sdc": %s, "redis": %s},\n' \
        "$(json_str "$cpu")" "$(getconf _NPROCESSORS_ONLN)" \
        "$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)" \
        "$(json_str "$(uname -r)")" "$(cut -d' ' -f1 /proc/loadavg)" "$(json_str "$commit")" \
        "$(json_str "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')")"
    echo "  \"command\": $(json_str "$invocation"),"
    echo "  \"settings\": {\"rounds\": $ROUNDS, \"jobs\": $JOBS, \"steps\": $STEPS, \"size\": \"16x16\", \"model\": \"tests/data/tiny-hunyuanimage-distilled\", \"pipelines\": 2, \"stages\": 2, \"killed\": \"the last stage of p0\", \"extra_args\": $(json_str "${SDC_RECOVERY_ARGS:-}")},"
    echo "  \"results\": {\"detect_s_median\": $md, \"recover_s_median\": $mr, \"goal_s\": 5, \"runs\": [$(IFS=,; echo "${runs[*]}")]}"
    echo "}"
} >"$OUT"
printf '%-8s %10s %10s\n' round detect_s recover_s
for r in $(seq 1 "$ROUNDS"); do printf '%-8s %10s %10s\n' "$r" "${detects[r - 1]}" "${recovers[r - 1]}"; done
printf '%-8s %10s %10s   (goal: recover_s < 5)\n' median "$md" "$mr"
echo "wrote $OUT"
