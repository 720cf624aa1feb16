"""Prepared data sets: reading the cache, training batches and evaluation views (§2, §4.1).

Dimensions:
    M  images in a split           N  images in a batch
    R  stored image side (256)     S  crop side, the network's input (config.input_size)
    C  colour channels (3, RGB)    V  views per image (10 for ten-crop)    K  classes

The cache (made once by ``python -m alexnet_np.data.prepare SRC DST``, see ``prepare.py``) is a
folder holding, for each split (``train``, ``val``, ...):

    <split>_images.npy   uint8 (M, R, R, C), HWC RGB, read as a memory map
    <split>_labels.npy   int64 (M,), the class index: the position in ``Cache.classes``
    <split>_paths.json   the source file of each row, relative to the source root
plus ``mean_image.npy`` float32 (R, R, C), the per-pixel mean of the training split;
``pca.npz`` (``cov`` (C, C), ``eigvals`` (C,) descending, ``eigvecs`` (C, C) with the
eigenvectors as *columns*), of all training pixels in 0-255 levels; ``report.tsv``, the
files skipped and why; and ``meta.json``, written last: a folder without it is not a cache.

Public API:
    is_cache(path) -> bool
    Cache(path): .classes, .class_names, .splits, .split(name) -> Split, .mean_image,
        .channel_mean, .pca_cov, .pca_eigvals, .pca_eigvecs, .image_size, .skipped, .source
    Split: .images (memmap), .labels, .paths, .relpaths, len(), .mapped() (a fresh memmap)
    TrainLoader(cache, config, device, epoch=0, start_batch=0, split="train", threads=2,
        depth=2, rows=None): iterate for ``(images (N, C, S, S) config.dtype, labels (N,)
        int64)`` on ``device``; len() = batches it yields; .batch(b) computes batch b
        directly; ``rows``: a slice, this rank's rows of every batch (``distributed``).
    eval_batches(cache, split, config, device, batch_size=None, ten_crop=False,
        mean_image=None, threads=2, depth=2, shard=(0, 1)): ``(views, labels)``, views
        (N, C, S, S) or, ten-crop, (N, V, C, S, S); every image once, in order, the last
        batch partial; ``shard=(r, R)``: only batches r, r+R, r+2R, ...
    eval_views(mean_image, config, device, ten_crop=False) -> views(images): the same
        views of any stored images (N, R, R, C) uint8
    epoch_order(seed, epoch, m), batch_rng(seed, epoch, b): the random streams.

Randomness (conventions 12): nothing here keeps generator state. The order of epoch ``e`` is a
permutation from ``default_rng([seed, SHUFFLE_STREAM, e])``; the crops, flips and lighting
of batch ``b`` come from ``default_rng([seed, AUGMENT_STREAM, e, b])``. So a run resumes
exactly at (epoch, batch) without saved generator state, and background threads cannot
change a batch. Training drops the last partial batch of an epoch (as the paper's
fixed-size batches of 128); evaluation keeps it.
"""
import collections
import concurrent.futures
import json
import os

import numpy as np

from . import augment
from ..nn.backend import memories, move

FORMAT_VERSION = 1
META_FILE = "meta.json"
MEAN_FILE = "mean_image.npy"
PCA_FILE = "pca.npz"
REPORT_FILE = "report.tsv"
SHUFFLE_STREAM = 0x5EED  # tags that keep these streams apart from other users of the seed
AUGMENT_STREAM = 0xA06


class DataError(ValueError):
    """A data set or cache that cannot be used; the message is one line that says why."""


def images_file(split):
    return f"{split}_images.npy"


def labels_file(split):
    return f"{split}_labels.npy"


def paths_file(split):
    return f"{split}_paths.json"


def is_cache(path):
    """True when ``path`` is a finished cache (its ``meta.json`` says complete)."""
    try:
        with open(os.path.join(path, META_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return meta.get("complete") is True and meta.get("format") == FORMAT_VERSION


class Split:
    """One prepared split: ``images`` (M, R, R, C) uint8 memmap, ``labels`` (M,) int64."""

    def __init__(self, folder, name, source):
        self.name = name
        self.images = np.load(os.path.join(folder, images_file(name)), mmap_mode="r")  # (M, R, R, C)
        self.labels = np.load(os.path.join(folder, labels_file(name)))                   # (M,)
        self.folder, self.source, self._relpaths = folder, source, None
        assert len(self.images) == len(self.labels), f"split {name} is inconsistent"

    def __len__(self):
        return len(self.labels)

    def mapped(self):
        """A new memory map of the images (M, R, R, C), for one batch.

        The batch makers map the file afresh for each batch and drop the map after it, so
        that the pages they read leave this process's RSS (they stay in the kernel's page
        cache): resident memory follows the batch, not the part of the data set seen so far.
        The map is made from the layout ``np.load`` read once, not by ``np.load`` again: its
        header parser (``ast.literal_eval``) is not safe in threads on CPython 3.11
        (gh-106905: "AST constructor recursion depth mismatch", seen in the loader's threads).
        """
        first = self.images
        return np.memmap(first.filename, dtype=first.dtype, mode="r", shape=first.shape,
                         offset=first.offset)                                # (M, R, R, C)

    @property
    def relpaths(self):
        """The source file of each row, relative to the source root (read when first asked)."""
        if self._relpaths is None:
            with open(os.path.join(self.folder, paths_file(self.name))) as f:
                self._relpaths = json.load(f)
        return self._relpaths

    @property
    def paths(self):
        """The source file of each row (for figures), under the source root."""
        return [os.path.join(self.source, p) for p in self.relpaths]


class Cache:
    """A prepared data set (see the module docstring for the files)."""

    def __init__(self, path):
        if not is_cache(path):
            raise DataError(f"{path} is not a finished data cache: make it with "
                            f"python -m alexnet_np.data.prepare SRC {path}")
        self.path = path
        with open(os.path.join(path, META_FILE)) as f:
            self.meta = json.load(f)
        self.classes = self.meta["classes"]
        self.class_names = self.meta["class_names"]
        self.splits = self.meta["splits"]
        self.image_size = self.meta["image_size"]
        self.source = self.meta["source"]
        self.skipped = [tuple(row) for row in self.meta["skipped"]]  # (split, relpath, reason)
        self.mean_image = np.load(os.path.join(path, MEAN_FILE))    # (R, R, C) float32
        with np.load(os.path.join(path, PCA_FILE)) as pca:
            self.pca_cov = pca["cov"]                                 # (C, C) float64
            self.pca_eigvals = pca["eigvals"]                         # (C,) descending
            self.pca_eigvecs = pca["eigvecs"]                         # (C, C) columns
        self._splits = {}

    def __repr__(self):
        counts = ", ".join(f"{s} {self.meta['counts'][s]}" for s in self.splits)
        return f"<Cache {self.path}: {len(self.classes)} classes, {counts}, {self.image_size}px>"

    @property
    def channel_mean(self):
        """(C,) float32: the mean of all training pixels (every image has R*R of them)."""
        return self.mean_image.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)

    def split(self, name):
        if name not in self.splits:
            raise DataError(f"cache {self.path} has no split {name!r} (it has {', '.join(self.splits)})")
        if name not in self._splits:
            self._splits[name] = Split(self.path, name, self.source)
        return self._splits[name]


def epoch_order(seed, epoch, m):
    """The order of the ``m`` training images in ``epoch``: a permutation (M,) int64."""
    return np.random.default_rng([seed, SHUFFLE_STREAM, epoch]).permutation(m)  # (M,)


def batch_rng(seed, epoch, batch):
    """The host generator of batch ``batch`` of ``epoch``: crops, flips, lighting."""
    return np.random.default_rng([seed, AUGMENT_STREAM, epoch, batch])


def prefetch(make, indices, threads, depth):
    """Yield ``make(i)`` for ``i`` in ``indices``, in order, computed ahead in background threads.

    At most ``depth`` results wait ahead (a bounded queue); an exception in a thread is
    raised here, at its item; closing the generator cancels what has not started and waits
    for what has. ``threads=0`` computes each item when asked, in this thread.
    """
    indices = list(indices)
    if threads == 0:
        for i in indices:
            yield make(i)
        return
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="batches") as pool:
        pending = collections.deque()
        todo = iter(indices)
        try:
            for i in todo:
                pending.append(pool.submit(make, i))
                if len(pending) >= max(depth, 1):
                    break
            while pending:
                result = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(make, nxt))
                yield result
        finally:
            for future in pending:
                future.cancel()


def _mean_offsets(mean_image, config, device):
    """The mean on the device, in the form the batches subtract (§2).

    Returns ``(planes (2, C, R, R), None)`` for the per-pixel mean (config.mean == "pixel")
    or ``(None, channel (C,))`` for the per-channel mean.
    """
    xp = device.xp
    if config.mean == "pixel":
        with device:
            return augment.mean_planes(mean_image, xp, config.dtype), None
    if config.mean == "channel":
        channel = mean_image.mean(axis=(0, 1), dtype=np.float64)         # (C,)
        with device:
            return None, xp.asarray(channel.astype(config.dtype))
    raise DataError(f"config.mean must be 'pixel' or 'channel', not {config.mean!r}")


class TrainLoader:
    """Training batches of one epoch (§4.1), from batch ``start_batch`` on, made ahead in threads.

    Each batch: ``N = config.batch_size`` images of the epoch's permutation, a random
    S x S crop (every offset equally likely; the centre crop when not config.random_crop),
    a flip with probability 0.5 (config.flip),
    PCA lighting (config.lighting_std, 0-255 units, see ``augment``) and the mean subtracted
    (config.mean). Crops and flips are made on the host in uint8; only those move to the
    device, where the float work runs with ``device.xp``. The last partial batch is dropped.

    ``devices``: the devices that need the batch (a model's towers; default ``[device]``):
    each GPU gets the uint8 crops (a quarter of the float batch's bytes) and makes its own
    float batch, instead of receiving the float batch from another GPU; CPU devices share
    one. A batch is ``(images, labels)``: ``images`` (N, C, S, S) on ``device``, or with
    several memories a tuple of the same batch on each (``backend.memories`` order);
    ``labels`` (N,) int64 on the host.

    Batches are made in threads. On a GPU, work queued by one thread is ordered before
    another thread's only by an event (CuPy's per-thread default streams make that real):
    the mean, made here, is waited for in the threads, and each batch carries an event per
    device that the consuming thread waits for before it is used (``__iter__``).

    ``rows`` (a slice of ``range(N)``): yield only these rows of each batch, as one of
    several ranks does. The order and every draw (crop, flip, lighting) are made for the
    whole batch, as one process makes them, and this rank takes its rows; it reads only
    its rows' images from the memory map.
    """

    def __init__(self, cache, config, device, epoch=0, start_batch=0, split="train",
                 threads=2, depth=2, rows=None, devices=None):
        self.split = cache.split(split)
        self.config, self.device, self.epoch = config, device, epoch
        self.devices = memories(devices or [device])
        self.threads, self.depth = threads, depth
        m, n = len(self.split), config.batch_size
        self.batches_per_epoch = m // n
        if self.batches_per_epoch == 0:
            raise DataError(f"split {split!r} has {m} images, fewer than one batch of {n}")
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise DataError(f"start_batch {start_batch} is outside 0..{self.batches_per_epoch}")
        self.start_batch = start_batch
        self.rows = rows if rows is not None else slice(0, n)
        self.image_size = cache.image_size
        augment.crop_offsets(self.image_size, config.input_size)
        self.order = epoch_order(config.seed, epoch, m)                  # (M,)
        self.eigvals, self.eigvecs = cache.pca_eigvals, cache.pca_eigvecs  # (C,), (C, C)
        self.means = [_mean_offsets(cache.mean_image, config, d) for d in self.devices]  # (planes, channel) each
        self.means_ready = [d.record() for d in self.devices]   # for the threads that read them

    def __len__(self):
        return self.batches_per_epoch - self.start_batch

    def host_batch(self, b):
        """Batch ``b`` on the host: ``(crops (N, S, S, C) uint8, labels (N,), draws)``.

        ``draws = (index, ys, xs, flips, alphas)``, the rows and random choices used.
        """
        n, config = self.config.batch_size, self.config
        index = self.order[b * n:(b + 1) * n]                                # (N,)
        ys, xs, flips, alphas = augment.draw_augmentation(
            batch_rng(config.seed, self.epoch, b), n, self.image_size, config.input_size,
            config.flip, config.lighting_std, config.random_crop)
        mine = self.rows                                                     # this rank's rows
        index, ys, xs, flips, alphas = index[mine], ys[mine], xs[mine], flips[mine], alphas[mine]
        crops = augment.crop_flip(self.split.mapped(), index, ys, xs, flips, config.input_size)  # (N, S, S, C)
        labels = self.split.labels[index]                                    # (N,)
        return crops, labels, (index, ys, xs, flips, alphas)

    def batch(self, b):
        """Batch ``b``: ``(images, labels)``, images (N, C, S, S) on each device (one array, or
        a tuple), labels (N,) int64 on the host (for use in this thread)."""
        return self.made(b)[0]

    def made(self, b):
        """``(batch(b), events)``: the batch and an event per device recorded after it was
        made there (``backend.Device.record``), for another thread to wait for."""
        crops, labels, (index, ys, xs, flips, alphas) = self.host_batch(b)
        shift = augment.lighting_shift(alphas, self.eigvals, self.eigvecs)  # (N, C) float64
        made, events = [], []
        for device, (planes, channel), ready in zip(self.devices, self.means, self.means_ready):
            device.wait(ready)
            made.append(self.normalize(device, crops, shift, ys, xs, flips, planes, channel))  # (N, C, S, S)
            events.append(device.record())
        return ((made[0] if len(made) == 1 else tuple(made)), labels), events

    def normalize(self, device, crops, shift, ys, xs, flips, planes, channel):
        """The float batch on ``device`` from the host's uint8 crops (N, S, S, C): the mean
        (per pixel, cut and flipped as the crop, or per channel) and the lighting shift
        subtracted. Returns (N, C, S, S)."""
        xp, dtype = device.xp, self.config.dtype
        with device:
            crops = move(crops, device)                                     # (N, S, S, C) uint8
            shift = xp.asarray(shift.astype(dtype))                         # (N, C)
            if planes is not None:
                offset = augment.mean_crops(planes, xp.asarray(ys), xp.asarray(xs),
                                            xp.asarray(flips), self.config.input_size, xp)  # (N, C, S, S)
                offset -= shift[:, :, None, None]
                return augment.normalize(crops, offset, dtype, xp, out=offset)   # (N, C, S, S), in place
            offset = (channel[None, :] - shift)[:, :, None, None]           # (N, C, 1, 1)
            return augment.normalize(crops, offset, dtype, xp)              # (N, C, S, S)

    def __iter__(self):
        return handed_over(prefetch(self.made, range(self.start_batch, self.batches_per_epoch),
                                    self.threads, self.depth), self.devices)


def eval_views(mean_image, config, device, ten_crop=False):
    """The test-time preprocessing (§4.1), as a function ``views(images)``.

    ``images`` (N, R, R, C) uint8 stored images on the host (a memmap slice is fine) ->
    their views on ``device``, ``mean_image`` (R, R, C) subtracted (config.mean: per pixel
    or per channel): (N, C, S, S), the centre crop, or with ``ten_crop`` (N, V, C, S, S) in
    ``augment.TEN_CROP_ORDER``. No lighting. Evaluation (``eval_batches``) and the trained
    net's ``predict`` (``alexnet_np.train.trained``) both use it. Centre crops travel to the
    device as uint8 crops; for ten-crop the whole uint8 images travel (6x fewer bytes than
    10 crops) and the views are cut there.
    """
    size, xp, dtype = config.input_size, device.xp, config.dtype
    planes, channel = _mean_offsets(mean_image, config, device)
    with device:
        if planes is not None:
            mean_hwc = planes[0].transpose(1, 2, 0)[None]                    # (1, R, R, C)
            if ten_crop:
                offset = augment.ten_crop_views(mean_hwc, size, xp)[0].transpose(0, 3, 1, 2)  # (V, C, S, S)
            else:
                offset = augment.center_crop(mean_hwc, size)[0].transpose(2, 0, 1)           # (C, S, S)
            offset = xp.ascontiguousarray(offset)
        else:
            offset = channel[:, None, None]                                  # (C, 1, 1)

    def views(images):
        with device:
            if ten_crop:
                crops = augment.ten_crop_views(move(np.ascontiguousarray(images), device), size, xp)  # (N, V, S, S, C)
            else:
                crops = move(np.ascontiguousarray(augment.center_crop(images, size)), device)     # (N, S, S, C)
            return augment.normalize(crops, offset, dtype, xp)

    return views


def eval_batches(cache, split, config, device, batch_size=None, ten_crop=False,
                 mean_image=None, threads=2, depth=2, shard=(0, 1)):
    """Evaluation views of every image of ``split`` in order, mean subtracted (§4.1 test time).

    Yields ``(views, labels)`` on ``device``: views (N, C, S, S), the centre crop, or with
    ``ten_crop`` (N, V, C, S, S) in ``augment.TEN_CROP_ORDER``; labels (N,) int64. No lighting.
    ``mean_image`` (R, R, C) replaces the cache's mean (e.g. the training set's when
    evaluating another cache). The last batch is partial. The views are ``eval_views``'s.
    ``shard = (r, R)``: only batches r, r+R, ... (rank r of R evaluates those; each batch
    holds the same images as in one process).
    """
    data = cache.split(split)
    n = batch_size or config.batch_size
    views = eval_views(cache.mean_image if mean_image is None else mean_image, config, device, ten_crop)

    ready = device.record()   # the mean, made in this thread, for the threads that read it

    def make(start):
        images = data.mapped()[start:start + n]                              # (N, R, R, C) memmap view
        labels = data.labels[start:start + n]                                # (N,)
        device.wait(ready)
        with device:
            batch = views(images), move(labels, device)
        return batch, [device.record()]

    rank, ranks = shard
    return handed_over(prefetch(make, range(0, len(data), n)[rank::ranks], threads, depth), [device])


def handed_over(made, devices):
    """The batches of ``made`` ((batch, [event per device]) pairs), each after this thread's
    stream on every device of ``devices`` has waited for the event recorded where the batch
    was made: this thread's work on it comes after its making."""
    for batch, events in made:
        for device, event in zip(devices, events):
            device.wait(event)
        yield batch
