"""CIFAR-10's binary version (``cifar-10-batches-bin``) as a prepared cache, for Figure 1 (§3.1).

Dimensions:
    M  images in a split (50,000 train, 10,000 test)    C  colour channels (3)    S  32

The binary files are plain bytes, no pickle: ``data_batch_1.bin`` .. ``data_batch_5.bin``
(training) and ``test_batch.bin``, each a run of 10,000 records of 3,073 bytes: the label
(0-9), then the 32x32 red plane, the green plane and the blue plane, rows top to bottom.
``batches.meta.txt`` names the classes, one per line. ``cifar10_cache(src, dst)`` writes
them in the cache layout of ``alexnet_np.data`` (train = the five data batches, val = the
test batch; per-pixel mean image and RGB PCA of the training pixels, as ``prepare`` does),
``meta.json`` last, and returns ``dst``. A finished cache of the same files (names, sizes and
times: ``prepare.source_digest``) is reused; one of another copy is left alone, and the
cache of ``src`` is made (or found) in ``dst-<digest>``, whose path is returned.
"""
import json
import os

import numpy as np

from . import loader
from .prepare import pca_from_sums, source_digest

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
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
    path = os.path.join(src, "batches.meta.txt")
    if os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) == 10:
            return names
    return list(DEFAULT_NAMES)


def _save_atomic(path, write):
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        write(f)
    os.replace(temporary, path)


def _cache_of(dst, src, digest):
    """True when the finished cache ``dst`` is that of these files (a cache made before digests
    were recorded: of the same folder)."""
    with open(os.path.join(dst, loader.META_FILE)) as f:
        meta = json.load(f)
    recorded = meta.get("sources", {}).get("cifar10")
    return recorded == digest or (recorded is None and meta.get("source") == os.path.abspath(src))


def cifar10_cache(src, dst, print_fn=print):
    """Write (once) the cache of the CIFAR-10 binary folder ``src`` at ``dst`` (or beside it, see
    the module docstring); returns the cache's folder."""
    if loader.is_cache(dst) and not os.path.isdir(src):
        return dst   # the cache is all that is needed
    missing = [name for name in TRAIN_FILES + (TEST_FILE,) if not os.path.isfile(os.path.join(src, name))]
    if not os.path.isdir(src) or missing:
        raise loader.DataError(f"--cifar10 {src}: expected the folder cifar-10-batches-bin with "
                             f"{', '.join(TRAIN_FILES)} and {TEST_FILE}; missing: {', '.join(missing) or 'the folder'}")
    digest = source_digest(src, [n for n in TRAIN_FILES + (TEST_FILE, "batches.meta.txt")
                                 if os.path.isfile(os.path.join(src, n))])
    if loader.is_cache(dst):
        if _cache_of(dst, src, digest):
            return dst
        other = f"{os.path.normpath(dst)}-{digest[:8]}"
        print_fn(f"{dst} holds the cache of other CIFAR-10 files (other sizes or times than {os.path.abspath(src)}'s): "
                 f"using {other}")
        dst = other
        if loader.is_cache(dst):
            return dst
    os.makedirs(dst, exist_ok=True)
    counts = {}
    for split, files in (("train", TRAIN_FILES), ("val", (TEST_FILE,))):
        images, labels, paths = read_split(src, files)
        _save_atomic(os.path.join(dst, loader.images_file(split)), lambda f: np.save(f, images))
        _save_atomic(os.path.join(dst, loader.labels_file(split)), lambda f: np.save(f, labels))
        _save_atomic(os.path.join(dst, loader.paths_file(split)), lambda f: f.write(json.dumps(paths).encode()))
        counts[split] = len(labels)
        if split == "train":   # §2's per-pixel mean and §4.1's PCA, from the training pixels
            mean_sum = images.sum(axis=0, dtype=np.float64)                   # (32, 32, 3)
            pixels = images.reshape(-1, 3).astype(np.float64)                 # (M*1024, 3)
            cov, eigvals, eigvecs = pca_from_sums(mean_sum, pixels.T @ pixels, len(images))
            _save_atomic(os.path.join(dst, loader.MEAN_FILE),
                         lambda f: np.save(f, (mean_sum / len(images)).astype(np.float32)))
            _save_atomic(os.path.join(dst, loader.PCA_FILE), lambda f: np.savez(
                f, cov=cov, eigvals=eigvals, eigvecs=eigvecs, pixels=len(pixels)))
    names = class_names(src)
    meta = {"format": loader.FORMAT_VERSION, "complete": True, "source": os.path.abspath(src),
            "image_size": 32, "recipe": {"cifar10": "binary batches, stored as they are"},
            "splits": ["train", "val"], "stats_split": "train", "classes": names, "class_names": names,
            "counts": counts, "files": counts, "skipped": [], "empty_classes": [], "keys": {},
            "sources": {"cifar10": digest}}
    _save_atomic(os.path.join(dst, loader.REPORT_FILE), lambda f: f.write(b"split\tpath\treason\n"))
    _save_atomic(os.path.join(dst, loader.META_FILE), lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return dst
