#!/usr/bin/env bash
# sdc-generate --refiner / --refine-image end to end: refining a file,
# byte-identical reruns and thread counts, base generation + refiner equal
# to generating then refining the written base image, the refiner flags
# changing the result, the refiner's own text encoder (a prompt instead of
# --refiner-embeds), resizing to --refine-width x --refine-height (the
# 2x upscale of a base image), and every kind of bad input (images, sizes,
# strength, wrong model directories, missing flags) giving a clear error
# and the documented exit status.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
set -u
BIN=${SDC_BIN:-build/bin}
DATA=${SDC_TEST_DATA:-tests/data}
GEN="$BIN/sdc-generate"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

. "$(dirname "$0")/../lib/expect.sh"

R="$DATA/tiny-hunyuanimage-refiner"
# A refiner directory without its text encoder (model_index.json says so).
mkdir -p "$T/notext" && for d in transformer vae scheduler; do ln -s "$(cd "$R/$d" && pwd)" "$T/notext/$d"; done
sed 's/"Qwen2_5_VLForConditionalGeneration"/null/; s/"Qwen2Tokenizer"/null/; s/"transformers",/null,/' \
    "$R/model_index.json" >"$T/notext/model_index.json"
G="$DATA/goldens"
IMG="$G/img2img_init_64x96.png"
RE="$G/refiner_pipeline_64x96.safetensors"
REF=(--refiner "$R" --refiner-embeds "$RE" -S 77 -q)

"$GEN" --help >"$T/help" 2>&1 && grep -q -- "--refiner DIR" "$T/help" &&
    grep -q -- "--refine-image" "$T/help" && pass help || fail help "no refiner options in the usage text"

# Refining a file: reruns and thread counts give the same bytes.
if "$GEN" "${REF[@]}" --refine-image "$IMG" -o "$T/a.png" 2>"$T/err" &&
    "$GEN" "${REF[@]}" --refine-image "$IMG" -o "$T/b.png" 2>>"$T/err" &&
    "$GEN" "${REF[@]}" --refine-image "$IMG" -t 1 -o "$T/c.png" 2>>"$T/err"; then
    cmp -s "$T/a.png" "$T/b.png" && cmp -s "$T/a.png" "$T/c.png" && ! cmp -s "$T/a.png" "$IMG" &&
        pass refine_image_identical || fail refine_image_identical "PNGs differ"
else
    fail refine_image_identical "$(head -c 300 "$T/err")"
fi
# The defaults are 4 steps, strength 0.25, guidance 3.25; other values change the image.
"$GEN" "${REF[@]}" --refine-image "$IMG" --refine-steps 4 --refine-strength 0.25 \
    --refine-guidance 3.25 -o "$T/d.png" 2>"$T/err" && cmp -s "$T/a.png" "$T/d.png" &&
    pass refine_defaults || fail refine_defaults "$(head -c 300 "$T/err")"
for opt in "--refine-steps 2" "--refine-strength 0.8" "--refine-guidance 5" "-S 78"; do
    # shellcheck disable=SC2086
    if "$GEN" "${REF[@]}" --refine-image "$IMG" $opt -o "$T/o.png" 2>"$T/err" &&
        ! cmp -s "$T/a.png" "$T/o.png"; then
        pass "refine_option_${opt%% *}"
    else
        fail "refine_option_${opt%% *}" "same image or error: $(head -c 300 "$T/err")"
    fi
done
# Base generation, then the refiner: the same bytes as refining the base image written out.
BASE=(-m "$DATA/tiny-hunyuanimage-distilled" -e "$G/pipeline_distilled_64x96.safetensors" -W 96 -H 64 -s 4 -S 5 -q)
if "$GEN" "${BASE[@]}" --refiner "$R" --refiner-embeds "$RE" --base-output "$T/base.png" -o "$T/chain.png" 2>"$T/err" &&
    "$GEN" "${BASE[@]}" -o "$T/base2.png" 2>>"$T/err" &&
    "$GEN" --refiner "$R" --refiner-embeds "$RE" -S 5 -q --refine-image "$T/base.png" -o "$T/chain2.png" 2>>"$T/err"; then
    cmp -s "$T/base.png" "$T/base2.png" && cmp -s "$T/chain.png" "$T/chain2.png" &&
        ! cmp -s "$T/base.png" "$T/chain.png" && pass base_then_refiner || fail base_then_refiner "PNGs differ"
else
    fail base_then_refiner "$(head -c 300 "$T/err")"
fi
# PNG width and height from the IHDR chunk.
png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{print $3*256+$4 "x" $7*256+$8}'; }

# A prompt instead of --refiner-embeds: the refiner's text encoder runs; reruns agree.
PR=(--refiner "$R" -p '一只橘猫坐在窗台上, a sign that says "refine me"' -S 91 -q)
if "$GEN" "${PR[@]}" --refine-image "$IMG" -o "$T/p1.png" 2>"$T/err" &&
    "$GEN" "${PR[@]}" --refine-image "$IMG" -t 1 -o "$T/p2.png" 2>>"$T/err"; then
    cmp -s "$T/p1.png" "$T/p2.png" && [ "$(png_size "$T/p1.png")" = 96x64 ] && ! cmp -s "$T/p1.png" "$IMG" &&
        pass refine_prompt || fail refine_prompt "PNGs differ or wrong size"
else
    fail refine_prompt "$(head -c 300 "$T/err")"
fi
"$GEN" "${PR[@]}" -p "another prompt" --refine-image "$IMG" -o "$T/p3.png" 2>"$T/err" &&
    ! cmp -s "$T/p1.png" "$T/p3.png" && pass refine_prompt_matters || fail refine_prompt_matters "same image"
printf '%s' '一只橘猫坐在窗台上, a sign that says "refine me"' >"$T/prompt.txt"
"$GEN" --refiner "$R" --prompt-file "$T/prompt.txt" -S 91 -q --refine-image "$IMG" -o "$T/p4.png" 2>"$T/err" &&
    cmp -s "$T/p1.png" "$T/p4.png" && pass refine_prompt_file || fail refine_prompt_file "$(head -c 300 "$T/err")"
# No guider in the refiner: a negative prompt changes nothing.
"$GEN" "${PR[@]}" -n "blurry" --refine-image "$IMG" -o "$T/p5.png" 2>"$T/err" &&
    cmp -s "$T/p1.png" "$T/p5.png" && pass refine_negative_unused || fail refine_negative_unused "$(head -c 300 "$T/err")"

# Resizing: 96x64 -> 192x128 (2x), and a down-and-up mix; the size given equal
# to the image's is the same as none.
if "$GEN" "${PR[@]}" --refine-image "$IMG" --refine-width 192 --refine-height 128 -o "$T/up.png" 2>"$T/err" &&
    "$GEN" "${PR[@]}" --refine-image "$IMG" --refine-width 48 --refine-height 80 -o "$T/mix.png" 2>>"$T/err" &&
    "$GEN" "${PR[@]}" --refine-image "$IMG" --refine-width 96 --refine-height 64 -o "$T/same.png" 2>>"$T/err"; then
    [ "$(png_size "$T/up.png")" = 192x128 ] && [ "$(png_size "$T/mix.png")" = 48x80 ] &&
        cmp -s "$T/same.png" "$T/p1.png" && pass refine_resize || fail refine_resize "sizes $(png_size "$T/up.png") $(png_size "$T/mix.png")"
else
    fail refine_resize "$(head -c 300 "$T/err")"
fi
# Prompt -> base image -> 2x upscale -> refined, in one call; the same as in two.
BP=(-m "$DATA/tiny-hunyuanimage-text" -p '一只橘猫, a cat "hi"' -W 64 -H 64 -s 2 -S 3 -q)
if "$GEN" "${BP[@]}" --refiner "$R" --refine-width 128 --refine-height 128 --base-output "$T/b64.png" -o "$T/r128.png" 2>"$T/err" &&
    "$GEN" --refiner "$R" -p '一只橘猫, a cat "hi"' -S 3 -q --refine-image "$T/b64.png" --refine-width 128 --refine-height 128 -o "$T/r128b.png" 2>>"$T/err"; then
    [ "$(png_size "$T/b64.png")" = 64x64 ] && [ "$(png_size "$T/r128.png")" = 128x128 ] && cmp -s "$T/r128.png" "$T/r128b.png" &&
        pass prompt_base_upscale_refine || fail prompt_base_upscale_refine "sizes or bytes differ"
else
    fail prompt_base_upscale_refine "$(head -c 300 "$T/err")"
fi

# JPEG input (40 x 24) where the build has libjpeg, a clear refusal where it has not.
"$GEN" "${REF[@]}" --refine-image "$G/image_rgb.jpg" -o "$T/j.png" 2>"$T/err"
rc=$?
if [ "$rc" -eq 0 ] || { [ "$rc" -eq 1 ] && grep -q "libjpeg" "$T/err"; }; then
    pass jpeg_input
else
    fail jpeg_input "exit $rc: $(head -c 300 "$T/err")"
fi

# Usage errors.
expect strength_negative 2 "--refine-strength: '-0.1'" -- "$GEN" "${REF[@]}" --refine-image "$IMG" --refine-strength -0.1 -o "$T/x.png"
expect strength_above_one 2 "--refine-strength: '1.5'" -- "$GEN" "${REF[@]}" --refine-image "$IMG" --refine-strength 1.5 -o "$T/x.png"
expect strength_nan 2 "--refine-strength: 'nan'" -- "$GEN" "${REF[@]}" --refine-image "$IMG" --refine-strength nan -o "$T/x.png"
expect steps_zero 2 "--refine-steps: '0'" -- "$GEN" "${REF[@]}" --refine-image "$IMG" --refine-steps 0 -o "$T/x.png"
expect refine_image_without_refiner 2 "need --refiner" -- "$GEN" --refine-image "$IMG" -o "$T/x.png"
expect strength_without_refiner 2 "need --refiner" -- "$GEN" -m "$DATA/tiny-hunyuanimage" -e "$G/pipeline_apg_64x64.safetensors" --refine-strength 0.3 -o "$T/x.png"
expect refiner_without_text 2 "needs a prompt .--prompt / --prompt-file. or --refiner-embeds" -- "$GEN" --refiner "$R" --refine-image "$IMG" -o "$T/x.png"
expect refiner_without_output 2 "needs a prompt .* and --output" -- "$GEN" "${REF[@]}" --refine-image "$IMG"
expect refiner_base_embeds_only 2 "needs a prompt" -- "$GEN" -m "$DATA/tiny-hunyuanimage-distilled" -e "$G/pipeline_distilled_64x96.safetensors" --refiner "$R" -o "$T/x.png"
expect refine_prompt_and_embeds 2 "a prompt or --refiner-embeds .not both." -- "$GEN" "${REF[@]}" -p "x" --refine-image "$IMG" -o "$T/x.png"
expect refine_width_zero 2 "--refine-width: '0'" -- "$GEN" "${PR[@]}" --refine-image "$IMG" --refine-width 0 -o "$T/x.png"
expect refine_height_huge 2 "--refine-height: '100000'" -- "$GEN" "${PR[@]}" --refine-image "$IMG" --refine-height 100000 -o "$T/x.png"
expect refine_width_junk 2 "--refine-width: '2x'" -- "$GEN" "${PR[@]}" --refine-image "$IMG" --refine-width 2x -o "$T/x.png"
expect refine_width_without_refiner 2 "need --refiner" -- "$GEN" -m "$DATA/tiny-hunyuanimage" -e "$G/pipeline_apg_64x64.safetensors" --refine-width 128 -o "$T/x.png"
expect refine_image_with_model 2 "and no --model" -- "$GEN" "${REF[@]}" --refine-image "$IMG" -m "$DATA/tiny-hunyuanimage" -o "$T/x.png"

# Runtime errors naming what is wrong.
echo "this is not an image" >"$T/text.png"
expect text_as_image 1 "text.png.*not a PNG or JPEG" -- "$GEN" "${REF[@]}" --refine-image "$T/text.png" -o "$T/x.png"
head -c 2000 "$IMG" >"$T/trunc.png"
expect truncated_png 1 "trunc.png.*PNG decoding: truncated" -- "$GEN" "${REF[@]}" --refine-image "$T/trunc.png" -o "$T/x.png"
if head -c 600 "$G/image_rgb.jpg" >"$T/trunc.jpg" && "$GEN" "${REF[@]}" --refine-image "$G/image_rgb.jpg" -o "$T/j2.png" 2>/dev/null; then
    expect truncated_jpeg 1 "trunc.jpg" -- "$GEN" "${REF[@]}" --refine-image "$T/trunc.jpg" -o "$T/x.png"
else
    pass truncated_jpeg
fi
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00\x27\x30\x9c\x9f' >"$T/huge.png"
expect huge_png_header 1 "100000 x 100000 pixels exceeds the limit" -- "$GEN" "${REF[@]}" --refine-image "$T/huge.png" -o "$T/x.png"
expect image_missing 1 "nope.png" -- "$GEN" "${REF[@]}" --refine-image "$T/nope.png" -o "$T/x.png"
# A 12 x 12 gray PNG: no multiple of the refiner's factor 8 at its own size, nor
# a requested size off the grid; resized to 16 x 8 it is refined.
printf '\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x0c\x00\x00\x00\x0c\x08\x00\x00\x00\x00\x73\x1e\x03\x3b\x00\x00\x00\x0f\x49\x44\x41\x54\x78\xda\x63\x68\x40\x02\x0c\x83\x8b\x03\x00\xf1\xd7\x48\x01\x00\x10\xa2\xb4\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82' >"$T/odd.png"
expect size_not_multiple 1 "12x12 .WxH. is not a multiple of 8x8" -- "$GEN" "${REF[@]}" --refine-image "$T/odd.png" -o "$T/x.png"
expect refine_size_not_multiple 1 "100x64 .WxH. is not a multiple of 8x8" -- "$GEN" "${PR[@]}" --refine-image "$IMG" --refine-width 100 -o "$T/x.png"
"$GEN" "${PR[@]}" --refine-image "$T/odd.png" --refine-width 16 --refine-height 8 -o "$T/odd_ok.png" 2>"$T/err" &&
    [ "$(png_size "$T/odd_ok.png")" = 16x8 ] && pass odd_image_resized || fail odd_image_resized "$(head -c 300 "$T/err")"
expect refiner_prompt_no_text_encoder 1 "model_index.json has no 'text_encoder'" -- \
    "$GEN" --refiner "$T/notext" -p "x" --refine-image "$IMG" -o "$T/x.png"
expect base_dir_as_refiner 1 "'HunyuanImagePipeline', expected 'HunyuanImageRefinerPipeline'" -- \
    "$GEN" --refiner "$DATA/tiny-hunyuanimage" --refiner-embeds "$RE" -S 77 -q --refine-image "$IMG" -o "$T/x.png"
expect refiner_dir_as_base 1 "'HunyuanImageRefinerPipeline', expected 'HunyuanImagePipeline'" -- \
    "$GEN" -m "$R" -e "$RE" -o "$T/x.png"
expect refiner_dir_missing 1 "refiner model directory not found" -- \
    "$GEN" --refiner "$T/nope" --refiner-embeds "$RE" --refine-image "$IMG" -o "$T/x.png"
expect refiner_embeds_wrong_width 1 "refiner-embeds" -- \
    "$GEN" --refiner "$R" --refiner-embeds "$G/pipeline_apg_64x64.safetensors" -q --refine-image "$IMG" -o "$T/x.png"
[ ! -e "$T/x.png" ] && pass no_output_on_error || fail no_output_on_error "an error left $T/x.png"
exit 0
