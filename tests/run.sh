#!/usr/bin/env bash
# Runs every test and prints one closing line "N passed, N failed".
# Unit tests: build/tests/test_* binaries, each printing "PASS name" /
# "FAIL name" per case. Integration tests: tests/integration/*.sh, same
# protocol. A binary or script that exits non-zero without printing a FAIL
# line (a crash) counts as one failure.
#   tests/run.sh [--unit-only]
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export SDC_BIN="$PWD/$BUILD/bin"
export SDC_TEST_DATA="$PWD/tests/data"
passed=0
failed=0
failed_names=()

run_one() { # label command...
    local label=$1; shift
    local out rc p f
    out=$(mktemp)
    "$@" >"$out" 2>&1
    rc=$?
    p=$(grep -c '^PASS ' "$out")
    f=$(grep -c '^FAIL ' "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL $label (exit status $rc)" >>"$out"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        failed_names+=("$label")
        echo "--- $label: $p passed, $f failed"
        cat "$out"
    else
        echo "--- $label: $p passed"
    fi
    rm -f "$out"
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done

if [ "${1:-}" != "--unit-only" ]; then
    for s in tests/integration/*.sh; do
        [ -f "$s" ] || continue
        run_one "$(basename "$s")" bash "$s"
    done
fi

if [ ${#failed_names[@]} -gt 0 ]; then
    echo "failing: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
