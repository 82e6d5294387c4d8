#!/usr/bin/env bash
# The bundled demo model (models/sdc-demo) and its checker (sdc-eval-demo):
# the checker passes the training renderer's own images of the held-out
# scenes and catches each kind of wrong attribute; the model directory loads
# and draws four held-out prompts (two scenes, English and Chinese) the same
# way twice, with the same verdicts and the backgrounds asked for. Bad checker input gives clear errors.
# Then the whole held-out evaluation (what `make eval-demo` runs, one thread):
# at least 80% of the prompts fully correct, English and Chinese within 5
# points (the goal the model was trained to).
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
set -u
BIN=${SDC_BIN:-build/bin}
DATA=${SDC_TEST_DATA:-tests/data}
MODEL=${SDC_DEMO_MODEL:-models/sdc-demo}
EVAL="$BIN/sdc-eval-demo"
TSV="$DATA/demo-heldout.tsv"
TRUTH="$DATA/demo-heldout-truth"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1

. "$(dirname "$0")/../lib/expect.sh"

[ -x "$EVAL" ] || { fail build "$EVAL missing"; exit 0; }

"$EVAL" --help >"$T/help" 2>&1 && grep -q -- "--min-accuracy" "$T/help" && pass help ||
    fail help "no usage text"

# The renderer's own images: every attribute of every prompt right.
"$EVAL" -p "$TSV" -i "$TRUTH" -m 100 >"$T/truth.out" 2>"$T/err"
if [ $? -eq 0 ] && grep -qE '^fully correct +24/24 100.0% +24/24 100.0% +48/48 100.0%' "$T/truth.out"; then
    pass truth_all_correct
else
    fail truth_all_correct "$(tail -6 "$T/truth.out") $(head -c 300 "$T/err")"
fi

# Wrong expectations against the same images: each kind is caught, and
# nothing else is reported wrong. Line 00en: white background, an orange
# circle in the center.
grep -P '^00en\t' "$TSV" >"$T/one.tsv"
check_wrong() {
    local name=$1 expr=$2 want=$3
    sed "$expr" "$T/one.tsv" >"$T/wrong.tsv"
    "$EVAL" -p "$T/wrong.tsv" -i "$TRUTH" -m 100 >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -ne 1 ]; then
        fail "$name" "exit $rc, want 1"
    elif ! grep -qxF "00en     en  FAIL $want" "$T/out"; then
        fail "$name" "verdict '$(head -1 "$T/out")', want 'FAIL $want'"
    else
        pass "$name"
    fi
}
check_wrong wrong_background 's/\twhite\t/\tblack\t/' 'background black->white;'
check_wrong wrong_colour 's/center:orange:circle/center:red:circle/' 'center: colour red->orange;'
check_wrong wrong_shape 's/center:orange:circle/center:orange:square/' 'center: shape square->circle;'
check_wrong wrong_slot 's/center:orange:circle/left:orange:circle/' \
    'left: colour orange->white; left: shape circle->star; center: orange where empty;'

# Bad input.
expect no_args 2 "--prompts and --images are required" -- "$EVAL"
expect bad_accuracy 2 "--min-accuracy" -- "$EVAL" -p "$TSV" -i "$TRUTH" -m 101
expect missing_prompts 1 "cannot open" -- "$EVAL" -p "$T/none.tsv" -i "$TRUTH"
printf '00en\ten\twhite\tcenter:pink:circle\tx\n' >"$T/bad.tsv"
expect unknown_colour 1 "bad.tsv:1: unknown colour 'pink'" -- "$EVAL" -p "$T/bad.tsv" -i "$TRUTH"
printf '00en\tfr\twhite\tcenter:red:circle\tx\n' >"$T/bad.tsv"
expect bad_language 1 "bad.tsv:1: language 'fr'" -- "$EVAL" -p "$T/bad.tsv" -i "$TRUTH"
printf '00en\ten\twhite\n' >"$T/bad.tsv"
expect short_line 1 "bad.tsv:1: expected 5 tab-separated fields" -- "$EVAL" -p "$T/bad.tsv" -i "$TRUTH"
printf '00en\ten\twhite\tcenter:red:circle,center:blue:star\tx\n' >"$T/bad.tsv"
expect slot_twice 1 "slot 'center' named twice" -- "$EVAL" -p "$T/bad.tsv" -i "$TRUTH"
printf '../x\ten\twhite\tcenter:red:circle\tx\n' >"$T/bad.tsv"
expect bad_id 1 "id '../x' must be" -- "$EVAL" -p "$T/bad.tsv" -i "$TRUTH"
expect missing_image 1 "99en.png" -- "$EVAL" -p <(sed 's/^00en/99en/' "$T/one.tsv") -i "$TRUTH"
mkdir -p "$T/img" && printf 'not a png' >"$T/img/00en.png"
expect corrupt_image 1 "00en.png" -- "$EVAL" -p "$T/one.tsv" -i "$T/img"

# The model: four held-out prompts, drawn twice; same bytes, same verdicts.
if [ ! -f "$MODEL/model_index.json" ]; then
    fail model_dir "$MODEL/model_index.json missing"
    exit 0
fi
grep -P '^(00|12)(en|zh)\t' "$TSV" >"$T/four.tsv"
ok=1
for run in 1 2; do
    mkdir -p "$T/run$run"
    while IFS=$'\t' read -r id _ _ _ prompt; do
        "$BIN/sdc-generate" -m "$MODEL" -p "$prompt" -W 64 -H 64 -s 20 -S 1 -t 1 -q \
            -o "$T/run$run/$id.png" 2>"$T/err" || { ok=0; fail model_generate "$id: $(head -c 300 "$T/err")"; }
    done <"$T/four.tsv"
    "$EVAL" -p "$T/four.tsv" -i "$T/run$run" >"$T/verdicts$run" 2>"$T/err" ||
        { ok=0; fail model_eval "run $run: $(head -c 300 "$T/err")"; }
done
if [ "$ok" -eq 1 ]; then
    pass model_generates
    same=1
    for f in "$T"/run1/*.png; do cmp -s "$f" "$T/run2/$(basename "$f")" || same=0; done
    [ "$same" -eq 1 ] && [ "$(ls "$T"/run1/*.png | wc -l)" -eq 4 ] && pass model_deterministic ||
        fail model_deterministic "images differ between two runs"
    cmp -s "$T/verdicts1" "$T/verdicts2" && [ "$(grep -c '^[0-9]' "$T/verdicts1")" -eq 4 ] &&
        pass verdicts_deterministic || fail verdicts_deterministic "verdicts differ or are missing"
    # A trained model, not noise: every background as asked, in both languages.
    grep -qE '^background +2/2 100.0% +2/2 100.0%' "$T/verdicts1" && pass model_backgrounds ||
        fail model_backgrounds "$(grep -E '^background' "$T/verdicts1")"
fi

# The held-out evaluation: 48 prompts, one thread.
if EVAL_OUT="$T/heldout" EVAL_THREADS=1 EVAL_MODEL="$MODEL" EVAL_PROMPTS="$TSV" SDC_BIN="$BIN" \
    tools/eval-demo.sh >"$T/heldout.out" 2>"$T/err"; then
    line=$(grep -E '^fully correct' "$T/heldout.out")
    read -r en zh all <<<"$(awk '{gsub("%", ""); print $4, $6, $8}' <<<"$line")"
    if awk -v a="$all" 'BEGIN { exit !(a >= 80) }'; then pass heldout_accuracy
    else fail heldout_accuracy "$line"; fi
    if awk -v e="$en" -v z="$zh" 'BEGIN { d = e - z; if (d < 0) d = -d; exit !(d <= 5) }'; then
        pass heldout_languages_within_5
    else
        fail heldout_languages_within_5 "$line"
    fi
else
    fail heldout_accuracy "eval-demo failed: $(tail -3 "$T/heldout.out") $(head -c 300 "$T/err")"
fi
