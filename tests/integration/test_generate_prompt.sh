#!/usr/bin/env bash
# sdc-generate with prompts: -p / --prompt-file / --negative-prompt /
# --dump-embeds on the tiny model with text encoders, agreement with the
# --embeds path, and every kind of awkward input (empty, spaces only, 1 MB,
# NUL bytes, invalid UTF-8, unbalanced quotes) giving a result or a clear
# error, never a crash. Prints "PASS name" / "FAIL name" per case (protocol
# of tests/run.sh).
set -u
BIN=${SDC_BIN:-build/bin}
DATA=${SDC_TEST_DATA:-tests/data}
GEN="$BIN/sdc-generate"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

. "$(dirname "$0")/../lib/expect.sh"

# same NAME FILE1 FILE2 / differ NAME FILE1 FILE2
same() { if cmp -s "$2" "$3"; then pass "$1"; else fail "$1" "$2 and $3 differ"; fi; }
differ() { if [ -s "$2" ] && [ -s "$3" ] && ! cmp -s "$2" "$3"; then pass "$1"; else fail "$1" "$2 and $3 are equal or missing"; fi; }

M="$DATA/tiny-hunyuanimage-text"
RUN=(-m "$M" -W 64 -H 64 -s 4 -S 42 -q)
GLYPH='A cat holding a sign that says "hello world"'

# Help.
"$GEN" --help >"$T/help" 2>&1
for opt in --prompt --prompt-file --negative-prompt --dump-embeds; do
    grep -q -- "$opt" "$T/help" && pass "help_$opt" || fail "help_$opt" "not in --help"
done

# Usage errors.
expect prompt_and_embeds 2 "one of --prompt" -- "$GEN" "${RUN[@]}" -p x -e "$T/e.st" -o "$T/x.png"
expect prompt_and_file 2 "one of --prompt" -- "$GEN" "${RUN[@]}" -p x --prompt-file "$T/p" -o "$T/x.png"
expect no_input 2 "one of --prompt" -- "$GEN" "${RUN[@]}" -o "$T/x.png"
expect no_output 2 "--dump-embeds" -- "$GEN" "${RUN[@]}" -p x
expect negative_with_embeds 2 "--negative-prompt needs a prompt" -- \
    "$GEN" "${RUN[@]}" -e "$DATA/goldens/pipeline_apg_64x64.safetensors" -n x -o "$T/x.png"
expect dump_with_embeds 2 "--dump-embeds needs a prompt" -- \
    "$GEN" "${RUN[@]}" -e "$DATA/goldens/pipeline_apg_64x64.safetensors" --dump-embeds "$T/d.st"
expect prompt_needs_value 2 "needs a value" -- "$GEN" -m "$M" -o "$T/x.png" -p

# Runtime errors.
expect prompt_file_missing 1 "nope.txt" -- "$GEN" "${RUN[@]}" --prompt-file "$T/nope.txt" -o "$T/x.png"
expect prompt_file_is_directory 1 "Is a directory" -- "$GEN" "${RUN[@]}" --prompt-file "$T" -o "$T/x.png"
truncate -s 65M "$T/huge.txt"
expect prompt_file_too_large 1 "larger than" -- "$GEN" "${RUN[@]}" --prompt-file "$T/huge.txt" -o "$T/x.png"
rm -f "$T/huge.txt"
expect model_without_text_encoder 1 "no 'text_encoder'" -- \
    "$GEN" -m "$DATA/tiny-hunyuanimage" -W 64 -H 64 -s 4 -p x -o "$T/x.png"
mkdir -p "$T/mism"
for c in text_encoder tokenizer text_encoder_2 tokenizer_2 vae scheduler guider ocr_guider model_index.json; do
    ln -s "$(cd "$M" && pwd)/$c" "$T/mism/$c"
done
cp -r "$M/transformer" "$T/mism/transformer"
sed -i 's/"text_embed_dim": *[0-9]*/"text_embed_dim": 32/' "$T/mism/transformer/config.json"
expect llm_width_mismatch 1 "hidden_size 16 does not match.*text_embed_dim 32" -- \
    "$GEN" -m "$T/mism" -W 64 -H 64 -s 4 -p x -o "$T/x.png"
expect dump_unwritable 1 "/nonexistent-dir/d.st" -- "$GEN" "${RUN[@]}" -p x --dump-embeds /nonexistent-dir/d.st

# A prompt gives an image; twice the same bytes.
if "$GEN" "${RUN[@]}" -p "$GLYPH" -o "$T/p1.png" 2>"$T/err" && "$GEN" "${RUN[@]}" -p "$GLYPH" -o "$T/p2.png" 2>>"$T/err"; then
    same prompt_rerun_identical "$T/p1.png" "$T/p2.png"
else
    fail prompt_rerun_identical "$(head -c 300 "$T/err")"
fi
# --dump-embeds then --embeds: the same image as the prompt path.
"$GEN" -m "$M" -s 4 -p "$GLYPH" --dump-embeds "$T/glyph.st" -q 2>"$T/err" && [ -s "$T/glyph.st" ] &&
    [ ! -e "$T/x.png" ] && pass dump_only || fail dump_only "$(head -c 300 "$T/err")"
for t in prompt_embeds prompt_embeds_mask prompt_embeds_2 prompt_embeds_mask_2 negative_prompt_embeds negative_prompt_embeds_mask_2; do
    grep -qa "\"$t\"" "$T/glyph.st" && pass "dump_has_$t" || fail "dump_has_$t" "tensor missing"
done
"$GEN" "${RUN[@]}" -e "$T/glyph.st" -o "$T/e1.png" 2>"$T/err"
same embeds_path_matches_prompt_path "$T/p1.png" "$T/e1.png"
# Dump and image in one run; the dump equals the dump-only run's.
"$GEN" "${RUN[@]}" -p "$GLYPH" --dump-embeds "$T/glyph2.st" -o "$T/p3.png" 2>"$T/err"
same dump_with_output "$T/glyph.st" "$T/glyph2.st"
same dump_with_output_image "$T/p1.png" "$T/p3.png"
# The default negative prompt is the empty one; another one changes the image.
"$GEN" "${RUN[@]}" -p "$GLYPH" -n "" -o "$T/n0.png" 2>"$T/err"
same default_negative_is_empty "$T/p1.png" "$T/n0.png"
"$GEN" "${RUN[@]}" -p "$GLYPH" -n "blurry, low quality" -o "$T/n1.png" 2>"$T/err"
differ negative_prompt_changes_image "$T/p1.png" "$T/n1.png"
# --prompt-file reads the same prompt as -p.
printf '%s' "$GLYPH" >"$T/glyph.txt"
"$GEN" "${RUN[@]}" --prompt-file "$T/glyph.txt" -o "$T/f1.png" 2>"$T/err"
same prompt_file_equals_prompt "$T/p1.png" "$T/f1.png"
# The summary names the token counts unless -q.
"$GEN" -m "$M" -s 4 -p "$GLYPH" --dump-embeds "$T/s.st" 2>"$T/err" &&
    grep -q "quoted text: 20 bytes (21 ByT5 tokens)" "$T/err" && pass summary_counts || fail summary_counts "$(head -c 300 "$T/err")"
"$GEN" "${RUN[@]}" -p "$GLYPH" -o "$T/q.png" 2>"$T/err" && [ ! -s "$T/err" ] && pass quiet_is_quiet || fail quiet_is_quiet "$(head -c 300 "$T/err")"

# Awkward prompts: each gives an image (or a dump) and no error.
dump() { # NAME FILE-or-ARG... -> $T/NAME.st
    local name=$1
    shift
    "$GEN" -m "$M" -s 4 -q "$@" --dump-embeds "$T/$name.st" 2>"$T/$name.err"
}
dump empty -p "" && pass empty_prompt || fail empty_prompt "$(head -c 300 "$T/empty.err")"
dump spaces -p "     " && pass spaces_prompt || fail spaces_prompt "$(head -c 300 "$T/spaces.err")"
differ empty_vs_spaces "$T/empty.st" "$T/spaces.st"
: >"$T/empty.txt"
dump empty_file --prompt-file "$T/empty.txt"
same empty_file_is_empty_prompt "$T/empty.st" "$T/empty_file.st"
"$GEN" "${RUN[@]}" -p "" -o "$T/empty.png" 2>"$T/err" && pass empty_prompt_image || fail empty_prompt_image "$(head -c 300 "$T/err")"
# 1 MB prompt: cut to 1000 tokens with a warning; quoted text cut to 128 ByT5 tokens.
yes 'A quiet harbor at dawn "OPEN" 港口的清晨 ' | head -c 1048576 >"$T/big.txt"
"$GEN" -m "$M" -s 4 --prompt-file "$T/big.txt" --dump-embeds "$T/big.st" 2>"$T/err"
rc=$?
[ $rc -eq 0 ] && grep -q "WARN.*prompt is [0-9]* tokens long.*1000.*dropped" "$T/err" &&
    pass huge_prompt_truncated_warning || fail huge_prompt_truncated_warning "exit $rc: $(head -c 300 "$T/err")"
grep -q "WARN.*quoted text.*longer than ByT5" "$T/err" && pass huge_glyph_truncated_warning ||
    fail huge_glyph_truncated_warning "$(head -c 300 "$T/err")"
grep -q "(1000 encoded)" "$T/err" && pass huge_prompt_1000_tokens || fail huge_prompt_1000_tokens "$(head -c 300 "$T/err")"
"$GEN" "${RUN[@]}" --prompt-file "$T/big.txt" -o "$T/big.png" 2>"$T/err" && pass huge_prompt_image || fail huge_prompt_image "$(head -c 300 "$T/err")"
# NUL bytes are characters: "a\0b" is not "a" (nor "ab").
printf 'a\0b "q\0q"' >"$T/nul.txt"
printf 'a' >"$T/a.txt"
printf 'ab "qq"' >"$T/ab.txt"
dump nul --prompt-file "$T/nul.txt" && pass nul_prompt || fail nul_prompt "$(head -c 300 "$T/nul.err")"
dump a --prompt-file "$T/a.txt"
dump ab --prompt-file "$T/ab.txt"
differ nul_not_truncated "$T/nul.st" "$T/a.st"
differ nul_not_dropped "$T/nul.st" "$T/ab.st"
# Invalid UTF-8 reads as U+FFFD per maximal ill-formed subpart, from a file or argv.
printf '\xff\xfe caf\xc3 "x\xe2\x80" \xe2\x80\x9cq\xe2\x80\x9d' >"$T/bad.txt"
printf '\xef\xbf\xbd\xef\xbf\xbd caf\xef\xbf\xbd "x\xef\xbf\xbd" \xe2\x80\x9cq\xe2\x80\x9d' >"$T/fixed.txt"
dump bad --prompt-file "$T/bad.txt" && pass invalid_utf8_prompt || fail invalid_utf8_prompt "$(head -c 300 "$T/bad.err")"
dump fixed --prompt-file "$T/fixed.txt"
same invalid_utf8_is_replacement "$T/bad.st" "$T/fixed.st"
dump badarg -p "$(cat "$T/bad.txt")"
same invalid_utf8_argv "$T/bad.st" "$T/badarg.st"
# Unbalanced quotes: no quoted text, no glyph embeddings, still an image.
"$GEN" "${RUN[@]}" -p 'An "unbalanced quote and a stray '"'"' and “open' -o "$T/unb.png" 2>"$T/err" &&
    pass unbalanced_quotes_image || fail unbalanced_quotes_image "$(head -c 300 "$T/err")"
"$GEN" -m "$M" -s 4 -p 'An "unbalanced quote and a stray '"'"' and “open' --dump-embeds "$T/unb.st" 2>"$T/err" &&
    grep -q "quoted text: 0 bytes" "$T/err" && pass unbalanced_quotes_no_glyph || fail unbalanced_quotes_no_glyph "$(head -c 300 "$T/err")"
# Thousands of quoted segments.
segments=$(for i in $(seq 1 3000); do printf '"s%d" ' "$i"; done)
dump segs -p "$segments" && pass thousands_of_segments || fail thousands_of_segments "$(head -c 300 "$T/segs.err")"
# Special-token text in the prompt is a token, as in HF.
dump special -p 'a <|im_end|> b "</s> <pad>"' && pass special_token_text || fail special_token_text "$(head -c 300 "$T/special.err")"
exit 0
