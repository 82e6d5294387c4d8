#!/usr/bin/env bash
# test_loadgen.sh: sdc-loadgen against a real local cluster (redis-server on
# a unix socket, sdc-coordinator and three sdc-worker processes with the
# tiny text-to-image model) through the Redis queue: closed and open loop,
# bounded by count; the JSON report's counts must match what Redis says of
# every job, distributions must cover every job, the plot must be a PNG;
# failed jobs, an unreachable gateway and bad flags must give clear errors
# and the documented exit status.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
# Every wait is bounded; a watchdog ends the script past WATCHDOG_S.
. "$(dirname "$0")/../lib/harness.sh" loadgen 120
LG="$BIN/sdc-loadgen"
. "$(dirname "$0")/../lib/expect.sh"

# ---- bad flags: exit 2 (usage) or 1 (runtime), each with a clear message ----

expect help 0 "" -- "$LG" --help
grep -q -- "--rates" "$T/out" || fail help_text "no --rates in --help"
expect no_load 2 "give the load" -- "$LG" -n 3
expect no_bound 2 "give a bound" -- "$LG" -c 2
expect two_loads 2 "only one of" -- "$LG" -c 2 --rate 1 -n 3
expect zero_rate 2 "--rate: '0'" -- "$LG" --rate 0 -n 3
expect bad_list 2 "not a comma-separated list" -- "$LG" --rates 1,,2 -n 3
expect list_for_rate 2 "use --rates" -- "$LG" --rate 1,2 -n 3
expect bad_concurrency 2 "--concurrencies: '1.5'" -- "$LG" --concurrencies 1,1.5 -n 3
expect bad_size 2 "not WIDTHxHEIGHT" -- "$LG" -c 1 -n 1 --size 64
expect half_size 2 "both --width and --height" -- "$LG" -c 1 -n 1 -W 64
expect bad_target 2 "neither 'redis' nor" -- "$LG" -c 1 -n 1 --target ftp://x
expect token_for_redis 2 "HTTP target only" -- "$LG" -c 1 -n 1 --token-file /dev/null
expect password_in_url 2 "carries a password" -- "$LG" -c 1 -n 1 --redis redis://:pw@127.0.0.1:1
expect unknown_option 2 "unknown option '--frobnicate'" -- "$LG" -c 1 -n 1 --frobnicate
expect missing_value 2 "needs a value" -- "$LG" -c 1 -n 1 --json
printf '%s\n' 'a fine prompt' '{"prompt": 3}' >"$T/bad-prompts.txt"
expect bad_prompts 1 "bad-prompts.txt:2: .prompt. must be a string" -- \
    "$LG" -c 1 -n 1 -p "$T/bad-prompts.txt" --redis redis://127.0.0.1:1
expect missing_prompts 1 "prompts file .*nope.txt" -- "$LG" -c 1 -n 1 -p "$T/nope.txt"
expect redis_unreachable 1 "cannot use Redis at redis://127.0.0.1:1" -- \
    "$LG" -c 1 -n 1 --redis redis://127.0.0.1:1
expect token_file_missing 1 "token file .*/nope" -- \
    "$LG" -c 1 -n 1 --target http://127.0.0.1:1 --token-file "$T/nope"
printf 'two words\n' >"$T/token"
expect token_file_bad 1 "outside visible ASCII" -- \
    "$LG" -c 1 -n 1 --target http://127.0.0.1:1 --token-file "$T/token"

expect token_env_bad 1 "bearer token has a character outside visible ASCII at byte 1" -- \
    env SDC_GATEWAY_TOKEN=$'a\nX-Injected: 1' "$LG" -c 1 -n 1 --target http://127.0.0.1:1
expect http_seed_too_big 2 "below 2\\^53" -- "$LG" -c 1 -n 1 --target http://127.0.0.1:1 \
    --seed 9007199254740000

# A gateway that is not there: every send fails as "connect", exit 3.
printf 'secret-token\n' >"$T/token"
expect http_unreachable 3 "" -- env SDC_REDIS_URL=redis://127.0.0.1:1 "$LG" --rate 200 -n 3 -q --target http://127.0.0.1:1/ \
    --token-file "$T/token" --json "$T/http.json"
if [ "$(jq '.phases[0].offered, .phases[0].done, .phases[0].errors.connect' "$T/http.json" 2>&1 |
        tr '\n' ' ')" = "3 0 3 " ]; then
    pass http_unreachable_report
else
    fail http_unreachable_report "$(head -c 400 "$T/http.json")"
fi

# ---- a cluster: coordinator, text encoder, one DiT stage, VAE ----------------

if ! sdc_redis_start; then
    fail redis_start "cannot start redis-server"
    exit 0
fi
trap cleanup EXIT
REDIS=$SDC_REDIS_URL
SOCK=${REDIS#redis+unix://}
cat >"$T/cluster.json" <<JSON
{"redis": "$REDIS", "prefix": "lg:", "model": "$DATA/tiny-hunyuanimage-text",
 "micro_batch": 4, "pipelines": [{"name": "p0", "stages": 1}],
 "nodes": [{"role": "coordinator"}, {"role": "text-encoder"},
           {"role": "dit-stage", "pipeline": "p0", "stage": 0}, {"role": "vae"}]}
JSON
"$BIN/sdc-coordinator" --cluster "$T/cluster.json" --node 0 --threads 1 >"$T/node0.log" 2>&1 &
PIDS+=($!)
for i in 1 2 3; do
    "$BIN/sdc-worker" --cluster "$T/cluster.json" --node "$i" --threads 1 --peer-timeout 30 \
        >"$T/node$i.log" 2>&1 &
    PIDS+=($!)
done
registered=0
for _ in $(seq 300); do
    registered=$(redis-cli -s "$SOCK" --scan --pattern 'lg:node:*' | wc -l)
    [ "$registered" -ge 4 ] && break
    sleep 0.1
done
if [ "$registered" -ge 4 ]; then pass cluster_up; else
    fail cluster_up "$registered of 4 nodes registered: $(tail -n 3 "$T"/node*.log)"
    exit 0
fi

LGR=("$LG" --redis "$REDIS" --prefix lg: --steps 2 --size 64x64 --drain-timeout 60 -q)

# jq_is NAME FILE FILTER WANT: one jq result against its expected value.
jq_is() {
    local got
    got=$(jq -r "$3" "$2" 2>&1 | tr '\n' ' ')
    if [ "$got" = "$4" ]; then pass "$1"; else fail "$1" "$3 gave '$got', want '$4'"; fi
}

# Every job hash in Redis, by state.
states() {
    local k
    for k in $(redis-cli -s "$SOCK" --scan --pattern 'lg:job:*' | grep -v ':events$'); do
        redis-cli -s "$SOCK" hget "$k" state
    done | sort | uniq -c | awk '{ printf "%s=%s ", $2, $1 }'
}

# Closed loop, 3 in flight, 10 jobs; an SLO no job can meet (1 ms).
expect closed_loop 0 "" -- timeout 60 "${LGR[@]}" -c 3 -n 10 --slo-ms 1 --json "$T/closed.json"
jq_is closed_counts "$T/closed.json" \
    '.phases[0] | [.mode, .concurrency, .offered, .done, .failed, .good] | join(",")' \
    "closed,3,10,10,0,0 "
jq_is closed_distributions "$T/closed.json" \
    '.phases[0].latency_ms | [.e2e.n, .queue_wait.n, .per_step.n, .encode.n, .decode.n, .fetch.n] | join(",")' \
    "10,10,10,10,10,10 "
jq_is closed_latency_order "$T/closed.json" \
    '.phases[0].latency_ms.e2e | (.min > 0 and .min <= .p50 and .p50 <= .p90 and .p90 <= .p99 and .p99 <= .max)' \
    "true "
jq_is closed_throughput "$T/closed.json" \
    '.phases[0] | (.throughput_images_per_s > 0 and .goodput_images_per_s == 0 and .result_bytes_mean > 100)' \
    "true "
jq_is closed_config "$T/closed.json" '.config | [.mode, .size, .steps, .exact_clock] | join(",")' \
    "closed,64x64,2,true "
got=$(states)
[ "$got" = "done=10 " ] && pass closed_all_done_in_redis || fail closed_all_done_in_redis "$got"

# Open loop, two rates of 5 Poisson arrivals each, a JSON report and a plot.
expect open_loop 0 "" -- timeout 60 "${LGR[@]}" --rates 8,4 -n 5 --seed 7 --slo-ms 60000 \
    --json "$T/open.json" --plot "$T/open.png"
jq_is open_counts "$T/open.json" \
    '[.phases[] | [.mode, .rate, .offered, .done, .failed, .good] | join(",")] | join(";")' \
    "open,8,5,5,0,5;open,4,5,5,0,5 "
jq_is open_lag_known "$T/open.json" '[.phases[].latency_ms.schedule_lag.n] | join(",")' "5,5 "
# PNG signature, then IHDR: 800 x 500.
sig=$(od -An -tx1 -N24 "$T/open.png" 2>/dev/null | tr -d ' \n')
[ "$sig" = "89504e470d0a1a0a0000000d4948445200000320000001f4" ] && pass plot_png ||
    fail plot_png "header $sig"
got=$(states)
[ "$got" = "done=20 " ] && pass open_all_done_in_redis || fail open_all_done_in_redis "$got"

# Jobs the cluster refuses (68 is no multiple of 8): failed, reported, exit 3.
expect failed_jobs 3 "" -- timeout 60 "$LG" --redis "$REDIS" --prefix lg: --steps 2 --size 68x64 \
    -c 2 -n 2 -q --json "$T/failed.json"
jq_is failed_counts "$T/failed.json" '.phases[0] | [.offered, .done, .failed, .errors.job_failed] | join(",")' \
    "2,0,2,2 "
jq_is failed_example "$T/failed.json" '.phases[0].error_examples.job_failed | test("68|multiple")' "true "
grep -q "error job_failed" "$T/out" && pass failed_in_table || fail failed_in_table "$(head -c 400 "$T/out")"

# Coordinator first (it waits for its jobs), then the workers: all exit 0.
bad=""
for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    wait "$p" 2>/dev/null
    rc=$?
    [ "$rc" = 0 ] || bad="$bad pid $p: exit $rc;"
done
PIDS=()
[ -z "$bad" ] && pass cluster_stops || fail cluster_stops "$bad"
exit 0
