#!/usr/bin/env bash
# test_redis_restart.sh: a cluster survives a Redis crash. A redis-server
# with an append-only file (fsync every second) on a unix socket, a
# coordinator and four workers (text encoder, two DiT stages, VAE) with
# the tiny model, and sdc-loadgen keeping 4 jobs in flight. Redis is killed
# with SIGKILL mid-run and restarted from its AOF 4 s later: every job must
# still finish done, none failed, and the report must show the outage as
# latency. docs/operations.md ("Redis restart") states what this checks.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh);
# every wait is bounded, a watchdog ends the script past WATCHDOG_S.
. "$(dirname "$0")/../lib/harness.sh" redis-restart 120
. "$(dirname "$0")/../lib/expect.sh"
chmod 700 "$T"
SOCK=$T/redis.sock
REDIS_PID=""
# This test runs its own redis-server (AOF on, restarted mid-run), not
# redis_env.sh's: kill it before the harness's cleanup.
trap '[ -n "$REDIS_PID" ] && kill -KILL "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null; cleanup' EXIT

start_redis() {
    redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --appendonly yes \
        --appendfsync everysec --dir "$T" --save "" >>"$T/redis.log" 2>&1 &
    REDIS_PID=$!
    local i
    for i in $(seq 100); do
        redis-cli -s "$SOCK" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    return 1
}

if ! start_redis; then
    fail redis_start "$(tail -c 300 "$T/redis.log")"
    exit 0
fi
cat >"$T/cluster.json" <<JSON
{"redis": "redis+unix://$SOCK", "prefix": "rr:", "model": "$DATA/tiny-hunyuanimage-text",
 "micro_batch": 4, "pipelines": [{"name": "p0", "stages": 2}],
 "nodes": [{"role": "coordinator"}, {"role": "text-encoder"},
           {"role": "dit-stage", "pipeline": "p0", "stage": 0},
           {"role": "dit-stage", "pipeline": "p0", "stage": 1}, {"role": "vae"}]}
JSON
"$BIN/sdc-coordinator" --cluster "$T/cluster.json" --node 0 --job-timeout 30 \
    >"$T/node0.log" 2>&1 &
PIDS+=($!)
for i in 1 2 3 4; do
    "$BIN/sdc-worker" --cluster "$T/cluster.json" --node "$i" --threads 1 --peer-timeout 30 \
        --job-timeout 30 >"$T/node$i.log" 2>&1 &
    PIDS+=($!)
done
n=0
for _ in $(seq 300); do
    n=$(redis-cli -s "$SOCK" --scan --pattern 'rr:node:*' | wc -l)
    [ "$n" -ge 5 ] && break
    sleep 0.1
done
if [ "$n" -ge 5 ]; then pass restart_cluster_up; else
    fail restart_cluster_up "$n of 5 nodes registered"
    exit 0
fi

"$BIN/sdc-loadgen" --redis "redis+unix://$SOCK" --prefix rr: -c 4 -n 40 --steps 8 --size 64x64 \
    --drain-timeout 90 -q --json "$T/report.json" >"$T/loadgen.out" 2>&1 &
LG=$!
PIDS+=("$LG")
# Kill Redis once some jobs are done and others are running.
for _ in $(seq 200); do
    done_now=$(redis-cli -s "$SOCK" --scan --pattern 'rr:result:*' 2>/dev/null | wc -l)
    [ "$done_now" -ge 4 ] && break
    sleep 0.05
done
kill -KILL "$REDIS_PID"
wait "$REDIS_PID" 2>/dev/null
REDIS_PID=""
sleep 4
if start_redis; then pass restart_redis_back; else fail restart_redis_back "$(tail -c 300 "$T/redis.log")"; fi

wait "$LG"
rc=$?
[ "$rc" = 0 ] && pass restart_loadgen_exit || fail restart_loadgen_exit "exit $rc: $(tail -c 400 "$T/loadgen.out")"
got=$(jq -r '.phases[0] | [.offered, .done, .failed] | join(",")' "$T/report.json" 2>&1)
[ "$got" = "40,40,0" ] && pass restart_every_job_done || fail restart_every_job_done "$got"
# The jobs the outage caught waited about 4 s longer than the others.
got=$(jq -r '.phases[0].latency_ms.e2e | (.max > 3500 and .p50 < 3500)' "$T/report.json" 2>&1)
[ "$got" = true ] && pass restart_outage_in_latency ||
    fail restart_outage_in_latency "$(jq -c '.phases[0].latency_ms.e2e' "$T/report.json" 2>&1)"
left=$(redis-cli -s "$SOCK" --scan --pattern 'rr:job:*' | grep -vc ':events$')
[ "$left" = 40 ] && pass restart_jobs_kept || fail restart_jobs_kept "$left job hashes in Redis"
exit 0
