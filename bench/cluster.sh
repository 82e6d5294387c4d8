#!/usr/bin/env bash
# Cluster benchmarks (after `make`; this script builds nothing):
#
#   coordinator  jobs/s through the Redis job path with null stages
#                (build/bench/bench_coordinator) on a scratch redis-server,
#                without persistence and with deploy/local.sh's append-only
#                file. Goal: >= 2000 jobs/s.
#   pipeline     efficiency of one pipeline of S DiT stages (S = 2 and 4) when
#                the DiT compute is replaced by a timed sleep
#                (sdc-worker --synthetic-ms MS: each stage sleeps MS per sample
#                and step and still sends real-size activations): measured
#                step throughput / ideal once the ring is full, plus the fill
#                and drain time. Goal: >= 0.95.
#
#   bench/cluster.sh [coordinator | pipeline | all]      (default all)
#
# Writes bench/results/cluster_coordinator_<UTC date>.json and
# bench/results/cluster_pipeline_<UTC date>.json and prints a table.
# Everything it starts listens on 127.0.0.1, lives in a temporary directory
# and is stopped on exit.
#
# Environment:
#   BUILD                 build directory (default build)
#   SDC_BENCH_ROUNDS      runs per configuration, median reported (default 3)
#   SDC_COORD_JOBS        jobs per concurrent run (default 20000)
#   SDC_COORD_THREADS     "SUBMITTERS STAGES" client threads (default "4 4")
#   SDC_PIPE_STAGES       stage counts (default "2 4")
#   SDC_PIPE_MS           synthetic milliseconds per sample, stage and step (default 20)
#   SDC_PIPE_STEPS        steps per job (default 8)
#   SDC_PIPE_JOBS_PER_STAGE  jobs per run = this x S (default 8)
#   SDC_PIPE_MODEL        model whose shapes the activations have (default the tiny test model)
#   SDC_PIPE_SIZE         image size WxH (default 64x64)
#   SDC_PIPE_MPI          1: start the cluster under mpirun (default: plain processes)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/bin
ROUNDS=${SDC_BENCH_ROUNDS:-3}
DATE=$(date -u +%Y-%m-%d)
WHAT=${1:-all}
T=$(mktemp -d)
REDIS_PID=""
RUN_DIRS=()

die() { echo "cluster-bench: $*" >&2; exit 1; }

cleanup() {
    local r
    for r in "${RUN_DIRS[@]}"; do
        SDC_RUN_DIR=$r SDC_BIN=$BIN timeout 60 deploy/local.sh down --timeout 5 >/dev/null 2>&1 || true
    done
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

case $WHAT in coordinator | pipeline | all) ;; *) die "unknown benchmark '$WHAT' (coordinator, pipeline, all)" ;; esac
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "SDC_BENCH_ROUNDS must be a positive integer"
command -v redis-server >/dev/null || die "redis-server not found (make deps installs it)"

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/ }
    printf '"%s"' "$s"
}
json_num() { grep -o "\"$2\": *[-0-9.eE+]*" <<<"$1" | head -n1 | sed 's/.*: *//'; }
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

free_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 30000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

machine_json() {
    local cpu cpus mem_gb commit
    cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
    cpus=$(getconf _NPROCESSORS_ONLN)
    mem_gb=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
    printf '"machine": {"cpu": %s, "cpus_online": %s, "mem_gb": %s, "kernel": %s, "load_avg_1m": %s}, "versions": {"sdc": %s, "redis": %s}' \
        "$(json_str "$cpu")" "$cpus" "$mem_gb" "$(json_str "$(uname -r)")" \
        "$(cut -d' ' -f1 /proc/loadavg)" "$(json_str "$commit")" \
        "$(json_str "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')")"
}

invocation() { if [ -n "${MAKELEVEL:-}" ]; then echo "make bench"; else echo "bench/cluster.sh $WHAT"; fi; }

# --- coordinator -------------------------------------------------------------------

start_scratch_redis() { # extra redis-server arguments...
    RPORT=$(free_port) || die "no free port"
    mkdir -p "$T/redis"
    rm -rf "${T:?}/redis/"*
    redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$T/redis" --save '' "$@" >"$T/redis.log" 2>&1 &
    REDIS_PID=$!
    local i
    for ((i = 0; i < 50; i++)); do
        redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    die "redis-server did not start: $(tail -n 5 "$T/redis.log")"
}

stop_scratch_redis() {
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
}

bench_coordinator() {
    local prog=$BUILD/bench/bench_coordinator jobs=${SDC_COORD_JOBS:-20000} subs stages
    read -r subs stages <<<"${SDC_COORD_THREADS:-4 4}"
    [ -x "$prog" ] || die "$prog not found; run 'make' first"
    local cfgs=("none:--appendonly no" "aof_everysec:--appendonly yes --appendfsync everysec")
    local results=() table=() cfg name args r line runs rates cpus serial
    for cfg in "${cfgs[@]}"; do
        name=${cfg%%:*}
        args=${cfg#*:}
        runs=() rates=() cpus=() serial=()
        for ((r = 1; r <= ROUNDS; r++)); do
            # shellcheck disable=SC2086 # redis-server arguments
            start_scratch_redis $args
            echo "cluster-bench: coordinator, persistence $name, round $r/$ROUNDS" >&2
            line=$("$prog" --redis "redis://127.0.0.1:$RPORT" --jobs "$jobs" --submitters "$subs" \
                --stages "$stages" --json) || die "bench_coordinator failed"
            stop_scratch_redis
            runs+=("$line")
            rates+=("$(json_num "$(sed 's/.*"concurrent": {//' <<<"$line")" jobs_per_s)")
            cpus+=("$(json_num "$(sed 's/.*"concurrent": {//' <<<"$line")" redis_cpu_us_per_job)")
            serial+=("$(json_num "$(sed 's/.*"serial": {//' <<<"$line")" ms_per_job)")
        done
        local med cpu_med ser_med bound
        med=$(median "${rates[@]}")
        cpu_med=$(median "${cpus[@]}")
        ser_med=$(median "${serial[@]}")
        bound=$(awk -v u="$cpu_med" 'BEGIN { printf "%.0f", (u > 0 ? 1e6 / u : 0) }')
        results+=("{\"persistence\": \"$name\", \"jobs_per_s_median\": $med, \"redis_cpu_us_per_job_median\": $cpu_med, \"redis_bound_jobs_per_s\": $bound, \"serial_ms_per_job_median\": $ser_med, \"goal_jobs_per_s\": 2000, \"runs\": [$(IFS=,; echo "${runs[*]}")]}")
        table+=("$(printf '%-14s %12s %16s %16s %14s' "$name" "$med" "$cpu_med" "$bound" "$ser_med")")
    done
    local out=${SDC_BENCH_OUT_COORD:-bench/results/cluster_coordinator_$DATE.json}
    {
        echo "{"
        echo "  \"benchmark\": \"cluster_coordinator\","
        echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
        echo "  $(machine_json),"
        echo "  \"command\": $(json_str "$(invocation)"),"
        echo "  \"settings\": {\"rounds\": $ROUNDS, \"jobs\": $jobs, \"submitters\": $subs, \"stages\": $stages, \"batch\": 64},"
        echo "  \"results\": ["
        local i
        for ((i = 0; i < ${#results[@]}; i++)); do
            sep=","; ((i == ${#results[@]} - 1)) && sep=""
            echo "    ${results[i]}$sep"
        done
        echo "  ]"
        echo "}"
    } >"$out"
    echo
    echo "Redis job path with null stages ($jobs jobs, $subs submitters, 1 coordinator, $stages stage threads; median of $ROUNDS)"
    printf '%-14s %12s %16s %16s %14s\n' persistence jobs/s redis_us/job redis_bound/s serial_ms/job
    printf '%s\n' "${table[@]}"
    echo "wrote $out"
}

# --- pipeline ------------------------------------------------------------------------

# The run's numbers from every job's events: E = step completions sorted by
# time (a denoising event with step k > 0 says k steps are done; decoding says
# the last one is), n of them; w = max(S, n / 10).
#   steady      (n - 2w - 1) step completions / time from E[w+1] to E[n-w]
#   ideal       1000 / (samples per step x MS): the busiest stage never idle
#   fill_s      time to E[w+1] from the first encoding, less the ideal time
#               of w+1 steps: what the ring's filling costs
#   drain_s     time from E[n-w] to the last done, less the ideal time of w
#               steps: what the ring's emptying (and the last decodes) costs
pipeline_stats() { # port ids-file stages ms steps samples_per_step
    local port=$1 ids=$2 id
    # Per job: "encoding TS", "done TS" and one "step TS" per completed step.
    while read -r id; do
        redis-cli -p "$port" --raw xrange "sdc:job:$id:events" - + | awk '
            function flush() {
                if (s == "encoding" || s == "done") print s, ts
                if (s == "denoising" && st > 0) { print "step", ts; if (st == n) last = 1 }
                if (s == "decoding") dec = ts
                s = ""
            }
            /^[0-9]+-[0-9]+$/ && key == "" { flush(); next }
            key == "" { key = $0; next }
            { if (key == "state") s = $0; else if (key == "step") st = $0 + 0;
              else if (key == "steps") n = $0 + 0; else if (key == "ts") ts = $0; key = "" }
            END { flush(); if (!last && dec != "") print "step", dec }'
    done <"$ids" >"$T/events"
    local start end
    start=$(awk '$1 == "encoding" { print $2 }' "$T/events" | sort -n | head -n1)
    end=$(awk '$1 == "done" { print $2 }' "$T/events" | sort -n | tail -n1)
    awk '$1 == "step" { print $2 }' "$T/events" | sort -n |
        awk -v S="$3" -v MS="$4" -v C="$6" -v start="$start" -v end="$end" \
            -v jobs="$(grep -c '^done ' "$T/events")" '
        { step[++n] = $1 }
        END {
            if (n < 4 || jobs == 0 || start == "" || end == "") { print "{\"error\": \"no step events\"}"; exit }
            w = int(n / 10); if (w < S) w = S; if (2 * w + 2 > n) w = int((n - 2) / 2)
            span = (step[n - w] - step[w + 1]) / 1000
            steady = span > 0 ? (n - 2 * w - 1) / span : 0
            ideal = 1000 / (C * MS)
            total = (end - start) / 1000
            printf "{\"jobs\": %d, \"step_events\": %d, \"steady_steps_per_s\": %.3f, \"ideal_steps_per_s\": %.3f, \"efficiency_steady\": %.4f, \"efficiency_overall\": %.4f, \"fill_s\": %.3f, \"drain_s\": %.3f, \"total_s\": %.3f}\n",
                jobs, n, steady, ideal, steady / ideal, (n / ideal) / total,
                (step[w + 1] - start) / 1000 - (w + 1) / ideal, (end - step[n - w]) / 1000 - w / ideal, total
        }'
}

bench_pipeline() {
    local ms=${SDC_PIPE_MS:-20} steps=${SDC_PIPE_STEPS:-8} per=${SDC_PIPE_JOBS_PER_STAGE:-8}
    local model=${SDC_PIPE_MODEL:-tests/data/tiny-hunyuanimage} size=${SDC_PIPE_SIZE:-64x64}
    local stages_list=${SDC_PIPE_STAGES:-2 4} mode_flag=(--no-mpi) c=2
    [ "${SDC_PIPE_MPI:-0}" = 1 ] && mode_flag=()
    [ -x "$BIN/sdc-worker" ] || die "$BIN/sdc-worker not found; run 'make' first"
    if ! "$BIN/sdc-worker" --help 2>&1 | grep -q -- "--synthetic-ms"; then
        echo "cluster-bench: pipeline: skipped: $BIN/sdc-worker has no --synthetic-ms flag (the DiT compute replaced by a timed sleep); nothing written" >&2
        return 1
    fi
    grep -q '"guidance_embeds": *true' "$model/transformer/config.json" && c=1
    local w=${size%x*} h=${size#*x} results=() table=() S r
    for S in $stages_list; do
        local jobs=$((per * S)) runs=() effs=()
        for ((r = 1; r <= ROUNDS; r++)); do
            local run=$T/run-$S-$r port i
            RUN_DIRS+=("$run")
            port=$(free_port)
            echo "cluster-bench: pipeline, $S stages, round $r/$ROUNDS" >&2
            SDC_RUN_DIR=$run SDC_BIN=$BIN deploy/local.sh up --model "$model" --stages "$S" \
                "${mode_flag[@]}" --redis-port "$port" --timeout 120 \
                --worker-args "--synthetic-ms $ms" >"$T/up.log" 2>&1 || die "local.sh up failed: $(tail -n 20 "$T/up.log")"
            : >"$T/jobs.jsonl"
            for ((i = 0; i < jobs; i++)); do
                echo "{\"embeds\": \"$ROOT/tests/data/goldens/pipeline_apg_64x64.safetensors\", \"width\": $w, \"height\": $h, \"steps\": $steps, \"seed\": $i}" >>"$T/jobs.jsonl"
            done
            "$BIN/sdc-submit" -r "redis://127.0.0.1:$port" -p "$T/jobs.jsonl" -o "$T/out-$S-$r" --wait \
                --timeout 600 -q || die "sdc-submit failed (see $T/out-$S-$r/jobs.jsonl)"
            sed 's/.*"id":"\([^"]*\)".*/\1/' "$T/out-$S-$r/jobs.jsonl" >"$T/ids"
            local line
            line=$(pipeline_stats "$port" "$T/ids" "$S" "$ms" "$steps" "$c")
            SDC_RUN_DIR=$run SDC_BIN=$BIN deploy/local.sh down >/dev/null
            runs+=("$line")
            effs+=("$(json_num "$line" efficiency_steady)")
        done
        local med
        med=$(median "${effs[@]}")
        results+=("{\"stages\": $S, \"jobs\": $jobs, \"efficiency_steady_median\": $med, \"goal\": 0.95, \"runs\": [$(IFS=,; echo "${runs[*]}")]}")
        table+=("$(printf '%6s %6s %10s %10s %8s %8s' "$S" "$jobs" "$med" "$(json_num "${runs[0]}" efficiency_overall)" "$(json_num "${runs[0]}" fill_s)" "$(json_num "${runs[0]}" drain_s)")")
    done
    local out=${SDC_BENCH_OUT_PIPE:-bench/results/cluster_pipeline_$DATE.json}
    {
        echo "{"
        echo "  \"benchmark\": \"cluster_pipeline\","
        echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
        echo "  $(machine_json),"
        echo "  \"command\": $(json_str "$(invocation)"),"
        echo "  \"settings\": {\"rounds\": $ROUNDS, \"synthetic_ms\": $ms, \"steps\": $steps, \"jobs_per_stage\": $per, \"samples_per_step\": $c, \"model\": $(json_str "$model"), \"size\": \"$size\", \"mpi\": $([ ${#mode_flag[@]} -eq 0 ] && echo true || echo false)},"
        echo "  \"results\": ["
        local i
        for ((i = 0; i < ${#results[@]}; i++)); do
            sep=","; ((i == ${#results[@]} - 1)) && sep=""
            echo "    ${results[i]}$sep"
        done
        echo "  ]"
        echo "}"
    } >"$out"
    echo
    echo "Pipeline efficiency with a ${ms} ms synthetic stage ($steps steps, $c samples per step; median of $ROUNDS)"
    printf '%6s %6s %10s %10s %8s %8s\n' stages jobs steady overall fill_s drain_s
    printf '%s\n' "${table[@]}"
    echo "wrote $out"
}

rc=0
if [ "$WHAT" = coordinator ] || [ "$WHAT" = all ]; then bench_coordinator; fi
if [ "$WHAT" = pipeline ] || [ "$WHAT" = all ]; then bench_pipeline || rc=1; fi
exit $rc
