#!/usr/bin/env bash
# test_cluster_img2img.sh: image-to-image jobs on a real cluster (a
# throwaway redis-server, sdc-coordinator / sdc-worker processes over UCX
# loopback, the tiny model with precomputed embeddings). Every image must be
# byte-identical (cmp) to sdc-generate --init-image's for the same job: on
# 1, 2 and 3 stages, mixed with text-to-image jobs in the same micro-batches,
# and after a requeue. Bad input is refused by sdc-submit with a clear
# message and nothing submitted; bad input that reaches the cluster anyway
# fails its job with the reason (dead letter) while the nodes keep serving.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
. "$(dirname "$0")/../lib/harness.sh" cimg 180
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
G="$DATA/goldens"
E1="$G/pipeline_apg_64x64.safetensors"  # no glyph text: guider/
E2="$G/pipeline_apg_ocr_64x96.safetensors"
E96="$G/img2img_apg_64x96.safetensors"
IMG64="$G/img2img_init_64x64.png"     # 64x64, 8428 bytes
IMG96="$G/img2img_init_64x96.png"     # 96x64 (WxH)
JPG="$G/image_rgb.jpg"                # 40x24

# ---- reference images --------------------------------------------------------

# job ID EMBEDS IMAGE STRENGTH STEPS SEED [W H] [EXTRA_JSON]: a prompts line
# and its sdc-generate reference. IMAGE "-": text-to-image at W x H.
REFS_OK=1
mkdir -p "$T/ref"
job() {
    local id=$1 embeds=$2 img=$3 strength=$4 steps=$5 seed=$6 w=${7:-} h=${8:-} extra=${9:-}
    local args=(-m "$M" -e "$embeds" -s "$steps" -S "$seed" -q -o "$T/ref/$id.png")
    if [ "$img" = - ]; then
        echo "{\"id\": \"$id\", \"embeds\": \"$embeds\", \"width\": $w, \"height\": $h, \"steps\": $steps, \"seed\": $seed$extra}"
        args+=(-W "$w" -H "$h")
    else
        echo "{\"id\": \"$id\", \"embeds\": \"$embeds\", \"init_image\": \"$img\", \"strength\": $strength, \"steps\": $steps, \"seed\": $seed$extra}"
        args+=(--init-image "$img" --strength "$strength")
    fi
    case "$extra" in *'"guidance": '*) args+=(-g "$(echo "$extra" | sed 's/.*"guidance": \([0-9.]*\).*/\1/')") ;; esac
    "$BIN/sdc-generate" "${args[@]}" 2>>"$T/ref.log" || REFS_OK=0
}
# Image-to-image next to text-to-image: PNG and JPEG inputs, strengths from
# a single step to all of them, one- and two-pass steps (guidance 1).
{
    job i1 "$E96" "$IMG96" 0.6 4 11
    job t1 "$E1" - 0 3 42 64 64
    job i2 "$E1" "$IMG64" 0.5 5 3 "" "" ', "guidance": 1.0'
    job i3 "$E1" "$JPG" 0.8 3 5
    job t2 "$E2" - 0 4 7 96 64
    job i4 "$E96" "$IMG96" 0.2 4 9
    job i5 "$E1" "$IMG64" 1.0 3 13
} >"$T/mixed.jsonl"
MIXED=(i1 t1 i2 i3 t2 i4 i5)
job long "$E1" "$IMG64" 0.9 60 77 >"$T/long.jsonl"
if [ "$REFS_OK" = 1 ]; then pass references; else fail references "$(tail -c 300 "$T/ref.log")"; fi

# ---- helpers ---------------------------------------------------------------

# cluster NAME PREFIX STAGES [EXTRA_TOP_LEVEL_JSON]: $T/NAME.json, one pipeline.
cluster() {
    local s nodes="{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}"
    for s in $(seq 0 $(($3 - 1))); do nodes="$nodes, {\"role\": \"dit-stage\", \"stage\": $s}"; done
    cat >"$T/$1.json" <<EOF
{"redis": "$REDIS", "prefix": "$2", "model": "$M", "micro_batch": 4, ${4:-}
 "pipelines": [{"name": "p0", "stages": $3}], "nodes": [$nodes, {"role": "vae"}]}
EOF
    N_NODES=$(($3 + 3))
}
declare -A NODE_PID
# start NAME NODE [ARGS...]: one node in the background.
start() {
    local name=$1 node=$2 bin=sdc-worker
    shift 2
    [ "$node" = 0 ] && bin=sdc-coordinator
    "$BIN/$bin" --cluster "$T/$name.json" --node "$node" --threads 1 --peer-timeout 20 \
        --drain-timeout 20 --job-timeout 20 "$@" >>"$T/$name.$node.log" 2>&1 &
    NODE_PID[$name.$node]=$!
    PIDS+=($!)
}
# start_all NAME [ARGS...]: every node.
start_all() {
    local name=$1 i
    shift
    for i in $(seq 0 $((N_NODES - 1))); do start "$name" "$i" "$@"; done
}
# stop_all NAME CASE: coordinator first, then the workers; all must exit 0.
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
# submit PREFIX FILE OUT [ARGS...]: sdc-submit's exit status (bounded).
submit() {
    local prefix=$1 file=$2 out=$3
    shift 3
    timeout -k 5 60 "$BIN/sdc-submit" --redis "$REDIS" --prefix "$prefix" -p "$file" -o "$out" \
        -q "$@" >"$out.submit.log" 2>&1
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

# ---- 1, 2 and 3 stages: byte-identical to sdc-generate ------------------------

for S in 1 2 3; do
    cluster "s$S" "s$S:" "$S"
    start_all "s$S" --log-level debug
    rc=$(submit "s$S:" "$T/mixed.jsonl" "$T/out$S" --wait -T 60)
    if [ "$rc" = 0 ]; then
        same "stages_${S}_identical" "$T/out$S" "${MIXED[@]}"
    else
        fail "stages_${S}_identical" "sdc-submit exit $rc: $(tail -c 400 "$T/out$S.submit.log")"
    fi
    stop_all "s$S" "stages_${S}_stop"
done
# Stage 0 of the 3-stage ring sent an image job's step-0 sample (with its
# image latents) in one micro-batch with another job's sample.
if grep -E "micro-batch of [2-9]" "$T/s3.2.log" | grep -E " i[0-9]/(cond|uncond)/0( |$)" |
    awk '{ delete j; n = 0; for (i = 1; i <= NF; i++) if ($i ~ /\//) { split($i, p, "/"); if (!(p[1] in j)) { j[p[1]] = 1; n++ } } if (n > 1) found = 1 } END { exit !found }'; then
    pass microbatch_mixes_image_jobs
else
    fail microbatch_mixes_image_jobs "no micro-batch held an image job's first step next to another job"
fi
# The params carry the image's size and checksum, the image sits beside the
# job, the hash counts the steps strength leaves (0.6 of 4: 3 steps).
params=$(rcli HGET s1:job:i1 params)
if grep -q '"init_image":{"bytes":12515,"crc32c":"[0-9a-f]\{8\}"},"strength":0.6' <<<"$params" &&
    ! grep -q "png" <<<"$params" && [ "$(rcli STRLEN s1:job:i1:image)" = 12515 ] &&
    [ "$(rcli HGET s1:job:i1 steps)" = 3 ] &&
    rcli --raw GET s1:job:i1:image | head -c 12515 | cmp -s - "$IMG96"; then
    pass image_stored_beside_job
else
    fail image_stored_beside_job "params '$params', image $(rcli STRLEN s1:job:i1:image) bytes, steps $(rcli HGET s1:job:i1 steps)"
fi
# The image keeps the job's retention once the job is done.
ttl=$(rcli PTTL s1:job:i1:image)
hash_ttl=$(rcli PTTL s1:job:i1)
if [ "${ttl:-0}" -gt 0 ] && [ "${hash_ttl:-0}" -gt 0 ] && [ $((hash_ttl - ttl)) -lt 60000 ]; then
    pass image_retention
else
    fail image_retention "image PTTL '$ttl', job PTTL '$hash_ttl'"
fi

# ---- a stage dies mid-job: the requeued image job still comes out right -------

cluster kr kr: 2
start_all kr
rc=$(submit kr: "$T/long.jsonl" "$T/outkr")
for _ in $(seq 1 300); do
    step=$(rcli HGET kr:job:long step)
    [ "${step:-0}" -ge 3 ] 2>/dev/null && break
    sleep 0.05
done
kill -KILL "${NODE_PID[kr.3]}"
wait "${NODE_PID[kr.3]}" 2>/dev/null
start kr 3
rc=$(submit kr: "$T/long.jsonl" "$T/outkr" --wait -T 60)
if [ "$rc" = 0 ] && [ "$(rcli HGET kr:job:long attempt)" = 2 ] && [ "${step:-0}" -ge 3 ]; then
    same requeued_image_job_identical "$T/outkr" long
else
    fail requeued_image_job_identical "exit $rc, killed at step ${step:-?}, attempt $(rcli HGET kr:job:long attempt): $(tail -c 300 "$T/outkr.submit.log")"
fi
stop_all kr kr_stop

# ---- bad input at submission: clear errors, nothing submitted --------------------

R=(--redis "$REDIS" --prefix "sub:")
SUBMIT="$BIN/sdc-submit"
line() { printf '{"id": "x", "embeds": "%s", "steps": 4%s}\n' "$E1" "$1" >"$T/$2.jsonl"; }
echo "this is not an image" >"$T/text.png"
head -c 2000 "$IMG64" >"$T/trunc.png"
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00\x27\x30\x9c\x9f' >"$T/huge.png"
line '' plain
expect submit_not_an_image 1 "text.png.*not a PNG or JPEG" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --init-image "$T/text.png"
expect submit_truncated_png 1 "trunc.png.*truncated" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --init-image "$T/trunc.png"
expect submit_huge_dimensions 1 "huge.png.*100000 x 100000 pixels exceeds" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --init-image "$T/huge.png"
expect submit_over_size 1 "8428 bytes, over the limit of 1000 bytes" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --init-image "$IMG64" --max-image-bytes 1000
expect submit_missing_image 1 "nope.png" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --init-image "$T/nope.png"
expect submit_strength_above_one 2 "--strength: '1.5'" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --init-image "$IMG64" --strength 1.5
expect submit_strength_without_image 2 "--strength needs --init-image" -- "$SUBMIT" "${R[@]}" -p "$T/plain.jsonl" -o "$T/o" --strength 0.5
line ", \"init_image\": \"$IMG64\", \"strength\": -0.5" neg
expect line_strength_negative 1 "neg.jsonl:1: .*'strength' must be in 0..1" -- "$SUBMIT" "${R[@]}" -p "$T/neg.jsonl" -o "$T/o"
line ", \"init_image\": \"$IMG64\", \"strength\": 0" zero
expect line_strength_zero 1 "'strength' 0 runs none of the 4 steps" -- "$SUBMIT" "${R[@]}" -p "$T/zero.jsonl" -o "$T/o"
line ', "strength": 0.5' noimg
expect line_strength_without_image 1 "'strength' goes with 'init_image'" -- "$SUBMIT" "${R[@]}" -p "$T/noimg.jsonl" -o "$T/o"
line ", \"init_image\": \"$IMG96\", \"width\": 64" wrong
expect line_size_mismatch 1 "input image is 96x64 but the job's size is 64x64" -- "$SUBMIT" "${R[@]}" -p "$T/wrong.jsonl" -o "$T/o"
line ', "init_image": {"bytes": 10, "crc32c": "00000000"}' obj
expect line_image_not_a_path 1 "'init_image' in a prompts file is the path" -- "$SUBMIT" "${R[@]}" -p "$T/obj.jsonl" -o "$T/o"
line ", \"refine\": true, \"refiner_embeds\": \"$G/refiner_pipeline_64x96.safetensors\"" refine
expect refine_without_refiner 1 "asks for 'refine', but this cluster has no refiner node" -- "$SUBMIT" "${R[@]}" -p "$T/refine.jsonl" -o "$T/o"
n=$(rcli XLEN sub:jobs)
[ "$n" = 0 ] && [ -z "$(rcli --scan --pattern 'sub:job:*')" ] && pass bad_input_submits_nothing ||
    fail bad_input_submits_nothing "$n stream entries"
"$SUBMIT" --help | grep -q -- "--init-image" && pass submit_help || fail submit_help "no --init-image in --help"

# ---- bad input that reaches the cluster: the job fails, the nodes serve on -------

# Submitted while no cluster runs, then broken in Redis behind sdc-submit's back.
{
    job bad1 "$E1" "$IMG64" 0.5 2 1
    job bad2 "$E1" "$IMG64" 0.5 2 2
    job big "$E96" "$IMG96" 0.5 2 3
} >"$T/bad.jsonl"
rc=$(submit bad: "$T/bad.jsonl" "$T/outbad")
rcli SET bad:job:bad1:image "not an image any more" >/dev/null
rcli DEL bad:job:bad2:image >/dev/null
RP="{\"id\":\"ref1\",\"embeds\":\"$E1\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":0,\"trim_text\":true,\"refine\":true,\"refiner_embeds\":\"$G/refiner_pipeline_64x96.safetensors\"}"
rcli HSET bad:job:ref1 state queued attempt 1 step 0 steps 2 params "$RP" created_ms 1 updated_ms 1 >/dev/null
rcli XADD bad:jobs '*' id ref1 attempt 1 params "$RP" >/dev/null
# The cluster takes input images up to 10000 bytes: "big" (12515) is over.
cluster bad bad: 2 '"max_image_bytes": 10000,'
start_all bad
for _ in $(seq 1 200); do
    [ "$(rcli XLEN bad:dead)" -ge 4 ] 2>/dev/null && break
    sleep 0.1
done
check_failed() { # CASE ID PATTERN
    local state err
    state=$(rcli HGET "bad:job:$2" state)
    err=$(rcli HGET "bad:job:$2" error)
    if [ "$state" = failed ] && grep -qE -- "$3" <<<"$err" && rcli XRANGE bad:dead - + | grep -qx "$2"; then
        pass "$1"
    else
        fail "$1" "state '$state', error '$err'"
    fi
}
check_failed worker_image_corrupted bad1 "stored input image \(21 bytes, CRC-32C [0-9a-f]+\) is not the one its parameters name \(8428 bytes"
check_failed worker_image_missing bad2 "input image \(bad:job:bad2:image\) is not in Redis"
check_failed worker_image_over_cluster_limit big "12515 bytes is over this cluster's limit of 10000 bytes"
check_failed worker_refine_without_refiner ref1 "asks for 'refine', but this cluster has no refiner node"
head -n 3 "$T/mixed.jsonl" | grep -v '"id": "i1"' >"$T/good.jsonl"
rc=$(submit bad: "$T/good.jsonl" "$T/outgood" --wait -T 40)
if [ "$rc" = 0 ]; then
    same serves_after_bad_images "$T/outgood" t1 i2
else
    fail serves_after_bad_images "sdc-submit exit $rc: $(tail -c 300 "$T/outgood.submit.log")"
fi
stop_all bad bad_stop
exit 0
