"""CIFAR-10's binary version (``cifar-10-batches-bin``) as a prepared cache, for Figure 1 (§3.1).

Dimensions:
    M  images in a split (50,000 train, 10,000 test)    C  colour channels (3)    S  32

The binary files are plain bytes, no pickle: ``data_batch_1.bin`` .. ``data_batch_5.bin``
(training) and ``test_batch.bin``, each a run of 10,000 records of 3,073 bytes: the label
(0-9), then the 32x32 red plane, the green plane and the blue plane, rows top to bottom.
``batches.meta.txt`` names the classes, one per line. ``CIFAR10(src)`` is that folder as a
source (``source.Source``): train = the five data batches, val = the test batch, each record
a member given to ``prepare`` decoded, stored as it is (32 x 32). ``cifar10_cache(src, dst)``
prepares it: the images, the per-pixel mean image and RGB PCA of the training pixels, as for
any source, ``meta.json`` last; returns the cache's folder. A finished cache of the same files
(names, sizes and times: ``prepare.source_digest``) is reused; one of another copy is left
alone, and the cache of ``src`` is made (or found) in ``dst-<digest>``, whose path is returned.
"""
import os

import numpy as np

from . import loader
from .folders import find_class_names
from .prepare import prepare
from .source import Listing, Source

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META = "batches.meta.txt"
SPLITS = {"train": TRAIN_FILES, "val": (TEST_FILE,)}
DEFAULT_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_batch(path):
    """One binary batch file -> (images (M, 32, 32, 3) uint8 HWC RGB, labels (M,) int64)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise loader.DataError(f"--cifar10: {path} is not a CIFAR-10 binary batch "
                             f"({raw.size} bytes, not a multiple of {RECORD})")
    records = raw.reshape(-1, RECORD)                                        # (M, 3073)
    labels = records[:, 0].astype(np.int64)                                  # (M,)
    if labels.max() > 9:
        raise loader.DataError(f"--cifar10: {path} has labels above 9: not CIFAR-10")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)    # (M, 32, 32, 3)
    return np.ascontiguousarray(images), labels


def read_split(src, files):
    """The named batch files of ``src`` concatenated: (images (M, 32, 32, 3), labels (M,), paths)."""
    parts = [read_batch(os.path.join(src, name)) for name in files]
    paths = [f"{name}#{i}" for name, (_, labels) in zip(files, parts) for i in range(len(labels))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), paths


def class_names(src):
    path = os.path.join(src, META)
    if os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) == 10:
            return names
    return list(DEFAULT_NAMES)


class CIFAR10(Source):
    """The folder ``root`` of CIFAR-10's binary batches as a source (``source.Source``): splits
    ``train`` (the five data batches) and ``val`` (the test batch), members ``<file>#<record>``
    read as decoded (32, 32, 3) arrays, the class names of ``batches.meta.txt``."""

    def __init__(self, root):
        missing = [name for name in TRAIN_FILES + (TEST_FILE,) if not os.path.isfile(os.path.join(root, name))]
        if not os.path.isdir(root) or missing:
            raise loader.DataError(f"--cifar10 {root}: expected the folder cifar-10-batches-bin with "
                                   f"{', '.join(TRAIN_FILES)} and {TEST_FILE}; "
                                   f"missing: {', '.join(missing) or 'the folder'}")
        self.root = root

    def splits(self):
        return list(SPLITS)

    def has_split(self, split):
        return split in SPLITS

    def listing(self, split, classes, fixed, print_fn=print, listing_dir=None):
        images, labels, paths = read_split(self.root, SPLITS[split])       # (M, 32, 32, 3), (M,)
        names = class_names(self.root)
        empty = [name for k, name in enumerate(names) if not np.any(labels == k)]
        files = list(SPLITS[split]) + ([META] if split == "train" and os.path.isfile(os.path.join(self.root, META))
                                       else [])
        return Listing(names, paths, labels, empty, read=lambda start, stop: list(images[start:stop]),
                       source_files=files)

    def class_names(self, classes, path=None):
        return find_class_names(self.root, classes, path) if path is not None else list(classes)


def cifar10_cache(src, dst, print_fn=print):
    """Write (once) the cache of the CIFAR-10 binary folder ``src`` at ``dst`` (or beside it, see
    the module docstring); returns the cache's folder."""
    if loader.is_cache(dst) and not os.path.isdir(src):
        return dst   # the cache is all that is needed
    return prepare(CIFAR10(src), dst, image_size=32, progress=False, print_fn=print_fn, elsewhere=True)
