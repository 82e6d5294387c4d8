"""Tiles the demo model's images into docs/demo-grid.png for the README.

    python tools/train_demo/make_grid.py [--images eval-demo-out] [--ids 02,06,...]

Reads IDen.png and IDzh.png (from `make eval-demo`) for each scene id and
writes one column per scene: the English prompt's image above the Chinese
one, each shown at 2x. The README lists the prompts beside the grid.
"""

import argparse
import os

import PIL.Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=os.path.join(REPO, "eval-demo-out"))
    ap.add_argument("--ids", default="02,06,07,10,12,16,19,21")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "demo-grid.png"))
    args = ap.parse_args()
    ids = args.ids.split(",")
    scale, gap = 2, 4
    cell = 64 * scale
    grid = PIL.Image.new("RGB", (len(ids) * (cell + gap) - gap, 2 * cell + gap), (255, 255, 255))
    for col, sid in enumerate(ids):
        for row, lang in enumerate(("en", "zh")):
            img = PIL.Image.open(os.path.join(args.images, f"{sid}{lang}.png")).convert("RGB")
            img = img.resize((cell, cell), PIL.Image.NEAREST)
            grid.paste(img, (col * (cell + gap), row * (cell + gap)))
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
