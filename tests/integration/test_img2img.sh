#!/usr/bin/env bash
# sdc-generate --init-image / --strength end to end: runs, byte-identical
# reruns, strength 1 equal to text-to-image, the output size defaulting to
# the input's, and every kind of bad image or strength giving a clear error
# and the documented exit status.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
set -u
BIN=${SDC_BIN:-build/bin}
DATA=${SDC_TEST_DATA:-tests/data}
GEN="$BIN/sdc-generate"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

. "$(dirname "$0")/../lib/expect.sh"

M="$DATA/tiny-hunyuanimage"
G="$DATA/goldens"
IMG="$G/img2img_init_64x96.png"
E="$G/img2img_apg_64x96.safetensors"
OK=(-m "$M" -e "$E" -s 4 -S 11 -q)

"$GEN" --help >"$T/help" 2>&1 && grep -q -- "--init-image" "$T/help" && grep -q -- "--strength" "$T/help" &&
    pass help || fail help "no image-to-image options in the usage text"

# Runs.
if "$GEN" "${OK[@]}" --init-image "$IMG" --strength 0.6 -o "$T/a.png" 2>"$T/err" &&
    "$GEN" "${OK[@]}" --init-image "$IMG" --strength 0.6 -o "$T/b.png" 2>>"$T/err"; then
    cmp -s "$T/a.png" "$T/b.png" && pass rerun_identical || fail rerun_identical "PNGs differ"
else
    fail rerun_identical "$(head -c 300 "$T/err")"
fi
"$GEN" "${OK[@]}" --init-image "$IMG" --strength 0.6 -t 1 -o "$T/c.png" 2>"$T/err" &&
    cmp -s "$T/a.png" "$T/c.png" && pass threads_identical || fail threads_identical "1 thread differs"
# -W / -H default to the input's size and give the same image as stating it.
"$GEN" "${OK[@]}" --init-image "$IMG" --strength 0.6 -W 96 -H 64 -o "$T/d.png" 2>"$T/err" &&
    cmp -s "$T/a.png" "$T/d.png" && pass size_from_image || fail size_from_image "$(head -c 300 "$T/err")"
# The default strength is 0.6.
"$GEN" "${OK[@]}" --init-image "$IMG" -o "$T/e.png" 2>"$T/err" &&
    cmp -s "$T/a.png" "$T/e.png" && pass default_strength || fail default_strength "$(head -c 300 "$T/err")"
# Other strengths run and differ from each other.
"$GEN" "${OK[@]}" --init-image "$IMG" --strength 0 -o "$T/z.png" 2>"$T/err" &&
    "$GEN" "${OK[@]}" --init-image "$IMG" --strength 0.3 -o "$T/y.png" 2>>"$T/err" &&
    ! cmp -s "$T/z.png" "$T/y.png" && ! cmp -s "$T/y.png" "$T/a.png" &&
    pass strengths_run || fail strengths_run "$(head -c 300 "$T/err")"
# Strength 1 is text-to-image with the same seed, byte for byte.
T2I=(-m "$M" -e "$G/pipeline_apg_64x64.safetensors" -s 4 -S 42 -q)
"$GEN" "${T2I[@]}" -W 64 -H 64 -o "$T/t2i.png" 2>"$T/err" &&
    "$GEN" "${T2I[@]}" --init-image "$G/img2img_init_64x64.png" --strength 1 -o "$T/s1.png" 2>>"$T/err" &&
    cmp -s "$T/t2i.png" "$T/s1.png" && pass strength1_is_text_to_image ||
    fail strength1_is_text_to_image "$(head -c 300 "$T/err")"
# The distilled model (one pass per step, meanflow).
"$GEN" -m "$DATA/tiny-hunyuanimage-distilled" -e "$G/img2img_distilled_64x64.safetensors" -s 4 -S 14 -q \
    --init-image "$G/img2img_init_64x64.png" --strength 0.5 -o "$T/dist.png" 2>"$T/err" &&
    pass distilled_runs || fail distilled_runs "$(head -c 300 "$T/err")"
# JPEG input where the build has libjpeg, a clear refusal where it has not.
"$GEN" "${OK[@]}" --init-image "$G/image_rgb.jpg" -o "$T/j.png" 2>"$T/err"
rc=$?
if [ "$rc" -eq 0 ]; then
    pass jpeg_input
elif [ "$rc" -eq 1 ] && grep -q "libjpeg" "$T/err"; then
    pass jpeg_input
else
    fail jpeg_input "exit $rc: $(head -c 300 "$T/err")"
fi
"$GEN" "${OK[@]}" --init-image "$IMG" -o "$T/s.png" --latent-out "$T/lat.safetensors" 2>"$T/err" &&
    [ -s "$T/lat.safetensors" ] && pass latent_out || fail latent_out "$(head -c 300 "$T/err")"

# Bad strengths (usage errors).
expect strength_negative 2 "--strength: '-0.1'" -- "$GEN" "${OK[@]}" --init-image "$IMG" --strength -0.1 -o "$T/x.png"
expect strength_above_one 2 "--strength: '1.5'" -- "$GEN" "${OK[@]}" --init-image "$IMG" --strength 1.5 -o "$T/x.png"
expect strength_nan 2 "--strength: 'nan'" -- "$GEN" "${OK[@]}" --init-image "$IMG" --strength nan -o "$T/x.png"
expect strength_not_number 2 "--strength: 'abc'" -- "$GEN" "${OK[@]}" --init-image "$IMG" --strength abc -o "$T/x.png"
expect strength_without_image 2 "--strength needs --init-image" -- "$GEN" "${OK[@]}" --strength 0.5 -o "$T/x.png"
expect init_image_no_value 2 "needs a value" -- "$GEN" "${OK[@]}" -o "$T/x.png" --init-image

# Bad images (runtime errors naming the file).
echo "this is not an image" >"$T/text.png"
expect text_as_image 1 "text.png.*not a PNG or JPEG" -- "$GEN" "${OK[@]}" --init-image "$T/text.png" -o "$T/x.png"
: >"$T/empty.png"
expect empty_image 1 "empty.png.*not a PNG or JPEG" -- "$GEN" "${OK[@]}" --init-image "$T/empty.png" -o "$T/x.png"
head -c 2000 "$IMG" >"$T/trunc.png"
expect truncated_png 1 "trunc.png.*PNG decoding: truncated" -- "$GEN" "${OK[@]}" --init-image "$T/trunc.png" -o "$T/x.png"
# A PNG signature and an IHDR claiming 100000 x 100000 RGB8 (valid CRC), nothing else.
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00\x27\x30\x9c\x9f' >"$T/huge.png"
expect huge_png_header 1 "100000 x 100000 pixels exceeds the limit" -- "$GEN" "${OK[@]}" --init-image "$T/huge.png" -o "$T/x.png"
expect image_missing 1 "nope.png" -- "$GEN" "${OK[@]}" --init-image "$T/nope.png" -o "$T/x.png"
expect image_is_directory 1 "not a regular file" -- "$GEN" "${OK[@]}" --init-image "$T" -o "$T/x.png"
expect size_mismatch 1 "input image is 96x64 but the output is 64x64" -- "$GEN" "${OK[@]}" --init-image "$IMG" -W 64 -H 64 -o "$T/x.png"
expect size_mismatch_height 1 "input image is 96x64 but the output is 96x72" -- "$GEN" "${OK[@]}" --init-image "$IMG" -H 72 -o "$T/x.png"
[ ! -e "$T/x.png" ] && pass no_output_on_error || fail no_output_on_error "an error left $T/x.png"
exit 0
