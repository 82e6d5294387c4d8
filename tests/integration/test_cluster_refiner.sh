#!/usr/bin/env bash
# test_cluster_refiner.sh: refine jobs on a real cluster (a throwaway
# redis-server, sdc-coordinator / sdc-worker processes over UCX loopback,
# the tiny base and refiner models with precomputed embeddings). A batch
# mixes refine and plain jobs: every refined PNG must be byte-identical
# (cmp) to sdc-generate --refiner's for the same job and seed, every plain
# one to plain sdc-generate's, an image-to-image job refines too, and two
# refiner nodes share the work. Bad input is refused by sdc-submit with a
# clear message; bad input that reaches the cluster fails its job with the
# reason while the nodes keep serving.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
. "$(dirname "$0")/../lib/harness.sh" cref 150
. "$(dirname "$0")/../lib/expect.sh"

if ! sdc_redis_start; then
    fail redis_start "cannot start redis-server"
    exit 0
fi
trap cleanup EXIT # sdc_redis_start set its own
REDIS=$SDC_REDIS_URL
SOCK=${REDIS#redis+unix://}
rcli() { redis-cli -s "$SOCK" "$@"; }

M="$DATA/tiny-hunyuanimage"
RM="$DATA/tiny-hunyuanimage-refiner"
G="$DATA/goldens"
E1="$G/pipeline_apg_64x64.safetensors"
E2="$G/pipeline_apg_ocr_64x96.safetensors"
RE="$G/refiner_pipeline_64x96.safetensors"
IMG64="$G/img2img_init_64x64.png"

# ---- reference images ----------------------------------------------------------

# job ID EMBEDS W H STEPS SEED REFINE [EXTRA_JSON [EXTRA_GEN_ARGS...]]: a
# prompts line and its sdc-generate reference.
REFS_OK=1
mkdir -p "$T/ref"
job() {
    local id=$1 embeds=$2 w=$3 h=$4 steps=$5 seed=$6 refine=$7 extra=${8:-}
    shift 8 2>/dev/null || shift $#
    local args=(-m "$M" -e "$embeds" -W "$w" -H "$h" -s "$steps" -S "$seed" -q -o "$T/ref/$id.png" "$@")
    local r=""
    if [ "$refine" = 1 ]; then
        r=", \"refine\": true, \"refiner_embeds\": \"$RE\""
        args+=(--refiner "$RM" --refiner-embeds "$RE")
    fi
    echo "{\"id\": \"$id\", \"embeds\": \"$embeds\", \"width\": $w, \"height\": $h, \"steps\": $steps, \"seed\": $seed$r$extra}"
    "$BIN/sdc-generate" "${args[@]}" 2>>"$T/ref.log" || REFS_OK=0
}
{
    job r1 "$E1" 64 64 3 42 1
    job p1 "$E1" 64 64 3 43 0
    job r2 "$E2" 96 64 4 7 1 ', "refine_steps": 2, "refine_guidance": 5, "refine_strength": 0.5' \
        --refine-steps 2 --refine-guidance 5 --refine-strength 0.5
    job p2 "$E2" 96 64 2 8 0
    job r3 "$E1" 64 64 2 9 1
    job ri "$E1" 64 64 4 5 1 ", \"init_image\": \"$IMG64\", \"strength\": 0.5" \
        --init-image "$IMG64" --strength 0.5
} >"$T/mixed.jsonl"
MIXED=(r1 p1 r2 p2 r3 ri)
# refine_seed: the refiner's own seed; reference: the base image, then the
# refiner on it with that seed.
echo "{\"id\": \"rs\", \"embeds\": \"$E1\", \"width\": 64, \"height\": 64, \"steps\": 2, \"seed\": 11, \"refine\": true, \"refiner_embeds\": \"$RE\", \"refine_seed\": 99}" >>"$T/mixed.jsonl"
MIXED+=(rs)
"$BIN/sdc-generate" -m "$M" -e "$E1" -W 64 -H 64 -s 2 -S 11 -q -o "$T/rs_base.png" 2>>"$T/ref.log" &&
    "$BIN/sdc-generate" --refiner "$RM" --refiner-embeds "$RE" -S 99 -q --refine-image "$T/rs_base.png" \
        -o "$T/ref/rs.png" 2>>"$T/ref.log" || REFS_OK=0
# The refined and the plain image of the same job differ (the refiner ran).
"$BIN/sdc-generate" -m "$M" -e "$E1" -W 64 -H 64 -s 3 -S 42 -q -o "$T/r1_base.png" 2>>"$T/ref.log" || REFS_OK=0
if [ "$REFS_OK" = 1 ] && ! cmp -s "$T/r1_base.png" "$T/ref/r1.png"; then
    pass references
else
    fail references "$(tail -c 300 "$T/ref.log")"
fi

# ---- helpers ---------------------------------------------------------------------

# cluster NAME PREFIX REFINERS: $T/NAME.json, one pipeline of 2 stages.
cluster() {
    local i nodes="{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, {\"role\": \"dit-stage\", \"stage\": 0}, {\"role\": \"dit-stage\", \"stage\": 1}, {\"role\": \"vae\"}"
    local top=""
    for i in $(seq 1 "$3"); do nodes="$nodes, {\"role\": \"refiner\"}"; done
    [ "$3" -gt 0 ] && top="\"refiner_model\": \"$RM\","
    cat >"$T/$1.json" <<EOF
{"redis": "$REDIS", "prefix": "$2", "model": "$M", $top "micro_batch": 4,
 "pipelines": [{"name": "p0", "stages": 2}], "nodes": [$nodes]}
EOF
    N_NODES=$((5 + $3))
}
declare -A NODE_PID
start() {
    local name=$1 node=$2 bin=sdc-worker
    shift 2
    [ "$node" = 0 ] && bin=sdc-coordinator
    "$BIN/$bin" --cluster "$T/$name.json" --node "$node" --threads 1 --peer-timeout 20 \
        --drain-timeout 20 --job-timeout 20 "$@" >>"$T/$name.$node.log" 2>&1 &
    NODE_PID[$name.$node]=$!
    PIDS+=($!)
}
start_all() {
    local name=$1 i
    shift
    for i in $(seq 0 $((N_NODES - 1))); do start "$name" "$i" "$@"; done
}
stop_all() {
    local i pid rc bad=""
    for i in $(seq 0 $((N_NODES - 1))); do
        pid=${NODE_PID[$1.$i]}
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid"
            bad="$bad node $i hung;"
        fi
        wait "$pid" 2>/dev/null
        rc=$?
        [ "$rc" = 0 ] || bad="$bad node $i: exit $rc;"
    done
    if [ -z "$bad" ]; then pass "$2"; else fail "$2" "$bad"; fi
}
submit() {
    local prefix=$1 file=$2 out=$3
    shift 3
    timeout -k 5 60 "$BIN/sdc-submit" --redis "$REDIS" --prefix "$prefix" -p "$file" -o "$out" \
        -q "$@" >"$out.submit.log" 2>&1
    echo $?
}
same() {
    local case=$1 dir=$2 id bad=""
    shift 2
    for id in "$@"; do
        if [ ! -f "$dir/$id.png" ]; then bad="$bad $id: missing;"
        elif ! cmp -s "$dir/$id.png" "$T/ref/$id.png"; then bad="$bad $id: differs;"; fi
    done
    if [ -z "$bad" ]; then pass "$case"; else fail "$case" "$bad"; fi
}

# ---- bad input at submission: clear errors, nothing submitted ----------------------

R=(--redis "$REDIS" --prefix "sub:")
SUBMIT="$BIN/sdc-submit"
line() { printf '{"id": "x", "embeds": "%s", "steps": 2%s}\n' "$E1" "$1" >"$T/$2.jsonl"; }
line ", \"refine\": true, \"refiner_embeds\": \"$RE\"" ok
expect submit_no_refiner_node 1 "asks for 'refine', but this cluster has no refiner node" -- "$SUBMIT" "${R[@]}" -p "$T/ok.jsonl" -o "$T/o"
line ', "refine": true' noemb
expect refine_without_embeds 1 "'refine' needs 'refiner_embeds' or a 'prompt'" -- "$SUBMIT" "${R[@]}" -p "$T/noemb.jsonl" -o "$T/o"
line ", \"refine\": true, \"refiner_embeds\": \"$T/nope.safetensors\"" missing
expect refiner_embeds_missing 1 "refiner_embeds: embeds file .*nope.safetensors" -- "$SUBMIT" "${R[@]}" -p "$T/missing.jsonl" -o "$T/o"
line ", \"refine\": true, \"refiner_embeds\": \"$RE\", \"refine_steps\": 0" steps0
expect refine_steps_zero 1 "'refine_steps' must be an integer in 1..1000" -- "$SUBMIT" "${R[@]}" -p "$T/steps0.jsonl" -o "$T/o"
line ", \"refine\": true, \"refiner_embeds\": \"$RE\", \"refine_guidance\": 0" g0
expect refine_guidance_zero 1 "'refine_guidance' 0 must be above 0" -- "$SUBMIT" "${R[@]}" -p "$T/g0.jsonl" -o "$T/o"
line ", \"refine\": true, \"refiner_embeds\": \"$RE\", \"refine_strength\": 1.5" s15
expect refine_strength_above_one 1 "'refine_strength' must be in 0..1" -- "$SUBMIT" "${R[@]}" -p "$T/s15.jsonl" -o "$T/o"
line ', "refine_steps": 3' nore
expect refine_field_without_refine 1 "'refine_steps' goes with 'refine': true" -- "$SUBMIT" "${R[@]}" -p "$T/nore.jsonl" -o "$T/o"
line '' plain
expect flag_without_refine 2 "need --refine" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --refine-steps 2
expect flag_guidance_zero 2 "--refine-guidance must be above 0" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --refine --refine-guidance 0
expect flag_refine_without_embeds 1 "'refine' needs 'refiner_embeds' or a 'prompt'" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --refine
n=$(rcli XLEN sub:jobs)
[ "$n" = 0 ] && [ -z "$(rcli --scan --pattern 'sub:job:*')" ] && pass bad_input_submits_nothing ||
    fail bad_input_submits_nothing "$n stream entries"
"$SUBMIT" --help | grep -q -- "--refiner-embeds" && pass submit_help || fail submit_help "no --refiner-embeds in --help"

# ---- a batch of refine and plain jobs: byte-identical to sdc-generate -----------------

cluster c c: 2
# A job whose refiner conditioning has the base model's widths: the refiner
# node fails it with the reason. Submitted behind sdc-submit's back.
BP="{\"id\":\"badre\",\"embeds\":\"$E1\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":0,\"trim_text\":true,\"refine\":true,\"refiner_embeds\":\"$E2\",\"refine_steps\":4,\"refine_guidance\":3.25,\"refine_strength\":0.25}"
rcli HSET c:job:badre state queued attempt 1 step 0 steps 2 params "$BP" created_ms 1 updated_ms 1 >/dev/null
rcli XADD c:jobs '*' id badre attempt 1 params "$BP" >/dev/null
start_all c --log-level debug
# sdc-submit looks for a registered refiner node before it submits.
for _ in $(seq 1 200); do
    [ "$(rcli --scan --pattern 'c:node:refiner-*' | wc -l)" = 2 ] && break
    sleep 0.1
done
rc=$(submit c: "$T/mixed.jsonl" "$T/outm" --wait -T 90)
if [ "$rc" = 0 ]; then
    same refine_batch_identical "$T/outm" "${MIXED[@]}"
else
    fail refine_batch_identical "sdc-submit exit $rc: $(tail -c 400 "$T/outm.submit.log")"
fi
# The same batch through the flags: --refine with --refiner-embeds on prompt-file defaults.
printf '{"id": "f1", "embeds": "%s", "width": 64, "height": 64, "steps": 3, "seed": 42}\n' "$E1" >"$T/flags.jsonl"
rc=$(submit c: "$T/flags.jsonl" "$T/outf" --wait -T 60 --refine --refiner-embeds "$RE")
if [ "$rc" = 0 ] && cmp -s "$T/outf/f1.png" "$T/ref/r1.png"; then
    pass refine_flags_identical
else
    fail refine_flags_identical "exit $rc: $(tail -c 300 "$T/outf.submit.log")"
fi
# Redis: decoding -> refining -> done for refine jobs; no refining for plain ones.
ev() { rcli XRANGE "c:job:$1:events" - + | grep -A1 -x state | grep -vx -- '--' | grep -vx state | tr '\n' ' '; }
if [[ "$(ev r1)" == *"decoding refining done"* ]] && [[ "$(ev p1)" == *"decoding done"* ]] &&
    [[ "$(ev p1)" != *refining* ]]; then
    pass refining_state
else
    fail refining_state "r1: $(ev r1); p1: $(ev p1)"
fi
# Both refiner nodes refined (the VAE node sends round robin).
if grep -q "done (refined" "$T/c.5.log" && grep -q "done (refined" "$T/c.6.log"; then
    pass two_refiners_share
else
    fail two_refiners_share "refiner logs: $(grep -c 'done (refined' "$T/c.5.log") / $(grep -c 'done (refined' "$T/c.6.log")"
fi
for _ in $(seq 1 100); do # the batch may finish before this job's failure lands
    [ "$(rcli HGET c:job:badre state)" = failed ] && break
    sleep 0.1
done
state=$(rcli HGET c:job:badre state)
err=$(rcli HGET c:job:badre error)
if [ "$state" = failed ] && grep -q "refiner_embeds" <<<"$err" && rcli XRANGE c:dead - + | grep -qx badre; then
    pass refiner_fails_bad_conditioning
else
    fail refiner_fails_bad_conditioning "state '$state', error '$err'"
fi
"$BIN/sdc-status" --redis "$REDIS" --prefix c: >"$T/status" 2>&1
grep -q "refiner" "$T/status" && pass status_lists_refiners || fail status_lists_refiners "$(head -c 300 "$T/status")"

# ---- a dead refiner node is skipped ------------------------------------------------------

kill -KILL "${NODE_PID[c.5]}"
wait "${NODE_PID[c.5]}" 2>/dev/null
sed 's/"id": "\([a-z0-9]*\)"/"id": "k\1"/' "$T/mixed.jsonl" | grep -E '"id": "k(r1|r3)"' >"$T/kill.jsonl"
rc=$(submit c: "$T/kill.jsonl" "$T/outk" --wait -T 60)
cp "$T/ref/r1.png" "$T/ref/kr1.png"
cp "$T/ref/r3.png" "$T/ref/kr3.png"
if [ "$rc" = 0 ]; then
    same dead_refiner_skipped "$T/outk" kr1 kr3
else
    fail dead_refiner_skipped "exit $rc: $(tail -c 300 "$T/outk.submit.log")"
fi
start c 5
sleep 1
N_NODES=7
stop_all c c_stop

# ---- a refiner node dies mid-job: the job is requeued and still comes out right ---------

"$BIN/sdc-generate" -m "$M" -e "$E1" -W 64 -H 64 -s 2 -S 3 -q --refiner "$RM" --refiner-embeds "$RE" \
    --refine-steps 400 -o "$T/ref/long.png" 2>>"$T/ref.log"
echo "{\"id\": \"long\", \"embeds\": \"$E1\", \"width\": 64, \"height\": 64, \"steps\": 2, \"seed\": 3, \"refine\": true, \"refiner_embeds\": \"$RE\", \"refine_steps\": 400}" >"$T/long.jsonl"
cluster k k: 1
start_all k --job-timeout 8
for _ in $(seq 1 200); do
    [ -n "$(rcli --scan --pattern 'k:node:refiner-*')" ] && break
    sleep 0.1
done
rc=$(submit k: "$T/long.jsonl" "$T/outl")
for _ in $(seq 1 400); do
    [ "$(rcli HGET k:job:long state)" = refining ] && break
    sleep 0.02
done
seen=$(rcli HGET k:job:long state)
kill -KILL "${NODE_PID[k.5]}"
wait "${NODE_PID[k.5]}" 2>/dev/null
start k 5
rc=$(submit k: "$T/long.jsonl" "$T/outl" --wait -T 60)
if [ "$rc" = 0 ] && [ "$seen" = refining ] && [ "$(rcli HGET k:job:long attempt)" -ge 2 ]; then
    same refiner_death_requeued "$T/outl" long
else
    fail refiner_death_requeued "exit $rc, killed in state '$seen', attempt $(rcli HGET k:job:long attempt): $(tail -c 300 "$T/outl.submit.log")"
fi
stop_all k k_stop

# ---- a prompt job: the refiner node encodes the prompt with the refiner's text encoder --

MT="$DATA/tiny-hunyuanimage-text"
"$BIN/sdc-generate" -m "$MT" -p 'a red fox, "SDC"' -W 64 -H 64 -s 2 -S 21 -q --refiner "$RM" \
    -o "$T/ref/tp.png" 2>>"$T/ref.log"
printf '{"id": "tp", "prompt": "a red fox, \\"SDC\\"", "width": 64, "height": 64, "steps": 2, "seed": 21, "refine": true}\n' \
    >"$T/tp.jsonl"
M="$MT" cluster t t: 1
start_all t
for _ in $(seq 1 200); do
    [ -n "$(rcli --scan --pattern 't:node:refiner-*')" ] && break
    sleep 0.1
done
rc=$(submit t: "$T/tp.jsonl" "$T/outt" --wait -T 60)
if [ "$rc" = 0 ] && [ -f "$T/ref/tp.png" ]; then
    same refine_prompt_encoded_by_node "$T/outt" tp
else
    fail refine_prompt_encoded_by_node "exit $rc: $(tail -c 300 "$T/outt.submit.log")"
fi
stop_all t t_stop

# ---- a refine job that reaches a cluster without refiner nodes: failed, with the reason --

cluster n n: 0
NP="{\"id\":\"nr\",\"embeds\":\"$E1\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":0,\"trim_text\":true,\"refine\":true,\"refiner_embeds\":\"$RE\",\"refine_steps\":4,\"refine_guidance\":3.25,\"refine_strength\":0.25}"
rcli HSET n:job:nr state queued attempt 1 step 0 steps 2 params "$NP" created_ms 1 updated_ms 1 >/dev/null
rcli XADD n:jobs '*' id nr attempt 1 params "$NP" >/dev/null
start_all n
for _ in $(seq 1 100); do
    [ "$(rcli HGET n:job:nr state)" = failed ] && break
    sleep 0.1
done
err=$(rcli HGET n:job:nr error)
if [ "$(rcli HGET n:job:nr state)" = failed ] && grep -q "this cluster has no refiner node" <<<"$err"; then
    pass coordinator_fails_refine_without_refiner
else
    fail coordinator_fails_refine_without_refiner "error '$err'"
fi
stop_all n n_stop
exit 0
