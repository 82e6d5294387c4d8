"""Makes the tiny HunyuanImage-2.1 refiner model directory and its goldens.

    python tools/goldens/make_refiner_goldens.py [--out-root DIR]

Writes (relative to the repository root, or --out-root):
    tests/data/tiny-hunyuanimage-refiner/          (HunyuanImageRefinerPipeline layout,
                                                    with text_encoder/ and tokenizer/)
    tests/data/goldens/refiner_vae_encode.safetensors
    tests/data/goldens/refiner_vae_decode.safetensors
    tests/data/goldens/refiner_pipeline_64x96.safetensors
    tests/data/goldens/refiner_text.safetensors     the refiner's encode_prompt
    tests/data/goldens/refiner_e2e_64x96.safetensors  prompt + 32x48 image -> 64x96

Reference semantics: the installed diffusers' AutoencoderKLHunyuanImageRefiner
and HunyuanImageRefinerPipeline, with the pipeline's random draws replaced by
sdc's Philox streams (see refiner_pipeline below). CPU, float32, one thread,
fixed seeds: two runs give byte-identical files.
"""

import argparse
import copy
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_goldens as mg  # noqa: E402  (sets the thread environment first)
import make_text_goldens as mtg  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKLHunyuanImageRefiner,
    FlowMatchEulerDiscreteScheduler,
    HunyuanImageRefinerPipeline,
    HunyuanImageTransformer2DModel,
)
from diffusers.pipelines.hunyuan_image import pipeline_hunyuanimage_refiner as refiner_module  # noqa: E402
from transformers import Qwen2Tokenizer  # noqa: E402

from philox import STREAM_LATENT, STREAM_REFINER_COND, STREAM_VAE_POSTERIOR, philox_noise  # noqa: E402

# A refiner VAE with 3 downsampling levels and every kind of layer: a plain and two
# temporal space-to-channel downsamples, two temporal and one plain
# channel-to-space upsample, resnets, the mid attention, both group-mean
# shortcuts. 8x spatial, 4x temporal (the released one is 16x / 4x with
# block_out_channels (128, 256, 512, 1024, 1024), latent_channels 32).
REFINER_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=8,
    block_out_channels=(16, 32, 32, 32),
    layers_per_block=1,
    spatial_compression_ratio=8,
    temporal_compression_ratio=4,
    downsample_match_channel=True,
    upsample_match_channel=True,
    scaling_factor=1.03682,  # the released refiner VAE's value
)
LATENT = REFINER_VAE_CONFIG["latent_channels"]

# The refiner DiT: the same class, with 3-D patches and RoPE axes, the image
# latents concatenated to the noisy latents (in = 2 x out), no ByT5 input,
# guidance-distilled (as the released refiner: 2 * 32 latent channels out,
# 128 in, patch (1, 1, 1), rope_axes_dim (16, 56, 56)). Its text width is
# the tiny Qwen2.5-VL's (make_text_goldens.make_llm): the refiner directory
# holds the same text encoder as tiny-hunyuanimage-text, as the released
# refiner holds the same Qwen2.5-VL-7B as the base model.
REFINER_TRANSFORMER_CONFIG = dict(
    mg.TRANSFORMER_CONFIG,
    text_embed_dim=mtg.LLM_TEXT_CONFIG["hidden_size"],
    in_channels=4 * LATENT,
    out_channels=2 * LATENT,
    patch_size=(1, 1, 1),
    rope_axes_dim=(4, 6, 6),
    text_embed_2_dim=None,
    guidance_embeds=True,
    use_meanflow=False,
)
REFINER_SCHEDULER_CONFIG = dict(shift=4.0)

SEED_REFINER_VAE = 6006
SEED_REFINER_TRANSFORMER = 7007
VAE_ENCODE_SEED = 16
REFINER_CASE = dict(name="pipeline_64x96", height=64, width=96, steps=4, seed=77, input_seed=41, llm=23,
                    distilled_guidance_scale=3.25)
# Prompt -> refined image through the refiner's own text encoder, the
# input image half the output size (VaeImageProcessor's Lanczos resize).
E2E_CASE = dict(name="e2e_64x96", height=64, width=96, input_height=32, input_width=48, steps=4, seed=91,
                prompt='一只橘猫坐在窗台上, a sign that says "refine me", soft light',
                distilled_guidance_scale=3.25)

# The refiner's encode_prompt (HunyuanImageRefinerPipeline.__init__).
REFINER_TEMPLATE = ("<|start_header_id|>system<|end_header_id|>\n\nDescribe the image by detailing the color, "
                    "shape, size, texture, quantity, text, spatial relationships of the objects and "
                    "background:<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>")
REFINER_DROP_IDX = 36
REFINER_MAX_LEN = 256


def make_refiner_vae():
    torch.manual_seed(SEED_REFINER_VAE)
    vae = AutoencoderKLHunyuanImageRefiner(**REFINER_VAE_CONFIG)
    # HunyuanImageRefinerRMS_norm's parameter is "gamma": give it the norm
    # treatment (1 + small noise) instead of fan-in scaling.
    special = {}
    g = torch.Generator().manual_seed(SEED_REFINER_VAE + 1)
    for name, p in vae.named_parameters():
        if name.endswith(".gamma"):
            special[name] = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
    mg.init_weights(vae, SEED_REFINER_VAE, special=special)
    mg.round_to_bf16_(vae)
    return vae.eval()


def make_refiner_transformer():
    torch.manual_seed(SEED_REFINER_TRANSFORMER)
    model = HunyuanImageTransformer2DModel(**REFINER_TRANSFORMER_CONFIG)
    mg.init_weights(model, SEED_REFINER_TRANSFORMER, ada_gain=1.5)
    mg.round_to_bf16_(model)
    return model.eval()


def save_refiner_dir(path, transformer, vae, llm, tok):
    """Every model is stored in bfloat16 (their values are bf16-exact); the
    text encoder and tokenizer exactly as make_text_goldens stores them
    (sharded, vocab.json + merges.txt), so their files are the same bytes
    as tiny-hunyuanimage-text's."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    pipe = HunyuanImageRefinerPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**REFINER_SCHEDULER_CONFIG),
        vae=copy.deepcopy(vae).to(torch.bfloat16),
        text_encoder=copy.deepcopy(llm).to(torch.bfloat16),
        tokenizer=tok,
        transformer=copy.deepcopy(transformer).to(torch.bfloat16),
        guider=None,
    )
    pipe.save_pretrained(path, safe_serialization=True, max_shard_size="4MB")
    tok_dir = os.path.join(path, "tokenizer")
    shutil.rmtree(tok_dir)
    os.makedirs(tok_dir)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(mtg.QWEN_TOKENIZER_DIR, f), os.path.join(tok_dir, f))
    for root, _, files in os.walk(path):
        for f in files:
            size = os.path.getsize(os.path.join(root, f))
            mg.require(size < 5_000_000, f"{os.path.join(root, f)} is {size} bytes")
    with open(os.path.join(path, "model_index.json")) as fh:
        print(f"{os.path.basename(path)}/model_index.json:", json.dumps(json.load(fh), sort_keys=True))


def test_image(height, width):
    """The committed img2img_init_HxW.png picture (make_goldens.init_image_u8)."""
    return PIL.Image.fromarray(mg.init_image_u8(height, width, 1000 * height + width), mode="RGB")


def golden_vae_encode(out_dir, vae):
    pil = test_image(64, 96)
    processor = refiner_module.VaeImageProcessor(vae_scale_factor=8)
    image = processor.preprocess(pil, height=64, width=96).to(torch.float32)
    with torch.no_grad():
        posterior = vae.encode(image.unsqueeze(2)).latent_dist
    mean, logvar = posterior.mean.squeeze(2), posterior.logvar.squeeze(2)
    eps = torch.from_numpy(philox_noise(VAE_ENCODE_SEED, tuple(mean.shape), stream=STREAM_VAE_POSTERIOR))
    sample = mean + posterior.std.squeeze(2) * eps
    mg.require(list(mean.shape) == [1, LATENT, 8, 12], "encode shape")
    mg.require(float(logvar.min()) > -30 and float(logvar.max()) < 20, "logvar reaches the clamp")
    print(f"  refiner vae_encode: mean std {float(mean.std()):.3f}, logvar in "
          f"[{float(logvar.min()):.3f}, {float(logvar.max()):.3f}]")
    tensors = {
        "image": mg.f32(image), "image_u8": mg.i64(np.array(pil).astype(np.int64)),
        "mean": mg.f32(mean), "logvar": mg.f32(logvar), "seed": mg.i64([VAE_ENCODE_SEED]),
        "noise": mg.f32(eps), "sample": mg.f32(sample),
    }
    mg.write_golden(os.path.join(out_dir, "refiner_vae_encode.safetensors"), tensors,
                    "tiny-hunyuanimage-refiner vae.encode of one frame (image.unsqueeze(2)), frame axis "
                    "squeezed; posterior sample with Philox stream 1")


def golden_vae_decode(out_dir, vae):
    g = torch.Generator().manual_seed(17)
    latent = torch.randn((1, LATENT, 8, 12), generator=g)
    with torch.no_grad():
        decoded = vae.decode(latent.unsqueeze(2), return_dict=False)[0].squeeze(2)
    mg.require(list(decoded.shape) == [1, 3, 64, 96], "decode shape")
    print(f"  refiner vae_decode: std {float(decoded.std()):.3f}")
    mg.write_golden(os.path.join(out_dir, "refiner_vae_decode.safetensors"),
                    {"latent": mg.f32(latent), "decoded": mg.f32(decoded)},
                    "tiny-hunyuanimage-refiner vae.decode of one frame, frame axis squeezed")


def refiner_pipeline(pipe, case, out_dir):
    """One HunyuanImageRefinerPipeline call. Its three random draws come from
    sdc's Philox streams of the case's seed: the VAE posterior sample
    (retrieve_latents) stream 1, the initial latents (passed as `latents`)
    stream 0, the noise blended into the image latents (prepare_latents'
    second randn_tensor) stream 2."""
    seed, H, W = case["seed"], case["height"], case["width"]
    h, w = H // 8, W // 8
    if "prompt" in case:
        text_args = dict(prompt=case["prompt"])
        with torch.no_grad():
            embeds, mask = pipe.encode_prompt(prompt=case["prompt"], device=torch.device("cpu"))
    else:
        g = torch.Generator().manual_seed(case["input_seed"])
        L = mg.L1
        embeds = torch.randn((1, L, REFINER_TRANSFORMER_CONFIG["text_embed_dim"]), generator=g)
        mask = torch.zeros((1, L), dtype=torch.int64)
        mask[0, : case["llm"]] = 1
        text_args = dict(prompt_embeds=embeds, prompt_embeds_mask=mask)
    pil = test_image(case.get("input_height", H), case.get("input_width", W))
    latents = torch.from_numpy(philox_noise(seed, (1, 2 * LATENT, 1, h, w), stream=STREAM_LATENT))
    captured = {}

    def retrieve(encoder_output, generator=None, sample_mode="sample"):
        post = encoder_output.latent_dist
        eps = torch.from_numpy(philox_noise(seed, tuple(post.mean.shape), stream=STREAM_VAE_POSTERIOR))
        captured["posterior_noise"] = eps
        captured["sample"] = post.mean + post.std * eps
        return captured["sample"]

    def randn(shape, generator=None, device=None, dtype=None, layout=None):
        captured["cond_noise"] = torch.from_numpy(philox_noise(seed, tuple(shape), stream=STREAM_REFINER_COND))
        return captured["cond_noise"]

    preds, steps = [], []

    def on_pred(module, args, kwargs, out):
        preds.append(out[0].detach().clone())

    def on_step_end(p, i, t, cb):
        steps.append(cb["latents"].detach().clone())
        return {}

    orig_decode = pipe.vae.decode

    def decode_hook(z, return_dict=True):
        out = orig_decode(z, return_dict=return_dict)
        captured["vae_in"] = z.detach().clone()
        captured["decoded"] = (out[0] if not return_dict else out.sample).detach().clone()
        return out

    orig_prepare = pipe.prepare_latents

    def prepare_hook(*a, **kw):
        lat, cond = orig_prepare(*a, **kw)
        captured["image_latents"] = kw["image_latents"].detach().clone()
        captured["cond_latents"] = cond.detach().clone()
        return lat, cond

    saved = (refiner_module.retrieve_latents, refiner_module.randn_tensor)
    refiner_module.retrieve_latents, refiner_module.randn_tensor = retrieve, randn
    pipe.vae.decode = decode_hook
    pipe.prepare_latents = prepare_hook
    handle = pipe.transformer.register_forward_hook(on_pred, with_kwargs=True)
    try:
        with torch.no_grad():
            out = pipe(**text_args, image=pil, height=H, width=W,
                       num_inference_steps=case["steps"], latents=latents,
                       distilled_guidance_scale=case["distilled_guidance_scale"], output_type="np",
                       callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    finally:
        handle.remove()
        refiner_module.retrieve_latents, refiner_module.randn_tensor = saved
        del pipe.vae.decode
        del pipe.prepare_latents
    image = out.images[0]
    u8 = (image * 255).round().astype(np.int64)
    sq = lambda t: mg.f32(t.squeeze(2))  # noqa: E731  (the frame axis is 1 everywhere)
    mg.require(len(steps) == case["steps"] and len(preds) == case["steps"], "one pass per step")
    change = mg.rel_change(steps[-1], latents)
    print(f"  refiner pipeline {case['name']}: latent change {change:.3f}")
    tensors = {
        "prompt_embeds": mg.f32(embeds), "prompt_embeds_mask": mg.i64(mask),
        "image_u8": mg.i64(np.array(pil).astype(np.int64)), "seed": mg.i64([seed]),
        "height": mg.i64([H]), "width": mg.i64([W]), "steps": mg.i64([case["steps"]]),
        "distilled_guidance_scale": mg.f32(torch.tensor([case["distilled_guidance_scale"]])),
        "noise": sq(latents), "posterior_noise": sq(captured["posterior_noise"]),
        "posterior_sample": sq(captured["sample"]), "image_latents": sq(captured["image_latents"]),
        "cond_noise": sq(captured["cond_noise"]), "cond_latents": sq(captured["cond_latents"]),
        "vae_in": sq(captured["vae_in"]), "decoded": sq(captured["decoded"]), "out_u8": mg.i64(u8),
    }
    if "prompt" in case:
        tensors["prompt_bytes"] = mg.i64(np.frombuffer(case["prompt"].encode("utf-8"), np.uint8).astype(np.int64))
        resized = pipe.image_processor.resize(pil, H, W)
        tensors["resized_u8"] = mg.i64(np.array(resized).astype(np.int64))
    for i in range(case["steps"]):
        tensors[f"pred_{i}"] = sq(preds[i])
        tensors[f"latents_{i}"] = sq(steps[i])
    mg.write_golden(os.path.join(out_dir, f"refiner_{case['name']}.safetensors"), tensors,
                    "HunyuanImageRefinerPipeline on tiny-hunyuanimage-refiner with Philox draws "
                    "(latents stream 0, posterior stream 1, cond noise stream 2); frame axis squeezed"
                    + ("; prompt through the refiner's text encoder, image resized from "
                       f"{pil.width}x{pil.height}" if "prompt" in case else ""))


def boundary_prompt(tok, n_total):
    """'a a a ...' whose refiner-templated token count is exactly n_total."""
    for k in range(1, 1000):
        p = " ".join(["a"] * k)
        n = len(tok(REFINER_TEMPLATE.format(p)).input_ids)
        if n == n_total:
            return p
        if n > n_total:
            break
    raise AssertionError(f"no 'a a a' prompt of {n_total} tokens")


def text_cases(tok):
    cases = [
        ("en_plain", "A cat sitting on a red sofa, photorealistic, soft morning light"),
        ("zh_plain", "一个身穿唐朝服饰的女子,站在盛开的樱花树下,微风拂面,阳光柔和。"),
        ("en_double_quotes", 'A cat holding a sign that says "hello world"'),
        ("zh_chinese_quotes", "用青花瓷风格写出“春”字,两边是‘福’和'喜'"),
        ("empty", ""),
        ("template_tokens_in_text", "a <|eot_id|> b <|start_header_id|>user<|end_header_id|> <|im_end|> c"),
        ("tokens_292", boundary_prompt(tok, REFINER_DROP_IDX + REFINER_MAX_LEN)),
        ("tokens_293", boundary_prompt(tok, REFINER_DROP_IDX + REFINER_MAX_LEN + 1)),
        ("long_truncated", 'A poster titled "HARBOR" — ' + mtg.LONG_SENTENCE * 12),
    ]
    out = [(name, p.encode("utf-8")) for name, p in cases]
    out.append(("invalid_utf8", b'bad \xff\xfe bytes "q\xe2\x80" \xe2\x80\x9c\xe5\xad\x97\xe2\x80\x9d \xc3'))
    return out


def golden_refiner_text(out_dir, pipe):
    """HunyuanImageRefinerPipeline.encode_prompt of each case, with the
    token ids (untruncated count too): <case>.prompt_bytes (UTF-8, or not on
    purpose: the reference encodes bytes.decode('utf-8', 'replace')),
    <case>.input_ids / attention_mask (292 wide), <case>.n_tokens,
    <case>.prompt_embeds (1 x 256 x 16), <case>.prompt_embeds_mask."""
    tok = pipe.tokenizer
    mg.require(pipe.prompt_template_encode == REFINER_TEMPLATE
               and pipe.prompt_template_encode_start_idx == REFINER_DROP_IDX
               and pipe.tokenizer_max_length == REFINER_MAX_LEN, "the pipeline's text constants changed")
    tensors = {}
    for name, pb in text_cases(tok):
        prompt = pb.decode("utf-8", errors="replace")
        full = tok(REFINER_TEMPLATE.format(prompt)).input_ids
        enc = tok(REFINER_TEMPLATE.format(prompt), max_length=REFINER_DROP_IDX + REFINER_MAX_LEN,
                  padding="max_length", truncation=True, return_tensors="pt")
        with torch.no_grad():
            pe, pm = pipe.encode_prompt(prompt=prompt, device=torch.device("cpu"))
        mg.require(list(pe.shape) == [1, REFINER_MAX_LEN, REFINER_TRANSFORMER_CONFIG["text_embed_dim"]], "shape")
        mg.require(torch.equal(pm[0], enc.attention_mask[0, REFINER_DROP_IDX:]), f"{name}: mask")
        n = int(pm.sum())
        mg.require(n == max(min(len(full), REFINER_DROP_IDX + REFINER_MAX_LEN) - REFINER_DROP_IDX, 0),
                   f"{name}: valid count")
        tensors[f"{name}.prompt_bytes"] = mg.i64(np.frombuffer(pb, np.uint8).astype(np.int64)) if pb else \
            mg.i64(np.zeros((0,), np.int64))
        tensors[f"{name}.input_ids"] = mg.i64(enc.input_ids)
        tensors[f"{name}.attention_mask"] = mg.i64(enc.attention_mask)
        tensors[f"{name}.n_tokens"] = mg.i64([len(full)])
        tensors[f"{name}.prompt_embeds"] = mg.f32(pe)
        tensors[f"{name}.prompt_embeds_mask"] = mg.i64(pm)
        print(f"  refiner text {name}: {len(full)} tokens, {n} valid after the drop")
    mg.write_golden(os.path.join(out_dir, "refiner_text.safetensors"), tensors,
                    "HunyuanImageRefinerPipeline.encode_prompt on tiny-hunyuanimage-refiner: "
                    "<case>.{prompt_bytes,input_ids,attention_mask,n_tokens,prompt_embeds,prompt_embeds_mask}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-root", default=mg.REPO,
                    help="directory that receives tests/data/... (default: the repository root)")
    args = ap.parse_args()
    mg.setup_determinism()
    data = os.path.join(args.out_root, "tests", "data")
    gold = os.path.join(data, "goldens")
    os.makedirs(gold, exist_ok=True)

    vae = make_refiner_vae()
    tr = make_refiner_transformer()
    llm = mtg.make_llm()
    tok = Qwen2Tokenizer.from_pretrained(mtg.QWEN_TOKENIZER_DIR)
    save_refiner_dir(os.path.join(data, "tiny-hunyuanimage-refiner"), tr, vae, llm, tok)

    golden_vae_encode(gold, vae)
    golden_vae_decode(gold, vae)
    pipe = HunyuanImageRefinerPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**REFINER_SCHEDULER_CONFIG), vae=vae,
        text_encoder=llm, tokenizer=tok, transformer=tr, guider=None)
    pipe.set_progress_bar_config(disable=True)
    refiner_pipeline(pipe, REFINER_CASE, gold)
    golden_refiner_text(gold, pipe)
    refiner_pipeline(pipe, E2E_CASE, gold)


if __name__ == "__main__":
    main()
