#!/usr/bin/env bash
# make demo: starts a local sdc cluster (Redis, a coordinator, a text encoder,
# one pipeline of 2 DiT stages, a VAE decoder) with the bundled tiny model,
# sends it a batch of Chinese and English prompts with sdc-submit, writes the
# images into demo-out/, checks one against sdc-generate, and stops the
# cluster, also on failure. Run from the repository root after `make`.
set -euo pipefail
BIN=$(cd "${SDC_BIN:-build/bin}" && pwd)
OUT=${DEMO_OUT:-demo-out}
MODEL=tests/data/tiny-hunyuanimage-text
FIRST_PROMPT='A cat holding a sign that says "hello world"'
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

# One job per line: plain lines are prompts, JSON lines set their own fields.
cat >"$OUT/prompts.txt" <<END
# sdc-submit prompts file (see sdc-submit --help)
$FIRST_PROMPT
一只戴着红色围巾的熊猫坐在竹林里，水彩画
{"prompt": "A poster with the title “春节快乐” in gold letters", "width": 96, "height": 64}
夜晚的上海外滩，霓虹灯倒映在江面上
{"prompt": "A storefront sign reading 'OPEN 24 HOURS', rainy night", "width": 64, "height": 96}
{"prompt": "A watercolor lighthouse at dawn", "negative_prompt": "blurry, low quality", "width": 128, "height": 64}
{"prompt": "书法作品，写着“天道酬勤”四个大字", "width": 96, "height": 96, "guidance": 5.0}
A red bicycle leaning against a yellow wall, 35mm photo
END
echo "demo: submitting 8 prompts (Chinese and English; quoted text also goes to the glyph encoder)"
"$BIN/sdc-submit" --redis "redis://127.0.0.1:$port" --prompts "$OUT/prompts.txt" --out "$OUT" \
    --width 64 --height 64 --steps 4 --seed 42 --wait --timeout 300

echo
deploy/local.sh status || true

# The cluster's image is the single-process engine's, byte for byte.
first=$(head -n1 "$OUT/jobs.jsonl" | sed 's/.*"id":"\([^"]*\)".*/\1/')
"$BIN/sdc-generate" -m "$MODEL" -p "$FIRST_PROMPT" -W 64 -H 64 -s 4 -S 42 -q -o "$OUT/.reference.png"
if cmp -s "$OUT/$first.png" "$OUT/.reference.png"; then
    echo "demo: $OUT/$first.png is byte-identical to sdc-generate's image of the same prompt"
else
    echo "demo: $OUT/$first.png differs from sdc-generate's image of the same prompt" >&2
    exit 1
fi
rm -f "$OUT/.reference.png"
echo "demo: done; images in $OUT/, job ids and parameters in $OUT/jobs.jsonl. The tiny"
echo "demo: model has random weights: its images show the system end to end, not pictures."
