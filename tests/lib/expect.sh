# Shared helpers of the integration scripts (sourced, not run): the
# "PASS name" / "FAIL name: why" lines tests/run.sh counts, and `expect`,
# which runs a command and checks its exit status and a stderr pattern.
# The caller sets T to a scratch directory before calling expect.

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

# expect NAME STATUS PATTERN -- command...: exit status and a stderr pattern.
expect() {
    local name=$1 want=$2 pat=$3
    shift 4
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit $rc, want $want; stderr: $(head -c 300 "$T/err")"
    elif [ -n "$pat" ] && ! grep -qE -- "$pat" "$T/err"; then
        fail "$name" "stderr lacks /$pat/: $(head -c 300 "$T/err")"
    else
        pass "$name"
    fi
}
