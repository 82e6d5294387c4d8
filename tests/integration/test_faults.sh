#!/usr/bin/env bash
# test_faults.sh: fault tolerance of the cluster with real processes and a
# real redis-server (append-only file on, in this test's temporary
# directory). For each role in turn (text encoder, DiT stage 0, a middle and
# a last DiT stage, VAE, the leading coordinator, Redis) a process is killed
# with SIGKILL in the middle of a 200-job batch; it is restarted, or not
# while a spare takes its work (a second pipeline, a standby coordinator).
# Every batch must end with 200/200 images, each job done exactly once
# (one "done" event, one completion in the VAE logs), nothing pending or
# dead-lettered, and requeued jobs byte-identical to sdc-generate.
# Then: a job that runs out of attempts goes to the dead-letter stream with
# its reason; SIGTERM drains a stage (its jobs finish, it deregisters); and
# a checkpointed job of a guided model (APG momentum, CFG) whose last stage
# is killed resumes from its checkpoint, not step 0, with the same PNG bytes
# as sdc-generate.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
. "$(dirname "$0")/../lib/harness.sh" faults 300
N=${SDC_FAULT_JOBS:-200}
. "$(dirname "$0")/../lib/expect.sh"

REDIS_ARGS=(--appendonly yes --appendfsync everysec)
if ! sdc_redis_start "${REDIS_ARGS[@]}"; then
    fail redis_start "cannot start redis-server"
    exit 0
fi
trap cleanup EXIT # sdc_redis_start set its own
REDIS=$SDC_REDIS_URL
SOCK=${REDIS#redis+unix://}
rcli() { redis-cli -s "$SOCK" "$@"; }

# redis_restart: SIGKILL the server, start it again on its socket and data.
redis_restart() {
    kill -KILL "$SDC_REDIS_PID"
    wait "$SDC_REDIS_PID" 2>/dev/null
    sleep 0.3
    rm -f "$SOCK"
    redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" \
        --dir "$SDC_REDIS_DIR" --loglevel warning "${REDIS_ARGS[@]}" \
        >>"$SDC_REDIS_DIR/redis.log" 2>&1 &
    SDC_REDIS_PID=$!
    local i
    for i in $(seq 1 200); do
        [ "$(rcli ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    return 1
}

MD="$DATA/tiny-hunyuanimage-distilled"
ED="$DATA/goldens/pipeline_distilled_64x96.safetensors"

# ---- cluster helpers ------------------------------------------------------------

# start NAME NODE [ARGS...]: one node in the background (log appended, so a
# restarted node keeps one log); its pid in NODE_PID[NAME.NODE].
declare -A NODE_PID
start() {
    local name=$1 node=$2 bin=sdc-worker
    shift 2
    [ "$(node_role "$name" "$node")" = coordinator ] && bin=sdc-coordinator
    "$BIN/$bin" --cluster "$T/$name.json" --node "$node" --threads 1 --peer-timeout 20 \
        --drain-timeout 20 --job-timeout 60 "$@" >>"$T/$name.$node.log" 2>&1 &
    NODE_PID[$name.$node]=$!
    PIDS+=($!)
}
node_role() {
    "$BIN/sdc-cluster-info" "$T/$1.json" | awk -v n="$2" '$1 == "node" && $2 == n { print $3 }'
}
kill9() { # NAME NODE
    kill -KILL "${NODE_PID[$1.$2]}" 2>/dev/null
    wait "${NODE_PID[$1.$2]}" 2>/dev/null
}
# wait_registered NAME PREFIX COUNT: until COUNT nodes are registered (30 s).
wait_registered() {
    local i
    for i in $(seq 1 300); do
        [ "$(rcli --scan --pattern "$2node:*" | wc -l)" -ge "$3" ] && return 0
        sleep 0.1
    done
    return 1
}
# done_count PREFIX TAG: jobs of the batch TAG with a result.
done_count() { rcli --scan --pattern "$1result:$2-*" | wc -l; }
# wait_done PREFIX TAG COUNT SECONDS
wait_done() {
    local i
    for i in $(seq 1 $(($4 * 20))); do
        [ "$(done_count "$1" "$2")" -ge "$3" ] && return 0
        sleep 0.05
    done
    return 1
}

# batch TAG COUNT STEPS: a jobs file of COUNT jobs TAG-0.. (16x16, seed = index).
batch() {
    local i
    for i in $(seq 0 $(($2 - 1))); do
        echo "{\"id\": \"$1-$i\", \"embeds\": \"$ED\", \"width\": 16, \"height\": 16, \"steps\": $3, \"seed\": $i}"
    done >"$T/$1.jsonl"
}
submit() { # PREFIX TAG [ARGS...]: sdc-submit's exit status
    local prefix=$1 tag=$2
    shift 2
    timeout -k 5 120 "$BIN/sdc-submit" --redis "$REDIS" --prefix "$prefix" -p "$T/$tag.jsonl" \
        -o "$T/out-$tag" -q "$@" >"$T/$tag.submit.log" 2>&1
    echo $?
}

# check_batch CASE PREFIX TAG COUNT VAE_LOGS...: every job done once; the
# requeued ones (at most two) byte-identical to sdc-generate.
check_batch() {
    local case=$1 prefix=$2 tag=$3 count=$4 bad="" i
    REQUEUED=0
    shift 4
    for i in $(seq 0 $((count - 1))); do
        echo "ECHO @@$tag-$i"
        echo "HGET ${prefix}job:$tag-$i state"
        echo "HGET ${prefix}job:$tag-$i attempt"
        echo "XRANGE ${prefix}job:$tag-$i:events - +"
    done | rcli >"$T/$tag.state"
    # Per job: state, attempt, number of "done" events.
    awk '/^@@/ { id = substr($0, 3); k = 0; ids[id] = 1; next }
         { k++ } k == 1 { st[id] = $0 } k == 2 { at[id] = $0 }
         k > 2 && $0 == "done" { dn[id]++ }
         END { for (id in ids) print id, st[id], at[id], dn[id] + 0 }' "$T/$tag.state" >"$T/$tag.summary"
    local notdone dupes requeued pngs completions distinct
    notdone=$(awk '$2 != "done"' "$T/$tag.summary" | wc -l)
    dupes=$(awk '$4 != 1' "$T/$tag.summary" | wc -l)
    requeued=$(awk '$3 > 1 { print $1 }' "$T/$tag.summary" | sort)
    pngs=$(ls "$T/out-$tag" 2>/dev/null | grep -c '\.png$')
    completions=$(cat "$@" | grep -oE "job $tag-[0-9]+ done \([0-9]+x" | wc -l)
    distinct=$(cat "$@" | grep -oE "job $tag-[0-9]+ done \([0-9]+x" | sort -u | wc -l)
    [ "$(wc -l <"$T/$tag.summary")" = "$count" ] || bad="$bad $(wc -l <"$T/$tag.summary") jobs read;"
    [ "$notdone" = 0 ] || bad="$bad $notdone not done ($(awk '$2 != "done" { print $1 "=" $2; exit }' "$T/$tag.summary"));"
    [ "$dupes" = 0 ] || bad="$bad $dupes without exactly one done event;"
    [ "$pngs" = "$count" ] || bad="$bad $pngs images;"
    # A VAE killed between a completion and its log line leaves one line out.
    [ "$completions" = "$distinct" ] || bad="$bad $completions completions of $distinct jobs in the VAE logs;"
    [ "$(rcli XLEN "${prefix}jobs")" = 0 ] || bad="$bad $(rcli XLEN "${prefix}jobs") stream entries left;"
    [ "$(rcli XLEN "${prefix}dead")" = 0 ] || bad="$bad dead letters: $(rcli XRANGE "${prefix}dead" - + | head -c 300);"
    local id n=0
    for id in $requeued; do
        [ $n -ge 2 ] && break
        n=$((n + 1))
        "$BIN/sdc-generate" -m "$MD" -e "$ED" -W 16 -H 16 -s "$STEPS" -S "${id##*-}" -q -t 1 \
            -o "$T/ref-$id.png" 2>>"$T/ref.log" || bad="$bad sdc-generate failed;"
        cmp -s "$T/ref-$id.png" "$T/out-$tag/$id.png" || bad="$bad requeued $id differs;"
    done
    if [ -z "$bad" ]; then
        pass "$case"
        echo "# $case: $count/$count done, $(echo "$requeued" | grep -c .) requeued"
    else
        fail "$case" "$bad"
    fi
    REQUEUED=$(echo "$requeued" | grep -c .)
}

# ---- kill -9 of each role in a 200-job batch --------------------------------------

# Nodes: 0, 1 coordinators; 2 text encoder; 3, 4, 5 pipeline p0 (three
# stages); 6, 7 pipeline p1; 8 VAE.
cat >"$T/f.json" <<EOF
{"redis": "$REDIS", "prefix": "f:", "model": "$MD", "micro_batch": 4,
 "pipelines": [{"name": "p0", "stages": 3}, {"name": "p1", "stages": 2}],
 "nodes": [{"role": "coordinator"}, {"role": "coordinator"}, {"role": "text-encoder"},
           {"role": "dit-stage", "pipeline": "p0", "stage": 0}, {"role": "dit-stage", "pipeline": "p0", "stage": 1},
           {"role": "dit-stage", "pipeline": "p0", "stage": 2},
           {"role": "dit-stage", "pipeline": "p1", "stage": 0}, {"role": "dit-stage", "pipeline": "p1", "stage": 1},
           {"role": "vae"}]}
EOF
NF=9
for i in $(seq 0 $((NF - 1))); do start f "$i"; done
STEPS=3
VAE_LOGS=("$T/f.8.log")
if ! wait_registered f f: $NF; then
    fail fault_cluster_start "nodes did not register: $(tail -n 3 "$T"/f.*.log)"
    exit 0
fi
leader() { local l; l=$(rcli GET f:leader); echo "${l##*-}"; }

# fault CASE TAG NODE MODE: kills NODE once 20% of the batch is done. MODE
# restart: start it again at once; spare: only after the batch; redis: the
# Redis server instead of a node.
fault() {
    local case=$1 tag=$2 node=$3 mode=$4 rc t0
    batch "$tag" "$N" "$STEPS"
    t0=$(date +%s.%N)
    rc=$(submit f: "$tag")
    if [ "$rc" != 0 ]; then fail "$case" "submit exit $rc: $(tail -c 300 "$T/$tag.submit.log")"; return; fi
    wait_done f: "$tag" $((N / 5)) 60
    case $mode in
    redis) redis_restart || { fail "$case" "redis-server did not come back"; return; } ;;
    *) kill9 f "$node"; [ "$mode" = restart ] && start f "$node" ;;
    esac
    rc=$(submit f: "$tag" --wait -T 100)
    [ "$mode" = spare ] && start f "$node"
    if [ "$rc" != 0 ]; then
        fail "$case" "sdc-submit --wait exit $rc: $(tail -c 300 "$T/$tag.submit.log"); $(grep -h 'died\|requeued' "$T"/f.[01].log | tail -n 3)"
        return
    fi
    check_batch "$case" f: "$tag" "$N" "${VAE_LOGS[@]}"
    echo "# $case: $(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }') s"
    [ "$mode" = spare ] && wait_registered f f: $NF
}

fault kill_text_encoder te 2 restart
grep -q "text-encoder-2 died" "$T/f.0.log" "$T/f.1.log" && pass text_encoder_death_detected ||
    fail text_encoder_death_detected "no 'text-encoder-2 died' in the coordinators' logs"
fault kill_first_stage s0 3 spare
grep -q "dit-stage-3 died" "$T/f.0.log" "$T/f.1.log" &&
    pass first_stage_death_detected || fail first_stage_death_detected "no 'dit-stage-3 died' in the coordinators' logs"
fault kill_middle_stage sm 4 spare
fault kill_last_stage s1 7 spare
fault kill_vae vae 8 restart
LEAD=$(leader)
fault kill_coordinator co "$LEAD" spare
NEW=$(leader)
[ -n "$NEW" ] && [ "$NEW" != "$LEAD" ] && pass standby_took_over ||
    fail standby_took_over "leader coordinator-$LEAD -> coordinator-$NEW"

# ---- graceful drain: SIGTERM to a stage mid-batch ----------------------------------

# The stage's pipeline leaves placement at once; its jobs finish; it exits 0
# and deregisters; nothing is requeued.
batch dr "$N" "$STEPS"
rc=$(submit f: dr)
wait_done f: dr $((N / 5)) 60
DRAINED=${NODE_PID[f.5]}
kill -TERM "$DRAINED"
rc=$(submit f: dr --wait -T 100)
for _ in $(seq 1 200); do kill -0 "$DRAINED" 2>/dev/null || break; sleep 0.1; done
wait "$DRAINED" 2>/dev/null
drc=$?
if [ "$rc" = 0 ]; then
    check_batch drain_batch_complete f: dr "$N" "${VAE_LOGS[@]}"
    [ "$drc" = 0 ] && [ "$(rcli EXISTS f:node:dit-stage-5)" = 0 ] && [ "$REQUEUED" = 0 ] &&
        grep -q "draining" "$T/f.5.log" && grep -q "pipeline p0 out of placement: dit-stage-5 is draining" "$T/f.$(leader).log" &&
        pass sigterm_drains_stage ||
        fail sigterm_drains_stage "exit $drc, registered $(rcli EXISTS f:node:dit-stage-5), $REQUEUED requeued: $(tail -n 2 "$T/f.5.log")"
else
    fail drain_batch_complete "sdc-submit --wait exit $rc: $(tail -c 300 "$T/dr.submit.log")"
fi
start f 5
wait_registered f f: $NF

# ---- max attempts: the dead-letter stream, with the reason --------------------------

cat >"$T/dl.json" <<EOF2
{"redis": "$REDIS", "prefix": "dl:", "model": "$MD",
 "pipelines": [{"name": "p0", "stages": 1}],
 "nodes": [{"role": "coordinator"}, {"role": "text-encoder"}, {"role": "dit-stage", "stage": 0}, {"role": "vae"}]}
EOF2
for i in 0 1 2 3; do start dl "$i" --max-attempts 1; done
echo "{\"id\": \"once\", \"embeds\": \"$ED\", \"width\": 16, \"height\": 16, \"steps\": 1000, \"seed\": 1}" >"$T/once.jsonl"
if wait_registered dl dl: 4 && [ "$(submit dl: once)" = 0 ]; then
    for _ in $(seq 1 400); do [ "$(rcli HGET dl:job:once step)" -ge 2 ] 2>/dev/null && break; sleep 0.05; done
    kill9 dl 2
    for _ in $(seq 1 200); do [ "$(rcli HGET dl:job:once state)" = failed ] && break; sleep 0.05; done
    dead=$(rcli XRANGE dl:dead - +)
    if [ "$(rcli HGET dl:job:once state)" = failed ] && grep -qx once <<<"$dead" &&
        grep -q "attempt 1 of 1: node dit-stage-2 died" <<<"$dead" && [ "$(rcli XLEN dl:jobs)" = 0 ]; then
        pass max_attempts_dead_letter
    else
        fail max_attempts_dead_letter "state $(rcli HGET dl:job:once state), dead: $(head -c 300 <<<"$dead")"
    fi
else
    fail max_attempts_dead_letter "cluster did not start: $(tail -n 3 "$T"/dl.*.log)"
fi
for i in 0 1 3; do kill9 dl "$i"; done

# ---- checkpoints: a guided job resumes where it was, bit-identical ------------------

# ckpt CASE NAME MODEL EMBEDS W H: three stages, --checkpoint-every 2; the
# last stage is killed past step 5 (of 100) and restarted; the middle stage
# learns the resumed attempt from its first samples.
ckpt() {
    local case=$1 name=$2 model=$3 embeds=$4 w=$5 h=$6 steps=100 step="" i
    cat >"$T/$name.json" <<EOF2
{"redis": "$REDIS", "prefix": "$name:", "model": "$model",
 "pipelines": [{"name": "p0", "stages": 3}],
 "nodes": [{"role": "coordinator"}, {"role": "text-encoder"}, {"role": "dit-stage", "stage": 0},
           {"role": "dit-stage", "stage": 1}, {"role": "dit-stage", "stage": 2}, {"role": "vae"}]}
EOF2
    "$BIN/sdc-generate" -m "$model" -e "$embeds" -W "$w" -H "$h" -s $steps -S 77 -q -t 1 \
        -o "$T/ref-$name.png" 2>>"$T/ref.log"
    start "$name" 0
    for i in 1 2 3 4 5; do start "$name" "$i" --checkpoint-every 2; done
    echo "{\"id\": \"$name\", \"embeds\": \"$embeds\", \"width\": $w, \"height\": $h, \"steps\": $steps, \"seed\": 77}" >"$T/$name.jsonl"
    if ! wait_registered "$name" "$name:" 6 || [ "$(submit "$name:" "$name")" != 0 ]; then
        fail "$case" "cluster did not start: $(tail -n 3 "$T/$name".*.log)"
        return
    fi
    for i in $(seq 1 600); do
        step=$(rcli HGET "$name:job:$name" step)
        [ "${step:-0}" -ge 5 ] 2>/dev/null && break
        sleep 0.01
    done
    kill9 "$name" 4
    start "$name" 4 --checkpoint-every 2
    local rc from0 from3
    rc=$(submit "$name:" "$name" --wait -T 60)
    from0=$(grep -o "job $name attempt 2 resumes at step [0-9]*" "$T/$name.2.log" | awk '{ print $NF }')
    from3=$(grep -o "job $name attempt 2 resumes at step [0-9]*" "$T/$name.4.log" | awk '{ print $NF }')
    if [ "$rc" = 0 ] && [ "$(rcli HGET "$name:job:$name" attempt)" = 2 ] && [ "${from0:-0}" -ge 2 ] &&
        [ "$from0" = "$from3" ] && [ "$(rcli EXISTS "$name:ckpt:$name")" = 0 ] &&
        cmp -s "$T/ref-$name.png" "$T/out-$name/$name.png"; then
        pass "$case"
        echo "# $case: killed past step $step, resumed at step $from0 of $steps"
    else
        fail "$case" "exit $rc, killed past step ${step:-?}, attempt $(rcli HGET "$name:job:$name" attempt), resumed at '$from0'/'$from3', $(cmp "$T/ref-$name.png" "$T/out-$name/$name.png" 2>&1)"
    fi
    for i in 0 1 2 3 4 5; do kill9 "$name" "$i"; done
}
ckpt checkpoint_resume_apg ck "$DATA/tiny-hunyuanimage" "$DATA/goldens/pipeline_apg_64x64.safetensors" 64 64
ckpt checkpoint_resume_cfg ckc "$DATA/tiny-hunyuanimage-cfg" "$DATA/goldens/pipeline_cfg_96x64.safetensors" 96 64

# ---- Redis dies mid-batch; with its append-only file nothing is lost ----------------

fault kill_redis rd "" redis

# ---- command line -----------------------------------------------------------------------

expect dead_after_range 2 "dead-after" -- "$BIN/sdc-coordinator" --cluster "$T/f.json" --dead-after 0.5
expect checkpoint_every_not_coordinator 2 "checkpoint-every" -- "$BIN/sdc-coordinator" --cluster "$T/f.json" --checkpoint-every 2
expect checkpoint_every_range 2 "checkpoint-every" -- "$BIN/sdc-worker" --cluster "$T/f.json" --checkpoint-every -1
exit 0
