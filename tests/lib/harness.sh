#!/usr/bin/env bash
# harness.sh: the frame every integration test that starts processes shares.
# Source it as
#
#   . "$(dirname "$0")/../lib/harness.sh" NAME WATCHDOG_S
#
# and get: BIN and DATA as absolute paths ($SDC_BIN, $SDC_TEST_DATA or the
# build tree's), a fresh temporary directory T (sdc-NAME-XXXXXX; kept when
# $SDC_TEST_KEEP is set), PIDS (every pid added there is killed at exit),
# one thread per process (the tests run on two cores, and results do not
# depend on the thread count), redis_env.sh's sdc_redis_start/stop, a
# `cleanup` run at exit, and a watchdog that prints a FAIL line and ends the
# script (and so everything it started) if it runs past WATCHDOG_S seconds
# ($SDC_TEST_WATCHDOG_S overrides). sdc_redis_start installs its own EXIT
# trap: call `trap cleanup EXIT` again after it.
set -u
BIN=$(cd "${SDC_BIN:-build/bin}" && pwd)
DATA=$(cd "${SDC_TEST_DATA:-tests/data}" && pwd)
WATCHDOG_S=${SDC_TEST_WATCHDOG_S:-$2}
T=$(mktemp -d "${TMPDIR:-/tmp}/sdc-$1-XXXXXX")
PIDS=()
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

. "$(dirname "${BASH_SOURCE[0]}")/../integration/redis_env.sh"

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [ -n "${WATCHDOG:-}" ] && kill "$WATCHDOG" 2>/dev/null
    sdc_redis_stop
    [ -n "${SDC_TEST_KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT
trap 'echo "FAIL watchdog: the test ran past ${WATCHDOG_S} s"; exit 1' USR1
MAIN=$$
(
    for _ in $(seq "$WATCHDOG_S"); do
        sleep 1
        kill -0 "$MAIN" 2>/dev/null || exit 0
    done
    kill -USR1 "$MAIN"
) 2>/dev/null &
WATCHDOG=$!
