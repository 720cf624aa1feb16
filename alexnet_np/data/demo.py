"""The built-in demo data set: ten generated classes for runs without ImageNet.

Dimensions:
    H, W  generated image size (80 x 92)    C  colour channels (3, RGB)

``make_demo_dataset(root, seed=0)`` writes ``root/train/<class>/<class>_NNNN.JPEG`` and
``root/val/...`` (150 and 30 images per class by default) plus ``root/class_names.txt``,
the same layout as ImageNet's, so it goes through the same ``prepare`` as real data.
``Demo(root)`` is the same as a source (``source.Source``): the folder tree, made on first
use, with the class names of ``CLASSES``. ``demo_cache(root_dir)`` makes it (if needed) and
prepares it at ``DEMO.image_size``, returning the cache folder. Both skip work already done.

Each image is a shape or texture (the class) in a random colour, at a random position,
size and rotation, on a random two-colour gradient with clutter (lines and small blobs of
other colours) and a little noise, saved as a JPEG. The class is in the geometry, not in
the colour, so a small CNN has to learn shapes; it does so in a few epochs. Every image
comes from its own generator, ``default_rng([seed, split, class, index])``, so the data
set is the same whatever order or machine makes it.
"""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from ..config import DEMO
from .folders import FolderTree

CLASSES = (  # folder name, printable name
    ("circle", "filled circle"),
    ("cross", "plus-shaped cross"),
    ("diamond", "filled diamond"),
    ("frame", "hollow square frame"),
    ("hstripes", "horizontal stripes"),
    ("ring", "ring"),
    ("square", "filled square"),
    ("star", "five-pointed star"),
    ("triangle", "filled triangle"),
    ("vstripes", "vertical stripes"),
)
SIZE = (92, 80)          # (W, H): not square, so prepare's shorter-side resize is exercised
SPLITS = {"train": 150, "val": 30}
DONE_FILE = ".demo-complete.json"


def _colour(rng, avoid=None, gap=120):
    """A random RGB colour at least ``gap`` (sum of absolute differences) from ``avoid``."""
    while True:
        colour = rng.integers(0, 256, size=3)                    # (C,)
        if avoid is None or np.abs(colour - avoid).sum() >= gap:
            return tuple(int(c) for c in colour)


def _background(rng, width, height):
    """A gradient between two random colours, in a random direction: (H, W, C) float."""
    a, b = rng.integers(0, 256, size=(2, 3)).astype(np.float64)  # (C,), (C,)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width]                          # (H, W)
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)              # (H, W) in 0..1
    return a + (b - a) * t[:, :, None]                            # (H, W, C)


def _polygon(cx, cy, radius, angle, points, inner=None):
    """Vertices of a regular polygon (or a star when ``inner`` is a ratio)."""
    count = points * (2 if inner else 1)
    out = []
    for k in range(count):
        r = radius * (inner if inner and k % 2 else 1.0)
        t = angle + 2 * np.pi * k / count
        out.append((cx + r * np.cos(t), cy + r * np.sin(t)))
    return out


def _stripes(draw, cx, cy, radius, colour, horizontal, rng):
    """A square patch of 3 to 4 bars, across (horizontal) or along (vertical)."""
    bars = int(rng.integers(3, 5))
    width = 2 * radius / (2 * bars - 1)
    for k in range(bars):
        lo = -radius + 2 * k * width
        if horizontal:
            draw.rectangle([cx - radius, cy + lo, cx + radius, cy + lo + width], fill=colour)
        else:
            draw.rectangle([cx + lo, cy - radius, cx + lo + width, cy + radius], fill=colour)


def _shape(draw, name, cx, cy, radius, colour, rng):
    """Draw class ``name`` centred at (cx, cy) with size ``radius``."""
    angle = rng.uniform(-0.25, 0.25)  # a slight rotation; stripes stay axis-aligned
    if name == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif name == "ring":
        w = max(3, radius * 0.35)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=colour, width=int(w))
    elif name == "square":
        draw.polygon(_polygon(cx, cy, radius * 1.2, np.pi / 4 + angle, 4), fill=colour)
    elif name == "frame":
        draw.polygon(_polygon(cx, cy, radius * 1.25, np.pi / 4 + angle, 4), outline=colour,
                     width=int(max(3, radius * 0.3)))
    elif name == "diamond":
        draw.polygon(_polygon(cx, cy, radius * 1.2, angle, 4), fill=colour)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, radius * 1.2, -np.pi / 2 + angle, 3), fill=colour)
    elif name == "star":
        draw.polygon(_polygon(cx, cy, radius * 1.2, -np.pi / 2 + angle, 5, inner=0.45), fill=colour)
    elif name == "cross":
        w = radius * 0.35
        for dx, dy in [(radius, w), (w, radius)]:
            draw.rectangle([cx - dx, cy - dy, cx + dx, cy + dy], fill=colour)
    elif name == "hstripes":
        _stripes(draw, cx, cy, radius, colour, True, rng)
    elif name == "vstripes":
        _stripes(draw, cx, cy, radius, colour, False, rng)
    else:
        raise ValueError(name)


def demo_image(seed, split_index, label, index):
    """One demo image of class ``label``: a PIL RGB image of ``SIZE``."""
    rng = np.random.default_rng([seed, split_index, label, index])
    width, height = SIZE
    base = _background(rng, width, height)                                  # (H, W, C)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):                                 # clutter
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        colour = _colour(rng)
        if rng.random() < 0.5:
            draw.line([x0, y0, x0 + rng.uniform(-30, 30), y0 + rng.uniform(-30, 30)],
                      fill=colour, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(2, 5)
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    radius = rng.uniform(11, 20)
    margin = radius + 4
    cx = rng.uniform(width / 2 - 10, width / 2 + 10)
    cy = rng.uniform(max(margin, height / 2 - 8), min(height - margin, height / 2 + 8))
    average = base[int(cy), int(cx)]                                         # (C,)
    _shape(draw, CLASSES[label][0], cx, cy, radius, _colour(rng, average, gap=200), rng)
    pixels = np.asarray(image).astype(np.float64)                             # (H, W, C)
    pixels += rng.normal(0, 6, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def make_demo_dataset(root, seed=0, per_class=None):
    """Write the demo data set under ``root`` (skipped when already there); returns ``root``.

    ``per_class`` maps split to images per class (default ``SPLITS``: train 150, val 30).
    """
    per_class = dict(SPLITS if per_class is None else per_class)
    marker = os.path.join(root, DONE_FILE)
    recipe = {"seed": seed, "per_class": per_class, "size": SIZE, "classes": [c for c, _ in CLASSES]}
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == json.loads(json.dumps(recipe)):
                return root
        raise ValueError(f"{root} holds a demo data set made with other settings: remove it first")
    for split_index, (split, count) in enumerate(sorted(per_class.items())):
        for label, (name, _) in enumerate(CLASSES):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for index in range(count):
                image = demo_image(seed, split_index, label, index)
                image.save(os.path.join(folder, f"{name}_{index:04d}.JPEG"), quality=90)
    with open(os.path.join(root, "class_names.txt"), "w") as f:
        f.writelines(f"{name} {printable}\n" for name, printable in CLASSES)
    with open(marker, "w") as f:
        json.dump(recipe, f)
    return root


class Demo(FolderTree):
    """The demo data set under ``root`` as a source: a folder tree (written here when it is not
    there yet, ``make_demo_dataset``) whose class names are those of ``CLASSES``."""

    def __init__(self, root, seed=0, per_class=None):
        super().__init__(make_demo_dataset(root, seed, per_class))

    def class_names(self, classes, path=None):
        printable = dict(CLASSES)
        return super().class_names(classes, path) if path is not None else [printable[c] for c in classes]


def demo_cache(root_dir, seed=0, workers=None, progress=False, image_size=None):
    """Make the demo data set in ``root_dir/demo-data`` and its cache in ``root_dir/demo-cache-<size>``.

    The cache has ``image_size`` images (default ``DEMO.image_size``, 76; Figure 1's
    experiment asks for 32, CIFAR-10's size). Returns the cache folder.
    """
    from .prepare import prepare  # prepare imports data; keep this module light for tests
    size = image_size or DEMO.image_size
    source = Demo(os.path.join(root_dir, "demo-data"), seed)
    # The project's own default folder: a cache of another copy of the demo data (a checkout
    # copied without its files' times) makes a new cache beside it, never an error.
    return prepare(source, os.path.join(root_dir, f"demo-cache-{size}"),
                   image_size=size, workers=workers, progress=progress, elsewhere=True)
