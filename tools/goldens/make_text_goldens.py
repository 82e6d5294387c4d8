"""Makes the tiny HunyuanImage-2.1 pipeline with text encoders and the text goldens.

    python tools/goldens/make_text_goldens.py [--out-root DIR]

Writes (relative to the repository root, or --out-root):
    tests/data/tiny-hunyuanimage-text/     full pipeline: text_encoder/ (Qwen2.5-VL),
                                           tokenizer/ (Qwen2.5 vocab.json + merges.txt),
                                           text_encoder_2/ (T5 encoder, ByT5-style),
                                           tokenizer_2/ (ByT5), transformer/, vae/,
                                           scheduler/, guider/, ocr_guider/
    tests/data/goldens/text_<case>.safetensors   one prompt through encode_prompt
    tests/data/goldens/text_encoders.safetensors LLM hidden states, T5 buckets
    tests/data/goldens/e2e_<case>.safetensors    prompt -> image through the pipeline
    tests/data/goldens/text_prompts.json         the prompts, glyph-extraction cases

Everything runs on the CPU in float32 with one thread and fixed seeds; two
runs give byte-identical files. Reference semantics: the installed diffusers
HunyuanImagePipeline (extract_glyph_text, encode_prompt) and transformers'
Qwen2_5_VLForConditionalGeneration, T5EncoderModel, Qwen2Tokenizer and
ByT5Tokenizer. tests/data/GOLDENS.md documents every file.
"""

import argparse
import copy
import json
import os
import shutil
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_goldens as mg  # noqa: E402  (tiny_byt5 is imported through it)
from diffusers import (  # noqa: E402
    AdaptiveProjectedMixGuidance,
    FlowMatchEulerDiscreteScheduler,
    HunyuanImagePipeline,
)
from diffusers.pipelines.hunyuan_image.pipeline_hunyuanimage import extract_glyph_text  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import (  # noqa: E402
    ByT5Tokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    T5Config,
    T5EncoderModel,
)
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

from philox import philox_noise  # noqa: E402

REPO = mg.REPO
QWEN_TOKENIZER_DIR = os.path.join(REPO, "tests", "data", "qwen2.5-tokenizer")
MODEL_NAME = "tiny-hunyuanimage-text"

# Qwen2.5-VL: the text model is what sdc runs; the vision tower only has to
# exist in the checkpoint (sdc must never read it). vocab_size is the
# released model's padded 152064, so the real tokenizer's ids are in range.
# 4 layers: hidden_states[-3] is the output of layer 1, so two layers run.
LLM_TEXT_CONFIG = dict(
    hidden_size=16,
    intermediate_size=40,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=152064,
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[1, 1, 2]),
    hidden_act="silu",
)
LLM_VISION_CONFIG = dict(
    depth=1,
    hidden_size=16,
    intermediate_size=32,
    num_heads=2,
    out_hidden_size=16,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    fullatt_block_indexes=[0],
    window_size=112,
)
# ByT5-small's structure (vocab 384, 32 buckets, max distance 128, gated-gelu)
# at a tiny width.
T5_CONFIG = dict(
    vocab_size=384,
    d_model=24,
    d_kv=8,
    d_ff=40,
    num_layers=2,
    num_heads=3,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    is_encoder_decoder=False,
    use_cache=False,
)
TRANSFORMER_CONFIG = dict(mg.TRANSFORMER_CONFIG, text_embed_dim=16, text_embed_2_dim=24)

SEED_LLM = 6006
SEED_T5 = 7007
SEED_TRANSFORMER = 8008

TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
            "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
            "<|im_end|>")
DROP_IDX = 34
MAX_LEN = 1000
MAX_LEN_2 = 128


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def init_text_weights(model, seed):
    """Same scheme as make_goldens.init_weights, with the transformers norm
    classes (Qwen2_5_VLRMSNorm, T5LayerNorm, ...) recognised as norms."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mname, module in model.named_modules():
            is_norm = type(module).__name__.endswith(("RMSNorm", "LayerNorm"))
            for pname, p in module.named_parameters(recurse=False):
                if is_norm:
                    if pname == "weight":
                        p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                    else:
                        p.copy_(0.1 * torch.randn(p.shape, generator=g))
                elif p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(p[0].numel()))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))


def make_llm():
    torch.manual_seed(SEED_LLM)
    cfg = Qwen2_5_VLConfig(text_config=LLM_TEXT_CONFIG, vision_config=LLM_VISION_CONFIG,
                           tie_word_embeddings=True)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    init_text_weights(model, SEED_LLM)
    model.tie_weights()
    mg.round_to_bf16_(model)
    return model.eval()


def make_t5():
    torch.manual_seed(SEED_T5)
    model = T5EncoderModel(T5Config(**T5_CONFIG))
    init_text_weights(model, SEED_T5)
    mg.round_to_bf16_(model)
    return model.eval()


def new_pipeline(llm, tok, t5, tok2, transformer, vae):
    pipe = HunyuanImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**mg.SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=llm,
        tokenizer=tok,
        text_encoder_2=t5,
        tokenizer_2=tok2,
        transformer=transformer,
        guider=AdaptiveProjectedMixGuidance(**mg.GUIDER_CONFIG),
        ocr_guider=AdaptiveProjectedMixGuidance(**mg.OCR_GUIDER_CONFIG),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_model_dir(path, pipe):
    """diffusers' save_pretrained with every component in BF16 (the values
    are already BF16-exact); the text encoder is sharded so that its
    embedding table (152064 x 16 BF16 = 4.9 MB) is a file of its own. The
    tokenizer directory is replaced by the vocab.json + merges.txt layout
    (save_pretrained would write a 7 MB tokenizer.json)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    bf = {k: copy.deepcopy(getattr(pipe, k)).to(torch.bfloat16)
          for k in ("transformer", "vae", "text_encoder", "text_encoder_2")}
    saved = HunyuanImagePipeline(
        scheduler=pipe.scheduler, tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2,
        guider=pipe.guider, ocr_guider=pipe.ocr_guider, **bf)
    saved.save_pretrained(path, safe_serialization=True, max_shard_size="4MB")
    tok_dir = os.path.join(path, "tokenizer")
    shutil.rmtree(tok_dir)
    os.makedirs(tok_dir)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(QWEN_TOKENIZER_DIR, f), os.path.join(tok_dir, f))
    for root, _, files in os.walk(path):
        for f in files:
            size = os.path.getsize(os.path.join(root, f))
            mg.require(size < 5_000_000, f"{os.path.join(root, f)} is {size} bytes")


# --------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------


def boundary_prompt(tok, n_total):
    """'a a a ...' whose templated token count is exactly n_total."""
    for k in range(1, 2000):
        p = " ".join(["a"] * k)
        n = len(tok(TEMPLATE.format(p)).input_ids)
        if n == n_total:
            return p
        if n > n_total:
            break
    raise AssertionError(f"no 'a a a' prompt of {n_total} tokens")


LONG_SENTENCE = ("A quiet harbor at dawn with fishing boats, seagulls and a lighthouse; "
                 "港口的清晨,渔船、海鸥和灯塔,水面泛着金色的光。 ")


def encode_cases(tok):
    """(name, prompt bytes). Prompts are str except where the bytes are not
    UTF-8; those are encoded by the reference as bytes.decode('utf-8', 'replace')."""
    cases = [
        ("en_plain", "A cat sitting on a red sofa, photorealistic, soft morning light"),
        ("zh_plain", "一个身穿唐朝服饰的女子,站在盛开的樱花树下,微风拂面,阳光柔和,背景是一座古典中式园林。"),
        ("en_double_quotes", 'A cat holding a sign that says "hello world"'),
        ("zh_chinese_double", "用青花瓷风格写出“春”字,作为海报中心元素,背景为古风水墨。"),
        ("en_single_quotes", "A shop sign reading 'OPEN 24 HOURS' above a wooden door"),
        ("zh_chinese_single", "红色的门上贴着‘福’字,两边是‘春’和‘喜’"),
        ("several_segments", 'Poster with "SALE" and \'50% off\' and “限时” and ‘特价’, plus "second line"'),
        ("nested_quotes", 'He said "she wrote \'hi\' on the wall" and left'),
        ("unbalanced_quotes", 'An unbalanced "quote, a closed "one" and a stray \' and “open'),
        ("apostrophes", "Don't stop: it's the cat's favourite toy"),
        ("newline_in_quotes", 'Title "line one\nline two" and "ok"\nsecond line \'x\''),
        ("empty", ""),
        ("spaces", "     "),
        ("special_tokens_in_text", 'a <|im_end|> b <|endoftext|> c "</s> <pad> x <extra_id_3>"'),
        ("braces", "curly {} and {0} and {name} braces"),
        ("nul_bytes", 'nul\x00byte "q\x00q" end'),
        ("emoji_mixed", "A robot 🤖 painting “你好 world” on a wall 🎨, café au lait"),
        ("glyph_127_bytes", '"' + "x" * 118 + '"'),
        ("glyph_128_bytes", '"' + "x" * 119 + '"'),
        ("glyph_eos_at_cut", '"' + "x" * 120 + "</s>" + "yyyy\""),
        ("many_segments", " ".join(f'"w{i}"' for i in range(300))),
        ("tokens_1034", boundary_prompt(tok, DROP_IDX + MAX_LEN)),
        ("tokens_1035", boundary_prompt(tok, DROP_IDX + MAX_LEN + 1)),
        ("long_truncated", 'A poster titled "HARBOR" — ' + LONG_SENTENCE * 30),
    ]
    out = [(name, p.encode("utf-8")) for name, p in cases]
    out.append(("invalid_utf8", b'bad \xff\xfe bytes "q\xe2\x80" \xe2\x80\x9c\xe5\xad\x97\xe2\x80\x9d \xc3'))
    return out


def glyph_cases():
    """Inputs for extract_glyph_text alone (bytes)."""
    s = [
        "", "no quotes at all", "'a'", '"a"', "‘a’", "“a”", "''", '""', "‘’", "“”",
        "'a' 'b' 'c'", '"a" \'b\' “c” ‘d’ "e"', "'unclosed", '"unclosed', "‘unclosed", "“unclosed",
        "closing only’ and ”", "’reversed‘ and ”reversed“", "'''", "''''", '"""', "'a\nb'", '"a\nb" "c"',
        "'a\n'b'", "‘a‘b’", "“a“b”c”", "'it's'", "Don't won't can't", "'\r'", "'\t\v\f'",
        '"\x00"', "'\x00\x00' \x00 \"\x00a\"", "“\n”", "‘a\n’‘b’",
        "He said \"she wrote 'hi' there\"", "'\"' \"'\"", "“'”", "‘\"’",
        "'" * 101, '"' * 100, "“" * 50 + "”" * 50, "‘’" * 40,
        "A cat holding a sign that says \"hello world\"",
        "用青花瓷风格写出“春”字,作为海报中心元素",
        "emoji '🤖' and “🎨”",
        "x" * 1000 + "'" + "y" * 1000 + "'",
        "\n".join(f"'line{i}" for i in range(50)),
    ]
    out = [(f"g{i:02d}", t.encode("utf-8")) for i, t in enumerate(s)]
    out.append(("thousands_double", " ".join(f'"s{i}"' for i in range(3000)).encode()))
    out.append(("thousands_mixed", "".join(
        ("'a%d' " % i) if i % 4 == 0 else ('"b%d" ' % i) if i % 4 == 1 else
        ("‘c%d’ " % i) if i % 4 == 2 else ("“d%d” " % i) for i in range(2000)).encode()))
    out.append(("thousands_unbalanced", ("'x " * 2500).encode()))
    out.append(("invalid_utf8_1", b"'\xff' \"\xc0\xaf\" \xe2\x80 \xe2\x80\x98x\xe2\x80\x99"))
    out.append(("invalid_utf8_2", b"\xe2\x80\x9c\xed\xa0\x80\xe2\x80\x9d '\xf4\x90\x80\x80'"))
    out.append(("invalid_utf8_3", b"\xe2\x80\x98a\xe2\x80 \xe2\x80\x99 \"\xf0\x9f\x98\" '\x80'"))
    out.append(("truncated_quote_char", b"\xe2\x80\x9ctext\xe2\x80"))
    return out


def py_text(b):
    return b.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# Goldens
# --------------------------------------------------------------------------


def save(path, tensors, description):
    meta = mg.versions()
    meta["generator"] = "tools/goldens/make_text_goldens.py"
    meta["description"] = description
    mg.save_safetensors_sorted(path, tensors, meta)
    with safe_open(path, framework="pt") as f:
        mg.require(sorted(f.keys()) == sorted(tensors), f"{path}: keys")
        for k in f.keys():
            mg.require(torch.equal(f.get_tensor(k), tensors[k]), f"{path}: {k} round trip")
    mg.require(os.path.getsize(path) < 5_000_000, f"{path} too large")
    print(f"{os.path.relpath(path, REPO)}  ({os.path.getsize(path)} bytes)")


def golden_text_case(out_dir, pipe, name, prompt_bytes):
    prompt = py_text(prompt_bytes)
    tok, tok2 = pipe.tokenizer, pipe.tokenizer_2
    full = tok(TEMPLATE.format(prompt)).input_ids
    enc = tok(TEMPLATE.format(prompt), max_length=DROP_IDX + MAX_LEN, padding="max_length",
              truncation=True, return_tensors="pt")
    mask_full = enc.attention_mask[0]
    n_valid_full = int(mask_full.sum())
    mg.require(bool(mask_full[:n_valid_full].all()), f"{name}: mask not right-padded")
    mg.require(enc.input_ids[0, :n_valid_full].tolist() == full[:DROP_IDX + MAX_LEN], f"{name}: ids")
    with torch.no_grad():
        pe, pm, pe2, pm2 = pipe.encode_prompt(prompt=prompt, device=torch.device("cpu"))
    mg.require(list(pe.shape) == [1, MAX_LEN, 16] and list(pe2.shape) == [1, MAX_LEN_2, 24], "shapes")
    mg.require(torch.equal(pm[0], mask_full[DROP_IDX:]), f"{name}: mask")
    glyph = extract_glyph_text(prompt)
    tensors = {
        "input_ids": mg.i64(enc.input_ids),
        "attention_mask": mg.i64(enc.attention_mask),
        "n_tokens": mg.i64([len(full)]),
        "prompt_embeds": mg.f32(pe),
        "prompt_embeds_mask": mg.i64(pm),
        "prompt_embeds_2": mg.f32(pe2),
        "prompt_embeds_mask_2": mg.i64(pm2),
    }
    n2 = 0
    if glyph is not None:
        e2 = tok2(glyph, padding="max_length", max_length=MAX_LEN_2, truncation=True,
                  add_special_tokens=True, return_tensors="pt")
        tensors["input_ids_2"] = mg.i64(e2.input_ids)
        tensors["attention_mask_2"] = mg.i64(e2.attention_mask)
        mg.require(torch.equal(e2.attention_mask, pm2), f"{name}: mask_2")
        n2 = int(pm2.sum())
        mg.require(float(pe2[0, :n2].abs().max()) > 0.1, f"{name}: ByT5 output is zero")
    else:
        mg.require(not bool(pe2.any()) and not bool(pm2.any()), f"{name}: no glyph but ByT5 non-zero")
    n1 = int(pm.sum())
    save(os.path.join(out_dir, f"text_{name}.safetensors"), tensors,
         f"encode_prompt of tests/data/{MODEL_NAME} for text_prompts.json case {name}")
    print(f"    tokens {len(full)} (valid after drop {n1}), glyph bytes "
          f"{None if glyph is None else len(glyph.encode())}, ByT5 valid {n2}")
    entry = {
        "name": name,
        "prompt_hex": prompt_bytes.hex(),
        "glyph_hex": None if glyph is None else glyph.encode("utf-8").hex(),
        "n_tokens": len(full),
        "n_valid": n1,
        "n_valid_2": n2,
        "truncated": len(full) > DROP_IDX + MAX_LEN,
    }
    if len(prompt) <= 200 and "\ufffd" not in prompt:
        entry["prompt"] = prompt
    return entry


def golden_text_encoders(out_dir, pipe):
    """Every LLM hidden state of one prompt (to localise a layer bug), and
    T5 relative-position buckets (float32 log rounding decides some)."""
    prompt = 'A cat holding a sign that says "hello world"'
    ids = pipe.tokenizer(TEMPLATE.format(prompt), return_tensors="pt").input_ids
    cap = {}
    layers = pipe.text_encoder.model.language_model.layers
    h = layers[1].register_forward_hook(lambda m, a, o: cap.__setitem__("l1", o))
    with torch.no_grad():
        out = pipe.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    h.remove()
    hs = out.hidden_states
    mg.require(len(hs) == LLM_TEXT_CONFIG["num_hidden_layers"] + 1, "hidden_states count")
    l1 = cap["l1"][0] if isinstance(cap["l1"], tuple) else cap["l1"]
    mg.require(torch.equal(hs[-3], l1), "hidden_states[-3] is the output of layer 1")
    tensors = {
        "llm_input_ids": mg.i64(ids),
        "llm_hidden_states": mg.f32(torch.cat(hs, dim=0)),
    }
    rel = torch.arange(-300, 301)
    for nb, md, bidi in ((32, 128, True), (64, 256, True), (16, 32, True), (32, 128, False), (8, 20, True)):
        b = T5Attention._relative_position_bucket(rel, bidirectional=bidi, num_buckets=nb, max_distance=md)
        tensors[f"t5_buckets_{nb}_{md}_{'bi' if bidi else 'uni'}"] = mg.i64(b)
    tensors["t5_relative_positions"] = mg.i64(rel)
    # T5 on a token sequence with a byte of every kind and a special token.
    t5_ids = torch.tensor([[59, 86, 123, 3, 258, 1, 0, 2, 259, 383, 100, 101, 1]])
    with torch.no_grad():
        t5_out = pipe.text_encoder_2(input_ids=t5_ids, attention_mask=torch.ones_like(t5_ids))[0]
    tensors["t5_input_ids"] = mg.i64(t5_ids)
    tensors["t5_output"] = mg.f32(t5_out)
    save(os.path.join(out_dir, "text_encoders.safetensors"), tensors,
         "tiny-hunyuanimage-text: every Qwen2.5-VL hidden state of one prompt, T5 buckets and one T5 forward")


E2E_CASES = [
    dict(name="glyph_64x64", prompt='A cat holding a sign that says "hello world"', negative_prompt=None,
         height=64, width=64, seed=42),
    dict(name="zh_64x96", prompt="一个身穿唐朝服饰的女子,站在盛开的樱花树下,微风拂面",
         negative_prompt="低质量, 模糊, blurry, low quality", height=64, width=96, seed=7),
]


def golden_e2e(out_dir, pipe, case):
    H, W, seed = case["height"], case["width"], case["seed"]
    noise = torch.from_numpy(philox_noise(seed, (1, 8, H // 8, W // 8)))
    steps = []

    def on_step_end(p, i, t, kw):
        steps.append((i, float(t), kw["latents"].detach().clone()))
        return {}

    dec = {}
    orig_decode = pipe.vae.decode

    def decode_hook(z, return_dict=True):
        out = orig_decode(z, return_dict=return_dict)
        dec["decoded"] = (out[0] if not return_dict else out.sample).detach().clone()
        return out

    with torch.no_grad():
        pos = pipe.encode_prompt(prompt=case["prompt"], device=torch.device("cpu"))
        neg = pipe.encode_prompt(prompt=case["negative_prompt"], device=torch.device("cpu"))
    glyph = bool(pos[2].any())
    pipe.vae.decode = decode_hook
    try:
        with torch.no_grad():
            out = pipe(prompt=case["prompt"], negative_prompt=case["negative_prompt"], height=H, width=W,
                       num_inference_steps=mg.NUM_STEPS, latents=noise.clone(), output_type="pil",
                       return_dict=False, callback_on_step_end=on_step_end,
                       callback_on_step_end_tensor_inputs=["latents"])[0]
    finally:
        del pipe.vae.decode
    image = np.array(out[0])
    mg.require(image.shape == (H, W, 3), "image shape")
    tensors = {
        "height": mg.i64([H]), "width": mg.i64([W]), "steps": mg.i64([mg.NUM_STEPS]), "seed": mg.i64([seed]),
        "noise": mg.f32(noise),
        "prompt_embeds": mg.f32(pos[0]), "prompt_embeds_mask": mg.i64(pos[1]),
        "prompt_embeds_2": mg.f32(pos[2]), "prompt_embeds_mask_2": mg.i64(pos[3]),
        "negative_prompt_embeds": mg.f32(neg[0]), "negative_prompt_embeds_mask": mg.i64(neg[1]),
        "negative_prompt_embeds_2": mg.f32(neg[2]), "negative_prompt_embeds_mask_2": mg.i64(neg[3]),
        "decoded": mg.f32(dec["decoded"]),
        "image_u8": mg.i64(image.astype(np.int64)),
    }
    mg.require(len(steps) == mg.NUM_STEPS, "callback count")
    for i, _, lat in steps:
        tensors[f"latents_step{i}"] = mg.f32(lat)
    change = mg.rel_change(steps[-1][2], noise)
    levels = len(np.unique(image))
    print(f"  e2e {case['name']}: glyph={glyph} ({'ocr_guider' if glyph else 'guider'}), "
          f"final/noise rel change {change:.3f}, {levels} distinct byte values")
    mg.require(change > 0.3 and levels > 32, "degenerate e2e output")
    save(os.path.join(out_dir, f"e2e_{case['name']}.safetensors"), tensors,
         f"HunyuanImagePipeline on tests/data/{MODEL_NAME}, prompt -> image, case {case['name']}")
    return {
        "name": case["name"],
        "prompt": case["prompt"],
        "prompt_hex": case["prompt"].encode().hex(),
        "negative_prompt": case["negative_prompt"],
        "negative_prompt_hex": None if case["negative_prompt"] is None else case["negative_prompt"].encode().hex(),
        "height": H, "width": W, "seed": seed, "steps": mg.NUM_STEPS,
        "guider": "ocr_guider" if glyph else "guider",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-root", default=REPO)
    args = ap.parse_args()
    mg.setup_determinism()
    data = os.path.join(args.out_root, "tests", "data")
    gold = os.path.join(data, "goldens")
    os.makedirs(gold, exist_ok=True)

    llm = make_llm()
    t5 = make_t5()
    transformer = mg.make_transformer(TRANSFORMER_CONFIG, SEED_TRANSFORMER)
    vae = mg.make_vae()
    tok = Qwen2Tokenizer.from_pretrained(QWEN_TOKENIZER_DIR)
    tok2 = ByT5Tokenizer()
    pipe = new_pipeline(llm, tok, t5, tok2, transformer, vae)
    model_dir = os.path.join(data, MODEL_NAME)
    save_model_dir(model_dir, pipe)

    # The saved directory must load back into the same pipeline.
    loaded = HunyuanImagePipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    for comp in ("text_encoder", "text_encoder_2", "transformer"):
        a, b = getattr(pipe, comp).state_dict(), getattr(loaded, comp).state_dict()
        mg.require(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{comp} reload")
    probe = TEMPLATE.format('A "cat" 猫')
    mg.require(loaded.tokenizer(probe).input_ids == tok(probe).input_ids, "tokenizer reload")
    mg.require(loaded.tokenizer_2("abc</s>").input_ids == tok2("abc</s>").input_ids, "tokenizer_2 reload")
    pipe = loaded
    pipe.set_progress_bar_config(disable=True)

    side = {
        "description": "Prompts of the text goldens (tests/data/GOLDENS.md). Byte strings are hex "
                       "(UTF-8, or not UTF-8 on purpose); the reference encodes "
                       "bytes.decode('utf-8', 'replace').",
        "versions": dict(mg.versions(), generator="tools/goldens/make_text_goldens.py"),
        "model": MODEL_NAME,
        "template": TEMPLATE,
        "drop_idx": DROP_IDX,
        "max_length": MAX_LEN,
        "max_length_2": MAX_LEN_2,
        "encode": [],
        "glyph": [],
        "e2e": [],
    }
    for name, pb in encode_cases(tok):
        side["encode"].append(golden_text_case(gold, pipe, name, pb))
    for name, gb in glyph_cases():
        g = extract_glyph_text(py_text(gb))
        side["glyph"].append({"name": name, "prompt_hex": gb.hex(),
                              "glyph_hex": None if g is None else g.encode("utf-8").hex()})
    golden_text_encoders(gold, pipe)
    for case in E2E_CASES:
        side["e2e"].append(golden_e2e(gold, pipe, case))
    path = os.path.join(gold, "text_prompts.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(side, fh, ensure_ascii=False, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"{os.path.relpath(path, REPO)}  ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
