"""The synthetic world of the sdc demo model: coloured shapes in three slots.

An image is 64 x 64: a flat background colour and one to three shapes
(circle, square, triangle, star) centred in the left, centre or right slot.
Every image has captions in English and Chinese, several phrasings each.
The same geometry (slot centres, shape radius, palette) is written into the
held-out prompt list that tools/sdc-eval-demo.c checks, so the two must
agree: change them together.
"""

import random

import numpy as np
import PIL.Image
import PIL.ImageDraw

SIZE = 64
SLOT_X = {"left": 12, "center": 32, "right": 52}
SLOT_Y = 32
RADIUS = 8.5
POSITIONS = ("left", "center", "right")
SHAPES = ("circle", "square", "triangle", "star")
# Well separated in RGB, so that nearest-palette classification is stable.
PALETTE = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (250, 220, 0),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "purple": (140, 50, 190),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLOURS = tuple(PALETTE)

ZH_COLOUR = {"red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色",
             "purple": "紫色", "white": "白色", "black": "黑色"}
ZH_SHAPE = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形"}
ZH_POS = {"left": "左边", "center": "中间", "right": "右边"}
EN_POS = {"left": ("on the left", "at the left"), "center": ("in the center", "in the middle"),
          "right": ("on the right", "at the right")}

SUPERSAMPLE = 4


def random_scene(rng):
    """(background, ((position, colour, shape), ...)) sorted by position."""
    bg = rng.choice(COLOURS)
    n = rng.choice((1, 1, 2, 2, 3))
    slots = sorted(rng.sample(POSITIONS, n), key=POSITIONS.index)
    objs = tuple((p, rng.choice([c for c in COLOURS if c != bg]), rng.choice(SHAPES)) for p in slots)
    return bg, objs


def scene_key(scene):
    bg, objs = scene
    return bg + "|" + ",".join(":".join(o) for o in objs)


def _shape_points(shape, cx, cy, r):
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.42 * r
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a) + 0.1 * r))
        return pts
    raise ValueError(shape)


def render(scene):
    """uint8 [SIZE, SIZE, 3], antialiased by drawing at 4x and downsampling."""
    bg, objs = scene
    s = SUPERSAMPLE
    img = PIL.Image.new("RGB", (SIZE * s, SIZE * s), PALETTE[bg])
    draw = PIL.ImageDraw.Draw(img)
    for pos, colour, shape in objs:
        cx, cy, r = (SLOT_X[pos] + 0.5) * s, (SLOT_Y + 0.5) * s, RADIUS * s
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=PALETTE[colour])
        else:
            draw.polygon(_shape_points(shape, cx, cy, r), fill=PALETTE[colour])
    img = img.resize((SIZE, SIZE), PIL.Image.BOX)
    return np.asarray(img, dtype=np.uint8)


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def caption_en(scene, rng):
    bg, objs = scene
    parts = [f"{_article(c)} {c} {s} {rng.choice(EN_POS[p])}" for p, c, s in objs]
    if rng.random() < 0.5:
        parts = parts[::-1] if rng.random() < 0.3 else parts
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    t = rng.randrange(3)
    if t == 0:
        return f"{body}, {bg} background"
    if t == 1:
        return f"{body} on a {bg} background"
    return f"{bg} background with {body}"


def caption_zh(scene, rng):
    bg, objs = scene
    parts = []
    for p, c, s in objs:
        t = rng.randrange(3)
        if t == 0:
            parts.append(f"{ZH_POS[p]}是一个{ZH_COLOUR[c]}的{ZH_SHAPE[s]}")
        elif t == 1:
            parts.append(f"{ZH_POS[p]}有一个{ZH_COLOUR[c]}{ZH_SHAPE[s]}")
        else:
            parts.append(f"一个{ZH_COLOUR[c]}的{ZH_SHAPE[s]}在{ZH_POS[p]}")
    if rng.random() < 0.15:
        parts = parts[::-1]
    body = "，".join(parts)
    t = rng.randrange(3)
    if t == 0:
        return f"{body}，{ZH_COLOUR[bg]}背景"
    if t == 1:
        return f"{ZH_COLOUR[bg]}背景上，{body}"
    return f"{body}，背景是{ZH_COLOUR[bg]}"


def caption(scene, lang, rng):
    return caption_en(scene, rng) if lang == "en" else caption_zh(scene, rng)


def heldout_scenes(seed, n_by_count=(12, 8, 4), exclude=()):
    """n_by_count[k] distinct scenes of k + 1 shapes, none of them in exclude
    (scene keys). Training leaves out the ones drawn with the held-out seed;
    the validation list draws with its own seed and excludes those."""
    rng = random.Random(seed)
    out, seen = [], set(exclude)
    for k, n in enumerate(n_by_count):
        while sum(1 for s in out if len(s[1]) == k + 1) < n:
            sc = random_scene(rng)
            if len(sc[1]) != k + 1 or scene_key(sc) in seen:
                continue
            seen.add(scene_key(sc))
            out.append(sc)
    return out
