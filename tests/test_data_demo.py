"""The built-in demo data set: deterministic, ImageNet's layout, prepared at DEMO.image_size.

Dimensions: N batch, M images, R stored side (76), S crop side (67), C channels.
"""
import os

import numpy as np

from alexnet_np.nn.backend import Device
from alexnet_np.config import DEMO
from alexnet_np.data.loader import Cache, TrainLoader, eval_batches
from alexnet_np.data.demo import CLASSES, demo_cache, make_demo_dataset


def _tree(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out


def test_the_demo_data_set_is_deterministic_and_in_imagenet_layout(tmp_path):
    small = {"train": 3, "val": 1}
    a = _tree(make_demo_dataset(str(tmp_path / "a"), seed=4, per_class=small))
    b = _tree(make_demo_dataset(str(tmp_path / "b"), seed=4, per_class=small))
    c = _tree(make_demo_dataset(str(tmp_path / "c"), seed=5, per_class=small))
    assert a == b
    assert a.keys() == c.keys() and a != c
    names = [name for name, _ in CLASSES]
    assert sorted(p for p in a if p.startswith("train")) == sorted(
        os.path.join("train", n, f"{n}_{i:04d}.JPEG") for n in names for i in range(3))
    assert len([p for p in a if p.startswith("val")]) == 10
    assert a["class_names.txt"].decode().splitlines()[0] == "circle filled circle"
    assert make_demo_dataset(str(tmp_path / "a"), seed=4, per_class=small) == str(tmp_path / "a")


def test_demo_cache_is_ready_for_the_demo_configuration(tmp_path):
    cache = Cache(demo_cache(str(tmp_path)))
    assert cache.image_size == DEMO.image_size == 76
    assert len(cache.classes) == DEMO.num_classes == 10
    assert cache.class_names[cache.classes.index("hstripes")] == "horizontal stripes"
    assert len(cache.split("train")) == 1500 and len(cache.split("val")) == 300 and cache.skipped == []
    np.testing.assert_array_equal(np.bincount(cache.split("train").labels), [150] * 10)
    # the classes are not told apart by colour: every class has about the same mean colour
    images, labels = cache.split("train").images, cache.split("train").labels
    means = np.array([images[labels == k].mean(axis=(0, 1, 2)) for k in range(10)])  # (K, C)
    assert np.ptp(means, axis=0).max() < 40
    loader = TrainLoader(cache, DEMO, Device(), epoch=0)
    assert len(loader) == 1500 // DEMO.batch_size
    images, labels = next(iter(loader))
    assert images.shape == (DEMO.batch_size, 3, 67, 67) and images.dtype == np.float32
    views, _ = next(iter(eval_batches(cache, "val", DEMO, Device(), ten_crop=True)))
    assert views.shape == (DEMO.batch_size, 10, 3, 67, 67)
    assert demo_cache(str(tmp_path)) == os.path.join(str(tmp_path), "demo-cache-76")
    # A checkout copied without its files' times: the demo data's fingerprint changes, and
    # the demo gets a cache of its own beside the old one instead of an error.
    image = os.path.join(str(tmp_path), "demo-data", "val", "ring", "ring_0000.JPEG")
    os.utime(image, (1, 1))
    beside = demo_cache(str(tmp_path))
    assert beside.startswith(os.path.join(str(tmp_path), "demo-cache-76-")) and Cache(beside).image_size == 76
