"""Trains the sdc demo model (models/sdc-demo/) on the CPU.

    python tools/train_demo/train_demo.py [--out DIR] [--work DIR] [--seed N]
                                          [--stage all|heldout|validation|vae|dit|save|random]

Stages (all = heldout, validation, vae, dit, save):
    heldout  writes tests/data/demo-heldout.tsv: the held-out prompts (new
             scenes, every one in English and in Chinese) with the attributes
             tools/sdc-eval-demo checks
    validation  writes tools/train_demo/validation.tsv: 24 other scenes in
             the same format, for choosing training settings without
             looking at the held-out list
    vae      trains a small AutoencoderKLHunyuanImage (4x spatial compression)
             on rendered scenes; checkpoint in --work
    dit      trains a small HunyuanImageTransformer2DModel with flow matching
             on VAE latents of training scenes (none of them a held-out
             scene), conditioned on the Qwen2.5-VL text encoder's features of
             English and Chinese captions; checkpoint in --work
    save     writes the diffusers-layout model directory --out (bf16 weights)
    random   writes --out with untrained weights of the same configuration
             (checks that the engine runs this configuration at all)

The text encoder is a tiny Qwen2.5-VL (the real Qwen2.5 tokenizer, a random
152064 x 32 embedding table that stays frozen). Its first two layers, the
ones whose output the pipeline takes (hidden_states[-3]), are trained with
the DiT: with frozen random layers a word's feature hardly says which word
came before it, so "a red circle and a blue square" reads like "a blue
circle and a red square". The ByT5 glyph encoder is a tiny random T5 that
no caption uses (the demo has no rendered text).

The DiT sees 20000 distinct training scenes. With 6000 (the first version
of this script) the same 6000 DiT steps reached 29% of the held-out prompts
fully correct; with 20000, 94%: held-out scenes are new combinations, and
the model generalises to them once it has seen enough of them.

Everything runs with one thread (--threads) and fixed seeds: the same seed,
thread count and library versions (tools/goldens/requirements.txt) give the
same weights (the committed VAE was retrained bit for bit from seed 1, and
a --dit-steps 2000 run matched the training run's step-2000 checkpoint).
"""

import argparse
import copy
import json
import math
import os
import random
import shutil
import sys
import time


def _threads_from_argv():
    """--threads N, read before torch is imported (its thread pools size
    themselves from the environment at import)."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


_THREADS = _threads_from_argv()
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
os.environ.setdefault("MKL_NUM_THREADS", _THREADS)

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tools", "goldens"))

import shapes  # noqa: E402
import tiny_byt5  # noqa: E402,F401  (narrows the ByT5 projection; see tiny_byt5.py)
from diffusers import (  # noqa: E402
    AutoencoderKLHunyuanImage,
    ClassifierFreeGuidance,
    FlowMatchEulerDiscreteScheduler,
    HunyuanImagePipeline,
    HunyuanImageTransformer2DModel,
)
from diffusers.utils import logging as dlogging  # noqa: E402
from transformers import (  # noqa: E402
    ByT5Tokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    T5Config,
    T5EncoderModel,
)
from transformers.utils import logging as tlogging  # noqa: E402

QWEN_TOKENIZER_DIR = os.path.join(REPO, "tests", "data", "qwen2.5-tokenizer")
HELDOUT_TSV = os.path.join(REPO, "tests", "data", "demo-heldout.tsv")
HELDOUT_TRUTH = os.path.join(REPO, "tests", "data", "demo-heldout-truth")
VALIDATION_TSV = os.path.join(HERE, "validation.tsv")

LLM_TEXT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,  # hidden_states[-3] is the output of layer 2 of 4
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=152064,
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[2, 3, 3]),
    hidden_act="silu",
)
LLM_VISION_CONFIG = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                         patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                         fullatt_block_indexes=[0], window_size=112)
LLM_TRAINED_LAYERS = 2
T5_CONFIG = dict(vocab_size=384, d_model=24, d_kv=8, d_ff=40, num_layers=2, num_heads=3,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, is_encoder_decoder=False,
                 use_cache=False)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=8,
    block_out_channels=(32, 32, 64),
    layers_per_block=1,
    spatial_compression_ratio=4,
    sample_size=64,
    scaling_factor=1.0,  # set from the latents' spread after the VAE is trained
    downsample_match_channel=True,
    upsample_match_channel=True,
)
TRANSFORMER_CONFIG = dict(
    in_channels=8,
    out_channels=8,
    num_attention_heads=4,
    attention_head_dim=32,
    num_layers=2,
    num_single_layers=2,
    num_refiner_layers=1,
    mlp_ratio=3.0,
    patch_size=(2, 2),
    qk_norm="rms_norm",
    guidance_embeds=False,
    text_embed_dim=LLM_TEXT_CONFIG["hidden_size"],
    text_embed_2_dim=T5_CONFIG["d_model"],
    rope_theta=256.0,
    rope_axes_dim=(16, 16),
    use_meanflow=False,
)
SHIFT = 3.0
GUIDANCE = 4.0
TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
            "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
            "<|im_end|>")
DROP_IDX = 34
CAPTION_DROPOUT = 0.1
HELDOUT_SEED = 8
VALIDATION_SEED = 1234
VALIDATION_CAPTION_SEED = 99


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def setup(seed, threads=1):
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    dlogging.set_verbosity_error()
    dlogging.disable_progress_bar()
    tlogging.set_verbosity_error()


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def init_weights(model, seed):
    """N(0, 1/fan_in) weights, small biases, norms near 1 (as the tiny test
    models in tools/goldens)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in model.named_modules():
            is_norm = type(module).__name__.endswith(("RMSNorm", "LayerNorm"))
            for pname, p in module.named_parameters(recurse=False):
                if is_norm:
                    p.copy_(torch.ones_like(p) if pname == "weight" else torch.zeros_like(p))
                elif p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(p[0].numel()))
                else:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))


def make_llm(seed):
    torch.manual_seed(seed)
    cfg = Qwen2_5_VLConfig(text_config=LLM_TEXT_CONFIG, vision_config=LLM_VISION_CONFIG,
                           tie_word_embeddings=True)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    init_weights(model, seed)
    model.tie_weights()
    return model.eval()


def make_t5(seed):
    torch.manual_seed(seed)
    model = T5EncoderModel(T5Config(**T5_CONFIG))
    init_weights(model, seed)
    return model.eval()


def make_vae(seed):
    torch.manual_seed(seed)
    return AutoencoderKLHunyuanImage(**VAE_CONFIG)


def make_transformer(seed):
    torch.manual_seed(seed)
    model = HunyuanImageTransformer2DModel(**TRANSFORMER_CONFIG)
    # diffusers' default init; the output projection starts at zero so the
    # first steps predict "no change" instead of noise.
    with torch.no_grad():
        model.proj_out.weight.zero_()
        model.proj_out.bias.zero_()
    return model


def llm_layers(llm):
    return llm.model.language_model.layers[:LLM_TRAINED_LAYERS]


def llm_trained_parameters(llm):
    return [p for layer in llm_layers(llm) for p in layer.parameters()]


# --------------------------------------------------------------------------
# Text features (what HunyuanImagePipeline._get_qwen_prompt_embeds computes,
# without its padding to 1034 tokens: the DiT masks padding anyway)
# --------------------------------------------------------------------------


class TextEncoder:
    def __init__(self, llm, tok):
        self.llm, self.tok = llm, tok
        self.cache = {}

    def ids(self, prompt):
        ids = self.cache.get(prompt)
        if ids is None:
            ids = self.tok(TEMPLATE.format(prompt)).input_ids
            self.cache[prompt] = ids
        return ids

    def __call__(self, prompts):
        seqs = [self.ids(p) for p in prompts]
        n = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), n), dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        # The language model alone: the pipeline ignores the LM head's logits,
        # which would cost more than the rest of a training step.
        out = self.llm.model.language_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[-3][:, DROP_IDX:], mask[:, DROP_IDX:]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def heldout_keys():
    return {shapes.scene_key(s) for s in shapes.heldout_scenes(HELDOUT_SEED)}


def training_scenes(n, seed):
    rng = random.Random(seed)
    banned = heldout_keys()
    out = []
    while len(out) < n:
        sc = shapes.random_scene(rng)
        if shapes.scene_key(sc) not in banned:
            out.append(sc)
    return out


def to_tensor(imgs):
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def prompt_lines(scenes, caption_seed):
    """One line per scene and language: id, language, background, objects, prompt."""
    rng = random.Random(caption_seed)
    lines = []
    for i, sc in enumerate(scenes):
        bg, objs = sc
        objects = ",".join(":".join(o) for o in objs)
        for lang in ("en", "zh"):
            lines.append("\t".join((f"{i:02d}{lang}", lang, bg, objects, shapes.caption(sc, lang, rng))))
    return lines


def write_heldout(path, truth_dir):
    """One line per prompt: id, language, background, objects, prompt; and
    truth_dir/ID.png, the scene as the training renderer draws it (what a
    perfect model would make; the checker's own test)."""
    lines = ["# Held-out prompts of the sdc demo model (tools/train_demo/train_demo.py --stage heldout).",
             "# Scenes never seen in training; each in English and in Chinese. Checked by",
             "# tools/sdc-eval-demo.c (make eval-demo). Columns, tab-separated:",
             "# id  lang  background  objects (slot:colour:shape, comma-separated)  prompt"]
    lines += prompt_lines(shapes.heldout_scenes(HELDOUT_SEED), HELDOUT_SEED + 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    if os.path.isdir(truth_dir):
        shutil.rmtree(truth_dir)
    os.makedirs(truth_dir)
    for line in lines[4:]:
        pid, _, bg, objects, _ = line.split("\t")
        scene = (bg, tuple(tuple(o.split(":")) for o in objects.split(",")))
        PIL.Image.fromarray(shapes.render(scene)).save(os.path.join(truth_dir, pid + ".png"), optimize=True)
    log(f"wrote {path} ({len(lines) - 4} prompts) and {truth_dir}/")


def write_validation(path):
    """The validation prompts: 24 other scenes (not held-out ones; training
    scenes may repeat them), the list the training length was chosen on so
    that the held-out list stays a test."""
    scenes = shapes.heldout_scenes(VALIDATION_SEED, exclude=heldout_keys())
    lines = ["# Validation prompts of the sdc demo model (tools/train_demo/train_demo.py --stage validation):",
             "# what the DiT step count was chosen on (EVAL_PROMPTS=tools/train_demo/validation.tsv",
             "# make eval-demo); the held-out list tests/data/demo-heldout.tsv is kept for the report.",
             "# id  lang  background  objects (slot:colour:shape, comma-separated)  prompt"]
    lines += prompt_lines(scenes, VALIDATION_CAPTION_SEED)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    log(f"wrote {path} ({len(lines) - 4} prompts)")


# --------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------


def train_vae(args):
    setup(args.seed, args.threads)
    vae = make_vae(args.seed + 1)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    rng = random.Random(args.seed + 2)
    g = torch.Generator().manual_seed(args.seed + 3)
    scenes = training_scenes(4000, args.seed + 4)
    imgs = [shapes.render(s) for s in scenes]
    crop = 32
    t0 = time.time()
    for step in range(1, args.vae_steps + 1):
        batch = []
        for _ in range(args.vae_batch):
            img = imgs[rng.randrange(len(imgs))]
            y, x = rng.randrange(0, 64 - crop + 1, 4), rng.randrange(0, 64 - crop + 1, 4)
            batch.append(img[y:y + crop, x:x + crop])
        x = to_tensor(batch)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = rec_loss + 1e-4 * kl
        lr = 1e-3 * min(1.0, step / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.vae_steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == 1:
            log(f"vae step {step}/{args.vae_steps} rec {rec_loss.item():.4f} kl {kl.item():.3f} "
                f"({time.time() - t0:.0f} s)")
    vae.eval()
    with torch.no_grad():
        x = to_tensor([shapes.render(s) for s in training_scenes(256, args.seed + 5)])
        mean = vae.encode(x).latent_dist.mean
        std = mean.std().item()
        err = (vae.decode(mean).sample - x).abs().mean().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    log(f"vae: latent std {std:.4f} -> scaling_factor {vae.config.scaling_factor}; "
        f"full-image L1 {err:.4f}")
    torch.save({"state": vae.state_dict(), "scaling_factor": vae.config.scaling_factor},
               os.path.join(args.work, "vae.pt"))


def load_vae(args):
    ck = torch.load(os.path.join(args.work, "vae.pt"))
    vae = make_vae(0)
    vae.load_state_dict(ck["state"])
    vae.register_to_config(scaling_factor=ck["scaling_factor"])
    return vae.eval()


# --------------------------------------------------------------------------
# DiT
# --------------------------------------------------------------------------


def encode_latents(vae, scenes, batch=64):
    out = []
    with torch.no_grad():
        for i in range(0, len(scenes), batch):
            x = to_tensor([shapes.render(s) for s in scenes[i:i + batch]])
            out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def train_dit(args):
    setup(args.seed, args.threads)
    vae = load_vae(args)
    scenes = training_scenes(args.dit_images, args.seed + 10)
    t0 = time.time()
    latents = encode_latents(vae, scenes)
    log(f"dit: {len(scenes)} training latents {tuple(latents.shape)} in {time.time() - t0:.0f} s")
    del vae

    llm = make_llm(args.seed + 20)
    tok = Qwen2Tokenizer.from_pretrained(QWEN_TOKENIZER_DIR)
    text = TextEncoder(llm, tok)
    dit = make_transformer(args.seed + 21)
    for p in llm.parameters():
        p.requires_grad_(False)
    llm_params = llm_trained_parameters(llm)
    for p in llm_params:
        p.requires_grad_(True)
    params = list(dit.parameters()) + llm_params
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    rng = random.Random(args.seed + 22)
    g = torch.Generator().manual_seed(args.seed + 23)
    dit.train()
    llm.train()
    t0 = time.time()
    total = args.dit_steps
    step = 0
    while step < total:
        step += 1
        idx = [rng.randrange(len(scenes)) for _ in range(args.dit_batch)]
        prompts = []
        for i in idx:
            if rng.random() < CAPTION_DROPOUT:
                prompts.append("")
            else:
                prompts.append(shapes.caption(scenes[i], rng.choice(("en", "zh")), rng))
        emb, mask = text(prompts)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=g)
        u = torch.rand((len(idx),), generator=g)
        sigma = SHIFT * u / (1 + (SHIFT - 1) * u)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        pred = dit(hidden_states=xt, timestep=sigma * 1000.0, encoder_hidden_states=emb,
                   encoder_attention_mask=mask, return_dict=False)[0]
        loss = F.mse_loss(pred, noise - x0)
        # A constant rate after warm-up, sampled from the EMA: a run of N
        # steps is the first N steps of any longer run, so a checkpoint
        # taken on the way is the result of `--dit-steps` that step count.
        lr = args.lr * min(1.0, step / 200)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.998, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        if step % 50 == 0 or step == 1:
            el = time.time() - t0
            log(f"dit step {step}/{total} loss {loss.item():.4f} lr {lr:.2e} ({el:.0f} s, "
                f"{el / step:.2f} s/step)")
        if step % args.checkpoint_every == 0:
            save_dit_checkpoint(args, dit, llm, params, ema, step, step % args.keep_every == 0)
    save_dit_checkpoint(args, dit, llm, params, ema, step, True)


def save_dit_checkpoint(args, dit, llm, params, ema, step, keep):
    """Writes the EMA weights (the ones sampled from)."""
    with torch.no_grad():
        live = [p.detach().clone() for p in params]
        for p, e in zip(params, ema):
            p.copy_(e)
        torch.save({"dit": dit.state_dict(), "llm": llm.state_dict(), "step": step},
                   os.path.join(args.work, "dit.pt"))
        if keep:
            shutil.copyfile(os.path.join(args.work, "dit.pt"), os.path.join(args.work, f"dit-{step}.pt"))
        for p, v in zip(params, live):
            p.copy_(v)
    log(f"dit: checkpoint at step {step}")


# --------------------------------------------------------------------------
# Model directory
# --------------------------------------------------------------------------


def save_model_dir(path, llm, t5, vae, dit):
    """diffusers' save_pretrained with every component in bf16; the
    tokenizer directory gets the vocab.json + merges.txt layout of
    tests/data/qwen2.5-tokenizer (save_pretrained would write a 7 MB
    tokenizer.json)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    guider = ClassifierFreeGuidance(guidance_scale=GUIDANCE)
    pipe = HunyuanImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT),
        vae=copy.deepcopy(vae).to(torch.bfloat16),
        text_encoder=copy.deepcopy(llm).to(torch.bfloat16),
        tokenizer=Qwen2Tokenizer.from_pretrained(QWEN_TOKENIZER_DIR),
        text_encoder_2=copy.deepcopy(t5).to(torch.bfloat16),
        tokenizer_2=ByT5Tokenizer(),
        transformer=copy.deepcopy(dit).to(torch.bfloat16),
        guider=guider,
        ocr_guider=copy.deepcopy(guider),
    )
    pipe.save_pretrained(path, safe_serialization=True, max_shard_size="20MB")
    tok_dir = os.path.join(path, "tokenizer")
    shutil.rmtree(tok_dir)
    os.makedirs(tok_dir)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(QWEN_TOKENIZER_DIR, f), os.path.join(tok_dir, f))
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    log(f"wrote {path}: {total / 1e6:.1f} MB")
    if total > 30_000_000:
        raise SystemExit(f"{path} is {total} bytes, over the 30 MB budget")


def save(args, trained):
    setup(args.seed, args.threads)
    llm = make_llm(args.seed + 20)
    t5 = make_t5(args.seed + 30)
    dit = make_transformer(args.seed + 21)
    if trained:
        vae = load_vae(args)
        ck = torch.load(os.path.join(args.work, "dit.pt"))
        dit.load_state_dict(ck["dit"])
        llm.load_state_dict(ck["llm"])
        log(f"save: DiT checkpoint of step {ck['step']}")
    else:
        vae = make_vae(args.seed + 1)
        init_weights(vae, args.seed + 1)
        init_weights(dit, args.seed + 21)
    save_model_dir(args.out, llm.eval(), t5, vae.eval(), dit.eval())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "models", "sdc-demo"))
    ap.add_argument("--work", default=os.path.join(REPO, "build", "train-demo"),
                    help="checkpoints between stages (default build/train-demo)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stage", default="all", choices=("all", "heldout", "validation", "vae", "dit", "save", "random"))
    ap.add_argument("--vae-steps", type=int, default=900)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--dit-steps", type=int, default=10000)
    ap.add_argument("--dit-batch", type=int, default=32)
    ap.add_argument("--dit-images", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (results are reproducible for a given count)")
    ap.add_argument("--checkpoint-every", type=int, default=250,
                    help="DiT steps between checkpoints (--work/dit.pt, the EMA weights)")
    ap.add_argument("--keep-every", type=int, default=1000,
                    help="also keep --work/dit-STEP.pt every this many steps")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.stage in ("all", "heldout"):
        write_heldout(HELDOUT_TSV, HELDOUT_TRUTH)
    if args.stage in ("all", "validation"):
        write_validation(VALIDATION_TSV)
    if args.stage in ("all", "vae"):
        train_vae(args)
    if args.stage in ("all", "dit"):
        train_dit(args)
    if args.stage in ("all", "save"):
        save(args, trained=True)
    if args.stage == "random":
        save(args, trained=False)


if __name__ == "__main__":
    main()
