#!/usr/bin/env bash
# test_gateway.sh: sdc-gateway over real HTTP (curl) against a real
# redis-server that requires a password, then end to end with a real local
# cluster (coordinator, text encoder, two DiT stages, VAE) running the tiny
# text model: images from the API must be byte-identical to sdc-generate's.
# Every endpoint is driven: /health, /ready, /metrics, POST /v1/jobs,
# GET/DELETE /v1/jobs/{id}, /result, /events, POST /v1/images/generations;
# and the refusals: 401, 404, 405, 409, 413, 415, 429, 400s, 504.
# Prints "PASS name" / "FAIL name" (protocol of tests/run.sh); every wait is
# bounded and a watchdog ends the script if it runs past WATCHDOG_S.
. "$(dirname "$0")/../lib/harness.sh" gateway 240
. "$(dirname "$0")/../lib/expect.sh"

PASSWORD="gw-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
if ! sdc_redis_start --requirepass "$PASSWORD"; then
    fail redis_start "cannot start redis-server"
    exit 0
fi
trap cleanup EXIT
REDIS=$SDC_REDIS_URL
SOCK=${REDIS#redis+unix://}
printf '%s\n' "$PASSWORD" >"$T/redis.pw"
chmod 600 "$T/redis.pw"
export SDC_REDIS_PASSWORD_FILE="$T/redis.pw"
unset SDC_REDIS_PASSWORD

TOK1=tok-one-0123456789abcdef
TOK2=tok-two-0123456789abcdef
printf '# gateway tokens\n%s\n\n%s\n' "$TOK1" "$TOK2" >"$T/tokens"
chmod 600 "$T/tokens"

# gateway NAME [ARGS...]: starts one on a free port; its port in PORT.
gateway() {
    local name=$1 i
    shift
    rm -f "$T/$name.port"
    "$BIN/sdc-gateway" --redis "$REDIS" -p 0 --port-file "$T/$name.port" --timeout 3 "$@" \
        >"$T/$name.log" 2>&1 &
    GW_PID=$!
    PIDS+=($GW_PID)
    for i in $(seq 1 100); do
        [ -s "$T/$name.port" ] && break
        sleep 0.05
    done
    PORT=$(cat "$T/$name.port" 2>/dev/null)
}

# req METHOD PATH [CURL ARGS...]: status in CODE, body in $T/body, headers in $T/hdr.
req() {
    local method=$1 path=$2
    shift 2
    CODE=$(curl -s -m 30 -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$method" \
        "http://127.0.0.1:$PORT$path" "$@")
}
AUTH=(-H "Authorization: Bearer $TOK1")
JSON=(-H "Content-Type: application/json")

# check NAME WANT_CODE [BODY_PATTERN]: the last req's status and body.
check() {
    if [ "$CODE" != "$2" ]; then
        fail "$1" "status $CODE, want $2: $(head -c 300 "$T/body")"
    elif [ -n "${3:-}" ] && ! grep -qE -- "$3" "$T/body"; then
        fail "$1" "body lacks /$3/: $(head -c 300 "$T/body")"
    else
        pass "$1"
    fi
}
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$T/body"; }

# ---- command line ------------------------------------------------------------

expect help 0 "" -- "$BIN/sdc-gateway" --help
grep -q -- "--tokens" "$T/out" && pass help_text || fail help_text "no usage text"
expect usage_no_tokens 2 "no token file" -- "$BIN/sdc-gateway" --redis "$REDIS"
expect usage_bad_sizes 2 "--sizes" -- "$BIN/sdc-gateway" --no-auth --sizes 64x
expect usage_bad_port 2 "--port" -- "$BIN/sdc-gateway" --no-auth -p 70000
cp "$T/tokens" "$T/tokens.open" && chmod 644 "$T/tokens.open"
expect tokens_world_readable 1 "readable by every user" -- \
    "$BIN/sdc-gateway" --redis "$REDIS" -t "$T/tokens.open" -p 0
printf 'short\n' >"$T/tokens.bad" && chmod 600 "$T/tokens.bad"
expect tokens_malformed 1 "line 1" -- "$BIN/sdc-gateway" --redis "$REDIS" -t "$T/tokens.bad" -p 0
printf 'wrong-password\n' >"$T/redis.badpw" && chmod 600 "$T/redis.badpw"
expect redis_wrong_password 1 "redis" -- "$BIN/sdc-gateway" --redis "$REDIS" -t "$T/tokens" -p 0 \
    --redis-password-file "$T/redis.badpw"
SDC_REDIS_PASSWORD_FILE= expect redis_no_password 1 "redis" -- \
    "$BIN/sdc-gateway" --redis "$REDIS" -t "$T/tokens" -p 0

# The committed contract names every endpoint the gateway routes.
SPEC="$(dirname "$0")/../../docs/openapi.yaml"
missing=""
for path in /v1/images/generations /v1/jobs '/v1/jobs/{id}' '/v1/jobs/{id}/result' \
    '/v1/jobs/{id}/events' /health /ready /metrics; do
    grep -qF "  $path:" "$SPEC" || missing="$missing $path"
done
[ -z "$missing" ] && pass openapi_lists_endpoints || fail openapi_lists_endpoints "missing:$missing"

# An ACL user (in the URL) with its password from a file, limited to sdc: keys.
redis-cli -s "$SOCK" -a "$PASSWORD" --no-auth-warning \
    ACL SETUSER gwuser on '>gw-user-secret' '~sdc:*' '+@all' >/dev/null
printf 'gw-user-secret\n' >"$T/acl.pw" && chmod 600 "$T/acl.pw"
"$BIN/sdc-gateway" --redis "redis+unix://gwuser@$SOCK" --redis-password-file "$T/acl.pw" \
    -t "$T/tokens" -p 0 --port-file "$T/acl.port" >"$T/acl.log" 2>&1 &
ACL_PID=$!
PIDS+=($ACL_PID)
for _ in $(seq 1 100); do [ -s "$T/acl.port" ] && break; sleep 0.05; done
PORT=$(cat "$T/acl.port" 2>/dev/null)
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "acl user", "size": "64x64"}'
check redis_acl_user 202 '"state":"queued"'
kill -TERM "$ACL_PID" 2>/dev/null
wait "$ACL_PID" 2>/dev/null
expect redis_acl_wrong_user 1 "redis" -- "$BIN/sdc-gateway" --redis "redis+unix://nobody@$SOCK" \
    --redis-password-file "$T/acl.pw" -t "$T/tokens" -p 0

# ---- without a cluster ---------------------------------------------------------

gateway main -t "$T/tokens" --sizes 64x64,64x96,96x64 --max-steps 400 --wait-timeout 1 \
    --max-body 1048576
[ -n "$PORT" ] && pass gateway_starts || { fail gateway_starts "$(cat "$T/main.log")"; exit 0; }
MAIN_PORT=$PORT

req GET /health
check health_open 200 '"status":"ok"'
req GET /ready
check ready_without_cluster 503 '"ready":false.*'
grep -q "no coordinator holds the leader lease" "$T/body" && pass ready_reason ||
    fail ready_reason "$(cat "$T/body")"
req GET /metrics
check metrics_needs_token 401 '"type":"authentication_error"'
grep -qi '^WWW-Authenticate: Bearer' "$T/hdr" && pass www_authenticate || fail www_authenticate "$(cat "$T/hdr")"
req POST /v1/jobs "${JSON[@]}" -d '{"prompt": "x"}'
check submit_without_token 401 '"code":"missing_api_key"'
req POST /v1/jobs "${JSON[@]}" -H "Authorization: Bearer tok-one-0123456789abcdeX" -d '{"prompt": "x"}'
check submit_wrong_token 401 '"code":"invalid_api_key"'
req GET /v1/jobs/abc -H "Authorization: Basic $TOK1"
check wrong_auth_scheme 401 'invalid_api_key'
req GET /v1/jobs/abc -H "Authorization: Bearer $TOK2"
check second_token 404 '"code":"job_not_found"'

# Bad requests: 4xx with OpenAI's error object naming what was wrong.
bad() { # NAME CODE PATTERN BODY
    req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" --data-binary "$4"
    check "$1" "$2" "$3"
}
bad bad_missing_prompt 400 '"code":"missing_prompt"' '{"size": "64x64"}'
bad bad_empty_prompt 400 "'prompt' is empty" '{"prompt": ""}'
bad bad_size_not_served 400 'allowed: 64x64, 64x96, 96x64' '{"prompt": "x", "size": "128x128"}'
bad bad_size_syntax 400 '"code":"invalid_size"' '{"prompt": "x", "size": "64*64"}'
bad bad_steps_range 400 "'steps' must be an integer in 1..400" '{"prompt": "x", "steps": 401}'
bad bad_steps_fraction 400 "'steps'" '{"prompt": "x", "steps": 2.5}'
bad bad_guidance 400 "'guidance_scale' must be in" '{"prompt": "x", "guidance_scale": -1}'
bad bad_seed_type 400 "'seed' must be an integer, got a string" '{"prompt": "x", "seed": "7"}'
bad bad_unknown_field 400 '"code":"unknown_parameter"' '{"prompt": "x", "width": 64}'
bad bad_duplicate_field 400 "appears twice" '{"prompt": "x", "prompt": "y"}'
bad bad_json 400 '"code":"invalid_json"' '{"prompt": "x",'
bad bad_not_object 400 'not an object' '["prompt"]'
bad bad_nul 400 'NUL' '{"prompt": "a\u0000b"}'
bad bad_prompt_too_long 400 '"code":"prompt_too_long"' "{\"prompt\": \"$(head -c 5000 /dev/zero | tr '\0' a)\"}"
printf '{"prompt": "\xff\xfe"}' >"$T/badutf8"
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" --data-binary "@$T/badutf8"
check bad_utf8 400 '"code":"invalid_utf8"'
req POST /v1/jobs "${AUTH[@]}" -H "Content-Type: text/plain" -d '{"prompt": "x"}'
check bad_content_type 415 'unsupported_media_type'
head -c 2000000 /dev/zero | tr '\0' ' ' >"$T/big"
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" --data-binary "@$T/big"
check body_too_large 413 '"code":"body_too_large"'
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" -H "Transfer-Encoding: chunked" --data-binary "@$T/big"
[ "$CODE" = 413 ] || [ "$CODE" = 000 ] && pass chunked_too_large ||
    fail chunked_too_large "status $CODE"
req PUT /v1/jobs "${AUTH[@]}"
check wrong_method 405 'method_not_allowed'
grep -qi '^Allow: POST' "$T/hdr" && pass allow_header || fail allow_header "$(cat "$T/hdr")"
req GET /v1/nothing "${AUTH[@]}"
check unknown_path 404 'unknown_url'
req GET '/v1/jobs/bad%20id' "${AUTH[@]}"
check bad_job_id 400 'invalid_job_id'
req POST /v1/images/generations "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "x", "response_format": "url"}'
check images_url_format 400 'unsupported_response_format'
req POST /v1/images/generations "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "x", "n": 5}'
check images_n_range 400 "'n' must be an integer in 1..4"

# The job API without workers: queued, 409 on its result, cancel, events.
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "a cat", "size": "64x64", "steps": 3, "seed": 1}'
check submit_accepted 202 '"state":"queued"'
ID=$(json_field id)
grep -qi "^Location: /v1/jobs/$ID" "$T/hdr" && pass location_header || fail location_header "$(cat "$T/hdr")"
req GET "/v1/jobs/$ID" "${AUTH[@]}"
check job_queued 200 "\"id\":\"$ID\",\"object\":\"job\",\"state\":\"queued\",\"step\":0,\"steps\":3"
grep -q '"timestamps":{"queued":[0-9]' "$T/body" && pass job_timestamps || fail job_timestamps "$(cat "$T/body")"
req GET "/v1/jobs/$ID/result" "${AUTH[@]}"
check result_not_done 409 '"code":"job_not_done"'
req GET /v1/jobs/0123456789abcdef0123456789abcdef/result "${AUTH[@]}"
check result_unknown 404 'job_not_found'
req DELETE "/v1/jobs/$ID" "${AUTH[@]}"
check cancel_queued 200 '"state":"cancelled"'
req DELETE "/v1/jobs/$ID" "${AUTH[@]}"
check cancel_again 200 '"state":"cancelled"'
req GET "/v1/jobs/$ID/result" "${AUTH[@]}"
check result_cancelled 409 'is cancelled'
req DELETE /v1/jobs/nosuchjob "${AUTH[@]}"
check cancel_unknown 404 'job_not_found'
curl -s -N -m 10 "http://127.0.0.1:$PORT/v1/jobs/$ID/events" "${AUTH[@]}" >"$T/events"
if grep -q '^event: state' "$T/events" && grep -q '"state":"queued"' "$T/events" &&
    tail -n 3 "$T/events" | grep -q '"state":"cancelled"'; then
    pass events_end_at_final_state
else
    fail events_end_at_final_state "$(head -c 500 "$T/events")"
fi
LAST=$(grep '^id: ' "$T/events" | head -n 1 | cut -c5-)
curl -s -N -m 10 "http://127.0.0.1:$PORT/v1/jobs/$ID/events" "${AUTH[@]}" \
    -H "Last-Event-ID: $LAST" >"$T/events2"
[ "$(grep -c '^event:' "$T/events2")" = 1 ] && pass events_resume || fail events_resume "$(cat "$T/events2")"
req POST /v1/images/generations "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "x", "size": "64x64", "steps": 2}'
check images_timeout 504 '"type":"timeout_error"'

# Reload on SIGHUP: a new token works, a removed one no longer does.
printf '%s\n' tok-three-0123456789abcdef >"$T/tokens"
kill -HUP "$GW_PID"
sleep 0.5
req GET /v1/jobs/abc -H "Authorization: Bearer tok-three-0123456789abcdef"
check sighup_new_token 404 'job_not_found'
req GET /v1/jobs/abc "${AUTH[@]}"
check sighup_old_token_refused 401 'invalid_api_key'
printf 'bad\n' >"$T/tokens"
kill -HUP "$GW_PID"
sleep 0.5
req GET /v1/jobs/abc -H "Authorization: Bearer tok-three-0123456789abcdef"
check sighup_bad_file_keeps_tokens 404 'job_not_found'
grep -q "keeping the old ones" "$T/main.log" && pass sighup_bad_file_logged ||
    fail sighup_bad_file_logged "$(tail -n 3 "$T/main.log")"
printf '# gateway tokens\n%s\n%s\n' "$TOK1" "$TOK2" >"$T/tokens"
kill -HUP "$GW_PID"
sleep 0.5

# Rate limit: a bucket of 3 at 1/s per token; 429 with Retry-After.
gateway rate -t "$T/tokens" --rate 1 --burst 3
codes=""
for _ in 1 2 3 4; do
    req GET /v1/jobs/abc "${AUTH[@]}"
    codes="$codes $CODE"
done
if [ "$codes" = " 404 404 404 429" ] && grep -qi '^Retry-After: [1-9]' "$T/hdr" &&
    grep -q '"type":"rate_limit_error"' "$T/body"; then
    pass rate_limited
else
    fail rate_limited "codes$codes: $(cat "$T/hdr")"
fi
req GET /v1/jobs/abc -H "Authorization: Bearer $TOK2"
check rate_limit_per_token 404 'job_not_found'
RATE_PID=$GW_PID
kill -TERM "$RATE_PID"
wait "$RATE_PID" 2>/dev/null
[ $? = 0 ] && pass sigterm_exit_0 || fail sigterm_exit_0 "exit $?"

# ---- with a cluster ----------------------------------------------------------------

MT="$DATA/tiny-hunyuanimage-text"
mkdir -p "$T/ref"
"$BIN/sdc-generate" -m "$MT" -p 'a cat' -n 'blurry' -W 64 -H 96 -s 3 -S 4 -q -o "$T/ref/g4.png" &&
    "$BIN/sdc-generate" -m "$MT" -p 'a cat' -n 'blurry' -W 64 -H 96 -s 3 -S 5 -q -o "$T/ref/g5.png" &&
    "$BIN/sdc-generate" -m "$MT" -p 'A sign that says "Hello"' -W 64 -H 64 -s 3 -S 3 -q \
        -o "$T/ref/j3.png" 2>"$T/ref.log" &&
    "$BIN/sdc-generate" -m "$MT" -p 'a cat' --init-image "$DATA/goldens/img2img_init_64x64.png" --strength 0.7 \
        -s 3 -S 6 -q -o "$T/ref/i6.png" 2>>"$T/ref.log" && pass references ||
    fail references "$(cat "$T/ref.log")"
cat >"$T/cluster.json" <<EOF
{"redis": "$REDIS", "prefix": "sdc:", "model": "$MT", "micro_batch": 4,
 "pipelines": [{"name": "p0", "stages": 2}],
 "nodes": [{"role": "coordinator"}, {"role": "text-encoder"},
           {"role": "dit-stage", "pipeline": "p0", "stage": 0},
           {"role": "dit-stage", "pipeline": "p0", "stage": 1}, {"role": "vae"}]}
EOF
CL_PIDS=()
for i in 0 1 2 3 4; do
    bin=sdc-worker
    [ "$i" = 0 ] && bin=sdc-coordinator
    "$BIN/$bin" --cluster "$T/cluster.json" --node "$i" --threads 1 --peer-timeout 20 \
        --drain-timeout 20 >"$T/node$i.log" 2>&1 &
    CL_PIDS+=($!)
    PIDS+=($!)
done
PORT=$MAIN_PORT
ready=0
for _ in $(seq 1 300); do
    req GET /ready
    [ "$CODE" = 200 ] && { ready=1; break; }
    sleep 0.1
done
if [ "$ready" = 1 ] && grep -q '"pipelines":\[{"pipeline":0,"stages":2,"live_stages":2,"complete":true}\]' "$T/body"; then
    pass ready_with_cluster
else
    fail ready_with_cluster "$CODE $(cat "$T/body") $(tail -n 2 "$T"/node*.log)"
fi

# Blocking generation, two images (seeds 4 and 5): byte-identical to sdc-generate.
gateway wait -t "$T/tokens" --sizes 64x64,64x96 --wait-timeout 60
req POST /v1/images/generations "${AUTH[@]}" "${JSON[@]}" \
    -d '{"prompt": "a cat", "negative_prompt": "blurry", "size": "64x96", "steps": 3, "seed": 4, "n": 2, "response_format": "b64_json", "model": "sdc"}'
if [ "$CODE" = 200 ]; then
    grep -o '"b64_json":"[^"]*"' "$T/body" | sed 's/"b64_json":"\(.*\)"/\1/' >"$T/b64"
    sed -n 1p "$T/b64" | base64 -d >"$T/g4.png" 2>/dev/null
    sed -n 2p "$T/b64" | base64 -d >"$T/g5.png" 2>/dev/null
    if cmp -s "$T/g4.png" "$T/ref/g4.png" && cmp -s "$T/g5.png" "$T/ref/g5.png" &&
        grep -q '"created":[0-9]' "$T/body"; then
        pass images_identical_to_generate
    else
        fail images_identical_to_generate "$(head -c 200 "$T/body")"
    fi
else
    fail images_identical_to_generate "status $CODE: $(head -c 300 "$T/body")"
fi

# Async job: events stream to done, the PNG identical to sdc-generate's.
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" \
    -d '{"prompt": "A sign that says \"Hello\"", "size": "64x64", "steps": 3, "seed": 3}'
ID=$(json_field id)
curl -s -N -m 60 "http://127.0.0.1:$PORT/v1/jobs/$ID/events" "${AUTH[@]}" >"$T/events"
if grep -q '"state":"encoding"' "$T/events" && grep -q '^event: progress' "$T/events" &&
    grep -q '"state":"decoding"' "$T/events" && tail -n 3 "$T/events" | grep -q '"state":"done"'; then
    pass events_progress_to_done
else
    fail events_progress_to_done "$(cat "$T/events")"
fi
req GET "/v1/jobs/$ID" "${AUTH[@]}"
check job_done 200 '"state":"done","step":3,"steps":3,"progress":1'
curl -s -m 10 -o "$T/j3.png" -w '%{http_code} %{content_type}' "http://127.0.0.1:$PORT/v1/jobs/$ID/result" \
    "${AUTH[@]}" >"$T/rc"
if [ "$(cat "$T/rc")" = "200 image/png" ] && cmp -s "$T/j3.png" "$T/ref/j3.png"; then
    pass result_identical_to_generate
else
    fail result_identical_to_generate "$(cat "$T/rc")"
fi
req DELETE "/v1/jobs/$ID" "${AUTH[@]}"
check cancel_done_refused 409 '"code":"job_finished"'

# sdc-loadgen through the gateway (its HTTP target): every job done, PNGs
# fetched, the counts in its JSON report.
printf '%s\n' "$TOK1" >"$T/lg.token"
chmod 600 "$T/lg.token"
if timeout 120 "$BIN/sdc-loadgen" --target "http://127.0.0.1:$PORT" --token-file "$T/lg.token" \
    -c 2 -n 4 --size 64x64 --steps 2 --json "$T/lg.json" >"$T/lg.out" 2>&1 &&
    [ "$(jq -r '[.phases[0].offered, .phases[0].done, .phases[0].failed] | join(" ")' "$T/lg.json")" = "4 4 0" ]; then
    pass loadgen_http_target
else
    fail loadgen_http_target "$(tail -n 5 "$T/lg.out") $(head -c 300 "$T/lg.json" 2>/dev/null)"
fi

# Image-to-image through the API: the init image in base64, the result
# identical to sdc-generate --init-image.
printf '{"prompt": "a cat", "steps": 3, "seed": 6, "strength": 0.7, "init_image": "data:image/png;base64,%s"}' \
    "$(base64 -w0 "$DATA/goldens/img2img_init_64x64.png")" >"$T/i6.json"
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" --data-binary @"$T/i6.json"
ID=$(json_field id)
for _ in $(seq 1 600); do
    req GET "/v1/jobs/$ID" "${AUTH[@]}"
    grep -q '"state":"\(done\|failed\|cancelled\)"' "$T/body" && break
    sleep 0.1
done
curl -s -m 10 -o "$T/i6.png" -w '%{http_code}' "http://127.0.0.1:$PORT/v1/jobs/$ID/result" \
    "${AUTH[@]}" >"$T/rc"
if [ "$(cat "$T/rc")" = 200 ] && cmp -s "$T/i6.png" "$T/ref/i6.png"; then
    pass img2img_identical_to_generate
else
    fail img2img_identical_to_generate "$(cat "$T/rc") $(head -c 300 "$T/body")"
fi
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "x", "init_image": "aGVsbG8gd29ybGQ="}'
check img2img_not_an_image 400 '"code":"invalid_image"'
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "x", "init_image": "@@@@"}'
check img2img_bad_base64 400 'invalid character.*"code":"invalid_image"'
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "x", "strength": 0.5}'
check img2img_strength_alone 400 "'strength' needs 'init_image'"

# Cancel a running job: it stays cancelled, stops advancing, leaves no
# image, and the cluster goes on serving.
req POST /v1/jobs "${AUTH[@]}" "${JSON[@]}" -d '{"prompt": "a long one", "size": "64x64", "steps": 200, "seed": 9}'
ID=$(json_field id)
for _ in $(seq 1 200); do
    req GET "/v1/jobs/$ID" "${AUTH[@]}"
    grep -q '"state":"denoising","step":[1-9]' "$T/body" && break
    sleep 0.05
done
req DELETE "/v1/jobs/$ID" "${AUTH[@]}"
check cancel_running 200 '"state":"cancelled"'
step1=$(sed -n 's/.*"step":\([0-9]*\).*/\1/p' "$T/body")
sleep 3
req GET "/v1/jobs/$ID" "${AUTH[@]}"
step2=$(sed -n 's/.*"step":\([0-9]*\).*/\1/p' "$T/body")
if grep -q '"state":"cancelled"' "$T/body" && [ "$step1" = "$step2" ] && [ -n "$step1" ] &&
    [ "$(redis-cli -s "$SOCK" -a "$PASSWORD" --no-auth-warning exists "sdc:result:$ID")" = 0 ] &&
    grep -q "job $ID.*dropping it\|forgetting job $ID" "$T"/node*.log; then
    pass cancel_running_stays_cancelled
else
    fail cancel_running_stays_cancelled "steps $step1 -> $step2: $(cat "$T/body")"
fi
req POST /v1/images/generations "${AUTH[@]}" "${JSON[@]}" \
    -d '{"prompt": "a cat", "negative_prompt": "blurry", "size": "64x96", "steps": 3, "seed": 4}'
grep -o '"b64_json":"[^"]*"' "$T/body" | sed 's/"b64_json":"\(.*\)"/\1/' | base64 -d >"$T/again.png" 2>/dev/null
[ "$CODE" = 200 ] && cmp -s "$T/again.png" "$T/ref/g4.png" && pass serves_after_cancel ||
    fail serves_after_cancel "status $CODE"

# Metrics: the queue, the nodes and their published counters. Nodes publish
# with the heartbeat: wait for a beat after the last job.
sleep 1.5
req GET /metrics "${AUTH[@]}"
missing=""
for pat in '^sdc_queue_waiting [0-9]' '^sdc_jobs_in_flight [0-9]' '^sdc_nodes\{role="dit-stage"\} 2' \
    '^sdc_node_busy_ratio\{node="dit-stage-2",role="dit-stage",pipeline="0",stage="0"\} [0-9]' \
    '^sdc_transfer_bytes_total\{node="vae-4",.*direction="received"\} [1-9]' \
    '^sdc_jobs_completed_total\{node="coordinator-0".*\} ([4-9]|[1-9][0-9])' \
    '^sdc_job_latency_seconds_count\{node="coordinator-0".*\} [1-9]' \
    '^sdc_job_latency_seconds_bucket\{.*le="\+Inf"\} [1-9]' \
    '^sdc_step_latency_seconds_count\{node="dit-stage-3".*\} [1-9]' \
    '^sdc_jobs_failed_total\{' '^sdc_jobs_requeued_total\{' '^# TYPE sdc_step_latency_seconds histogram' \
    '^sdc_gateway_responses_total\{class="2xx"\} [1-9]'; do
    grep -qE -- "$pat" "$T/body" || missing="$missing /$pat/"
done
over=$(awk '/^sdc_node_busy_ratio\{/ && ($2 < 0 || $2 > 1) { print $1 }' "$T/body")
[ -z "$over" ] || missing="$missing busy ratios outside 0..1: $over"
[ "$CODE" = 200 ] && [ -z "$missing" ] && grep -qi '^Content-Type: text/plain; version=0.0.4' "$T/hdr" &&
    pass metrics_exposition || fail metrics_exposition "status $CODE, missing:$missing"
gateway open -t "$T/tokens" --open-metrics
req GET /metrics
check metrics_open 200 '^# HELP'

# ---- stop --------------------------------------------------------------------
kill -TERM "${CL_PIDS[0]}"
wait "${CL_PIDS[0]}" 2>/dev/null
for p in "${CL_PIDS[@]:1}"; do kill -TERM "$p"; done
bad=""
for p in "${CL_PIDS[@]:1}"; do wait "$p" 2>/dev/null || bad="$bad $p"; done
[ -z "$bad" ] && pass cluster_stops || fail cluster_stops "non-zero exits:$bad"
PORT=$MAIN_PORT
req GET /ready
check ready_after_cluster_stops 503 '"ready":false'
