#!/usr/bin/env bash
# fuzz/run.sh: runs every libFuzzer target in build-fuzz/ (make fuzz builds
# them) one after another for FUZZ_TIME seconds each, and reports per target
# the executions, the corpus size and any crash. Run from the repository
# root; the exit status is 1 when a target crashed or could not run.
#
#   FUZZ_TIME=S      seconds per target (default 180)
#   FUZZ_TARGETS=..  names to run (default: every build-fuzz/fuzz_*)
#   FUZZ_MERGE=1     afterwards, minimize each target's seeds plus what the
#                    run found into fuzz/corpus/NAME (libFuzzer -merge=1)
#   FUZZ_JOBS=N      parallel workers per target (default 1)
#
# Seeds are read from fuzz/corpus/NAME (committed) and never written there
# except by FUZZ_MERGE; what a run finds goes to build-fuzz/corpus/NAME, and
# crashing inputs to build-fuzz/artifacts/NAME/ (crash-*, leak-*, timeout-*,
# oom-*). A target NAME may have a dictionary fuzz/NAME.dict.
set -u
OUT=${FUZZ_OUT:-build-fuzz}
TIME=${FUZZ_TIME:-180}
JOBS=${FUZZ_JOBS:-1}
case "$TIME" in '' | *[!0-9]*) echo "fuzz/run.sh: FUZZ_TIME must be whole seconds, not '$TIME'" >&2; exit 2 ;; esac
case "$JOBS" in '' | *[!0-9]* | 0) echo "fuzz/run.sh: FUZZ_JOBS must be a positive integer, not '$JOBS'" >&2; exit 2 ;; esac

targets=()
if [ -n "${FUZZ_TARGETS:-}" ]; then
    for t in $FUZZ_TARGETS; do targets+=("${t#fuzz_}"); done
else
    for b in "$OUT"/fuzz_*; do [ -x "$b" ] && targets+=("$(basename "$b" | sed 's/^fuzz_//')"); done
fi
if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz/run.sh: no fuzz targets in $OUT/ (run make fuzz)" >&2
    exit 1
fi

failed=0
summary=()
for name in "${targets[@]}"; do
    bin="$OUT/fuzz_$name"
    if [ ! -x "$bin" ]; then
        echo "fuzz/run.sh: $bin is not built" >&2
        failed=1
        continue
    fi
    seeds="fuzz/corpus/$name" work="$OUT/corpus/$name" art="$OUT/artifacts/$name"
    mkdir -p "$seeds" "$work" "$art"
    log="$OUT/fuzz_$name.log"
    args=(-max_total_time="$TIME" -print_final_stats=1 -artifact_prefix="$art/")
    [ -f "fuzz/$name.dict" ] && args+=(-dict="fuzz/$name.dict")
    [ "$JOBS" -gt 1 ] && args+=(-fork="$JOBS")
    echo "fuzz: $name for $TIME s (log $log)"
    before=$(find "$art" -type f | wc -l)
    "$bin" "${args[@]}" "$work" "$seeds" >"$log" 2>&1
    rc=$?
    after=$(find "$art" -type f | wc -l)
    execs=$(awk '/stat::number_of_executed_units:/ { n += $2 } END { print n + 0 }' "$log")
    rate=$(awk '/stat::average_exec_per_sec:/ { r = $2 } END { print r + 0 }' "$log")
    corpus=$(find "$work" -type f | wc -l)
    crashes=$((after - before))
    line="$name: $execs execs ($rate/s), corpus $corpus, crashes $crashes"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        failed=1
        line="$line, exit $rc: see $log and $art/"
        grep -m 5 -E "ERROR: |SUMMARY: |^==[0-9]+==" "$log" | sed 's/^/    /'
    fi
    summary+=("$line")
    if [ "${FUZZ_MERGE:-0}" = 1 ] && [ "$rc" -eq 0 ]; then
        fresh="$OUT/merged/$name"
        rm -rf "$fresh" && mkdir -p "$fresh"
        if "$bin" -merge=1 "$fresh" "$seeds" "$work" >"$OUT/fuzz_$name.merge.log" 2>&1; then
            rm -rf "$seeds" && mv "$fresh" "$seeds"
            echo "fuzz: $name: corpus minimized to $(find "$seeds" -type f | wc -l) files in $seeds"
        else
            echo "fuzz: $name: merge failed, see $OUT/fuzz_$name.merge.log" >&2
            failed=1
        fi
    fi
done
echo "fuzz summary (FUZZ_TIME=$TIME s per target):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
