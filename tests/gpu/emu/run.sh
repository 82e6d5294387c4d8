#!/usr/bin/env bash
# Runs the CUDA backend's own code on the CPU, through the emulation in
# emu.h: the conformance suite (without its model-sized products), then
# (unless --quick) the DiT and pipeline goldens with SDC_TEST_BACKEND=cuda.
# For machines without a GPU; what it can and cannot catch is in emu.h.
# Takes several minutes on two cores and is not part of make test. Prints
# "N passed, N failed".
#   tests/gpu/emu/run.sh [--quick]
set -u
cd "$(dirname "$0")/../../.."
BUILD=${BUILD:-build}
OUT=$BUILD/tests-gpu-emu
export SDC_TEST_DATA="$PWD/tests/data"
passed=0
failed=0
failed_names=()

die() { echo "tests/gpu/emu: $*" >&2; exit 1; }

make --no-print-directory CUDA=1 BUILD="$BUILD" all >/dev/null || die "make CUDA=1 all failed"
# the C flags and libraries of the CPU build, from the Makefile itself
make_var() {
    make --no-print-directory -s -f Makefile -f - CUDA=0 BUILD="$BUILD" print-var <<EOF
print-var: ; @echo \$($1)
EOF
}
CFLAGS_C=$(make_var CFLAGS) || die "cannot read CFLAGS from the Makefile"
LDLIBS_C=$(make_var LDLIBS) || die "cannot read LDLIBS from the Makefile"
CXXFLAGS="-std=c++20 -O2 -g -ffp-contract=off -U_FORTIFY_SOURCE -Isrc/backend -Isrc -Itests/gpu/emu"

mkdir -p "$OUT/lib"
python3 tests/gpu/emu/transform.py src/backend/backend_cuda.cu "$OUT/backend_cuda_emu.cpp" ||
    die "transform.py failed"
g++ $CXXFLAGS -c "$OUT/backend_cuda_emu.cpp" -o "$OUT/backend_cuda_emu.o" || die "compile failed"
g++ $CXXFLAGS -c tests/gpu/emu/emu.cpp -o "$OUT/emu.o" || die "compile failed"
# libsdc's objects (backend.c built with SDC_HAVE_CUDA), less the real backend
(cd "$OUT/lib" && rm -f ./*.o && ar x "$OLDPWD/$BUILD/libsdc.a" && rm -f backend_cuda.o) ||
    die "cannot unpack $BUILD/libsdc.a"
link_test() { # source -> binary in $OUT
    local src=$1 name
    name=$(basename "$src" .c)
    cc $CFLAGS_C -c "$src" -o "$OUT/$name.o" &&
        g++ -fopenmp -pthread "$OUT/$name.o" "$OUT/backend_cuda_emu.o" "$OUT/emu.o" "$OUT"/lib/*.o \
            $LDLIBS_C -o "$OUT/$name" || die "cannot build $name"
}
link_test tests/gpu/test_backend_conformance.c
link_test tests/unit/test_dit.c
link_test tests/unit/test_pipeline.c

OUTPUT=$(mktemp)
trap 'rm -f "$OUTPUT"' EXIT
run_one() { # label command...: counts PASS / FAIL lines like tests/run.sh
    local label=$1 rc p f
    shift
    "$@" >"$OUTPUT" 2>&1
    rc=$?
    p=$(grep -c '^PASS ' "$OUTPUT")
    f=$(grep -c '^FAIL ' "$OUTPUT")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL $label (exit status $rc)" >>"$OUTPUT"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        failed_names+=("$label")
        echo "--- $label: $p passed, $f failed"
        cat "$OUTPUT"
    else
        echo "--- $label: $p passed"
    fi
}

SDC_CONFORMANCE_QUICK=1 run_one "test_backend_conformance (emulated)" "$OUT/test_backend_conformance"
if [ "${1:-}" != "--quick" ]; then
    SDC_TEST_BACKEND=cuda run_one "test_dit (emulated cuda)" "$OUT/test_dit"
    SDC_TEST_BACKEND=cuda run_one "test_pipeline (emulated cuda)" "$OUT/test_pipeline"
fi

if [ ${#failed_names[@]} -gt 0 ]; then
    echo "failing: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
