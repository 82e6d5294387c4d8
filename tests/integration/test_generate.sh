#!/usr/bin/env bash
# sdc-generate end to end: golden runs, byte-identical reruns, and every kind
# of bad input giving a clear error and the documented exit status.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
set -u
BIN=${SDC_BIN:-build/bin}
DATA=${SDC_TEST_DATA:-tests/data}
GEN="$BIN/sdc-generate"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

. "$(dirname "$0")/../lib/expect.sh"

M="$DATA/tiny-hunyuanimage"
E="$DATA/goldens/pipeline_apg_64x64.safetensors"
OK=(-m "$M" -e "$E" -W 64 -H 64 -s 4 -S 42 -q)

# Help and usage.
"$GEN" --help >"$T/help" 2>&1 && grep -q -- "--embeds" "$T/help" && pass help || fail help "no usage text"
expect missing_required 2 "required" -- "$GEN" -o "$T/x.png"
expect unknown_option 2 "unknown option" -- "$GEN" --frobnicate
expect missing_value 2 "needs a value" -- "$GEN" --model
expect width_not_number 2 "--width: 'abc'" -- "$GEN" "${OK[@]}" -W abc -o "$T/x.png"
expect width_negative 2 "--width" -- "$GEN" "${OK[@]}" -W -64 -o "$T/x.png"
expect width_too_large 2 "--width" -- "$GEN" "${OK[@]}" -W 100000 -o "$T/x.png"
expect steps_zero 2 "--steps" -- "$GEN" "${OK[@]}" -s 0 -o "$T/x.png"
expect seed_negative 2 "--seed" -- "$GEN" "${OK[@]}" -S -1 -o "$T/x.png"
expect guidance_nan 2 "--guidance" -- "$GEN" "${OK[@]}" -g nan -o "$T/x.png"
expect size_not_multiple 1 "not a multiple of" -- "$GEN" "${OK[@]}" -W 60 -o "$T/x.png"
expect stray_argument 2 "unexpected argument" -- "$GEN" "${OK[@]}" -o "$T/x.png" extra

# Bad files.
expect model_missing 1 "/nonexistent.*not found" -- "$GEN" -m /nonexistent -e "$E" -o "$T/x.png"
mkdir -p "$T/other"
echo '{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}' >"$T/other/model_index.json"
expect other_architecture 1 "StableDiffusionPipeline" -- "$GEN" -m "$T/other" -e "$E" -o "$T/x.png"
echo '{"_class_name": ' >"$T/other/model_index.json"
expect model_index_broken 1 "model_index.json" -- "$GEN" -m "$T/other" -e "$E" -o "$T/x.png"
expect embeds_missing 1 "nope.safetensors" -- "$GEN" -m "$M" -e "$T/nope.safetensors" -o "$T/x.png"
head -c 100 "$E" >"$T/trunc.safetensors"
expect embeds_truncated 1 "trunc.safetensors" -- "$GEN" -m "$M" -e "$T/trunc.safetensors" -o "$T/x.png"
expect embeds_wrong_tensors 1 "prompt_embeds" -- "$GEN" -m "$M" -e "$DATA/goldens/vae_decode.safetensors" -o "$T/x.png"
printf 'garbage garbage garbage' >"$T/garbage.safetensors"
expect embeds_garbage 1 "garbage.safetensors" -- "$GEN" -m "$M" -e "$T/garbage.safetensors" -o "$T/x.png"
expect output_unwritable 1 "/nonexistent-dir/x.png" -- "$GEN" "${OK[@]}" -o /nonexistent-dir/x.png
# A transformer whose weights do not match its config.
cp -r "$M" "$T/badw"
sed -i 's/"num_layers": *[0-9]*/"num_layers": 3/' "$T/badw/transformer/config.json"
expect weights_missing_block 1 "transformer_blocks.2" -- "$GEN" -m "$T/badw" -e "$E" -o "$T/x.png"

# Runs: the golden case twice gives the same bytes; distilled and guided work.
if "$GEN" "${OK[@]}" -o "$T/a.png" 2>"$T/err" && "$GEN" "${OK[@]}" -o "$T/b.png" 2>>"$T/err"; then
    cmp -s "$T/a.png" "$T/b.png" && pass rerun_identical || fail rerun_identical "PNGs differ"
    [ "$(head -c 8 "$T/a.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] &&
        pass png_signature || fail png_signature "not a PNG"
else
    fail rerun_identical "$(head -c 300 "$T/err")"
fi
"$GEN" "${OK[@]}" -t 1 -o "$T/c.png" 2>"$T/err" && cmp -s "$T/a.png" "$T/c.png" &&
    pass threads_identical || fail threads_identical "1 thread differs from all threads"
"$GEN" "${OK[@]}" --no-trim-text -o "$T/u.png" 2>"$T/err" && pass untrimmed_runs || fail untrimmed_runs "$(head -c 300 "$T/err")"
"$GEN" -m "$DATA/tiny-hunyuanimage-distilled" -e "$DATA/goldens/pipeline_distilled_64x96.safetensors" \
    -W 96 -H 64 -s 4 -S 42 -g 3.25 -o "$T/d.png" 2>"$T/err" && pass distilled_runs || fail distilled_runs "$(head -c 300 "$T/err")"
"$GEN" "${OK[@]}" -o "$T/s.png" --latent-out "$T/lat.safetensors" 2>"$T/err" && [ -s "$T/lat.safetensors" ] &&
    pass latent_out || fail latent_out "$(head -c 300 "$T/err")"
# The summary is printed unless -q.
"$GEN" -m "$M" -e "$E" -W 64 -H 64 -s 2 -o "$T/v.png" 2>"$T/err" && grep -q "DiT passes" "$T/err" &&
    pass timing_summary || fail timing_summary "$(head -c 300 "$T/err")"
exit 0
