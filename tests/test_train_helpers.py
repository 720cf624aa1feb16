"""Shared by the training tests: a tiny generated data set and a tiny configuration.

The smallest input the paper's layer stack accepts is 67 (conv1 15x15 -> pool1 7 -> pool2 3
-> pool5 1). With a handful of channels a step takes a few tens of milliseconds on a CPU.
The data: four classes told apart by colour (red, green, blue, yellow, with strong pixel
noise), 15 training and 5 validation images each, written as PNGs in the ImageFolder
layout and prepared at 76 by ``prepare`` like any data set. A net this small learns them
within a few epochs, so "the loss falls" is a real check. ``init_std`` is 0.1: with the
paper's 0.01 such narrow layers pass almost no signal and the loss stays at ln K (see the
stall test and docs/training.md).
"""
import os
import time

import numpy as np
from PIL import Image

from alexnet_np.config import Config

COLOURS = {"blue": (40, 40, 200), "green": (40, 200, 40), "red": (200, 40, 40), "yellow": (200, 200, 40)}

TINY = Config(num_classes=4, input_size=67, conv_channels=(16, 32, 32, 32, 32), fc_units=(64, 64),
              image_size=76, batch_size=10, epochs=2, lr=0.01, lr_patience=20, init_std=0.1)

# The same as options of train.py (made from the Config fields).
TINY_ARGS = ["--input-size", "67", "--conv-channels", "16,32,32,32,32", "--fc-units", "64,64",
             "--batch-size", "10", "--epochs", "2", "--lr-patience", "20", "--init-std", "0.1",
             "--device", "cpu", "--no-progress"]


def make_tiny_images(root, per_class=(15, 5), seed=0):
    """Write root/train/<colour>/NN.png and root/val/...; returns root."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), per_class):
        for name, colour in COLOURS.items():
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                pixels = np.array(colour)[None, None, :] + rng.normal(0, 40, (80, 84, 3))  # (H, W, C)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:02d}.png"))
    return root


def make_tiny_cache(root, per_class=(15, 5)):
    """Generate and prepare the tiny data set under ``root``; returns the cache folder."""
    from alexnet_np.data.prepare import prepare
    source = make_tiny_images(os.path.join(root, "images"), per_class)
    return prepare(source, os.path.join(root, "cache"), image_size=76, workers=1, progress=False,
                   print_fn=lambda *a: None)


def arrays_of(path):
    """{name: array} of a checkpoint file, every record but the metadata."""
    with np.load(path) as z:
        return {name: z[name] for name in z.files if name != "meta"}


def assert_bitwise_equal(a, b):
    assert sorted(a) == sorted(b)
    different = [name for name in a if not np.array_equal(a[name], b[name])]
    assert not different, f"{len(different)} arrays differ, e.g. {different[:3]}: max |diff| " + \
        str(max(float(np.abs(a[n].astype(np.float64) - b[n]).max()) for n in different))


def wait_for_logged_steps(process, out, steps=3, timeout=120):
    """Wait until the run writing to ``out`` has logged ``steps`` step records (the process
    must still be running: a finished or crashed one fails the test with its output)."""
    log = os.path.join(out, "log.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(log) and sum('"kind": "step"' in line for line in open(log)) >= steps:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
