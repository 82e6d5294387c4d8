"""PyTorch side of the DiT forward benchmark (bench/run.sh, bench/README.md).

Two subcommands:

  make-model --out DIR --config mid|tiny
      Writes a HunyuanImageTransformer2DModel in diffusers layout (config.json
      + float32 safetensors) to DIR. "mid" is a random-weight model of a
      realistic shape at a size a CPU runs in seconds (hidden 1024 = 8 heads x
      128, 2 dual + 4 single blocks, 2 refiner layers, 64 latent channels,
      patch (1,1), the real text encoders' widths: Qwen2.5-VL-7B 3584 and
      ByT5-small 1472). "tiny" copies tests/data/tiny-hunyuanimage/transformer.

  run --model-dir DIR [--height H --width W --text N --text2 N2 --valid V
      --valid2 V2 --threads T --reps R --warmup K --seed S --timestep T --json]
      Times diffusers' forward with the inputs bench/bench_dit.c uses (the
      same Philox values, masks and timestep) and prints the same fields, with
      impl "torch-diffusers".

Timing only: correctness is checked by the goldens, not here. The output's
mean |x| is printed so the two implementations can be eyeballed side by side.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

MID_CONFIG = dict(
    in_channels=64,
    out_channels=64,
    num_attention_heads=8,
    attention_head_dim=128,
    num_layers=2,
    num_single_layers=4,
    num_refiner_layers=2,
    mlp_ratio=4.0,
    patch_size=(1, 1),
    qk_norm="rms_norm",
    guidance_embeds=False,
    text_embed_dim=3584,
    text_embed_2_dim=1472,
    rope_theta=256.0,
    rope_axes_dim=(64, 64),
    use_meanflow=False,
)
TINY_SRC = os.path.join(REPO, "tests", "data", "tiny-hunyuanimage", "transformer")
SEED = 0


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_model(args):
    out = os.path.abspath(args.out)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if args.config == "tiny":
        if not os.path.isfile(os.path.join(TINY_SRC, "config.json")):
            sys.exit("bench_dit_torch: %s is missing (made by make_goldens.py)" % TINY_SRC)
        shutil.copytree(TINY_SRC, tmp)
    else:
        import torch
        from diffusers import HunyuanImageTransformer2DModel

        torch.manual_seed(SEED)
        model = HunyuanImageTransformer2DModel(**MID_CONFIG)  # float32 by default
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="10GB")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print("bench_dit_torch: wrote %s model to %s" % (args.config, out))


def make_inputs(cfg, a):
    """The values bench_dit.c generates: Philox stream for seed a.seed, latent
    at offset 0, LLM text after it, ByT5 text after that."""
    import numpy as np
    import torch
    from philox import philox_normal

    c, d, d2 = cfg["in_channels"], cfg["text_embed_dim"], cfg.get("text_embed_2_dim") or 0
    n_lat, n_txt = c * a.height * a.width, a.text * d
    lat = philox_normal(a.seed, n_lat, 0).reshape(1, c, a.height, a.width)
    txt = philox_normal(a.seed, n_txt, n_lat).reshape(1, a.text, d)
    mask = (np.arange(a.text) < a.valid).astype(np.int64)[None]
    kw = dict(
        hidden_states=torch.from_numpy(lat),
        timestep=torch.tensor([a.timestep], dtype=torch.float32),
        encoder_hidden_states=torch.from_numpy(txt),
        encoder_attention_mask=torch.from_numpy(mask),
    )
    if a.text2 > 0:
        txt2 = philox_normal(a.seed, a.text2 * d2, n_lat + n_txt).reshape(1, a.text2, d2)
        mask2 = (np.arange(a.text2) < a.valid2).astype(np.int64)[None]
        kw["encoder_hidden_states_2"] = torch.from_numpy(txt2)
        kw["encoder_attention_mask_2"] = torch.from_numpy(mask2)
    if cfg.get("guidance_embeds"):
        kw["guidance"] = torch.tensor([3250.0], dtype=torch.float32)
    if cfg.get("use_meanflow"):
        kw["timestep_r"] = torch.tensor([0.0], dtype=torch.float32)
    return kw


def check_args(cfg, a):
    if a.valid is None:
        a.valid = a.text
    if a.valid2 is None:
        a.valid2 = a.text2
    if not (1 <= a.valid <= a.text) or not (0 <= a.valid2 <= a.text2):
        sys.exit("bench_dit_torch: --valid/--valid2 must lie in 1..--text / 0..--text2")
    ph, pw = cfg["patch_size"][:2]
    if a.height % ph or a.width % pw:
        sys.exit("bench_dit_torch: latent %dx%d is not a multiple of the patch size %dx%d"
                 % (a.height, a.width, ph, pw))
    if a.text2 > 0 and not cfg.get("text_embed_2_dim"):
        sys.exit("bench_dit_torch: --text2 %d but %s has no ByT5 projection; use --text2 0"
                 % (a.text2, a.model_dir))


def match_byt5_width(model_dir):
    """diffusers fixes the ByT5 projection's hidden width at 2048; the tiny
    test models use a narrower one (tiny_byt5.py), read here from the weights
    as sdc does."""
    import glob

    from safetensors import safe_open

    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        with safe_open(path, framework="pt") as f:
            if "context_embedder_2.linear_1.weight" in f.keys():
                width = f.get_slice("context_embedder_2.linear_1.weight").get_shape()[0]
                break
    else:
        return
    if width == 2048:
        return
    import tiny_byt5

    if width != tiny_byt5.TINY_BYT5_HIDDEN:
        sys.exit("bench_dit_torch: %s: ByT5 projection width %d is neither diffusers' 2048 "
                 "nor the tiny models' %d" % (model_dir, width, tiny_byt5.TINY_BYT5_HIDDEN))


def versions():
    import diffusers
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": numpy.__version__,
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "torch_parallel": torch.__config__.parallel_info().splitlines()[-1].strip(),
    }


def run(a):
    with open(os.path.join(a.model_dir, "config.json")) as f:
        cfg = json.load(f)
    check_args(cfg, a)

    import torch
    from diffusers import HunyuanImageTransformer2DModel

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    match_byt5_width(a.model_dir)
    kw = make_inputs(cfg, a)
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    model = HunyuanImageTransformer2DModel.from_pretrained(a.model_dir, torch_dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    rss_after = peak_rss_mb()

    times, cpu_times = [], []
    with torch.inference_mode():
        for i in range(a.warmup + a.reps):
            t0, c0 = time.perf_counter(), time.process_time()
            out = model(**kw, return_dict=False)[0]
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if i >= a.warmup:
                times.append(dt)
                cpu_times.append(dc)
    out = out.double()
    n_txt = a.text + a.text2  # diffusers keeps padded tokens, masked out of attention
    res = {
        "impl": "torch-diffusers",
        "median_s": round(statistics.median(times), 6),
        "min_s": round(min(times), 6),
        "max_s": round(max(times), 6),
        "reps": a.reps,
        "warmup": a.warmup,
        "times_s": [round(t, 6) for t in times],
        "cpu_median_s": round(statistics.median(cpu_times), 6),
        "cpu_times_s": [round(t, 6) for t in cpu_times],
        "load_s": round(load_s, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_load_mb": round(rss_before, 1),
        "rss_after_load_mb": round(rss_after, 1),
        "threads": torch.get_num_threads(),
        "model_dir": a.model_dir,
        "hidden": cfg["num_attention_heads"] * cfg["attention_head_dim"],
        "heads": cfg["num_attention_heads"],
        "dual_blocks": cfg["num_layers"],
        "single_blocks": cfg["num_single_layers"],
        "height": a.height,
        "width": a.width,
        "text": a.text,
        "text2": a.text2,
        "valid": a.valid,
        "valid2": a.valid2,
        "image_tokens": (a.height // cfg["patch_size"][0]) * (a.width // cfg["patch_size"][1]),
        "text_tokens_in_blocks": n_txt,
        "timestep": a.timestep,
        "seed": a.seed,
        "out_finite": bool(torch.isfinite(out).all()),
        "out_mean_abs": float("%.7g" % out.abs().mean().item()),
        "out_rms": float("%.7g" % out.pow(2).mean().sqrt().item()),
        "versions": versions(),
    }
    if a.json:
        print(json.dumps(res))
        return
    print("torch-diffusers DiT forward: %s" % a.model_dir)
    print("  tokens: %d image + %d text, %d threads, %d reps after %d warmup"
          % (res["image_tokens"], n_txt, res["threads"], a.reps, a.warmup))
    print("  median %.4f s, CPU time %.4f s, load %.3f s"
          % (res["median_s"], res["cpu_median_s"], load_s))
    print("  peak RSS %.1f MB; output mean |x| %.6g%s"
          % (res["peak_rss_mb"], res["out_mean_abs"], "" if res["out_finite"] else " (NOT FINITE)"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model", help="write a benchmark transformer directory")
    m.add_argument("--out", required=True, help="directory to create (replaced if present)")
    m.add_argument("--config", choices=("mid", "tiny"), required=True)
    r = sub.add_parser("run", help="time diffusers' forward")
    r.add_argument("--model-dir", required=True)
    r.add_argument("--height", type=int, default=32)
    r.add_argument("--width", type=int, default=32)
    r.add_argument("--text", type=int, default=224)
    r.add_argument("--text2", type=int, default=32)
    r.add_argument("--valid", type=int, default=None)
    r.add_argument("--valid2", type=int, default=None)
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--warmup", type=int, default=1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--timestep", type=float, default=500.0)
    r.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.cmd == "make-model":
        make_model(a)
        return
    for name in ("height", "width", "text", "reps"):
        if getattr(a, name) < 1:
            p.error("--%s must be >= 1" % name)
    if a.text2 < 0 or a.warmup < 0 or a.threads < 0:
        p.error("--text2, --warmup and --threads must be >= 0")
    run(a)


if __name__ == "__main__":
    main()
