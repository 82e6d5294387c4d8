"""HF `tokenizers` side of the tokenizer benchmark (bench/bench_tokenizer.c).

    python tools/goldens/bench_tokenizer_hf.py --tokenizer tests/data/qwen2.5-tokenizer \
        --text FILE [--lines] [--reps R] [--warmup W] [--json]

Encodes the whole text with Tokenizer.encode(text, add_special_tokens=False),
one call per repetition, on one thread (TOKENIZERS_PARALLELISM=false and
RAYON_NUM_THREADS=1 are set before the import; encode of a single text does
not use the thread pool anyway, only encode_batch does). The tokenizer is the
one make_tokenizer_corpus.py uses as reference: tokenizer.json if the
directory has one, else the Qwen2.5 tokenizer.json assembled from
vocab.json + merges.txt. With --lines each line (split at "\n") is encoded
by its own call, as bench_tokenizer --lines does. Prints the same fields as bench_tokenizer --json,
including the ids checksum, so the runner can check both sides agree.
"""

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_qwen_tokenizer  # noqa: E402


def checksum(ids):
    """sum((id + 1) * P**i) mod 2**64, P = 1099511628211 (as bench_tokenizer.c)."""
    a = np.asarray(ids, dtype=np.uint64) + np.uint64(1)
    p = np.full(len(a), 1099511628211, dtype=np.uint64)
    if len(p):
        p[0] = 1
    with np.errstate(over="ignore"):
        powers = np.cumprod(p, dtype=np.uint64)
        return int(np.sum(a * powers, dtype=np.uint64))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--lines", action="store_true")
    args = ap.parse_args()

    with open(args.text, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8", errors="replace")
    pieces = text.split("\n") if args.lines else [text]
    if args.lines and text.endswith("\n"):
        pieces.pop()  # bench_tokenizer stops at the last newline too
    t0 = time.perf_counter()
    tok = make_qwen_tokenizer.hf_tokenizer(args.tokenizer)
    load_s = time.perf_counter() - t0
    times = []
    ids = []
    for r in range(args.warmup + args.reps):
        a = time.perf_counter()
        encs = [tok.encode(p, add_special_tokens=False) for p in pieces]
        b = time.perf_counter()
        ids = [i for e in encs for i in e.ids]
        if r >= args.warmup:
            times.append(b - a)
    med = statistics.median(times)
    import tokenizers
    out = {
        "impl": "hf-tokenizers", "mode": "lines" if args.lines else "whole", "version": tokenizers.__version__, "bytes": len(raw),
        "tokens": len(ids), "ids_checksum": f"{checksum(ids):016x}", "load_s": round(load_s, 4),
        "median_s": round(med, 6), "min_s": round(min(times), 6),
        "mb_per_s": round(len(raw) / 1e6 / med, 3), "tokens_per_s": round(len(ids) / med),
        "reps": args.reps, "warmup": args.warmup, "threads": 1,
        "times_s": [round(t, 6) for t in times],
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"hf-tokenizers {tokenizers.__version__}: {len(raw)} bytes -> {len(ids)} tokens; "
              f"median {med:.4f} s: {out['mb_per_s']:.2f} MB/s, {out['tokens_per_s']} tokens/s; "
              f"ids checksum {out['ids_checksum']}")


if __name__ == "__main__":
    main()
