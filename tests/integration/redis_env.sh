#!/usr/bin/env bash
# redis_env.sh: a throwaway redis-server for integration tests of the cluster
# (coordinator, workers, sdc-submit). Source it, then
#
#   sdc_redis_start [redis-server options...]   # exports SDC_REDIS_URL
#   ...                                         # run the processes under test
#   sdc_redis_stop                              # also runs on EXIT
#
# The server listens only on a unix socket in a fresh temporary directory
# (mode 700), keeps nothing on disk, and dies with the shell that started it.
# Extra options go to redis-server as they are, e.g. --requirepass x.
# Note: sdc_redis_start installs an EXIT trap; a script with its own trap
# should call sdc_redis_stop from it.
#
# Run directly, it checks itself and prints "PASS name" / "FAIL name"
# (protocol of tests/run.sh).

sdc_redis_start() {
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "redis_env: redis-server is not installed (make deps)" >&2
        return 1
    fi
    SDC_REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sdc-redis-it-XXXXXX") || return 1
    chmod 700 "$SDC_REDIS_DIR"
    local sock="$SDC_REDIS_DIR/redis.sock"
    redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --save "" \
        --appendonly no --dir "$SDC_REDIS_DIR" --loglevel warning "$@" \
        >"$SDC_REDIS_DIR/redis.log" 2>&1 &
    SDC_REDIS_PID=$!
    trap sdc_redis_stop EXIT
    local i
    for i in $(seq 1 500); do
        if [ -S "$sock" ]; then
            export SDC_REDIS_URL="redis+unix://$sock"
            return 0
        fi
        if ! kill -0 "$SDC_REDIS_PID" 2>/dev/null; then
            echo "redis_env: redis-server exited: $(tail -c 500 "$SDC_REDIS_DIR/redis.log")" >&2
            sdc_redis_stop
            return 1
        fi
        sleep 0.01
    done
    echo "redis_env: redis-server did not open $sock within 5 s" >&2
    sdc_redis_stop
    return 1
}

sdc_redis_stop() {
    if [ -n "${SDC_REDIS_PID:-}" ]; then
        kill "$SDC_REDIS_PID" 2>/dev/null
        wait "$SDC_REDIS_PID" 2>/dev/null
        SDC_REDIS_PID=
    fi
    if [ -n "${SDC_REDIS_DIR:-}" ]; then
        rm -rf "$SDC_REDIS_DIR"
        SDC_REDIS_DIR=
    fi
    unset SDC_REDIS_URL
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    if ! sdc_redis_start; then
        echo "FAIL redis_env_start"
        exit 0
    fi
    sock=${SDC_REDIS_URL#redis+unix://}
    dir=$SDC_REDIS_DIR
    if [ "$(redis-cli -s "$sock" ping 2>&1)" = "PONG" ]; then
        echo "PASS redis_env_start"
    else
        echo "FAIL redis_env_start: no PONG on $sock"
    fi
    sdc_redis_stop
    if [ ! -e "$dir" ] && [ -z "${SDC_REDIS_URL:-}" ]; then
        echo "PASS redis_env_stop"
    else
        echo "FAIL redis_env_stop: $dir left behind"
    fi
fi
