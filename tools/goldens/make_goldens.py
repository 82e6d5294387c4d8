"""Makes the tiny HunyuanImage-2.1 model directories and the golden files.

    python tools/goldens/make_goldens.py [--out-root DIR]

Writes (relative to the repository root, or --out-root):
    tests/data/tiny-hunyuanimage/            (APG guider + ocr_guider)
    tests/data/tiny-hunyuanimage-cfg/        (ClassifierFreeGuidance guider)
    tests/data/tiny-hunyuanimage-distilled/  (guidance-distilled, meanflow)
    tests/data/goldens/*.safetensors         (see tests/data/GOLDENS.md)
    tests/data/goldens/img2img_init_*.png    (image-to-image input images)

Everything is computed on the CPU in float32 with one thread and fixed seeds,
so two runs give byte-identical files. Reference semantics: the installed
diffusers (HunyuanImagePipeline, HunyuanImageTransformer2DModel,
AutoencoderKLHunyuanImage, FlowMatchEulerDiscreteScheduler, the guiders).
diffusers has no HunyuanImage image-to-image pipeline: the img2img goldens
are the diffusers components driven by the flux img2img recipe
(img2img_reference below).
"""

import argparse
import copy
import json
import os
import shutil
import struct
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import diffusers  # noqa: E402
import tiny_byt5  # noqa: E402,F401  (narrows the ByT5 projection; see tiny_byt5.py)
import safetensors  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AdaptiveProjectedMixGuidance,
    AutoencoderKLHunyuanImage,
    ClassifierFreeGuidance,
    FlowMatchEulerDiscreteScheduler,
    HunyuanImagePipeline,
    HunyuanImageTransformer2DModel,
)
from diffusers.utils import logging as dlogging  # noqa: E402
from safetensors import safe_open  # noqa: E402

from philox import STREAM_VAE_POSTERIOR, check_known_answers, philox_noise, philox_normal  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))

# --------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------

TRANSFORMER_CONFIG = dict(
    in_channels=8,
    out_channels=8,
    num_attention_heads=4,
    attention_head_dim=16,
    num_layers=2,
    num_single_layers=2,
    num_refiner_layers=2,
    mlp_ratio=4.0,
    patch_size=(1, 1),
    qk_norm="rms_norm",
    guidance_embeds=False,
    text_embed_dim=32,
    text_embed_2_dim=24,
    rope_theta=256.0,
    rope_axes_dim=(8, 8),
    use_meanflow=False,
)
TRANSFORMER_DISTILLED_CONFIG = dict(TRANSFORMER_CONFIG, guidance_embeds=True, use_meanflow=True)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=8,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    spatial_compression_ratio=8,
    sample_size=256,
    scaling_factor=0.75289,  # the released HunyuanImage-2.1 VAE's value
    downsample_match_channel=True,
    upsample_match_channel=True,
)

# HunyuanImage-2.1 samples with shift 5 (base) and shift 4 (distilled).
SCHEDULER_CONFIG = dict(shift=5.0)
SCHEDULER_DISTILLED_CONFIG = dict(shift=4.0)

# The released model's guider is AdaptiveProjectedMixGuidance(guidance_scale=3.5,
# adaptive_projected_guidance_scale=10, momentum=-0.5, rescale=10, eta=0,
# start_step=5). APG is active at step i iff i > adaptive_projected_guidance_start_step,
# so with 4 steps: start_step=1 -> APG at steps 2, 3; start_step=2 -> APG at step 3.
GUIDER_CONFIG = dict(
    guidance_scale=3.5,
    guidance_rescale=0.0,
    adaptive_projected_guidance_scale=10.0,
    adaptive_projected_guidance_momentum=-0.5,
    adaptive_projected_guidance_rescale=10.0,
    eta=0.0,
    use_original_formulation=False,
    start=0.0,
    stop=1.0,
    adaptive_projected_guidance_start_step=1,
    enabled=True,
)
# The ocr_guider differs in its scales and uses a lower rescale threshold: the
# threshold acts on the norm of the whole latent, which for the released model
# (64 x 128 x 128 and more) always exceeds 10 but for an 8 x 8 x 12 latent
# does not, so 1.5 makes the clipping branch run in pipeline_apg_ocr_64x96.
OCR_GUIDER_CONFIG = dict(
    GUIDER_CONFIG,
    guidance_scale=4.5,
    adaptive_projected_guidance_scale=8.0,
    adaptive_projected_guidance_rescale=1.5,
    adaptive_projected_guidance_start_step=2,
)
CFG_GUIDER_CONFIG = dict(
    guidance_scale=4.0,
    guidance_rescale=0.0,
    use_original_formulation=False,
    start=0.0,
    stop=1.0,
    enabled=True,
)

# Text sequence lengths used by every golden (LLM tokens, ByT5 tokens).
L1, L2 = 40, 16
NUM_STEPS = 4
BYT5_HIDDEN = tiny_byt5.TINY_BYT5_HIDDEN  # diffusers fixes 2048; see tiny_byt5.py

# Weight init seeds (the three transformers differ; the VAE is shared).
SEED_TRANSFORMER = 1001
SEED_TRANSFORMER_CFG = 2002
SEED_TRANSFORMER_DISTILLED = 3003
SEED_BYT5_LINEAR2 = 4004
SEED_VAE = 5005

PIPELINE_CASES = [
    # seed: the Philox noise seed; input_seed: torch seed of the embeddings;
    # llm / byt5: valid (right-padded) token counts for (cond, uncond);
    # byt5_zero: ByT5 embeddings and masks all zero (what the pipeline makes
    # for a prompt without quoted text), so the pipeline picks `guider`.
    dict(name="apg_64x64", model="tiny-hunyuanimage", height=64, width=64, seed=42, input_seed=21,
         llm=(19, 11), byt5=(0, 0), byt5_zero=True),
    dict(name="apg_ocr_64x96", model="tiny-hunyuanimage", height=64, width=96, seed=7, input_seed=22,
         llm=(23, 14), byt5=(7, 3), byt5_zero=False),
    dict(name="cfg_96x64", model="tiny-hunyuanimage-cfg", height=96, width=64, seed=(1 << 33) + 5,
         input_seed=23, llm=(29, 8), byt5=(6, 0), byt5_zero=False, neg_byt5_zero=True),
    dict(name="distilled_64x96", model="tiny-hunyuanimage-distilled", height=64, width=96, seed=1234,
         input_seed=24, llm=(27, None), byt5=(4, None), byt5_zero=False, distilled_guidance_scale=3.25),
]


# Image-to-image (img2img_reference): strength as in diffusers' img2img
# pipelines; "embeds_from" reuses a text-to-image case's inputs (and seed),
# so strength 1.0 must reproduce that case bit for bit.
IMG2IMG_CASES = [
    dict(name="apg_64x96", model="tiny-hunyuanimage", height=64, width=96, strength=0.6, seed=11,
         input_seed=31, llm=(21, 9), byt5=(0, 0), byt5_zero=True),
    dict(name="full_64x64", model="tiny-hunyuanimage", height=64, width=64, strength=1.0,
         embeds_from="apg_64x64"),
    dict(name="zero_64x64", model="tiny-hunyuanimage", height=64, width=64, strength=0.0, seed=13,
         input_seed=33, llm=(17, 6), byt5=(0, 0), byt5_zero=True),
    dict(name="distilled_64x64", model="tiny-hunyuanimage-distilled", height=64, width=64,
         strength=0.5, seed=14, input_seed=34, llm=(25, None), byt5=(4, None), byt5_zero=False,
         distilled_guidance_scale=3.25),
]
# The VAE encoder golden: the 64 x 96 input image, posterior noise seed.
VAE_ENCODE_SEED = 15


def versions():
    return {
        "generator": "tools/goldens/make_goldens.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def setup_determinism():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    dlogging.set_verbosity_error()
    dlogging.disable_progress_bar()


# --------------------------------------------------------------------------
# Weight initialisation
# --------------------------------------------------------------------------

_NORM_TYPES = (torch.nn.LayerNorm, torch.nn.GroupNorm)


def _is_norm(module):
    return isinstance(module, _NORM_TYPES) or type(module).__name__ in ("RMSNorm",)


def init_weights(model, seed, ada_gain=1.0, special=None):
    """Random weights that keep activations O(1).

    Linear/conv weights ~ N(0, 1/fan_in), biases ~ N(0, 0.05^2); affine norm
    weights ~ 1 + N(0, 0.1^2), norm biases ~ N(0, 0.1^2) (so no affine
    parameter is the identity and no modulation is zero). Linears that
    produce adaLN modulations get weights scaled by ada_gain.
    """
    g = torch.Generator().manual_seed(seed)
    special = special or {}
    with torch.no_grad():
        for mname, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                full = f"{mname}.{pname}" if mname else pname
                if full in special:
                    p.copy_(special[full])
                    continue
                if _is_norm(module):
                    if pname == "weight":
                        p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                    else:
                        p.copy_(0.1 * torch.randn(p.shape, generator=g))
                elif p.ndim >= 2:
                    fan_in = p[0].numel()
                    std = 1.0 / np.sqrt(fan_in)
                    if _is_ada(full):
                        std *= ada_gain
                    p.copy_(std * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))


def _is_ada(name):
    return (
        ".norm1.linear." in name
        or ".norm1_context.linear." in name
        or (name.startswith("single_transformer_blocks.") and ".norm.linear." in name)
        or name.startswith("norm_out.linear.")
        or ".norm_out.linear." in name  # refiner gates
    )


def byt5_linear2_weight():
    """context_embedder_2.linear_2.weight, [2048, 2048]: random signs times
    1/sqrt(2048). The 2048 width is fixed by diffusers; two-valued entries keep
    the (otherwise 8 MB) tensor highly compressible, and the same tensor is
    used in all three tiny transformers."""
    g = torch.Generator().manual_seed(SEED_BYT5_LINEAR2)
    signs = torch.randint(0, 2, (BYT5_HIDDEN, BYT5_HIDDEN), generator=g).float() * 2.0 - 1.0
    return signs / np.sqrt(BYT5_HIDDEN)


def round_to_bf16_(model):
    """Makes every parameter exactly representable in bfloat16 (kept float32)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def make_transformer(config, seed):
    torch.manual_seed(seed)
    model = HunyuanImageTransformer2DModel(**config)
    init_weights(
        model,
        seed,
        ada_gain=1.5,
        special={"context_embedder_2.linear_2.weight": byt5_linear2_weight()},
    )
    round_to_bf16_(model)
    return model.eval()


def make_vae():
    """The VAE is stored in float32, but its values are bfloat16-exact (the low
    16 bits of every weight are zero), which keeps the file compressible."""
    torch.manual_seed(SEED_VAE)
    vae = AutoencoderKLHunyuanImage(**VAE_CONFIG)
    init_weights(vae, SEED_VAE)
    round_to_bf16_(vae)
    return vae.eval()


# --------------------------------------------------------------------------
# Model directories
# --------------------------------------------------------------------------


def save_model_dir(path, transformer, vae, scheduler, guider, ocr_guider):
    """Writes a diffusers pipeline directory with the text encoders and
    tokenizers set to None. The transformer is stored in bfloat16 (like the
    released checkpoint; its parameters are already bf16-exact), the VAE in
    float32."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    t_bf16 = copy.deepcopy(transformer).to(torch.bfloat16)
    vae_bf16 = copy.deepcopy(vae).to(torch.bfloat16)
    pipe = HunyuanImagePipeline(
        scheduler=scheduler,
        vae=vae_bf16,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=t_bf16,
        guider=guider,
        ocr_guider=ocr_guider,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return pipe


def build_pipeline(transformer, vae, scheduler, guider, ocr_guider):
    pipe = HunyuanImagePipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
        guider=guider,
        ocr_guider=ocr_guider,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------
# Golden helpers
# --------------------------------------------------------------------------


def f32(x):
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.detach().to(torch.float32).contiguous().clone()


def i64(x):
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        x = torch.tensor(x)
    return x.detach().to(torch.int64).contiguous().clone()


_ST_DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def save_safetensors_sorted(path, tensors, metadata):
    """Writes a safetensors file with a reproducible layout: header keys and
    tensors sorted by name (safetensors.torch.save_file orders __metadata__
    through a hash map, so its bytes differ from run to run)."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _ST_DTYPES:
            raise TypeError(f"{name}: golden tensors must be float32 or int64, not {t.dtype}")
        data = t.contiguous().numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * ((-len(hdr)) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hdr)))
        fh.write(hdr)
        for b in blobs:
            fh.write(b)


def write_golden(path, tensors, description):
    meta = versions()
    meta["description"] = description
    save_safetensors_sorted(path, tensors, meta)
    # Round trip through the safetensors library.
    with safe_open(path, framework="pt") as f:
        require(sorted(f.keys()) == sorted(tensors), f"{path}: keys")
        for k in f.keys():
            require(torch.equal(f.get_tensor(k), tensors[k]), f"{path}: {k} round trip")
        require(f.metadata() == meta, f"{path}: metadata")
    summary(path, tensors)


def summary(path, tensors):
    size = os.path.getsize(path)
    print(f"{os.path.relpath(path, REPO)}  ({size} bytes)")
    for name in sorted(tensors):
        t = tensors[name]
        mx = float(t.abs().max()) if t.numel() else 0.0
        print(f"    {name:28s} {str(t.dtype).replace('torch.', ''):8s} {str(list(t.shape)):18s} max|x| {mx:.6g}")


def rel_change(a, b):
    a = a.double()
    b = b.double()
    return float((a - b).norm() / (b.norm() + 1e-30))


def require(cond, msg):
    if not cond:
        raise AssertionError(msg)


def text_inputs(g, batch, l_valid, l2_valid, scale=1.0):
    """LLM and ByT5 embeddings with right-padded masks. Padded positions get
    values too (a text encoder produces hidden states there) so that code
    which forgets the mask is caught."""
    text = scale * torch.randn((batch, L1, TRANSFORMER_CONFIG["text_embed_dim"]), generator=g)
    text_2 = scale * torch.randn((batch, L2, TRANSFORMER_CONFIG["text_embed_2_dim"]), generator=g)
    mask = torch.zeros((batch, L1), dtype=torch.int64)
    mask_2 = torch.zeros((batch, L2), dtype=torch.int64)
    for b in range(batch):
        mask[b, : l_valid[b]] = 1
        mask_2[b, : l2_valid[b]] = 1
    return text, mask, text_2, mask_2


def pipeline_timesteps(scheduler_config, n):
    """The schedule HunyuanImagePipeline uses: sigmas = linspace(1, 0, n+1)[:-1]
    passed to set_timesteps (which applies the shift)."""
    s = FlowMatchEulerDiscreteScheduler(**scheduler_config)
    sig = np.linspace(1.0, 0.0, n + 1)[:-1]
    s.set_timesteps(sigmas=sig)
    return s.sigmas.clone(), s.timesteps.clone()


# --------------------------------------------------------------------------
# Goldens
# --------------------------------------------------------------------------


def golden_philox(out_dir):
    check_known_answers()
    seed_big = (1 << 40) + 7
    tensors = {
        "seed": i64([42]),
        "noise": f32(philox_normal(42, 4099)),
        "seed_big": i64([seed_big]),
        "noise_big": f32(philox_normal(seed_big, 1000)),
    }
    write_golden(os.path.join(out_dir, "philox.safetensors"), tensors,
                 "Philox4x32-10 Box-Muller noise from tools/goldens/philox.py")


def golden_scheduler(out_dir):
    tensors = {}
    for n in (1, 4, 28, 50):
        sig, ts = pipeline_timesteps(SCHEDULER_CONFIG, n)
        require(sig.shape == (n + 1,) and ts.shape == (n,), "scheduler shapes")
        tensors[f"sigmas_{n}"] = f32(sig)
        tensors[f"timesteps_{n}"] = f32(ts)
    write_golden(os.path.join(out_dir, "scheduler.safetensors"), tensors,
                 "FlowMatchEulerDiscreteScheduler(shift=5) with the pipeline's sigmas=linspace(1,0,N+1)[:-1]")


def golden_dit_modules(out_dir, transformer):
    g = torch.Generator().manual_seed(11)
    H, W = 8, 12
    latent = torch.randn((1, 8, H, W), generator=g)
    timestep = torch.tensor([937.5], dtype=torch.float32)
    text, mask, text_2, mask_2 = text_inputs(g, 1, [23], [5])

    cap = {}
    hooks = []

    def out_hook(name):
        def fn(module, args, output):
            cap[name] = output
        return fn

    def block0_pre(module, args, kwargs):
        cap["block0_args"] = args
        cap["block0_kwargs"] = kwargs

    tr = transformer
    hooks.append(tr.x_embedder.register_forward_hook(out_hook("x_embed")))
    hooks.append(tr.context_embedder.register_forward_hook(out_hook("context_embed")))
    hooks.append(tr.context_embedder_2.register_forward_hook(out_hook("context_embed_2")))
    hooks.append(tr.time_guidance_embed.register_forward_hook(out_hook("temb")))
    hooks.append(tr.rope.register_forward_hook(out_hook("rope")))
    hooks.append(tr.transformer_blocks[0].register_forward_pre_hook(block0_pre, with_kwargs=True))
    hooks.append(tr.transformer_blocks[0].register_forward_hook(out_hook("block0_out")))
    with torch.no_grad():
        tr(
            hidden_states=latent,
            timestep=timestep,
            encoder_hidden_states=text,
            encoder_attention_mask=mask,
            encoder_hidden_states_2=text_2,
            encoder_attention_mask_2=mask_2,
            return_dict=False,
        )
    for h in hooks:
        h.remove()

    x_embed, enc_hidden, temb = cap["block0_args"]
    attn_mask = cap["block0_kwargs"]["attention_mask"]
    rope = cap["block0_kwargs"]["image_rotary_emb"]
    require(torch.equal(x_embed, cap["x_embed"]), "x_embed capture")
    require(torch.equal(temb, cap["temb"]), "temb capture")
    require(attn_mask.shape == (1, 1, 1, H * W + L1 + L2) and attn_mask.dtype == torch.bool, "mask shape")
    require(bool(attn_mask[0, 0, 0, : H * W].all()), "image part of the mask")
    enc_mask = attn_mask[0, 0, :, H * W :]

    # The reordering the model does: [valid byt5, valid llm, padded byt5, padded llm].
    m1, m2 = mask[0].bool(), mask_2[0].bool()
    c1, c2 = cap["context_embed"][0], cap["context_embed_2"][0]
    expect = torch.cat([c2[m2], c1[m1], c2[~m2], c1[~m1]], dim=0)
    require(torch.equal(expect, enc_hidden[0]), "reorder")

    with torch.no_grad():
        s_img, s_txt = tr.single_transformer_blocks[0](
            x_embed, enc_hidden, temb, attention_mask=attn_mask, image_rotary_emb=rope
        )
        h = tr.norm_out(x_embed, temb)
        h = tr.proj_out(h)
        head = h.reshape(1, H, W, 8).permute(0, 3, 1, 2).contiguous()

    b_img, b_txt = cap["block0_out"]
    tensors = {
        "latent": f32(latent),
        "timestep": f32(timestep),
        "text": f32(text),
        "text_mask": i64(mask),
        "text_2": f32(text_2),
        "text_mask_2": i64(mask_2),
        "temb": f32(temb),
        "x_embed": f32(x_embed),
        "context_embed": f32(cap["context_embed"]),
        "context_embed_2": f32(cap["context_embed_2"]),
        "rope_cos": f32(rope[0]),
        "rope_sin": f32(rope[1]),
        "encoder_hidden": f32(enc_hidden),
        "encoder_mask": i64(enc_mask),
        "block0_out_img": f32(b_img),
        "block0_out_txt": f32(b_txt),
        "single0_out_img": f32(s_img),
        "single0_out_txt": f32(s_txt),
        "head_out": f32(head),
    }
    expect_shapes = {
        "temb": [1, 64], "x_embed": [1, 96, 64], "context_embed": [1, 40, 64],
        "context_embed_2": [1, 16, 64], "rope_cos": [96, 16], "rope_sin": [96, 16],
        "encoder_hidden": [1, 56, 64], "encoder_mask": [1, 56], "block0_out_img": [1, 96, 64],
        "block0_out_txt": [1, 56, 64], "single0_out_img": [1, 96, 64], "single0_out_txt": [1, 56, 64],
        "head_out": [1, 8, 8, 12],
    }
    for k, s in expect_shapes.items():
        require(list(tensors[k].shape) == s, f"{k}: {list(tensors[k].shape)} != {s}")
    # Every block must change its input substantially.
    changes = {
        "block0 img": rel_change(b_img, x_embed),
        "block0 txt": rel_change(b_txt, enc_hidden),
        "single0 img": rel_change(s_img, x_embed),
        "single0 txt": rel_change(s_txt, enc_hidden),
    }
    print("  dit_modules relative change:", {k: round(v, 3) for k, v in changes.items()})
    for k, v in changes.items():
        require(v > 0.1, f"{k} barely changes its input ({v})")
    write_golden(os.path.join(out_dir, "dit_modules.safetensors"), tensors,
                 "tiny-hunyuanimage transformer submodules, see tests/data/GOLDENS.md")
    return changes


def _dit_forward_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn((2, 8, 8, 12), generator=g)
    text, mask, text_2, mask_2 = text_inputs(g, 2, [23, 37], [5, 0])
    return g, latent, text, mask, text_2, mask_2


def golden_dit_forward(out_dir, transformer):
    g, latent, text, mask, text_2, mask_2 = _dit_forward_inputs(12)
    timestep = torch.tensor([980.0, 412.5], dtype=torch.float32)
    with torch.no_grad():
        out = transformer(
            hidden_states=latent, timestep=timestep,
            encoder_hidden_states=text, encoder_attention_mask=mask,
            encoder_hidden_states_2=text_2, encoder_attention_mask_2=mask_2,
            return_dict=False,
        )[0]
    require(rel_change(out, latent) > 0.3, "dit forward output too close to its input")
    tensors = {
        "latent": f32(latent), "timestep": f32(timestep), "text": f32(text), "text_mask": i64(mask),
        "text_2": f32(text_2), "text_mask_2": i64(mask_2), "out": f32(out),
    }
    write_golden(os.path.join(out_dir, "dit_forward.safetensors"), tensors,
                 "tiny-hunyuanimage transformer forward, batch 2")
    return out


def golden_dit_forward_distilled(out_dir, transformer):
    g, latent, text, mask, text_2, mask_2 = _dit_forward_inputs(13)
    timestep = torch.tensor([980.0, 412.5], dtype=torch.float32)
    timestep_r = torch.tensor([750.0, 0.0], dtype=torch.float32)
    guidance = torch.tensor([3250.0, 5000.0], dtype=torch.float32)
    with torch.no_grad():
        out = transformer(
            hidden_states=latent, timestep=timestep, timestep_r=timestep_r, guidance=guidance,
            encoder_hidden_states=text, encoder_attention_mask=mask,
            encoder_hidden_states_2=text_2, encoder_attention_mask_2=mask_2,
            return_dict=False,
        )[0]
        # guidance and timestep_r must matter
        out_g = transformer(
            hidden_states=latent, timestep=timestep, timestep_r=timestep_r, guidance=guidance * 0.5,
            encoder_hidden_states=text, encoder_attention_mask=mask,
            encoder_hidden_states_2=text_2, encoder_attention_mask_2=mask_2, return_dict=False,
        )[0]
        out_r = transformer(
            hidden_states=latent, timestep=timestep, timestep_r=timestep, guidance=guidance,
            encoder_hidden_states=text, encoder_attention_mask=mask,
            encoder_hidden_states_2=text_2, encoder_attention_mask_2=mask_2, return_dict=False,
        )[0]
    require(rel_change(out, latent) > 0.3, "distilled forward output too close to its input")
    require(rel_change(out_g, out) > 0.01, "guidance has no effect")
    require(rel_change(out_r, out) > 0.01, "timestep_r has no effect")
    tensors = {
        "latent": f32(latent), "timestep": f32(timestep), "text": f32(text), "text_mask": i64(mask),
        "text_2": f32(text_2), "text_mask_2": i64(mask_2), "guidance": f32(guidance),
        "timestep_r": f32(timestep_r), "out": f32(out),
    }
    write_golden(os.path.join(out_dir, "dit_forward_distilled.safetensors"), tensors,
                 "tiny-hunyuanimage-distilled transformer forward, batch 2, guidance already x1000")
    return out


def golden_vae(out_dir, vae):
    g = torch.Generator().manual_seed(14)
    latent = torch.randn((1, 8, 8, 12), generator=g)
    with torch.no_grad():
        decoded = vae.decode(latent, return_dict=False)[0]
    require(list(decoded.shape) == [1, 3, 64, 96], "vae decode shape")
    frac_sat = float(((decoded < -1) | (decoded > 1)).float().mean())
    print(f"  vae_decode: std {float(decoded.std()):.3f}, fraction outside [-1,1] {frac_sat:.3f}")
    tensors = {"latent": f32(latent), "decoded": f32(decoded)}
    write_golden(os.path.join(out_dir, "vae_decode.safetensors"), tensors,
                 "tiny-hunyuanimage vae.decode on a latent already divided by scaling_factor")


def run_guider(guider, name, out_dir, description):
    """Drives a guider the way HunyuanImagePipeline does for NUM_STEPS steps."""
    g = torch.Generator().manual_seed(15)
    _, timesteps = pipeline_timesteps(SCHEDULER_CONFIG, NUM_STEPS)
    diff_scale = [0.3, 0.5, 0.2, 1.0]  # diff norms below and above the APG rescale threshold
    tensors = {}
    dummy = {"encoder_hidden_states": (torch.zeros(1), torch.zeros(1))}
    for i in range(NUM_STEPS):
        cond = torch.randn((1, 8, 8, 8), generator=g)
        uncond = cond - diff_scale[i] * torch.randn((1, 8, 8, 8), generator=g)
        t = timesteps[i]
        guider.set_state(step=i, num_inference_steps=NUM_STEPS, timestep=t)
        state = guider.prepare_inputs(dummy)
        require(len(state) == 2, "guider should want two predictions")
        state[0].noise_pred = cond
        state[1].noise_pred = uncond
        pred = guider(state)[0]
        tensors[f"pred_cond_{i}"] = f32(cond)
        tensors[f"pred_uncond_{i}"] = f32(uncond)
        tensors[f"timestep_{i}"] = f32(t.reshape(1))
        tensors[f"pred_{i}"] = f32(pred)
        if isinstance(guider, AdaptiveProjectedMixGuidance):
            print(f"  {name} step {i}: apg={guider._is_apg_enabled()} "
                  f"|momentum|={float(guider.momentum_buffer.running_average.norm()):.3f}")
    write_golden(os.path.join(out_dir, name), tensors, description)


def golden_pipeline(out_dir, case, pipe):
    g = torch.Generator().manual_seed(case["input_seed"])
    H, W = case["height"], case["width"]
    h, w = H // 8, W // 8
    seed = case["seed"]
    noise = torch.from_numpy(philox_noise(seed, (1, 8, h, w)))
    distilled = "distilled_guidance_scale" in case

    def make_part(n_llm, n_byt5, zero_byt5):
        text, mask, text_2, mask_2 = text_inputs(g, 1, [n_llm], [n_byt5])
        if zero_byt5:
            text_2 = torch.zeros_like(text_2)
            mask_2 = torch.zeros_like(mask_2)
        return text, mask, text_2, mask_2

    pos = make_part(case["llm"][0], case["byt5"][0], case["byt5_zero"])
    kwargs = dict(
        prompt_embeds=pos[0], prompt_embeds_mask=pos[1],
        prompt_embeds_2=pos[2], prompt_embeds_mask_2=pos[3],
    )
    tensors = {
        "height": i64([H]), "width": i64([W]), "steps": i64([NUM_STEPS]), "seed": i64([seed]),
        "prompt_embeds": f32(pos[0]), "prompt_embeds_mask": i64(pos[1]),
        "prompt_embeds_2": f32(pos[2]), "prompt_embeds_mask_2": i64(pos[3]),
        "noise": f32(noise),
    }
    if not distilled:
        neg = make_part(case["llm"][1], case["byt5"][1], case["byt5_zero"] or case.get("neg_byt5_zero", False))
        kwargs.update(
            negative_prompt_embeds=neg[0], negative_prompt_embeds_mask=neg[1],
            negative_prompt_embeds_2=neg[2], negative_prompt_embeds_mask_2=neg[3],
        )
        tensors.update({
            "negative_prompt_embeds": f32(neg[0]), "negative_prompt_embeds_mask": i64(neg[1]),
            "negative_prompt_embeds_2": f32(neg[2]), "negative_prompt_embeds_mask_2": i64(neg[3]),
        })
    else:
        kwargs["distilled_guidance_scale"] = case["distilled_guidance_scale"]
        tensors["distilled_guidance_scale"] = f32(torch.tensor([case["distilled_guidance_scale"]]))

    steps = []

    def on_step_end(p, i, t, cb_kwargs):
        steps.append((i, float(t), cb_kwargs["latents"].detach().clone()))
        return {}

    decoded_cap = {}
    orig_decode = pipe.vae.decode

    def decode_hook(z, return_dict=True):
        out = orig_decode(z, return_dict=return_dict)
        decoded_cap["z"] = z.detach().clone()
        decoded_cap["decoded"] = (out[0] if not return_dict else out.sample).detach().clone()
        return out

    # Which guider the pipeline will pick (same rule as the pipeline).
    if not torch.all(pos[2] == 0) and pipe.ocr_guider is not None:
        picked = "ocr_guider"
    elif pipe.guider is not None:
        picked = "guider"
    else:
        picked = "none (distilled)"
    pipe.vae.decode = decode_hook
    try:
        with torch.no_grad():
            out = pipe(
                height=H, width=W, num_inference_steps=NUM_STEPS, latents=noise.clone(),
                output_type="pil", return_dict=False,
                callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"],
                **kwargs,
            )[0]
    finally:
        del pipe.vae.decode
    image = np.array(out[0])
    require(image.shape == (H, W, 3) and image.dtype == np.uint8, "image shape")
    require(len(steps) == NUM_STEPS, "callback count")
    for i, t, lat in steps:
        tensors[f"latents_step{i}"] = f32(lat)
    tensors["decoded"] = f32(decoded_cap["decoded"])
    tensors["image_u8"] = i64(image.astype(np.int64))
    # Sanity: the decoder saw latents / scaling_factor; the output moved away from the noise.
    require(torch.equal(decoded_cap["z"], steps[-1][2] / pipe.vae.config.scaling_factor), "decode input")
    require(list(decoded_cap["decoded"].shape) == [1, 3, H, W], "decoded shape")
    change = rel_change(steps[-1][2], noise)
    levels = len(np.unique(image))
    sat = float(((image == 0) | (image == 255)).mean())
    print(f"  {case['name']}: guider={picked}, timesteps={[round(t, 4) for _, t, _ in steps]}, "
          f"final/noise rel change {change:.3f}, {levels} distinct byte values, saturated {sat:.3f}")
    require(change > 0.3, "pipeline output too close to the noise")
    require(levels > 32 and sat < 0.5, "degenerate image")
    write_golden(os.path.join(out_dir, f"pipeline_{case['name']}.safetensors"), tensors,
                 f"HunyuanImagePipeline {case['name']} on {case['model']} ({picked})")
    return picked


# --------------------------------------------------------------------------
# Image-to-image
# --------------------------------------------------------------------------


def init_image_u8(height, width, seed):
    """A deterministic RGB test picture: smooth gradients, a disc, a bar and
    mild noise (so the VAE sees edges as well as flat regions)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255.0 * x / max(width - 1, 1)
    g = 255.0 * y / max(height - 1, 1)
    b = 127.5 + 100.0 * np.sin(x / 7.0) * np.cos(y / 5.0)
    img = np.stack([r, g, b], axis=-1)
    disc = (x - 0.6 * width) ** 2 + (y - 0.45 * height) ** 2 < (0.22 * min(height, width)) ** 2
    img[disc] = (230.0, 40.0, 60.0)
    img[int(0.75 * height): int(0.85 * height), int(0.1 * width): int(0.5 * width)] = (20.0, 20.0, 20.0)
    img += rng.normal(0.0, 6.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_init_png(out_dir, height, width):
    """Writes img2img_init_HxW.png and returns it as PIL opens it (what a
    user of diffusers passes in)."""
    path = os.path.join(out_dir, f"img2img_init_{height}x{width}.png")
    arr = init_image_u8(height, width, 1000 * height + width)
    PIL.Image.fromarray(arr, mode="RGB").save(path)
    img = PIL.Image.open(path)
    img.load()
    require(img.mode == "RGB" and np.array_equal(np.array(img), arr), f"{path}: round trip")
    print(f"{os.path.relpath(path, REPO)}  ({os.path.getsize(path)} bytes)")
    return img


def golden_image_decode(out_dir):
    """Input images in the other formats sdc reads, and PIL's
    convert("RGB") of each: what sdc's decoders must reproduce."""
    arr = init_image_u8(24, 40, 7)
    pil = PIL.Image.fromarray(arr, mode="RGB")
    alpha = PIL.Image.fromarray(init_image_u8(24, 40, 8)[:, :, 0], mode="L")
    files = {
        "rgb_jpg": ("image_rgb.jpg", pil, dict(quality=90)),
        "rgb444_jpg": ("image_rgb444.jpg", pil, dict(quality=95, subsampling=0)),
        "progressive_jpg": ("image_progressive.jpg", pil, dict(quality=85, progressive=True)),
        "gray_jpg": ("image_gray.jpg", pil.convert("L"), dict(quality=90)),
        "gray_png": ("image_gray.png", pil.convert("L"), {}),
        "rgba_png": ("image_rgba.png", PIL.Image.merge("RGBA", (*pil.split(), alpha)), {}),
        "palette_png": ("image_palette.png", pil.quantize(colors=64, dither=PIL.Image.Dither.NONE), {}),
    }
    tensors = {}
    for key, (name, img, kw) in files.items():
        path = os.path.join(out_dir, name)
        img.save(path, **kw)
        back = np.array(PIL.Image.open(path).convert("RGB"))
        require(back.shape == (24, 40, 3), f"{name}: shape")
        tensors[f"{key}_u8"] = i64(back.astype(np.int64))
        print(f"{os.path.relpath(path, REPO)}  ({os.path.getsize(path)} bytes, mode {img.mode})")
    write_golden(os.path.join(out_dir, "image_decode.safetensors"), tensors,
                 "PIL's convert('RGB') of the image_* files")


def vae_posterior_sample(vae, image, seed):
    """vae.encode(image).latent_dist and its sample() with our Philox noise:
    DiagonalGaussianDistribution.sample() is mean + std * randn; the randn
    is Philox stream 1 (STREAM_VAE_POSTERIOR) of the seed."""
    posterior = vae.encode(image).latent_dist
    eps = torch.from_numpy(philox_noise(seed, tuple(posterior.mean.shape), stream=STREAM_VAE_POSTERIOR))
    return posterior, eps, posterior.mean + posterior.std * eps


def golden_vae_encode(out_dir, vae, init_pil):
    processor = diffusers.image_processor.VaeImageProcessor(vae_scale_factor=VAE_CONFIG["spatial_compression_ratio"])
    W, H = init_pil.size
    image = processor.preprocess(init_pil, height=H, width=W).to(torch.float32)
    with torch.no_grad():
        posterior, eps, sample = vae_posterior_sample(vae, image, VAE_ENCODE_SEED)
    h, w = H // 8, W // 8
    require(list(posterior.mean.shape) == [1, 8, h, w], "encode shape")
    require(float(posterior.logvar.min()) > -30 and float(posterior.logvar.max()) < 20,
            "logvar reaches the clamp: the golden would not test the encoder alone")
    tensors = {
        "image": f32(image), "image_u8": i64(np.array(init_pil).astype(np.int64)),
        "mean": f32(posterior.mean), "logvar": f32(posterior.logvar),
        "seed": i64([VAE_ENCODE_SEED]), "noise": f32(eps), "sample": f32(sample),
    }
    print(f"  vae_encode: mean std {float(posterior.mean.std()):.3f}, "
          f"logvar in [{float(posterior.logvar.min()):.3f}, {float(posterior.logvar.max()):.3f}]")
    write_golden(os.path.join(out_dir, "vae_encode.safetensors"), tensors,
                 "tiny-hunyuanimage vae.encode on img2img_init_64x96.png (VaeImageProcessor.preprocess), "
                 "posterior sample with Philox stream 1")


def img2img_reference(pipe, init_pil, height, width, strength, steps, seed, call_kwargs, on_step_end):
    """Image-to-image with HunyuanImagePipeline's components, following
    diffusers' flux img2img recipe (FluxImg2ImgPipeline.__call__):

      image = image_processor.preprocess(image, height, width)
      timesteps: the pipeline's own schedule (sigmas = linspace(1, 0, N+1)[:-1],
          shifted), then get_timesteps: init_timestep = min(N * strength, N),
          t_start = int(max(N - init_timestep, 0)), timesteps[t_start:],
          scheduler.set_begin_index(t_start)
      image_latents = retrieve_latents(vae.encode(image)) * scaling_factor
          (sample mode, as flux: mean + std * noise, the noise from Philox
          stream 1; this VAE has no shift_factor)
      latents = scheduler.scale_noise(image_latents, timesteps[:1], noise)
          = sigma * noise + (1 - sigma) * image_latents, sigma = sigmas[t_start]
      denoise timesteps[t_start:] with step indices 0 .. N - t_start - 1 and
          num_inference_steps = N - t_start (what the guider sees)

    The denoising loop is HunyuanImagePipeline.__call__ itself, given the
    noised latents and the unshifted sigmas from t_start on: the shift is
    elementwise, so its schedule is the full one's tail (checked bit for bit).
    Flux refuses a strength that leaves no step; here strength 0 (t_start = N)
    returns the decoded image latents: scale_noise at the terminal sigma 0.

    Returns (image_latents, noise_posterior, latents_init, decoded, pil_image, n_steps)."""
    processor = pipe.image_processor
    image = processor.preprocess(init_pil, height=height, width=width).to(torch.float32)
    full = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    unshifted = np.linspace(1.0, 0.0, steps + 1)[:-1]
    full.set_timesteps(sigmas=unshifted)
    init_timestep = min(steps * strength, steps)
    t_start = int(max(steps - init_timestep, 0))
    timesteps = full.timesteps[t_start:]
    full.set_begin_index(t_start)
    n_steps = steps - t_start

    with torch.no_grad():
        _, eps, image_latents = vae_posterior_sample(pipe.vae, image, seed)
        image_latents = image_latents * pipe.vae.config.scaling_factor
        noise = torch.from_numpy(philox_noise(seed, tuple(image_latents.shape)))
        if n_steps == 0:
            latents = image_latents
        else:
            latents = full.scale_noise(image_latents, timesteps[:1], noise)
        latents_init = latents.clone()

    decoded_cap = {}
    orig_decode = pipe.vae.decode

    def decode_hook(z, return_dict=True):
        out = orig_decode(z, return_dict=return_dict)
        decoded_cap["z"] = z.detach().clone()
        decoded_cap["decoded"] = (out[0] if not return_dict else out.sample).detach().clone()
        return out

    with torch.no_grad():
        if n_steps == 0:
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            pil = processor.postprocess(decoded, output_type="pil")[0]
        else:
            pipe.vae.decode = decode_hook
            try:
                pil = pipe(
                    height=height, width=width, sigmas=list(unshifted[t_start:]), latents=latents.clone(),
                    output_type="pil", return_dict=False,
                    callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"],
                    **call_kwargs,
                )[0][0]
            finally:
                del pipe.vae.decode
            require(torch.equal(pipe.scheduler.sigmas, full.sigmas[t_start:]), "truncated sigmas")
            require(torch.equal(pipe.scheduler.timesteps, timesteps), "truncated timesteps")
            decoded = decoded_cap["decoded"]
    return image, image_latents, eps, noise, latents_init, decoded, pil, n_steps


def _case_text(g, case):
    """Random prompt / negative embeddings for a case, as golden_pipeline makes them."""
    distilled = "distilled_guidance_scale" in case

    def make_part(n_llm, n_byt5, zero_byt5):
        text, mask, text_2, mask_2 = text_inputs(g, 1, [n_llm], [n_byt5])
        if zero_byt5:
            text_2 = torch.zeros_like(text_2)
            mask_2 = torch.zeros_like(mask_2)
        return text, mask, text_2, mask_2

    pos = make_part(case["llm"][0], case["byt5"][0], case["byt5_zero"])
    tensors = {
        "prompt_embeds": f32(pos[0]), "prompt_embeds_mask": i64(pos[1]),
        "prompt_embeds_2": f32(pos[2]), "prompt_embeds_mask_2": i64(pos[3]),
    }
    if not distilled:
        neg = make_part(case["llm"][1], case["byt5"][1], case["byt5_zero"] or case.get("neg_byt5_zero", False))
        tensors.update({
            "negative_prompt_embeds": f32(neg[0]), "negative_prompt_embeds_mask": i64(neg[1]),
            "negative_prompt_embeds_2": f32(neg[2]), "negative_prompt_embeds_mask_2": i64(neg[3]),
        })
    return tensors


_EMBED_NAMES = (
    "prompt_embeds", "prompt_embeds_mask", "prompt_embeds_2", "prompt_embeds_mask_2",
    "negative_prompt_embeds", "negative_prompt_embeds_mask", "negative_prompt_embeds_2",
    "negative_prompt_embeds_mask_2",
)


def golden_img2img(out_dir, case, pipe, init_pil):
    H, W = case["height"], case["width"]
    require(init_pil.size == (W, H), "init image size")
    if "embeds_from" in case:
        with safe_open(os.path.join(out_dir, f"pipeline_{case['embeds_from']}.safetensors"), framework="pt") as f:
            ref = {k: f.get_tensor(k) for k in f.keys()}
        seed = int(ref["seed"][0])
        text = {k: ref[k] for k in _EMBED_NAMES if k in ref}
    else:
        ref = None
        seed = case["seed"]
        text = _case_text(torch.Generator().manual_seed(case["input_seed"]), case)
    call_kwargs = {k: (v.long() if "mask" in k else v) for k, v in text.items()}
    tensors = dict(text)
    if "distilled_guidance_scale" in case:
        call_kwargs["distilled_guidance_scale"] = case["distilled_guidance_scale"]
        tensors["distilled_guidance_scale"] = f32(torch.tensor([case["distilled_guidance_scale"]]))

    steps = []

    def on_step_end(p, i, t, cb_kwargs):
        steps.append((i, float(t), cb_kwargs["latents"].detach().clone()))
        return {}

    image, image_latents, eps, noise, latents_init, decoded, pil, n_steps = img2img_reference(
        pipe, init_pil, H, W, case["strength"], NUM_STEPS, seed, call_kwargs, on_step_end)
    out = np.array(pil)
    require(out.shape == (H, W, 3) and out.dtype == np.uint8, "image shape")
    require(len(steps) == n_steps, "callback count")
    tensors.update({
        "height": i64([H]), "width": i64([W]), "steps": i64([NUM_STEPS]), "seed": i64([seed]),
        "strength": f32(torch.tensor([case["strength"]], dtype=torch.float64)),
        "n_steps": i64([n_steps]),
        "init_image": f32(image), "init_image_u8": i64(np.array(init_pil).astype(np.int64)),
        "noise_posterior": f32(eps), "image_latents": f32(image_latents),
        "noise": f32(noise), "latents_init": f32(latents_init),
        "decoded": f32(decoded), "image_u8": i64(out.astype(np.int64)),
    })
    for i, t, lat in steps:
        tensors[f"latents_step{i}"] = f32(lat)
    final = steps[-1][2] if steps else latents_init
    change = rel_change(final, image_latents)
    levels = len(np.unique(out))
    print(f"  img2img {case['name']}: strength {case['strength']}, {n_steps} of {NUM_STEPS} steps, "
          f"timesteps={[round(t, 4) for _, t, _ in steps]}, final/image-latent rel change {change:.3f}, "
          f"{levels} distinct byte values")
    require(levels > 32, "degenerate image")
    if case["strength"] == 0.0:
        require(n_steps == 0 and torch.equal(final, image_latents), "strength 0 keeps the image latents")
    else:
        require(change > 0.1, "img2img output too close to the image latents")
    if ref is not None:
        # Strength 1 starts from pure noise: the text-to-image run, bit for bit.
        require(torch.equal(latents_init, ref["noise"]), "strength 1 initial latents != noise")
        for i, _, lat in steps:
            require(torch.equal(lat, ref[f"latents_step{i}"]), f"strength 1 step {i} != text-to-image")
        require(np.array_equal(out.astype(np.int64), ref["image_u8"].numpy()), "strength 1 image != text-to-image")
    write_golden(os.path.join(out_dir, f"img2img_{case['name']}.safetensors"), tensors,
                 f"img2img {case['name']} on {case['model']}: diffusers components + the flux img2img recipe")


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-root", default=REPO,
                    help="directory that receives tests/data/... (default: the repository root)")
    args = ap.parse_args()
    setup_determinism()

    data = os.path.join(args.out_root, "tests", "data")
    gold = os.path.join(data, "goldens")
    os.makedirs(gold, exist_ok=True)

    # Components.
    tr = make_transformer(TRANSFORMER_CONFIG, SEED_TRANSFORMER)
    tr_cfg = make_transformer(TRANSFORMER_CONFIG, SEED_TRANSFORMER_CFG)
    tr_dist = make_transformer(TRANSFORMER_DISTILLED_CONFIG, SEED_TRANSFORMER_DISTILLED)
    vae = make_vae()

    def new_guider():
        return AdaptiveProjectedMixGuidance(**GUIDER_CONFIG)

    def new_ocr_guider():
        return AdaptiveProjectedMixGuidance(**OCR_GUIDER_CONFIG)

    def new_cfg_guider():
        return ClassifierFreeGuidance(**CFG_GUIDER_CONFIG)

    # Model directories.
    save_model_dir(os.path.join(data, "tiny-hunyuanimage"), tr, vae,
                   FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), new_guider(), new_ocr_guider())
    save_model_dir(os.path.join(data, "tiny-hunyuanimage-cfg"), tr_cfg, vae,
                   FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), new_cfg_guider(), None)
    save_model_dir(os.path.join(data, "tiny-hunyuanimage-distilled"), tr_dist, vae,
                   FlowMatchEulerDiscreteScheduler(**SCHEDULER_DISTILLED_CONFIG), None, None)
    for d in ("tiny-hunyuanimage", "tiny-hunyuanimage-cfg", "tiny-hunyuanimage-distilled"):
        with open(os.path.join(data, d, "model_index.json")) as fh:
            print(f"{d}/model_index.json:", json.dumps(json.load(fh), sort_keys=True))

    # Goldens.
    golden_philox(gold)
    golden_scheduler(gold)
    golden_dit_modules(gold, tr)
    golden_dit_forward(gold, tr)
    golden_dit_forward_distilled(gold, tr_dist)
    golden_vae(gold, vae)
    run_guider(new_guider(), "guider_apg.safetensors", gold,
               "tiny-hunyuanimage guider/ (AdaptiveProjectedMixGuidance) over 4 steps")
    run_guider(new_cfg_guider(), "guider_cfg.safetensors", gold,
               "tiny-hunyuanimage-cfg guider/ (ClassifierFreeGuidance) over 4 steps")

    pipes = {
        "tiny-hunyuanimage": lambda: build_pipeline(
            tr, vae, FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), new_guider(), new_ocr_guider()),
        "tiny-hunyuanimage-cfg": lambda: build_pipeline(
            tr_cfg, vae, FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), new_cfg_guider(), None),
        "tiny-hunyuanimage-distilled": lambda: build_pipeline(
            tr_dist, vae, FlowMatchEulerDiscreteScheduler(**SCHEDULER_DISTILLED_CONFIG), None, None),
    }
    expect_guider = {"apg_64x64": "guider", "apg_ocr_64x96": "ocr_guider", "cfg_96x64": "guider",
                     "distilled_64x96": "none (distilled)"}
    for case in PIPELINE_CASES:
        picked = golden_pipeline(gold, case, pipes[case["model"]]())
        require(picked == expect_guider[case["name"]], f"{case['name']} picked {picked}")

    inits = {(64, 96): write_init_png(gold, 64, 96), (64, 64): write_init_png(gold, 64, 64)}
    golden_image_decode(gold)
    golden_vae_encode(gold, vae, inits[(64, 96)])
    for case in IMG2IMG_CASES:
        golden_img2img(gold, case, pipes[case["model"]](), inits[(case["height"], case["width"])])

    total = 0
    for root, _, files in os.walk(data):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"total size of {os.path.relpath(data, args.out_root)}: {total} bytes")


if __name__ == "__main__":
    main()
