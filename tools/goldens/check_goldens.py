"""Checks that the committed tiny models and goldens are self-consistent.

    python tools/goldens/check_goldens.py [--root DIR]

Reloads tests/data/tiny-hunyuanimage*/ with diffusers' from_pretrained and
recomputes outputs from the inputs stored in the goldens: Philox noise,
scheduler tables, both transformer forwards, the VAE decode, both guiders,
three whole pipeline runs, the VAE encode and the image-to-image runs (with
make_goldens.img2img_reference on the reloaded pipelines). Also checks the contract's dtypes (F32 floats,
I64 integers and masks) and that masks are right-padded. Exits non-zero on
any mismatch.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import tiny_byt5  # noqa: E402,F401  (narrows the ByT5 projection; see tiny_byt5.py)
from diffusers import HunyuanImagePipeline  # noqa: E402
from diffusers.utils import logging as dlogging  # noqa: E402
from safetensors import safe_open  # noqa: E402

import PIL.Image  # noqa: E402

from philox import check_known_answers, philox_noise, philox_normal  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
failures = []


def load(path):
    out = {}
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out


def check(name, got, want, atol=0.0, rtol=0.0):
    got = got.detach().to(want.dtype)
    if got.shape != want.shape:
        failures.append(f"{name}: shape {list(got.shape)} != {list(want.shape)}")
        print(f"  FAIL {name}: shape")
        return
    if want.dtype.is_floating_point:
        err = float((got.double() - want.double()).abs().max()) if want.numel() else 0.0
        ok = torch.allclose(got, want, atol=atol, rtol=rtol)
    else:
        err = float((got - want).abs().max()) if want.numel() else 0
        ok = err <= atol
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: max abs diff {err:.3g}")
    if not ok:
        failures.append(f"{name}: max abs diff {err}")


def check_dtypes(path, tensors):
    for k, t in tensors.items():
        if t.dtype not in (torch.float32, torch.int64):
            failures.append(f"{path}:{k} has dtype {t.dtype}")
        if "mask" in k:
            if t.dtype != torch.int64:
                failures.append(f"{path}:{k}: masks must be I64")
            m = t.reshape(-1, t.shape[-1])
            for row in m:
                n = int(row.sum())
                if not (bool((row[:n] == 1).all()) and bool((row[n:] == 0).all())):
                    failures.append(f"{path}:{k}: not a right-padded 0/1 mask")


def load_pipe(root, name):
    # diffusers does not treat the null text encoder / tokenizer entries of
    # model_index.json as optional: they must be passed as None explicitly.
    pipe = HunyuanImagePipeline.from_pretrained(os.path.join(root, "tests", "data", name),
                                                dtype=torch.float32, text_encoder=None, tokenizer=None,
                                                text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_img2img(gold, goldens, pipes):
    import make_goldens  # the reference recipe lives there (and needs nothing else from it)

    print("vae_encode")
    g = goldens["vae_encode.safetensors"]
    pil = PIL.Image.open(os.path.join(gold, "img2img_init_64x96.png"))
    check("image_u8", torch.from_numpy(np.array(pil).astype(np.int64)), g["image_u8"])
    vae = pipes["tiny-hunyuanimage"].vae
    check("image", vae_image(pipes["tiny-hunyuanimage"], pil), g["image"])
    with torch.no_grad():
        posterior, eps, sample = make_goldens.vae_posterior_sample(vae, g["image"], int(g["seed"][0]))
    check("mean", posterior.mean, g["mean"], atol=1e-5)
    check("logvar", posterior.logvar, g["logvar"], atol=1e-5)
    check("noise", eps, g["noise"])
    check("sample", sample, g["sample"], atol=1e-5)

    for case in make_goldens.IMG2IMG_CASES:
        print(f"img2img_{case['name']}")
        g = goldens[f"img2img_{case['name']}.safetensors"]
        H, W = int(g["height"][0]), int(g["width"][0])
        pil = PIL.Image.open(os.path.join(gold, f"img2img_init_{H}x{W}.png"))
        kw = {k: g[k] for k in g if "prompt_embeds" in k}
        if "distilled_guidance_scale" in g:
            kw["distilled_guidance_scale"] = float(g["distilled_guidance_scale"][0])
        steps = []

        def cb(p, i, t, ck):
            steps.append(ck["latents"].clone())
            return {}

        image, image_latents, eps, noise, latents_init, decoded, out, n_steps = make_goldens.img2img_reference(
            pipes[case["model"]], pil, H, W, case["strength"], int(g["steps"][0]), int(g["seed"][0]), kw, cb)
        check("n_steps", torch.tensor([n_steps]), g["n_steps"])
        check("init_image", image, g["init_image"])
        check("noise_posterior", eps, g["noise_posterior"])
        check("noise", noise, g["noise"])
        check("image_latents", image_latents, g["image_latents"], atol=1e-5)
        check("latents_init", latents_init, g["latents_init"], atol=1e-5)
        for i, lat in enumerate(steps):
            check(f"latents_step{i}", lat, g[f"latents_step{i}"], atol=1e-5)
        check("decoded", decoded, g["decoded"], atol=1e-5)
        check("image_u8", torch.from_numpy(np.array(out).astype(np.int64)), g["image_u8"], atol=1)

    print("image_decode")
    g = goldens["image_decode.safetensors"]
    for key in sorted(g):
        stem, ext = key[: -len("_u8")].rsplit("_", 1)  # "rgb444_jpg_u8" -> image_rgb444.jpg
        back = np.array(PIL.Image.open(os.path.join(gold, f"image_{stem}.{ext}")).convert("RGB"))
        back = back.astype(np.int64)
        check(key, torch.from_numpy(back), g[key])


def vae_image(pipe, pil):
    W, H = pil.size
    return pipe.image_processor.preprocess(pil, height=H, width=W).to(torch.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=REPO, help="repository root holding tests/data (default: this one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dlogging.set_verbosity_error()
    dlogging.disable_progress_bar()
    gold = os.path.join(args.root, "tests", "data", "goldens")

    goldens = {}
    for f in sorted(os.listdir(gold)):
        if f.endswith(".safetensors"):
            goldens[f] = load(os.path.join(gold, f))
            check_dtypes(f, goldens[f])

    print("philox")
    check_known_answers()
    g = goldens["philox.safetensors"]
    check("noise", torch.from_numpy(philox_normal(int(g["seed"][0]), 4099)), g["noise"])
    check("noise_big", torch.from_numpy(philox_normal(int(g["seed_big"][0]), 1000)), g["noise_big"])

    pipes = {n: load_pipe(args.root, n) for n in
             ("tiny-hunyuanimage", "tiny-hunyuanimage-cfg", "tiny-hunyuanimage-distilled")}
    for n, p in pipes.items():
        with open(os.path.join(args.root, "tests", "data", n, "model_index.json")) as fh:
            idx = json.load(fh)
        for comp in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"):
            if idx.get(comp) != [None, None] or getattr(p, comp) is not None:
                failures.append(f"{n}: {comp} should be null")
        if p.transformer.dtype != torch.float32:
            failures.append(f"{n}: transformer loaded as {p.transformer.dtype}")
    base, cfg, dist = pipes["tiny-hunyuanimage"], pipes["tiny-hunyuanimage-cfg"], pipes["tiny-hunyuanimage-distilled"]
    if type(base.guider).__name__ != "AdaptiveProjectedMixGuidance" or base.ocr_guider is None:
        failures.append("tiny-hunyuanimage guiders")
    if type(cfg.guider).__name__ != "ClassifierFreeGuidance" or cfg.ocr_guider is not None:
        failures.append("tiny-hunyuanimage-cfg guiders")
    if dist.guider is not None or dist.ocr_guider is not None:
        failures.append("tiny-hunyuanimage-distilled should have no guider")

    print("scheduler")
    g = goldens["scheduler.safetensors"]
    for n in (1, 4, 28, 50):
        s = base.scheduler
        s.set_timesteps(sigmas=np.linspace(1.0, 0.0, n + 1)[:-1])
        check(f"sigmas_{n}", s.sigmas, g[f"sigmas_{n}"])
        check(f"timesteps_{n}", s.timesteps, g[f"timesteps_{n}"])

    print("dit_forward")
    g = goldens["dit_forward.safetensors"]
    with torch.no_grad():
        out = base.transformer(hidden_states=g["latent"], timestep=g["timestep"],
                               encoder_hidden_states=g["text"], encoder_attention_mask=g["text_mask"],
                               encoder_hidden_states_2=g["text_2"], encoder_attention_mask_2=g["text_mask_2"],
                               return_dict=False)[0]
    check("out", out, g["out"], atol=1e-6)

    # Dropping the padded text tokens changes the result only by rounding
    # (the engine may trim them).
    for b in range(2):
        n1, n2 = int(g["text_mask"][b].sum()), int(g["text_mask_2"][b].sum())
        with torch.no_grad():
            t_out = base.transformer(
                hidden_states=g["latent"][b : b + 1], timestep=g["timestep"][b : b + 1],
                encoder_hidden_states=g["text"][b : b + 1, :n1],
                encoder_attention_mask=g["text_mask"][b : b + 1, :n1],
                encoder_hidden_states_2=g["text_2"][b : b + 1, :n2] if n2 else None,
                encoder_attention_mask_2=g["text_mask_2"][b : b + 1, :n2] if n2 else None,
                return_dict=False)[0]
        check(f"out[{b}] with padded tokens dropped", t_out, g["out"][b : b + 1], atol=2e-5, rtol=1e-5)

    print("dit_forward_distilled")
    g = goldens["dit_forward_distilled.safetensors"]
    with torch.no_grad():
        out = dist.transformer(hidden_states=g["latent"], timestep=g["timestep"], timestep_r=g["timestep_r"],
                               guidance=g["guidance"],
                               encoder_hidden_states=g["text"], encoder_attention_mask=g["text_mask"],
                               encoder_hidden_states_2=g["text_2"], encoder_attention_mask_2=g["text_mask_2"],
                               return_dict=False)[0]
    check("out", out, g["out"], atol=1e-6)

    print("dit_modules")
    g = goldens["dit_modules.safetensors"]
    tr = base.transformer
    with torch.no_grad():
        check("temb", tr.time_guidance_embed(g["timestep"]), g["temb"], atol=1e-6)
        check("x_embed", tr.x_embedder(g["latent"]), g["x_embed"], atol=1e-6)
        m = g["text_mask"].bool()
        ce = tr.context_embedder(g["text"], g["timestep"], m)
        check("context_embed (valid rows)", ce[m], g["context_embed"][m], atol=1e-5)
        check("context_embed_2", tr.context_embedder_2(g["text_2"]), g["context_embed_2"], atol=1e-6)
        cos, sin = tr.rope(g["latent"])
        check("rope_cos", cos, g["rope_cos"])
        check("rope_sin", sin, g["rope_sin"])
        mask = torch.nn.functional.pad(g["encoder_mask"].bool(), (g["x_embed"].shape[1], 0), value=True)
        mask = mask[:, None, None, :]
        img, txt = tr.transformer_blocks[0](g["x_embed"], g["encoder_hidden"], g["temb"],
                                             attention_mask=mask, image_rotary_emb=(g["rope_cos"], g["rope_sin"]))
        check("block0_out_img", img, g["block0_out_img"], atol=1e-5)
        check("block0_out_txt", txt, g["block0_out_txt"], atol=1e-5)
        img, txt = tr.single_transformer_blocks[0](g["x_embed"], g["encoder_hidden"], g["temb"],
                                                    attention_mask=mask,
                                                    image_rotary_emb=(g["rope_cos"], g["rope_sin"]))
        check("single0_out_img", img, g["single0_out_img"], atol=1e-5)
        check("single0_out_txt", txt, g["single0_out_txt"], atol=1e-5)

    print("vae_decode")
    g = goldens["vae_decode.safetensors"]
    with torch.no_grad():
        check("decoded", base.vae.decode(g["latent"], return_dict=False)[0], g["decoded"], atol=1e-5)

    for fname, guider in (("guider_apg.safetensors", base.guider), ("guider_cfg.safetensors", cfg.guider)):
        print(fname)
        g = goldens[fname]
        for i in range(4):
            guider.set_state(step=i, num_inference_steps=4, timestep=g[f"timestep_{i}"][0])
            state = guider.prepare_inputs({"x": (torch.zeros(1), torch.zeros(1))})
            state[0].noise_pred = g[f"pred_cond_{i}"]
            state[1].noise_pred = g[f"pred_uncond_{i}"]
            check(f"pred_{i}", guider(state)[0], g[f"pred_{i}"], atol=1e-6)

    for case, pipe in (("apg_ocr_64x96", base), ("cfg_96x64", cfg), ("distilled_64x96", dist)):
        print(f"pipeline_{case}")
        g = goldens[f"pipeline_{case}.safetensors"]
        H, W, seed = int(g["height"][0]), int(g["width"][0]), int(g["seed"][0])
        noise = torch.from_numpy(philox_noise(seed, (1, 8, H // 8, W // 8)))
        check("noise", noise, g["noise"])
        kw = {k: g[k] for k in g if "prompt_embeds" in k}
        if "distilled_guidance_scale" in g:
            kw["distilled_guidance_scale"] = float(g["distilled_guidance_scale"][0])
        steps = []

        def cb(p, i, t, ck):
            steps.append(ck["latents"].clone())
            return {}

        with torch.no_grad():
            img = pipe(height=H, width=W, num_inference_steps=int(g["steps"][0]), latents=noise,
                       output_type="pil", return_dict=False, callback_on_step_end=cb,
                       callback_on_step_end_tensor_inputs=["latents"], **kw)[0][0]
        for i, lat in enumerate(steps):
            check(f"latents_step{i}", lat, g[f"latents_step{i}"], atol=1e-5)
        check("image_u8", torch.from_numpy(np.array(img).astype(np.int64)), g["image_u8"], atol=0)
        with torch.no_grad():
            dec = pipe.vae.decode(g[f"latents_step{len(steps) - 1}"] / pipe.vae.config.scaling_factor,
                                  return_dict=False)[0]
        check("decoded", dec, g["decoded"], atol=1e-5)

    check_img2img(gold, goldens, {"tiny-hunyuanimage": base, "tiny-hunyuanimage-distilled": dist})

    if failures:
        print("FAILED:")
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print("all goldens consistent")


if __name__ == "__main__":
    main()
