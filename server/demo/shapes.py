"""Generated pictures of coloured shapes with captions: the demo model's whole world."""

import math

import numpy as np
from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 30, 35),
    "green": (30, 165, 60),
    "blue": (35, 70, 225),
    "yellow": (245, 220, 30),
    "purple": (135, 45, 175),
    "orange": (245, 135, 20),
}

SHAPES = ("circle", "square", "triangle", "star")

# Uniform article on purpose: callers can rebuild a caption from its parts.
TEMPLATES = (
    "a photo of a {color} {shape}",
    "a {color} {shape}",
    "a picture of a {color} {shape}",
    "a drawing of a {color} {shape}",
    "an image of a {color} {shape}",
    "a {color} {shape} on a plain background",
    "a photo of the {color} {shape}",
)

# Random streams are seeded with (stream, seed): held-out pictures never come
# from the training stream, whatever seeds are chosen.
TRAIN_STREAM = 1
HELD_OUT_STREAM = 2

# Backgrounds keep at least this RGB distance from every palette colour, so a
# picture has exactly one coloured thing in it and the caption is unambiguous.
_MIN_BG_DISTANCE = 110.0
_NOISE = 10  # max per-channel noise amplitude
_COLOR_JITTER = 12


def caption(color, shape):
    """Return the canonical (zero-shot) caption, e.g. "a photo of a red circle"."""
    return TEMPLATES[0].format(color=color, shape=shape)


def all_classes():
    """Return every (colour, shape) pair in a fixed order."""
    return [(c, s) for c in COLORS for s in SHAPES]


def all_captions():
    """Return the canonical caption of every class, in all_classes() order."""
    return [caption(c, s) for c, s in all_classes()]


def random_caption(color, shape, rng):
    """Return a caption for training, from a randomly chosen template."""
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(color=color, shape=shape)


def random_size(rng):
    """Return a random (w, h) between 48 and 400 px with aspect ratio up to 2:1."""
    short = int(rng.integers(48, 241))
    long = min(400, int(short * rng.uniform(1.0, 2.0)))
    return (long, short) if rng.random() < 0.5 else (short, long)


def _background(color, rng):
    """Pick a background colour far from all palette colours (hence from the shape's)."""
    palette = np.array(list(COLORS.values()), dtype=np.float64)
    while True:
        # Low-saturation tones: greys, creams, browns, slates.
        base = rng.uniform(0, 255)
        bg = np.clip(base + rng.uniform(-40, 40, size=3), 0, 255)
        if np.linalg.norm(palette - bg, axis=1).min() >= _MIN_BG_DISTANCE:
            return tuple(int(v) for v in bg)


def _polygon(shape, cx, cy, r, angle):
    """Return the vertices of a square, triangle or star with circumradius r."""
    if shape == "square":
        radii, count = [r], 4
    elif shape == "triangle":
        radii, count = [r], 3
    else:  # star: alternate outer and inner radius
        radii, count = [r, 0.42 * r], 10
    return [
        (cx + radii[i % len(radii)] * math.cos(angle + 2 * math.pi * i / count),
         cy + radii[i % len(radii)] * math.sin(angle + 2 * math.pi * i / count))
        for i in range(count)
    ]


def draw_shape(color, shape, rng, size=(96, 96)):
    """Draw one `color` `shape` on a random plain background; deterministic given rng."""
    w, h = size
    image = Image.new("RGB", (w, h), _background(color, rng))
    # Keep the shape inside the centred square, which survives the model's
    # resize-shortest-side + centre-crop preprocessing.
    side = min(w, h)
    x0, y0 = (w - side) / 2, (h - side) / 2
    r = side * rng.uniform(0.18, 0.38)
    cx = x0 + rng.uniform(r, side - r)
    cy = y0 + rng.uniform(r, side - r)
    fill = tuple(int(np.clip(v + rng.integers(-_COLOR_JITTER, _COLOR_JITTER + 1), 0, 255))
                 for v in COLORS[color])
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=fill)
    # Uniform integer noise: as good as Gaussian here and ~10x cheaper to draw.
    noise = rng.integers(-_NOISE, _NOISE + 1, size=(h, w, 3), dtype=np.int16)
    pixels = np.asarray(image, dtype=np.int16) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def held_out_set(seed, n):
    """Return n (image, colour, shape) triples, classes balanced, from a non-training stream."""
    # The "held-out" tag gives a random stream disjoint from training's for any seed.
    rng = np.random.default_rng([HELD_OUT_STREAM, seed])
    classes = all_classes()
    order = [classes[i % len(classes)] for i in range(n)]
    rng.shuffle(order)
    return [(draw_shape(c, s, rng, size=random_size(rng)), c, s) for c, s in order]

