#!/usr/bin/env bash
# make demo: starts a local sdc cluster (Redis, a coordinator, a text encoder,
# one pipeline of 2 DiT stages, a VAE decoder) with the bundled demo model
# (models/sdc-demo: coloured shapes at named positions), sends it a batch of
# Chinese and English prompts with sdc-submit, writes the images into
# demo-out/, checks one against sdc-generate, and stops the cluster, also on
# failure. Run from the repository root after `make`.
set -euo pipefail
BIN=$(cd "${SDC_BIN:-build/bin}" && pwd)
OUT=${DEMO_OUT:-demo-out}
MODEL=${SDC_DEMO_MODEL:-models/sdc-demo}
FIRST_PROMPT='a white circle on the left and a purple triangle on the right, yellow background'
export SDC_RUN_DIR=${SDC_DEMO_RUN_DIR:-/tmp/sdc-demo} SDC_BIN=$BIN

# Its own Redis port, so that the demo never joins a cluster already running here.
port=${SDC_DEMO_REDIS_PORT:-}
if [ -z "$port" ]; then
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 30000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
fi

mkdir -p "$OUT"
rm -f "$OUT"/*.png "$OUT/jobs.jsonl"
trap 'deploy/local.sh down >/dev/null 2>&1 || true' EXIT
trap 'exit 1' INT TERM

echo "demo: starting a local cluster: coordinator, text encoder, 2 DiT stages, VAE ($MODEL)"
deploy/local.sh up --model "$MODEL" --stages 2 --redis-port "$port" --timeout 120

# One prompt per line.
# Scenes of the held-out list (tests/data/demo-heldout.tsv): the model never
# saw them in training.
cat >"$OUT/prompts.txt" <<END
# sdc-submit prompts file (see sdc-submit --help)
$FIRST_PROMPT
一个红色的圆形在中间，背景是绿色
a green triangle on the right, blue background
右边有一个紫色三角形，一个蓝色的星形在中间，红色背景
a yellow triangle on the left and a purple star at the right on a black background
右边有一个蓝色圆形，一个红色的三角形在中间，黄色背景
a purple triangle at the left, a white circle in the center and a white star at the right on a black background
一个黑色的三角形在左边，中间是一个黄色的星形，一个黑色的星形在右边，背景是蓝色
END
echo "demo: submitting 8 prompts (Chinese and English)"
"$BIN/sdc-submit" --redis "redis://127.0.0.1:$port" --prompts "$OUT/prompts.txt" --out "$OUT" \
    --width 64 --height 64 --steps 20 --seed 1 --wait --timeout 300

echo
deploy/local.sh status || true

# The cluster's image is the single-process engine's, byte for byte.
first=$(head -n1 "$OUT/jobs.jsonl" | sed 's/.*"id":"\([^"]*\)".*/\1/')
"$BIN/sdc-generate" -m "$MODEL" -p "$FIRST_PROMPT" -W 64 -H 64 -s 20 -S 1 -q -o "$OUT/.reference.png"
if cmp -s "$OUT/$first.png" "$OUT/.reference.png"; then
    echo "demo: $OUT/$first.png is byte-identical to sdc-generate's image of the same prompt"
else
    echo "demo: $OUT/$first.png differs from sdc-generate's image of the same prompt" >&2
    exit 1
fi
rm -f "$OUT/.reference.png"
echo "demo: done; images in $OUT/, job ids and parameters in $OUT/jobs.jsonl"
