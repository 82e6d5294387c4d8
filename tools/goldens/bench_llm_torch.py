"""The PyTorch side of bench/run_llm.sh, and the maker of its model.

    python tools/goldens/bench_llm_torch.py make-model --out DIR [--config mid]
    python tools/goldens/bench_llm_torch.py run --model-dir DIR [--tokens N] [--skip S]
        [--threads T] [--reps R] [--warmup K] [--json]

make-model writes a Qwen2_5_VLForConditionalGeneration with random weights
(BF16 on disk) in the text_encoder/ layout sdc reads. run times, on token
ids id[i] = (i * 2654435761) mod vocab_size:
  --mode same (default): the computation bench/bench_llm.c times: the
      language model with attention mask all ones, the first
      num_layers - skip decoder layers, and the final norm only for skip 0
      (transformers' hidden_states[-(skip + 1)]); no lm_head.
  --mode pipeline: what diffusers' HunyuanImagePipeline runs for a prompt of
      --tokens tokens: the whole model on the ids right-padded to --padded
      (1034) with the matching attention mask, output_hidden_states=True
      (every layer, the final norm and lm_head), then hidden_states[-3].
Float32, torch.inference_mode, the default (sdpa) attention,
torch.set_num_threads(T).
"""

import argparse
import json
import os
import statistics
import sys
import time

CONFIGS = {
    # hidden 1024 = 8 heads x 128, GQA with 2 key/value heads, the MLP ratio of
    # Qwen2.5-VL-7B (18944 / 3584), 4 layers. vocab is smaller than the real
    # 152064 to keep the file small; the lookup is not what is measured.
    "mid": dict(hidden_size=1024, intermediate_size=5504, num_hidden_layers=4, num_attention_heads=8,
                num_key_value_heads=2, vocab_size=32768),
    "tiny": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096),
}


def make_model(args):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    c = CONFIGS[args.config]
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    half = head_dim // 2
    mrope = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    text = dict(c, rms_norm_eps=1e-6, max_position_embeddings=32768, hidden_act="silu",
                rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=mrope))
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=c["hidden_size"],
                  fullatt_block_indexes=[0])
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True))
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    os.makedirs(args.out, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    print(f"bench_llm_torch: wrote {args.out} ({args.config}: {c})", file=sys.stderr)


def run(args):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    lm = model.model.language_model
    cfg = lm.config
    n_layers = cfg.num_hidden_layers
    if not 0 <= args.skip <= n_layers:
        sys.exit(f"bench_llm_torch: --skip {args.skip} outside 0..{n_layers}")
    ids = torch.tensor([[(i * 2654435761) % cfg.vocab_size for i in range(args.tokens)]], dtype=torch.long)
    mask = torch.ones_like(ids)
    if args.mode == "pipeline":
        n_run = n_layers
        pad = args.padded - args.tokens
        ids = torch.nn.functional.pad(ids, (0, pad), value=0)
        mask = torch.nn.functional.pad(mask, (0, pad), value=0)

        def forward():
            hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            return hs[-3][:, : args.tokens]
    else:
        n_run = n_layers - args.skip
        lm.layers = lm.layers[:n_run]
        if args.skip:
            lm.norm = torch.nn.Identity()

        def forward():
            return lm(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    times, cpu = [], []
    with torch.inference_mode():
        for i in range(args.warmup + args.reps):
            a, ac = time.perf_counter(), time.process_time()
            out = forward()
            if i >= args.warmup:
                times.append(time.perf_counter() - a)
                cpu.append(time.process_time() - ac)
    out = out.double()
    try:
        import resource
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:
        peak_mb = None
    res = {
        "impl": "torch",
        "torch": torch.__version__,
        "median_s": round(statistics.median(times), 6),
        "min_s": round(min(times), 6),
        "times_s": [round(t, 6) for t in times],
        "cpu_median_s": round(statistics.median(cpu), 6),
        "reps": args.reps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "tokens": args.tokens,
        "skip": 2 if args.mode == "pipeline" else args.skip,
        "mode": args.mode,
        "padded": args.padded if args.mode == "pipeline" else args.tokens,
        "layers_run": n_run,
        "attn_implementation": cfg._attn_implementation,
        "load_s": round(load_s, 4),
        "peak_rss_mb": None if peak_mb is None else round(peak_mb, 1),
        "out_mean_abs": float(out.abs().mean()),
        "out_rms": float(out.pow(2).mean().sqrt()),
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(f"bench_llm_torch: {args.tokens} tokens, {n_run} layers, {res['threads']} threads: "
              f"median {res['median_s']:.4f} s (mean |out| {res['out_mean_abs']:.6g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-model")
    mk.add_argument("--out", required=True)
    mk.add_argument("--config", default="mid", choices=sorted(CONFIGS))
    r = sub.add_parser("run")
    r.add_argument("--model-dir", required=True)
    r.add_argument("--tokens", type=int, default=256)
    r.add_argument("--skip", type=int, default=0)
    r.add_argument("--mode", default="same", choices=("same", "pipeline"))
    r.add_argument("--padded", type=int, default=1034)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--warmup", type=int, default=1)
    r.add_argument("--json", action="store_true")
    args = ap.parse_args()
    {"make-model": make_model, "run": run}[args.cmd](args)


if __name__ == "__main__":
    main()
