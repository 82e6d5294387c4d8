"""Makes tests/data/qwen2.5-tokenizer/ from the Qwen BPE ranks in dashscope.

    pip download --no-deps -d /tmp/ds dashscope==2.0.2
    unzip -q /tmp/ds/dashscope-2.0.2-py3-none-any.whl -d /tmp/ds/x
    python tools/goldens/make_qwen_tokenizer.py \
        --tiktoken /tmp/ds/x/dashscope/resources/qwen.tiktoken \
        --license /tmp/ds/x/dashscope-2.0.2.dist-info/licenses/LICENSE
    # optional: compare with another Qwen2/2.5/3 tokenizer directory
    python tools/goldens/make_qwen_tokenizer.py --tiktoken ... --cross-check DIR

Writes vocab.json, merges.txt and tokenizer_config.json (the layout HF's
Qwen2Tokenizer reads) plus LICENSE. The full tokenizer.json (about 7 MB) is
not committed; tokenizer_json() below assembles it in memory exactly as the
Qwen2.5 release lays it out, for the reference ids made by
make_tokenizer_corpus.py.

Why a conversion: qwen.tiktoken (base64 token, rank) is the Qwen BPE
vocabulary as Alibaba ships it under Apache-2.0; Qwen2's vocab.json maps the
GPT-2 byte-to-unicode spelling of each token to its rank, and merges.txt holds,
for every multi-byte token in rank order, the two parts that tiktoken's
byte-pair merge (restricted to lower ranks) leaves just before the token
forms. --cross-check confirms the result is byte-identical to a released
Qwen vocab.json / merges.txt.
"""

import argparse
import base64
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, "tests", "data", "qwen2.5-tokenizer")

# The Qwen2 pre-tokenizer split (tokenizer.json of every Qwen2/2.5 release).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5 / Qwen2.5-VL added tokens: (id, content, special). All have
# lstrip = rstrip = single_word = normalized = false.
QWEN25_ADDED = [
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def load_tiktoken(path):
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def split_last_merge(tok, ranks, max_rank):
    """tiktoken's merge loop on tok's bytes using only ranks < max_rank: the
    two parts left are the pair whose merge creates tok."""
    parts = [bytes([c]) for c in tok]
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def convert(ranks):
    b2u = bytes_to_unicode()
    spell = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    vocab = {}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vocab[spell(tok)] = rank
        if len(tok) == 1:
            continue
        parts = split_last_merge(tok, ranks, rank)
        if len(parts) != 2:
            sys.exit(f"token {tok!r} (rank {rank}) is not reachable by merges")
        merges.append(f"{spell(parts[0])} {spell(parts[1])}")
    return vocab, merges


def tokenizer_config():
    decoder = {
        str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": s}
        for i, c, s in QWEN25_ADDED
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [c for i, c, s in QWEN25_ADDED[1:14]],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def read_vocab_merges(d):
    with open(os.path.join(d, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    merges = []
    with open(os.path.join(d, "merges.txt"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            line = line.rstrip("\n")
            if (i == 0 and line.startswith("#version")) or not line:
                continue
            merges.append(line)
    return vocab, merges


def tokenizer_json(d):
    """The tokenizer.json of the Qwen2.5 release, assembled from d's vocab.json,
    merges.txt and tokenizer_config.json."""
    vocab, merges = read_vocab_merges(d)
    with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    added = [dict({"id": int(i)}, **{k: t[k] for k in
                                     ("content", "single_word", "lstrip", "rstrip",
                                      "normalized", "special")})
             for i, t in sorted(cfg["added_tokens_decoder"].items(), key=lambda kv: int(kv[0]))]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated",
             "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [m.split(" ") for m in merges]},
    }


def hf_tokenizer(d):
    """tokenizers.Tokenizer for directory d (tokenizer.json if present)."""
    from tokenizers import Tokenizer
    path = os.path.join(d, "tokenizer.json")
    if os.path.exists(path):
        return Tokenizer.from_file(path)
    return Tokenizer.from_str(json.dumps(tokenizer_json(d), ensure_ascii=False))


def cross_check(vocab, merges, other):
    """Compares with another Qwen tokenizer directory (vocab.json + merges.txt,
    or tokenizer.json)."""
    if os.path.exists(os.path.join(other, "vocab.json")):
        ov, om = read_vocab_merges(other)
    else:
        with open(os.path.join(other, "tokenizer.json"), encoding="utf-8") as f:
            m = json.load(f)["model"]
        ov = m["vocab"]
        om = [x if isinstance(x, str) else " ".join(x) for x in m["merges"]]
    ok = ov == vocab and om == merges
    print(f"cross-check {other}: vocab {len(ov)} {'==' if ov == vocab else '!='} ours, "
          f"merges {len(om)} {'==' if om == merges else '!='} ours")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiktoken", required=True, help="dashscope/resources/qwen.tiktoken")
    ap.add_argument("--license", help="licence file to copy as LICENSE")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--cross-check", action="append", default=[], metavar="DIR")
    ap.add_argument("--write-tokenizer-json", metavar="PATH",
                    help="also write the assembled tokenizer.json here")
    args = ap.parse_args()

    ranks = load_tiktoken(args.tiktoken)
    vocab, merges = convert(ranks)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vocab.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")))
    with open(os.path.join(args.out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(), f, ensure_ascii=False, indent=2)
        f.write("\n")
    if args.license:
        shutil.copyfile(args.license, os.path.join(args.out, "LICENSE"))
    print(f"wrote {args.out}: {len(vocab)} tokens, {len(merges)} merges, "
          f"{len(QWEN25_ADDED)} added tokens")
    if args.write_tokenizer_json:
        with open(args.write_tokenizer_json, "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(args.out), f, ensure_ascii=False)
    ok = all([cross_check(vocab, merges, d) for d in args.cross_check])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
