#!/usr/bin/env bash
# test_cluster.sh: the cluster runtime end to end with real processes: a
# throwaway redis-server, sdc-coordinator / sdc-worker processes talking UCX
# over loopback, mpirun for the MPI bootstrap. Every image must be
# byte-identical (cmp) to sdc-generate's for the same job, whatever the
# number of stages, the micro-batch neighbours or the bootstrap; bad
# messages must be dropped and logged without stopping the nodes.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
# Every wait is bounded, and a watchdog ends the script (and everything it
# started) if it ever runs past WATCHDOG_S.
. "$(dirname "$0")/../lib/harness.sh" cluster 240

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

if ! sdc_redis_start; then
    fail redis_start "cannot start redis-server"
    exit 0
fi
trap cleanup EXIT # sdc_redis_start set its own
REDIS=$SDC_REDIS_URL
SOCK=${REDIS#redis+unix://}
rcli() { redis-cli -s "$SOCK" "$@"; }

M="$DATA/tiny-hunyuanimage"
MT="$DATA/tiny-hunyuanimage-text"
G="$DATA/goldens"
E1="$G/pipeline_apg_64x64.safetensors"      # no glyph text: guider/
E2="$G/pipeline_apg_ocr_64x96.safetensors"  # glyph text: ocr_guider/
ED="$G/pipeline_distilled_64x96.safetensors" # no negative embeddings

# ---- reference images ------------------------------------------------------

# job ID MODEL ARGS...: a line for sdc-submit and the sdc-generate reference.
JOBS_OK=1
job() {
    local id=$1 model=$2 embeds=$3 w=$4 h=$5 steps=$6 seed=$7 extra=${8:-}
    local json="{\"id\": \"$id\", \"embeds\": \"$embeds\", \"width\": $w, \"height\": $h, \"steps\": $steps, \"seed\": $seed$extra}"
    echo "$json"
    local args=(-m "$model" -e "$embeds" -W "$w" -H "$h" -s "$steps" -S "$seed" -q -o "$T/ref/$id.png")
    case "$extra" in *'"guidance": '*) args+=(-g "$(echo "$extra" | sed 's/.*"guidance": \([0-9.]*\).*/\1/')") ;; esac
    case "$extra" in *'"trim_text": false'*) args+=(--no-trim-text) ;; esac
    "$BIN/sdc-generate" "${args[@]}" 2>>"$T/ref.log" || JOBS_OK=0
}
mkdir -p "$T/ref"
# A mixed batch: sizes, seeds, steps, one- and two-pass steps (guidance 1
# turns the CFG steps into single passes), glyph and no glyph, untrimmed text.
{
    job a1 "$M" "$E1" 64 64 4 42
    job a2 "$M" "$E2" 96 64 4 7
    job a3 "$M" "$E1" 64 96 3 1 ', "guidance": 1.0'
    job a4 "$M" "$E2" 128 64 5 123456789012345 ', "guidance": 6.5'
    job a5 "$M" "$E1" 64 64 2 5 ', "trim_text": false'
    job a6 "$M" "$E2" 64 64 4 9 ', "guidance": 1.0, "trim_text": false'
} >"$T/mixed.jsonl"
{
    job b1 "$M" "$E2" 64 64 3 11
    job b2 "$M" "$E1" 64 64 3 12
} >"$T/later.jsonl"
if [ "$JOBS_OK" = 1 ]; then pass references; else fail references "$(tail -c 300 "$T/ref.log")"; fi

# ---- helpers ---------------------------------------------------------------

# cluster NAME PREFIX MODEL MICRO_BATCH PIPELINES_JSON NODES_JSON: writes $T/NAME.json.
cluster() {
    cat >"$T/$1.json" <<EOF
{"redis": "$REDIS", "prefix": "$2", "model": "$3", "micro_batch": $4,
 "pipelines": $5, "nodes": $6}
EOF
}

# ring NSTAGES [PIPELINE]: the dit-stage nodes of one pipeline.
ring() {
    local s out=""
    for s in $(seq 0 $(($1 - 1))); do
        out="$out{\"role\": \"dit-stage\", \"pipeline\": \"${2:-p0}\", \"stage\": $s},"
    done
    echo "${out%,}"
}

# start NAME NODE [ARGS...]: one node in the background; its pid in NODE_PID[NAME.NODE].
declare -A NODE_PID
start() {
    local name=$1 node=$2
    shift 2
    local bin=sdc-worker
    if grep -q "coordinator" <<<"$(node_role "$name" "$node")"; then bin=sdc-coordinator; fi
    "$BIN/$bin" --cluster "$T/$name.json" --node "$node" --threads 1 --peer-timeout 20 \
        --drain-timeout 20 "$@" >"$T/$name.$node.log" 2>&1 &
    NODE_PID[$name.$node]=$!
    PIDS+=($!)
}
node_role() {
    "$BIN/sdc-cluster-info" "$T/$1.json" | awk -v n="$2" '$1 == "node" && $2 == n { print $3 }'
}
node_count() {
    "$BIN/sdc-cluster-info" "$T/$1.json" | awk '$1 == "nodes" { print $2 }'
}
# start_all NAME [ARGS...]: every node of the cluster file.
start_all() {
    local name=$1 i
    shift
    for i in $(seq 0 $(($(node_count "$name") - 1))); do start "$name" "$i" "$@"; done
}

# stop PID SECONDS: SIGTERM, wait up to SECONDS; the exit status in RC
# ("timeout" when it had to be killed). Not in a subshell: only the shell
# that started a process can wait for it.
stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 $(($2 * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null
            RC=$?
            return
        fi
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    RC=timeout
}

# stop_all NAME CASE: coordinators first (they wait for their jobs), then
# the workers; every node must exit 0 and leave no registration behind.
stop_all() {
    local name=$1 case=$2 i bad="" n
    n=$(node_count "$name")
    for i in $(seq 0 $((n - 1))); do
        [ "$(node_role "$name" "$i")" = coordinator ] || continue
        stop "${NODE_PID[$name.$i]}" 20
        [ "$RC" = 0 ] || bad="$bad node $i: exit $RC;"
    done
    for i in $(seq 0 $((n - 1))); do
        [ "$(node_role "$name" "$i")" = coordinator ] && continue
        stop "${NODE_PID[$name.$i]}" 20
        [ "$RC" = 0 ] || bad="$bad node $i: exit $RC;"
    done
    local left
    left=$(rcli --scan --pattern "$(prefix_of "$name")node:*" | wc -l)
    [ "$left" = 0 ] || bad="$bad $left registrations left;"
    if [ -z "$bad" ]; then pass "$case"; else fail "$case" "$bad $(tail -n 3 "$T/$name".*.log)"; fi
}
prefix_of() {
    "$BIN/sdc-cluster-info" "$T/$1.json" | awk '$1 == "prefix" { print $2 }'
}

# submit NAME FILE OUT [ARGS...]: submits and waits (bounded); prints sdc-submit's status.
submit() {
    local name=$1 file=$2 out=$3
    shift 3
    timeout -k 5 90 "$BIN/sdc-submit" --redis "$REDIS" --prefix "$(prefix_of "$name")" \
        -p "$file" -o "$out" -q "$@" >"$out.submit.log" 2>&1
    echo $?
}

# same CASE DIR IDS...: every DIR/ID.png byte-identical to the reference.
same() {
    local case=$1 dir=$2 id bad=""
    shift 2
    for id in "$@"; do
        if [ ! -f "$dir/$id.png" ]; then bad="$bad $id: missing;"
        elif ! cmp -s "$dir/$id.png" "$T/ref/$id.png"; then bad="$bad $id: differs;"; fi
    done
    if [ -z "$bad" ]; then pass "$case"; else fail "$case" "$bad"; fi
}

MIXED_IDS=(a1 a2 a3 a4 a5 a6)

# ---- 1, 2 and 4 stages, Redis bootstrap -------------------------------------

for S in 1 2 4; do
    NODES="[{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, $(ring $S), {\"role\": \"vae\"}]"
    cluster "s$S" "s$S:" "$M" 4 "[{\"name\": \"p0\", \"stages\": $S}]" "$NODES"
    start_all "s$S" --log-level debug
    rc=$(submit "s$S" "$T/mixed.jsonl" "$T/out$S" --wait -T 60)
    if [ "$rc" = 0 ]; then
        same "stages_${S}_identical" "$T/out$S" "${MIXED_IDS[@]}"
    else
        fail "stages_${S}_identical" "sdc-submit exit $rc: $(tail -c 300 "$T/out$S.submit.log")"
    fi
    stop_all "s$S" "stages_${S}_graceful_stop"
done

# Stage 0 of the 4-stage run took samples of several jobs in one micro-batch.
if grep -E "micro-batch of [2-9]" "$T/s4.2.log" |
    awk '{ delete j; n = 0; for (i = 1; i <= NF; i++) if ($i ~ /\//) { split($i, p, "/"); if (!(p[1] in j)) { j[p[1]] = 1; n++ } } if (n > 1) found = 1 } END { exit !found }'; then
    pass microbatch_mixes_jobs
else
    fail microbatch_mixes_jobs "no micro-batch held samples of two jobs"
fi
# The 4-stage split holds one block per stage.
if grep -q "blocks \[3, 4)" "$T/s4.5.log"; then pass four_stage_split; else fail four_stage_split "$(head -n 3 "$T/s4.5.log")"; fi

# ---- MPI bootstrap: one mpirun line, the whole cluster, batch mode ----------

NODES="[{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, $(ring 2), {\"role\": \"vae\"}]"
cluster mpi "mpi:" "$M" 4 '[{"name": "p0", "stages": 2}]' "$NODES"
rc=$(submit mpi "$T/mixed.jsonl" "$T/outmpi")
if [ "$rc" != 0 ]; then
    fail mpi_batch "submitting: $(tail -c 300 "$T/outmpi.submit.log")"
elif ! command -v mpirun >/dev/null; then
    fail mpi_batch "mpirun is not installed (make deps)"
else
    # Open MPI's own allocations outlive MPI_Finalize: under ASan, leak
    # checking stays on for every other case (same code but the bootstrap).
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
        timeout -k 5 90 mpirun --allow-run-as-root --oversubscribe -np 5 \
            "$BIN/sdc-worker" --cluster "$T/mpi.json" --threads 1 --batch >"$T/mpi.log" 2>&1
    rc=$?
    if [ "$rc" = 0 ] && grep -q "bootstrap MPI" "$T/mpi.log" && grep -q "batch done" "$T/mpi.log"; then
        pass mpi_batch
    else
        fail mpi_batch "mpirun exit $rc: $(tail -n 5 "$T/mpi.log")"
    fi
    rc=$(submit mpi "$T/mixed.jsonl" "$T/outmpi" --wait -T 10)
    same mpi_identical "$T/outmpi" "${MIXED_IDS[@]}"
fi

# ---- two pipelines, two coordinators: placement, sizes, failover -----------

NODES="[{\"role\": \"coordinator\"}, {\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, {\"role\": \"text-encoder\"}, $(ring 2 sq), $(ring 1 any), {\"role\": \"vae\"}, {\"role\": \"vae\"}]"
cluster two two: "$M" 2 '[{"name": "sq", "stages": 2, "sizes": ["64x64"]}, {"name": "any", "stages": 1, "sizes": ["64x64", "96x64", "64x96", "128x64"]}]' "$NODES"
start_all two --job-timeout 30
rc=$(submit two "$T/mixed.jsonl" "$T/outtwo" --wait -T 60)
if [ "$rc" = 0 ]; then
    same two_pipelines_identical "$T/outtwo" "${MIXED_IDS[@]}"
else
    fail two_pipelines_identical "sdc-submit exit $rc: $(tail -c 300 "$T/outtwo.submit.log")"
fi
# Only 64x64 jobs may go to "sq".
LEADER=$(rcli GET two:leader)
LEADER_NODE=${LEADER##*-}
if grep -q "coordinator-" <<<"$LEADER" &&
    ! grep -E "\((96x64|64x96|128x64),.*-> pipeline sq" "$T/two.$LEADER_NODE.log" >/dev/null &&
    grep -q -- "-> pipeline sq" "$T/two.$LEADER_NODE.log" &&
    grep -q -- "-> pipeline any" "$T/two.$LEADER_NODE.log"; then
    pass placement_by_size
else
    fail placement_by_size "leader '$LEADER': $(grep -- '-> pipeline' "$T/two.$LEADER_NODE.log" | head -n 6)"
fi
# A size no pipeline serves fails the job with the reason.
echo "{\"id\": \"big\", \"embeds\": \"$E1\", \"width\": 128, \"height\": 128, \"steps\": 2}" >"$T/big.jsonl"
rc=$(submit two "$T/big.jsonl" "$T/outbig" --wait -T 20)
if [ "$rc" = 1 ] && [ "$(rcli HGET two:job:big state)" = failed ] &&
    rcli HGET two:job:big error | grep -q "no pipeline serves 128x128"; then
    pass unserved_size_fails
else
    fail unserved_size_fails "exit $rc, state $(rcli HGET two:job:big state): $(rcli HGET two:job:big error)"
fi
# The leader stops (finishing its jobs); the standby takes the lease and
# runs the next jobs.
stop "${NODE_PID[two.$LEADER_NODE]}" 20
rc=$RC
rc2=$(submit two "$T/later.jsonl" "$T/outlater" --wait -T 40)
NEW=$(rcli GET two:leader)
if [ "$rc" = 0 ] && [ "$rc2" = 0 ] && [ -n "$NEW" ] && [ "$NEW" != "$LEADER" ]; then
    same standby_takes_over "$T/outlater" b1 b2
else
    fail standby_takes_over "old leader exit $rc, submit exit $rc2, leader '$LEADER' -> '$NEW'"
fi
for i in $(seq 0 $(($(node_count two) - 1))); do
    [ "$i" = "$LEADER_NODE" ] && continue
    stop "${NODE_PID[two.$i]}" 20
done

# ---- a stage dies mid-job: the job is requeued and still comes out right ------

job long "$M" "$E1" 64 64 60 77 >"$T/long.jsonl"
NODES="[{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, $(ring 2), {\"role\": \"vae\"}]"
cluster kr kr: "$M" 4 '[{"name": "p0", "stages": 2}]' "$NODES"
start_all kr --job-timeout 20
rc=$(submit kr "$T/long.jsonl" "$T/outkr")
for _ in $(seq 1 200); do
    step=$(rcli HGET kr:job:long step)
    [ "${step:-0}" -ge 3 ] 2>/dev/null && break
    sleep 0.05
done
kill -KILL "${NODE_PID[kr.3]}"
wait "${NODE_PID[kr.3]}" 2>/dev/null
start kr 3
rc=$(submit kr "$T/long.jsonl" "$T/outkr" --wait -T 60)
if [ "$rc" = 0 ] && [ "$(rcli HGET kr:job:long attempt)" = 2 ] && [ "${step:-0}" -ge 3 ] &&
    grep -q "job long attempt 1 requeued" "$T/kr.0.log"; then
    same stage_restart_requeues "$T/outkr" long
else
    fail stage_restart_requeues "exit $rc, killed at step ${step:-?}, attempt $(rcli HGET kr:job:long attempt): $(grep -h 'lost\|requeue' "$T"/kr.*.log | head -n 4)"
fi
stop_all kr kr_graceful_stop

# ---- bad messages are dropped and logged; the nodes keep serving ------------

NODES="[{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, $(ring 3), {\"role\": \"vae\"}]"
cluster probe probe: "$M" 4 '[{"name": "p0", "stages": 3}]' "$NODES"
start_all probe
head -n 1 "$T/mixed.jsonl" >"$T/first.jsonl"
rc=$(submit probe "$T/first.jsonl" "$T/outprobe" --wait -T 30)
[ "$rc" = 0 ] || fail probe_setup "sdc-submit exit $rc: $(tail -c 300 "$T/outprobe.submit.log")"
# probe CASE NODE KIND PATTERN [ARGS...]: sends, then expects PATTERN in NODE's log.
probe() {
    local case=$1 node=$2 kind=$3 pat=$4
    shift 4
    local id
    id="$(node_role probe "$node")-$node"
    if ! timeout -k 2 20 "$BIN/sdc-wire-probe" --cluster "$T/probe.json" --to "$id" --kind "$kind" "$@" \
        >"$T/probe.out" 2>&1; then
        fail "$case" "sdc-wire-probe: $(cat "$T/probe.out")"
        return
    fi
    local i
    for i in $(seq 1 50); do
        grep -qE -- "$pat" "$T/probe.$node.log" && break
        sleep 0.1
    done
    if grep -qE -- "$pat" "$T/probe.$node.log"; then pass "$case"; else fail "$case" "no /$pat/ in $id's log"; fi
}
LAST=4 MID=3
probe reject_garbage $LAST garbage "dropped a message \(bad frame\)"
probe reject_truncated_header $LAST truncated "dropped a message \(truncated\).*header has"
probe reject_header_checksum $LAST checksum "dropped a message \(checksum mismatch\)"
probe reject_oversized_payload $LAST oversized "dropped a message \(oversized\).*payload"
probe reject_too_many_tokens $LAST tokens "dropped a message \(oversized\).*tokens"
probe reject_bad_shape $LAST shape "dropped a message \(bad shape\)"
probe reject_short_payload $LAST short-payload "dropped a message \(truncated\).*payload bytes arrived"
probe reject_payload_checksum $LAST payload-checksum "dropped a tensor from probe-0 \(checksum mismatch\)"
probe reject_unknown_job_last $LAST unknown-job "sample of unknown job probe-job"
probe reject_unknown_job_middle $MID unknown-job "sample of unknown job probe-job"
probe reject_stale_last $LAST stale "dropped a message \(stale attempt\)" --job a1 --attempt 1
probe reject_stale_vae 5 stale "dropped a message \(stale attempt\)" --job a1 --attempt 1 --step 3
probe reject_stale_assign 1 stale-assign "dropped a message \(stale attempt\)" --job a1 --attempt 1
probe reject_wrong_type 1 wrong-type "text encoder takes only assignments"
probe reject_unknown_step_done 0 unknown-step-done "dropped a message \(unknown job\)"
# Still serving: the next jobs come out identical.
rc=$(submit probe "$T/later.jsonl" "$T/outprobe2" --wait -T 30)
if [ "$rc" = 0 ]; then
    same serves_after_bad_messages "$T/outprobe2" b1 b2
else
    fail serves_after_bad_messages "sdc-submit exit $rc: $(tail -c 300 "$T/outprobe2.submit.log")"
fi

# ---- failures inside a job ------------------------------------------------

# No negative embeddings for a guided model; a prompt without text encoders.
{
    echo "{\"id\": \"noneg\", \"embeds\": \"$ED\", \"width\": 64, \"height\": 64, \"steps\": 2}"
    echo "{\"id\": \"noenc\", \"prompt\": \"a cat\", \"width\": 64, \"height\": 64, \"steps\": 2}"
    echo "{\"id\": \"nofile\", \"embeds\": \"$T/missing.safetensors\", \"width\": 64, \"height\": 64, \"steps\": 2}"
} >"$T/bad.jsonl"
rc=$(submit probe "$T/bad.jsonl" "$T/outbad" --wait -T 30 --no-embeds-check)
check_failed() { # CASE ID PATTERN
    local state err
    state=$(rcli HGET "probe:job:$2" state)
    err=$(rcli HGET "probe:job:$2" error)
    if [ "$state" = failed ] && grep -qE -- "$3" <<<"$err" &&
        rcli XRANGE probe:dead - + | grep -qx "$2"; then
        pass "$1"
    else
        fail "$1" "state '$state', error '$err'"
    fi
}
if [ "$rc" = 1 ]; then
    check_failed job_fails_without_negatives noneg "needs negative"
    check_failed job_fails_without_text_encoder noenc "cannot encode prompts"
    check_failed job_fails_without_embeds nofile "missing.safetensors"
else
    fail job_failures "sdc-submit exit $rc (want 1): $(tail -c 300 "$T/outbad.submit.log")"
fi
rc=$(submit probe "$T/later.jsonl" "$T/outprobe3" --wait -T 30)
same serves_after_failed_jobs "$T/outprobe3" b1 b2
stop_all probe probe_graceful_stop

# ---- prompts through the text encoders --------------------------------------

mkdir -p "$T/ref"
"$BIN/sdc-generate" -m "$MT" -p 'A sign that says "Hello"' -W 64 -H 64 -s 3 -S 3 -q -o "$T/ref/p1.png" &&
    "$BIN/sdc-generate" -m "$MT" -p 'a cat' -n 'blurry' -W 64 -H 96 -s 3 -S 4 -q -o "$T/ref/p2.png"
cat >"$T/prompts.jsonl" <<'EOF'
{"id": "p1", "prompt": "A sign that says \"Hello\"", "width": 64, "height": 64, "steps": 3, "seed": 3}
{"id": "p2", "prompt": "a cat", "negative_prompt": "blurry", "width": 64, "height": 96, "steps": 3, "seed": 4}
EOF
NODES="[{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, $(ring 2), {\"role\": \"vae\"}]"
cluster text text: "$MT" 4 '[{"name": "p0", "stages": 2}]' "$NODES"
start_all text
rc=$(submit text "$T/prompts.jsonl" "$T/outtext" --wait -T 60)
if [ "$rc" = 0 ]; then
    same prompts_identical "$T/outtext" p1 p2
else
    fail prompts_identical "sdc-submit exit $rc: $(tail -c 300 "$T/outtext.submit.log")"
fi
stop_all text text_graceful_stop

# ---- command line -------------------------------------------------------------

"$BIN/sdc-worker" --help >"$T/help" 2>&1 && grep -q -- "--cluster" "$T/help" &&
    "$BIN/sdc-coordinator" --help >"$T/help2" 2>&1 && grep -q -- "--batch" "$T/help2" &&
    pass help || fail help "no usage text"
"$BIN/sdc-worker" --node 1 >/dev/null 2>"$T/err"
[ $? = 2 ] && grep -q "cluster is required" "$T/err" && pass usage_missing_cluster ||
    fail usage_missing_cluster "$(cat "$T/err")"
"$BIN/sdc-worker" --cluster "$T/s1.json" >/dev/null 2>"$T/err"
[ $? = 1 ] && grep -q -- "--node is required" "$T/err" && pass usage_missing_node ||
    fail usage_missing_node "$(cat "$T/err")"
"$BIN/sdc-coordinator" --cluster "$T/s1.json" --node 2 >/dev/null 2>"$T/err"
[ $? = 1 ] && grep -q "not a coordinator" "$T/err" && pass coordinator_refuses_worker_node ||
    fail coordinator_refuses_worker_node "$(cat "$T/err")"
"$BIN/sdc-worker" --cluster "$T/s1.json" --node 99 >/dev/null 2>"$T/err"
[ $? = 1 ] && grep -q "node 99" "$T/err" && pass node_out_of_range || fail node_out_of_range "$(cat "$T/err")"
"$BIN/sdc-worker" --cluster "$T/nonexistent.json" --node 0 >/dev/null 2>"$T/err"
[ $? = 1 ] && grep -q "nonexistent.json" "$T/err" && pass cluster_file_missing ||
    fail cluster_file_missing "$(cat "$T/err")"
exit 0
