#!/usr/bin/env bash
# test_gateway_malformed.sh: every raw HTTP request of
# tests/data/gateway-malformed/ (truncated JSON, wrong types, huge numbers,
# invalid UTF-8, bad methods and paths, oversized headers and bodies, bad
# chunked encoding, requests that stop half-way) goes to a real sdc-gateway
# over its own TCP connection. The file name says what must come back:
#   400-..., 401-..., 404-... exactly that status
#   4xx-...                   any 4xx (the HTTP parser's choice)
#   drop-...                  not HTTP at all: a 4xx, or the parser closes
#                             the connection at once without an answer
#   close-...                 a partial request: the connection is closed
#                             (optionally after a 4xx) after the idle timeout
# After all of them the gateway must still be up, healthy and serving.
# Prints "PASS name" / "FAIL name" (protocol of tests/run.sh).
set -u
BIN=${SDC_BIN:-build/bin}
DATA=${SDC_TEST_DATA:-tests/data}
BIN=$(cd "$BIN" && pwd)
CORPUS=$(cd "$DATA/gateway-malformed" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/sdc-gwmal-XXXXXX")
GW_PID=""

. "$(dirname "$0")/redis_env.sh"
. "$(dirname "$0")/../lib/expect.sh"

cleanup() {
    [ -n "$GW_PID" ] && kill -KILL "$GW_PID" 2>/dev/null
    sdc_redis_stop
    [ -n "${SDC_TEST_KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT
if ! sdc_redis_start; then
    fail redis_start "cannot start redis-server"
    exit 0
fi
trap cleanup EXIT

n=$(find "$CORPUS" -name '*.http' | wc -l)
[ "$n" -ge 100 ] && pass corpus_size || fail corpus_size "$n requests, want at least 100"

printf 'malformed-corpus-token-0001\n' >"$T/tokens"
chmod 600 "$T/tokens"
"$BIN/sdc-gateway" --redis "$SDC_REDIS_URL" -t "$T/tokens" -p 0 --port-file "$T/port" \
    --timeout 2 --max-body 65536 --sizes 64x64,64x96 --rate 0 >"$T/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 100); do [ -s "$T/port" ] && break; sleep 0.05; done
PORT=$(cat "$T/port" 2>/dev/null)
[ -n "$PORT" ] || { fail gateway_starts "$(cat "$T/gateway.log")"; exit 0; }
# A job for the requests that need one to exist.
echo '{"id": "malformed-probe", "prompt": "probe"}' >"$T/probe.jsonl"
"$BIN/sdc-submit" --redis "$SDC_REDIS_URL" -p "$T/probe.jsonl" -o "$T/probe" -q ||
    fail probe_job "sdc-submit failed"

# one FILE: sends it, reads until the server closes (bounded), checks.
one() {
    local f=$1 name want out status t0 t1
    name=$(basename "$f" .http)
    want=${name%%-*}
    out="$T/resp.$name"
    t0=$(date +%s)
    timeout 12 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 9
                        cat "$2" >&3 2>/dev/null
                        cat <&3' _ "$PORT" "$f" >"$out" 2>/dev/null
    local rc=$?
    t1=$(date +%s)
    status=$(head -n 1 "$out" | tr -d '\r' | awk '$1 ~ /^HTTP\/1\.[01]$/ { print $2 }')
    if [ "$rc" = 124 ]; then
        echo "FAIL malformed_$name: no answer and no close within 12 s"
    elif [ "$rc" = 9 ]; then
        echo "FAIL malformed_$name: cannot connect"
    elif [ "$want" = drop ]; then
        if { [ -z "$status" ] && [ $((t1 - t0)) -lt 2 ]; } || [[ $status == 4?? ]]; then
            echo "PASS malformed_$name"
        else
            echo "FAIL malformed_$name: status '${status:-none}' after $((t1 - t0)) s"
        fi
    elif [ "$want" = close ]; then
        if [ -z "$status" ] || [[ $status == 4?? ]]; then
            echo "PASS malformed_$name"
        else
            echo "FAIL malformed_$name: status $status for a partial request"
        fi
    elif [ "$want" = 4xx ] && [[ $status == 4?? ]]; then
        echo "PASS malformed_$name"
    elif [ "$status" = "$want" ]; then
        echo "PASS malformed_$name"
    else
        echo "FAIL malformed_$name: status '${status:-none}', want $want: $(head -c 200 "$out" | tr -d '\r' | tr '\n' ' ')"
    fi
}
export -f one
export PORT T
find "$CORPUS" -name '*.http' -print0 | sort -z | xargs -0 -P 8 -I{} bash -c 'one "$1"' _ {}

if kill -0 "$GW_PID" 2>/dev/null; then pass gateway_alive_after_corpus
else fail gateway_alive_after_corpus "exited: $(tail -n 5 "$T/gateway.log")"; fi
code=$(curl -s -m 5 -o "$T/health" -w '%{http_code}' "http://127.0.0.1:$PORT/health")
[ "$code" = 200 ] && pass healthy_after_corpus || fail healthy_after_corpus "status $code"
code=$(curl -s -m 5 -o "$T/submit" -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/v1/jobs" \
    -H 'Authorization: Bearer malformed-corpus-token-0001' -H 'Content-Type: application/json' \
    -d '{"prompt": "still serving", "size": "64x64"}')
[ "$code" = 202 ] && pass serves_after_corpus || fail serves_after_corpus "status $code: $(cat "$T/submit")"
kill -TERM "$GW_PID"
wait "$GW_PID"
rc=$?
GW_PID=""
[ "$rc" = 0 ] && pass clean_exit_after_corpus || fail clean_exit_after_corpus "exit $rc"
