"""Makes the image-resampling golden: Pillow's Lanczos resize of RGB8 images.

    python tools/goldens/make_resize_goldens.py [--out-root DIR]

Writes (relative to the repository root, or --out-root):
    tests/data/goldens/resize_lanczos.safetensors

diffusers' VaeImageProcessor.preprocess resizes a PIL image whose size is
not the requested one with image.resize((width, height),
resample=Image.Resampling.LANCZOS, reducing_gap=None); the refiner pipeline
does this when it refines an image to another size. Each case is one input
picture (make_goldens.init_image_u8, plus saturated stripes so that the
kernel's negative lobes overshoot and the clipping is exercised) and its
resized copy, both as int64 H x W x 3. Byte-identical on rerun.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_goldens as mg  # noqa: E402
import numpy as np  # noqa: E402
import PIL  # noqa: E402
import PIL.Image  # noqa: E402

# (name, (src_w, src_h), (dst_w, dst_h)): up and down, by integer and
# fractional ratios, odd sizes, one axis only, extreme ratios, 1-pixel sides;
# growing one axis while shrinking the other (Pillow's pass order depends on it).
CASES = [
    ("up2_64x48", (64, 48), (128, 96)),
    ("up_odd_37x23", (37, 23), (100, 61)),
    ("up_frac_64x48", (64, 48), (80, 72)),
    ("down3_99x66", (99, 66), (33, 22)),
    ("down_odd_96x64", (96, 64), (33, 17)),
    ("down_strong_160x96", (160, 96), (7, 5)),
    ("width_only_50x40", (50, 40), (75, 40)),
    ("height_only_50x40", (50, 40), (50, 27)),
    ("wider_shorter_64x64", (64, 64), (96, 40)),
    ("wider_shorter_80x50", (80, 50), (81, 49)),
    ("narrower_taller_64x64", (64, 64), (40, 96)),
    ("up_tiny_13x11", (13, 11), (64, 64)),
    ("pixel_1x1", (1, 1), (3, 2)),
    ("line_5x1", (5, 1), (1, 5)),
    ("up4_24x16", (24, 16), (96, 64)),
]


def source_image(w, h, seed):
    img = mg.init_image_u8(h, w, seed).copy()
    # Saturated one-pixel stripes: Lanczos overshoots around them, both
    # below 0 and above 255.
    img[:, ::5] = 255
    img[::7, :] = 0
    return img


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-root", default=mg.REPO)
    args = ap.parse_args()
    gold = os.path.join(args.out_root, "tests", "data", "goldens")
    os.makedirs(gold, exist_ok=True)
    tensors = {}
    clipped = 0
    for i, (name, (sw, sh), (dw, dh)) in enumerate(CASES):
        src = source_image(sw, sh, 500 + i)
        out = np.array(PIL.Image.fromarray(src, mode="RGB").resize(
            (dw, dh), resample=PIL.Image.Resampling.LANCZOS, reducing_gap=None))
        mg.require(out.shape == (dh, dw, 3), f"{name}: shape")
        clipped += int((out == 0).sum() + (out == 255).sum())
        tensors[f"{name}.src"] = mg.i64(src.astype(np.int64))
        tensors[f"{name}.dst"] = mg.i64(out.astype(np.int64))
        print(f"  {name}: {sw}x{sh} -> {dw}x{dh}")
    mg.require(clipped > 0, "no case reaches the clipping")
    path = os.path.join(gold, "resize_lanczos.safetensors")
    meta = mg.versions()
    meta["generator"] = "tools/goldens/make_resize_goldens.py"
    meta["pillow"] = PIL.__version__
    meta["description"] = ("PIL Image.resize((w, h), LANCZOS, reducing_gap=None) of RGB8 images: "
                           "<case>.src and <case>.dst, int64 H x W x 3")
    mg.save_safetensors_sorted(path, tensors, meta)
    mg.require(os.path.getsize(path) < 5_000_000, f"{path} too large")
    print(f"{os.path.relpath(path, mg.REPO)}  ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
