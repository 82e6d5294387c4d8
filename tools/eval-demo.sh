#!/usr/bin/env bash
# make eval-demo: generates an image for every held-out prompt of the demo
# model (tests/data/demo-heldout.tsv: scenes never seen in training, each in
# English and in Chinese) with sdc-generate, and scores them with
# sdc-eval-demo: accuracy per attribute and per language. No Python.
# Run from the repository root after `make`. Settings (environment):
#   SDC_BIN (build/bin), EVAL_MODEL (models/sdc-demo), EVAL_PROMPTS
#   (tests/data/demo-heldout.tsv), EVAL_OUT (eval-demo-out), EVAL_STEPS (20),
#   EVAL_SEED (1; the same noise for every prompt, so the English and Chinese
#   prompts of a scene start from the same latent), EVAL_GUIDANCE (the model's
#   guider config), EVAL_THREADS (sdc-generate's default), EVAL_MIN_ACCURACY
#   (0: report only).
set -euo pipefail
BIN=${SDC_BIN:-build/bin}
MODEL=${EVAL_MODEL:-models/sdc-demo}
PROMPTS=${EVAL_PROMPTS:-tests/data/demo-heldout.tsv}
OUT=${EVAL_OUT:-eval-demo-out}
STEPS=${EVAL_STEPS:-20}
SEED=${EVAL_SEED:-1}
EXTRA=()
[ -n "${EVAL_THREADS:-}" ] && EXTRA+=(-t "$EVAL_THREADS")
[ -n "${EVAL_GUIDANCE:-}" ] && EXTRA+=(-g "$EVAL_GUIDANCE")

mkdir -p "$OUT"
rm -f "$OUT"/*.png
total=$(grep -cvE '^(#|$)' "$PROMPTS")
echo "eval-demo: $total prompts from $PROMPTS, $MODEL, ${STEPS} steps, seed $SEED -> $OUT/"
n=0
while IFS=$'\t' read -r id _lang _bg _objects prompt; do
    case "$id" in '' | '#'*) continue ;; esac
    "$BIN/sdc-generate" -m "$MODEL" -p "$prompt" -W 64 -H 64 -s "$STEPS" -S "$SEED" \
        "${EXTRA[@]}" -q -o "$OUT/$id.png"
    n=$((n + 1))
    printf '\reval-demo: generated %d/%d' "$n" "$total" >&2
done <"$PROMPTS"
echo >&2
"$BIN/sdc-eval-demo" --prompts "$PROMPTS" --images "$OUT" --min-accuracy "${EVAL_MIN_ACCURACY:-0}"
