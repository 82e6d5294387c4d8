#!/usr/bin/env bash
# sdc-submit and deploy/local.sh end to end. Bad input gives a clear error
# (naming the line) and submits nothing; the client reports done, failed and
# unfinished jobs from Redis; 50 jobs of mixed sizes and parameters through a
# local cluster of 2 pipelines x 2 DiT stages, started without and with
# mpirun, come back byte-identical to sdc-generate's images, each with a
# complete, ordered state history in Redis; `status` shows the cluster and
# `down` leaves no process behind.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
# Everything it starts listens on 127.0.0.1, lives in a temporary directory,
# is bounded by timeouts and is stopped on exit.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${SDC_BIN:-$ROOT/build/bin}" && pwd)
DATA=$(cd "${SDC_TEST_DATA:-$ROOT/tests/data}" && pwd)
LOCAL="$ROOT/deploy/local.sh"
SUBMIT="$BIN/sdc-submit"
MODEL="$DATA/tiny-hunyuanimage"
E_APG="$DATA/goldens/pipeline_apg_64x64.safetensors"
E_OCR="$DATA/goldens/pipeline_apg_ocr_64x96.safetensors"
T=$(mktemp -d)
REDIS_PID=""
RUNS=()

cleanup() {
    local r
    for r in "${RUNS[@]}"; do
        SDC_RUN_DIR=$r SDC_BIN=$BIN timeout 60 "$LOCAL" down --timeout 5 >/dev/null 2>&1
    done
    stop_redis
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
snip() { head -c 600 "$1" | tr '\n' '|'; }

# expect NAME STATUS PATTERN -- command...: exit status and a stderr pattern.
expect() {
    local name=$1 want=$2 pat=$3
    shift 4
    timeout 30 "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit $rc, want $want; stderr: $(snip "$T/err")"
    elif [ -n "$pat" ] && ! grep -qE -- "$pat" "$T/err"; then
        fail "$name" "stderr lacks /$pat/: $(snip "$T/err")"
    else
        pass "$name"
    fi
}

free_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 30000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

start_redis() {
    RPORT=$(free_port) || return 1
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$T" \
        >"$T/redis.log" 2>&1 &
    REDIS_PID=$!
    local i
    for ((i = 0; i < 50; i++)); do
        redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    return 1
}

stop_redis() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null
        REDIS_PID=""
    fi
}

rcli() { redis-cli -p "$RPORT" "$@"; }

# A process that exited but is not reaped yet (a zombie) is not alive.
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]; }

field() { # jsonl-line key -> string or number value (sdc-submit writes compact JSON)
    sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$1" | head -n1
}

# --- usage --------------------------------------------------------------------

"$SUBMIT" --help >"$T/help" 2>&1 && grep -q -- "--prompts" "$T/help" && pass help || fail help "no usage text"
echo "a cat" >"$T/one.txt"
expect missing_required 2 "required" -- "$SUBMIT" --prompts "$T/one.txt"
expect unknown_option 2 "unknown option" -- "$SUBMIT" --frobnicate
expect missing_value 2 "needs a value" -- "$SUBMIT" -p "$T/one.txt" -o "$T/o" --steps
expect width_not_number 2 "--width: 'abc'" -- "$SUBMIT" -p "$T/one.txt" -o "$T/o" -W abc
expect steps_zero 2 "--steps" -- "$SUBMIT" -p "$T/one.txt" -o "$T/o" -s 0
expect guidance_nan 2 "--guidance" -- "$SUBMIT" -p "$T/one.txt" -o "$T/o" -g nan
expect timeout_without_wait 2 "--wait" -- "$SUBMIT" -p "$T/one.txt" -o "$T/o" --timeout 5
expect password_in_url 2 "SDC_REDIS_PASSWORD" -- "$SUBMIT" -p "$T/one.txt" -o "$T/o" -r redis://u:secret@127.0.0.1:1
grep -q secret "$T/err" && fail password_not_echoed "the password appears in the message" || pass password_not_echoed
expect url_scheme 2 "scheme 'http'" -- "$SUBMIT" -p "$T/one.txt" -o "$T/o" -r http://127.0.0.1:1
expect stray_argument 2 "unexpected argument" -- "$SUBMIT" -p "$T/one.txt" -o "$T/o" extra

# --- bad input files, against a Redis of our own ---------------------------------

if ! start_redis; then
    fail redis_server "could not start redis-server: $(snip "$T/redis.log")"
    exit 0
fi
R=(-r "redis://127.0.0.1:$RPORT")
dead=$(free_port)
expect redis_unreachable 1 "127.0.0.1:$dead.*(refused|connect)" -- "$SUBMIT" -r "redis://127.0.0.1:$dead" -p "$T/one.txt" -o "$T/o"

bad() { # name line-pattern content (printf format)
    local name=$1 pat=$2
    printf "$3" >"$T/$name.jsonl"
    expect "$name" 1 "$name.jsonl:$pat" -- "$SUBMIT" "${R[@]}" -p "$T/$name.jsonl" -o "$T/o" -e "$E_APG"
}
bad bad_json "3: invalid JSON at column" 'a cat\n{"prompt": "b"}\n{"prompt": "c", \n'
bad unknown_field "2: job params: unknown field 'stepz'" '# header\n{"prompt": "b", "stepz": 4}\n'
bad steps_out_of_range "1: job params: 'steps' must be an integer in 1..10000, got 0" '{"prompt": "a", "steps": 0}\n'
bad width_wrong_type "1: job params: 'width' must be an integer, got a string" '{"prompt": "a", "width": "64"}\n'
bad seed_negative "2: job params: 'seed'" 'x\n{"prompt": "a", "seed": -1}\n'
bad prompt_and_embeds "1: job params: give exactly one of 'prompt' and 'embeds'" "{\"prompt\": \"a\", \"embeds\": \"$E_APG\"}\n"
bad embeds_missing "2: embeds file .*nope.safetensors: No such file" 'a\n{"embeds": "nope.safetensors"}\n'
bad duplicate_id "4: job id 'dup' is already used on line 2" 'a\n{"id": "dup", "prompt": "a"}\nb\n{"id": "dup", "prompt": "b"}\n'
bad bad_id "1: job params: 'id'" '{"id": "no spaces", "prompt": "a"}\n'
bad invalid_utf8 "2: job params: 'prompt' is not valid UTF-8" 'ok\nbad \xff byte\n'
bad nul_escape "1: .*NUL" '{"prompt": "a\\u0000b"}\n'
bad trailing_text "1: unexpected text after the JSON object" '{"prompt": "a"} extra\n'
bad not_an_object_json "1: invalid JSON" '{"prompt": ["a"}\n'
printf '\n# only comments\n\n' >"$T/empty.txt"
expect no_jobs 1 "no jobs in the file" -- "$SUBMIT" "${R[@]}" -p "$T/empty.txt" -o "$T/o"
printf '{"width": 64}\n' >"$T/noembeds.jsonl"
expect no_text_no_default 1 "noembeds.jsonl:1: the job has neither 'prompt' nor 'embeds'" -- "$SUBMIT" "${R[@]}" -p "$T/noembeds.jsonl" -o "$T/o"
expect default_embeds_missing 1 "--embeds: embeds file .*missing.st" -- "$SUBMIT" "${R[@]}" -p "$T/noembeds.jsonl" -o "$T/o" -e "$T/missing.st"
expect prompts_missing 1 "nonexistent.txt: No such file" -- "$SUBMIT" "${R[@]}" -p "$T/nonexistent.txt" -o "$T/o"
expect out_not_creatable 1 "cannot create /proc/sdc-x" -- "$SUBMIT" "${R[@]}" -p "$T/one.txt" -o /proc/sdc-x/y
[ "$(rcli dbsize)" = 0 ] && pass nothing_submitted_on_error || fail nothing_submitted_on_error "Redis holds $(rcli dbsize) keys"

# --- submitting and waiting, with Redis standing in for the cluster ------------------

# Relative embeds paths are relative to the prompts file.
mkdir -p "$T/batch"
cp "$E_APG" "$T/batch/e.safetensors"
printf 'a red fox\n{"id": "jb", "embeds": "e.safetensors", "steps": 3}\n{"id": "jc", "prompt": "c", "seed": 99}\n' >"$T/batch/three.jsonl"
if timeout 30 "$SUBMIT" "${R[@]}" -p "$T/batch/three.jsonl" -o "$T/s1" -S 5 -s 2 -W 64 -H 64 2>"$T/err"; then
    n=$(wc -l <"$T/s1/jobs.jsonl")
    ids=$(sed 's/.*"id":"\([^"]*\)".*/\1/' "$T/s1/jobs.jsonl" | head -n1)
    if [ "$n" = 3 ] && [ "$(rcli xlen sdc:jobs)" = 3 ] && [ "$(rcli hget sdc:job:jb state)" = queued ] &&
        grep -q '"state":"queued"' "$T/s1/jobs.jsonl"; then
        pass submit_no_wait
    else
        fail submit_no_wait "jobs.jsonl has $n lines, stream $(rcli xlen sdc:jobs), state $(rcli hget sdc:job:jb state)"
    fi
    p1=$(rcli hget "sdc:job:$ids" params)
    pb=$(rcli hget sdc:job:jb params)
    pc=$(rcli hget sdc:job:jc params)
    [[ $p1 == *'"prompt":"a red fox"'*'"width":64,"height":64,"steps":2,"seed":5'* ]] &&
        [[ $pb == *"\"embeds\":\"$T/batch/e.safetensors\""*'"steps":3,"seed":6'* ]] &&
        [[ $pc == *'"steps":2,"seed":99'* ]] &&
        pass defaults_and_paths || fail defaults_and_paths "params: $p1 | $pb | $pc"
else
    fail submit_no_wait "$(snip "$T/err")"
fi
if timeout 30 "$SUBMIT" "${R[@]}" -p "$T/batch/three.jsonl" -o "$T/s2" -S 5 -s 2 -W 64 -H 64 2>"$T/err"; then
    # The first line has no id: it gets a new one; jb and jc are the same jobs.
    [ "$(rcli xlen sdc:jobs)" = 4 ] && grep -q "2 of them had been submitted before" "$T/err" &&
        pass resubmit_same_ids || fail resubmit_same_ids "stream $(rcli xlen sdc:jobs): $(snip "$T/err")"
else
    fail resubmit_same_ids "$(snip "$T/err")"
fi
expect resubmit_other_params 1 "three.jsonl:2: submitting job jb: .*other params" -- \
    "$SUBMIT" "${R[@]}" -p "$T/batch/three.jsonl" -o "$T/s3" -s 7

# Nobody runs the jobs: --timeout ends the wait with status 3.
start=$(date +%s)
expect wait_timeout 3 "3 unfinished \(timed out\)" -- "$SUBMIT" "${R[@]}" -p "$T/batch/three.jsonl" -o "$T/s4" -S 5 -s 2 -W 64 -H 64 --wait --timeout 1
[ $(($(date +%s) - start)) -le 5 ] && grep -c '"state":"queued"' "$T/s4/jobs.jsonl" | grep -qx 3 &&
    pass wait_timeout_index || fail wait_timeout_index "$(cat "$T/s4/jobs.jsonl" 2>/dev/null | head -c 400)"

# Redis edited by hand as a cluster would: jb fails, jc is done, the new one stays queued.
(
    sleep 0.5
    rcli hset sdc:job:jb state failed error "size 60x64 is not a multiple of 8" >/dev/null
    head -c 3000 /dev/urandom >"$T/fake.png"
    rcli -x set sdc:result:jc <"$T/fake.png" >/dev/null
    rcli hset sdc:job:jc state "done" >/dev/null
) &
editor=$!
timeout 30 "$SUBMIT" "${R[@]}" -p "$T/batch/three.jsonl" -o "$T/s5" -S 5 -s 2 -W 64 -H 64 --wait --timeout 3 --poll-ms 50 2>"$T/err"
rc=$?
wait "$editor"
if [ $rc -eq 1 ] && cmp -s "$T/fake.png" "$T/s5/jc.png" &&
    grep -q "failed: line 2, job jb: size 60x64 is not a multiple of 8" "$T/err" &&
    grep -q "1 done, 1 failed, 1 unfinished" "$T/err" &&
    grep -q '"id":"jb","state":"failed","error":"size 60x64' "$T/s5/jobs.jsonl" &&
    grep -q '"id":"jc","state":"done","file":"jc.png"' "$T/s5/jobs.jsonl"; then
    pass wait_done_failed_unfinished
else
    fail wait_done_failed_unfinished "exit $rc: $(snip "$T/err")"
fi
stop_redis

# --- a local cluster ----------------------------------------------------------------

if [ ! -x "$BIN/sdc-worker" ] || [ ! -x "$BIN/sdc-coordinator" ]; then
    fail cluster "$BIN/sdc-worker or sdc-coordinator is not built: the cluster cases cannot run"
    exit 0
fi

# 50 jobs: 7 sizes, 2-4 steps, seeds up to 2^64-1, guidance absent or set,
# glyph and plain embeddings, text trimmed or not. Each job's reference image
# comes from sdc-generate with the same parameters.
mkdir -p "$T/ref"
sizes=(64x64 96x64 64x96 32x32 48x80 128x64 80x48)
: >"$T/jobs50.jsonl"
ref_ok=1
for ((i = 0; i < 50; i++)); do
    sz=${sizes[i % 7]}
    w=${sz%x*} h=${sz#*x} steps=$((2 + i % 3)) seed=$((i * 7919 + 1))
    [ $i = 13 ] && seed=18446744073709551615
    [ $i = 27 ] && seed=9007199254740993
    e=$E_APG
    ((i % 2)) && e=$E_OCR
    extra="" gen=()
    ((i % 4 == 1)) && { extra="$extra, \"guidance\": 2.5"; gen+=(-g 2.5); }
    ((i % 4 == 3)) && { extra="$extra, \"guidance\": 7"; gen+=(-g 7); }
    ((i % 10 == 9)) && { extra="$extra, \"trim_text\": false"; gen+=(--no-trim-text); }
    echo "{\"embeds\": \"$e\", \"width\": $w, \"height\": $h, \"steps\": $steps, \"seed\": \"$seed\"$extra}" >>"$T/jobs50.jsonl"
    timeout 60 "$BIN/sdc-generate" -m "$MODEL" -e "$e" -W "$w" -H "$h" -s "$steps" -S "$seed" "${gen[@]}" \
        -q -t 1 -o "$T/ref/$((i + 1)).png" 2>>"$T/ref.err" || ref_ok=0
done
[ $ref_ok = 1 ] && pass reference_images || fail reference_images "$(snip "$T/ref.err")"

# The events of one job, as "state attempt step steps ts" lines, oldest first.
events() { # port id
    redis-cli -p "$1" --raw xrange "sdc:job:$2:events" - + | awk '
        function flush() { if (have) print s, a, st, n, ts; have = 0 }
        BEGIN { key = "" }
        key == "" && /^[0-9]+-[0-9]+$/ { flush(); have = 1; s = a = st = n = ts = "?"; next }
        key == "" { key = $0; next }
        { if (key == "state") s = $0; else if (key == "attempt") a = $0;
          else if (key == "step") st = $0; else if (key == "steps") n = $0;
          else if (key == "ts") ts = $0; key = "" }
        END { flush() }'
}

# Complete and ordered: queued, encoding, denoising at steps k, k+1, ... with
# no gap from k = 0 or 1 to at least T-1 (the step count done so far; the
# last step may be reported by decoding), decoding and done at T; one
# attempt; timestamps never go back.
check_events() { # port id steps -> "" when good, else what is wrong
    events "$1" "$2" | awk -v T="$3" '
        { states = states (NR > 1 ? " " : "") $1
          if ($2 != 1) bad = bad " attempt " $2 " on event " NR
          if ($5 + 0 < last) bad = bad " ts goes back at event " NR
          last = $5 + 0
          if ($1 == "denoising") {
              if (prev != "" && $3 != prev + 1) bad = bad " step " $3 " after " prev
              if (prev == "" && $3 > 1) bad = bad " first step " $3
              prev = $3
          }
          if (($1 == "decoding" || $1 == "done") && $3 != T) bad = bad " " $1 " at step " $3
          if ($4 != T) bad = bad " steps " $4 }
        END { if (states !~ /^queued encoding (denoising )+decoding done$/) bad = bad " states: " states
              if (prev < T - 1) bad = bad " last denoising step " prev
              printf "%s", bad }'
}

cluster_case() { # mode (plain | mpi)
    local mode=$1 run=$T/run-$1 port flag=() out=$T/out-$1
    [ "$mode" = plain ] && flag=(--no-mpi)
    RUNS+=("$run")
    port=$(free_port)
    export SDC_RUN_DIR=$run SDC_BIN=$BIN
    if ! timeout 150 "$LOCAL" up --model "$MODEL" --stages 2 --pipelines 2 "${flag[@]}" \
        --redis-port "$port" --timeout 90 >"$T/up.out" 2>&1; then
        fail "up_$mode" "$(tail -c 1500 "$T/up.out" | tr '\n' '|')"
        return
    fi
    pass "up_$mode"

    timeout 30 "$LOCAL" up --model "$MODEL" --stages 2 --pipelines 2 "${flag[@]}" --redis-port "$port" \
        >"$T/up2.out" 2>&1 && grep -q "already up" "$T/up2.out" &&
        pass "up_again_$mode" || fail "up_again_$mode" "$(snip "$T/up2.out")"

    if timeout 30 "$LOCAL" status >"$T/status.out" 2>&1; then
        local stages
        stages=$(grep -cE '^  [^ ]+ +dit-stage +[01] +[01] ' "$T/status.out")
        [ "$stages" = 4 ] && grep -qE '^  [^ ]+ +coordinator ' "$T/status.out" &&
            grep -qE '^  [^ ]+ +text-encoder ' "$T/status.out" && grep -qE '^  [^ ]+ +vae ' "$T/status.out" &&
            grep -q '^leader: ' "$T/status.out" && ! grep -q '^leader: none' "$T/status.out" && grep -q '^queue: 0 unfinished' "$T/status.out" &&
            grep -qE '^  node-[0-9]+ +pid [0-9]+ +running' "$T/status.out" &&
            pass "status_$mode" || fail "status_$mode" "$(snip "$T/status.out")"
    else
        fail "status_$mode" "exit $?: $(snip "$T/status.out")"
    fi

    local t0 rc
    t0=$(date +%s)
    timeout 200 "$SUBMIT" -r "redis://127.0.0.1:$port" -p "$T/jobs50.jsonl" -o "$out" --wait --timeout 180 \
        2>"$T/submit.err"
    rc=$?
    echo "# $mode: 50 jobs in $(($(date +%s) - t0)) s" >&2
    if [ $rc -eq 0 ] && [ "$(grep -c '"state":"done"' "$out/jobs.jsonl")" = 50 ] &&
        [ "$(ls "$out"/*.png | wc -l)" = 50 ] && grep -q "50 jobs: 50 done, 0 failed" "$T/submit.err"; then
        pass "batch_done_$mode"
    else
        fail "batch_done_$mode" "exit $rc: $(tail -c 1200 "$T/submit.err" | tr '\n' '|')"
    fi

    local line id steps same=0 diff_ids="" ev_bad=""
    while IFS= read -r line; do
        id=$(field "$line" id)
        n=$(field "$line" line)
        steps=$(field "$line" steps)
        if cmp -s "$out/$id.png" "$T/ref/$n.png"; then same=$((same + 1)); else diff_ids="$diff_ids line$n"; fi
        local bad
        bad=$(check_events "$port" "$id" "$steps")
        [ -z "$bad" ] || ev_bad="$ev_bad [line $n:$bad]"
    done <"$out/jobs.jsonl"
    [ $same = 50 ] && pass "byte_identical_$mode" || fail "byte_identical_$mode" "$same of 50 identical; differ:$(echo "$diff_ids" | head -c 300)"
    [ -z "$ev_bad" ] && pass "events_complete_ordered_$mode" || fail "events_complete_ordered_$mode" "$(echo "$ev_bad" | head -c 800)"

    if [ "$mode" = plain ]; then
        # A job the model cannot run fails with a reason, and the client says so.
        echo "{\"embeds\": \"$E_APG\", \"width\": 60, \"height\": 64, \"steps\": 2}" >"$T/badsize.jsonl"
        timeout 60 "$SUBMIT" -r "redis://127.0.0.1:$port" -p "$T/badsize.jsonl" -o "$T/out-bad" --wait --timeout 40 \
            2>"$T/bad.err"
        rc=$?
        [ $rc -eq 1 ] && grep -q "1 job: 0 done, 1 failed" "$T/bad.err" && grep -q "failed: line 1, job .*: ." "$T/bad.err" &&
            pass failed_job_reported || fail failed_job_reported "exit $rc: $(snip "$T/bad.err")"
    fi

    local pids=() f p
    for f in "$run"/pids/*.pid; do read -r p _ <"$f" && pids+=("$p"); done
    if timeout 60 "$LOCAL" down >"$T/down.out" 2>&1; then
        local left=()
        for p in "${pids[@]}"; do alive "$p" && left+=("$p"); done
        local stray
        stray=$(pgrep -f -- "$run/" | tr '\n' ' ')
        [ ${#pids[@]} -ge 8 ] && [ ${#left[@]} -eq 0 ] && [ -z "$stray" ] && [ -z "$(ls "$run/pids")" ] &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
            pass "down_$mode" || fail "down_$mode" "recorded ${#pids[@]}, left: ${left[*]} stray: $stray"
    else
        fail "down_$mode" "$(snip "$T/down.out")"
    fi
    timeout 30 "$LOCAL" status >"$T/status2.out" 2>&1
    [ $? -eq 3 ] && pass "status_after_down_$mode" || fail "status_after_down_$mode" "$(snip "$T/status2.out")"
}

json_escape() { local s=${1//\\/\\\\}; printf '%s' "${s//\"/\\\"}"; }

# Prompts as text: Chinese and English, quoted text for the glyph encoder, a
# negative prompt; each image byte-identical to sdc-generate --prompt's.
prompts_case() {
    local model=$DATA/tiny-hunyuanimage-text run=$T/run-text port out=$T/out-text
    local prompts=('A cat holding a sign that says "hello world"' '一只戴着红色围巾的熊猫坐在竹林里'
        'A poster with the title “春节快乐” in gold letters' '夜晚的上海外滩, neon reflections on the river'
        "A storefront sign reading 'OPEN 24 HOURS'" 'A watercolor lighthouse at dawn')
    local sizes=(64x64 96x64 64x96 64x64 128x64 64x64) neg='blurry, low quality' i w h gen
    RUNS+=("$run")
    port=$(free_port)
    export SDC_RUN_DIR=$run SDC_BIN=$BIN
    if ! timeout 150 "$LOCAL" up --model "$model" --stages 2 --no-mpi --redis-port "$port" --timeout 90 \
        >"$T/up.out" 2>&1; then
        fail prompts_up "$(tail -c 1500 "$T/up.out" | tr '\n' '|')"
        return
    fi
    : >"$T/prompts.txt"
    for ((i = 0; i < ${#prompts[@]}; i++)); do
        w=${sizes[i]%x*} h=${sizes[i]#*x}
        if ((i % 2)); then
            echo "{\"prompt\": \"$(json_escape "${prompts[i]}")\", \"width\": $w, \"height\": $h, \"seed\": $((100 + i))$( ((i == 5)) && echo ", \"negative_prompt\": \"$neg\"")}" >>"$T/prompts.txt"
        else
            echo "${prompts[i]}" >>"$T/prompts.txt" # size from -W/-H, seed 100 + index
        fi
    done
    timeout 120 "$SUBMIT" -r "redis://127.0.0.1:$port" -p "$T/prompts.txt" -o "$out" -W 64 -H 64 -s 3 -S 100 \
        --wait --timeout 100 2>"$T/submit.err" || { fail prompts_done "$(snip "$T/submit.err")"; return; }
    local same=0 id
    for ((i = 0; i < ${#prompts[@]}; i++)); do
        w=${sizes[i]%x*} h=${sizes[i]#*x} gen=()
        ((i % 2)) || { w=64; h=64; }
        ((i == 5)) && gen=(-n "$neg")
        id=$(sed -n "$((i + 1))p" "$out/jobs.jsonl" | sed 's/.*"id":"\([^"]*\)".*/\1/')
        timeout 60 "$BIN/sdc-generate" -m "$model" -p "${prompts[i]}" "${gen[@]}" -W "$w" -H "$h" -s 3 \
            -S $((100 + i)) -q -t 1 -o "$T/pref.png" 2>>"$T/ref.err" &&
            cmp -s "$T/pref.png" "$out/$id.png" && same=$((same + 1))
    done
    [ $same = ${#prompts[@]} ] && pass prompts_byte_identical ||
        fail prompts_byte_identical "$same of ${#prompts[@]} identical; $(snip "$T/ref.err")"
    timeout 60 "$LOCAL" down >/dev/null 2>&1
}

cluster_case plain
prompts_case
cluster_case mpi
exit 0
