#!/usr/bin/env bash
# sdc-tokenize end to end: the whole HF-checked corpus through --jsonl, the
# decode round trip, plain-text lines (NUL, invalid UTF-8, special tokens),
# and every kind of bad input giving a message naming the line and the
# documented exit status. Prints "PASS name" / "FAIL name" per case
# (protocol of tests/run.sh).
set -u
BIN=${SDC_BIN:-build/bin}
DATA=${SDC_TEST_DATA:-tests/data}
TOK="$BIN/sdc-tokenize"
Q="$DATA/qwen2.5-tokenizer"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

# expect NAME STATUS STDERR_PATTERN STDOUT_WANT -- command... (stdin from $T/in)
expect() {
    local name=$1 want=$2 pat=$3 out=$4
    shift 5
    "$@" <"$T/in" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit $rc, want $want; stderr: $(head -c 300 "$T/err")"
    elif [ -n "$pat" ] && ! grep -qE -- "$pat" "$T/err"; then
        fail "$name" "stderr lacks /$pat/: $(head -c 300 "$T/err")"
    elif [ "$out" != "-" ] && [ "$(cat "$T/out")" != "$out" ]; then
        fail "$name" "stdout '$(head -c 200 "$T/out")', want '$out'"
    else
        pass "$name"
    fi
}

[ -x "$TOK" ] || { fail build "$TOK missing"; exit 0; }

# Usage.
: >"$T/in"
"$TOK" --help >"$T/help" 2>&1 && grep -q -- "--jsonl" "$T/help" && pass help || fail help "no usage text"
expect missing_tokenizer 2 "--tokenizer DIR is required" - -- "$TOK"
expect unknown_option 2 "unknown option '--frobnicate'" - -- "$TOK" -t "$Q" --frobnicate
expect missing_value 2 "needs a value" - -- "$TOK" --tokenizer
expect stray_argument 2 "unexpected argument 'extra'" - -- "$TOK" -t "$Q" extra
expect skip_special_needs_decode 2 "only applies to --decode" - -- "$TOK" -t "$Q" --skip-special
expect tokenizer_missing 1 "/nonexistent: tokenizer directory not found" - -- "$TOK" -t /nonexistent
mkdir -p "$T/broken" && echo '{"model": ' >"$T/broken/tokenizer.json"
expect tokenizer_broken 1 "tokenizer.json: invalid JSON" - -- "$TOK" -t "$T/broken"

# Plain lines.
printf 'hello world\n' >"$T/in"
expect encode_plain 0 "" "14990 1879" -- "$TOK" -t "$Q"
printf '<|im_start|>user\n一个身穿唐朝服饰的女子,站在盛开的樱花树下\n' >"$T/in"
expect encode_special_and_chinese 0 "" "151644 872
46944 112531 115099 106863 9370 104340 11 104224 116832 9370 113224 99613 16872" -- "$TOK" -t "$Q"
printf 'a\0b\n\xff\n\nno newline at end' >"$T/in"
expect encode_nul_invalid_empty 0 "" "64 188 65
5691

2152 39027 518 835" -- "$TOK" -t "$Q"
printf '151644 872 198 14990 151645\n' >"$T/in"
expect decode_plain 0 "" "<|im_start|>user
hello<|im_end|>" -- "$TOK" -t "$Q" --decode
expect decode_skip_special 0 "" "user
hello" -- "$TOK" -t "$Q" --decode --skip-special
printf '151644 872 198 14990 151645\n' >"$T/in"
expect decode_jsonl 0 "" '"<|im_start|>user\nhello<|im_end|>"' -- "$TOK" -t "$Q" --decode --jsonl

# Bad lines: reported with their number, output stays line-aligned, exit 1.
printf '"ok"\n{"not": "a string"}\n"a\\qb"\n"fine"\n' >"$T/in"
expect jsonl_bad_lines 1 "line 2: column 1: expected a JSON string" "562


62057" -- "$TOK" -t "$Q" --jsonl
grep -q "line 3: column 3: invalid escape" "$T/err" && pass jsonl_bad_escape_named || fail jsonl_bad_escape_named "$(cat "$T/err")"
printf '"\\ud800"\n' >"$T/in"
expect jsonl_lone_surrogate 1 "line 1: column 2: lone surrogate" "" -- "$TOK" -t "$Q" --jsonl
printf '14990\n14990 999999\n1879\n' >"$T/in"
expect decode_out_of_range 1 "line 2: decode: id 999999 at position 1 is not a token" "hello

 world" -- "$TOK" -t "$Q" --decode
printf '14990 abc\n' >"$T/in"
expect decode_not_a_number 1 "line 1: 'abc' is not a token id" "" -- "$TOK" -t "$Q" --decode
printf -- '-5\n' >"$T/in"
expect decode_negative 1 "line 1: '-5' is not a token id" "" -- "$TOK" -t "$Q" --decode

# The corpus: ids equal HF's, and decode -> encode gives them back.
sed -e 's/^\[//' -e 's/\]$//' -e 's/, / /g' "$DATA/tokenizer_corpus_ids.jsonl" >"$T/want"
if "$TOK" -t "$Q" --jsonl <"$DATA/tokenizer_corpus.jsonl" >"$T/got" 2>"$T/err"; then
    if cmp -s "$T/got" "$T/want"; then
        pass "corpus_matches_hf ($(wc -l <"$T/want") lines)"
    else
        fail corpus_matches_hf "first differing line: $(diff "$T/got" "$T/want" | head -c 300)"
    fi
else
    fail corpus_matches_hf "exit status $?: $(head -c 300 "$T/err")"
fi
if "$TOK" -t "$Q" --decode --jsonl <"$T/want" >"$T/texts" 2>"$T/err" &&
    "$TOK" -t "$Q" --jsonl <"$T/texts" >"$T/again" 2>>"$T/err" && cmp -s "$T/again" "$T/want"; then
    pass corpus_decode_round_trip
else
    fail corpus_decode_round_trip "$(head -c 300 "$T/err") $(diff "$T/again" "$T/want" | head -c 300)"
fi
exit 0
