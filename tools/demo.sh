#!/usr/bin/env bash
# make demo: generates images with the bundled tiny models into demo-out/ and
# prints what each run did. Run from the repository root after `make`.
set -euo pipefail
BIN=${SDC_BIN:-build/bin}
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT"
run() { # name model embeds width height extra...
    local name=$1 model=$2 embeds=$3 w=$4 h=$5
    shift 5
    echo "demo: $name (${w}x${h}, 4 steps) -> $OUT/$name.png"
    "$BIN/sdc-generate" -m "tests/data/$model" -e "tests/data/goldens/$embeds" \
        -W "$w" -H "$h" -s 4 -S 42 -o "$OUT/$name.png" "$@"
}
run apg tiny-hunyuanimage pipeline_apg_64x64.safetensors 64 64
run apg-glyph tiny-hunyuanimage pipeline_apg_ocr_64x96.safetensors 96 64
run cfg tiny-hunyuanimage-cfg pipeline_cfg_96x64.safetensors 64 96
run distilled tiny-hunyuanimage-distilled pipeline_distilled_64x96.safetensors 96 64 -g 3.25
echo "demo: done; images in $OUT/ (random-weight test models: they show the engine, not pictures)"
