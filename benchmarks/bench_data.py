"""Throughput of the data pipeline: preprocessing and training-batch assembly (§2, §4.1).

Dimensions:
    N  batch (128)    M  images in the cache    R  stored side (256)    S  crop side (227)
    C  colour channels (3)

    python benchmarks/bench_data.py [--data ../shared/data] [--batch 128] [--seconds 2]

Prints one table. Preprocessing: ``prepare`` on the real photo sets in ``--data`` (JPEGs
of ImageNet sizes; the generated demo set when they are absent), with one worker and with
one per core. Batch assembly on the CPU from a cache of those images (tiled to at least
``8 N`` rows, read from a warm page cache): uint8 crops and flips alone, then with PCA
lighting and mean subtraction in float32 (per-pixel or per-channel mean), each on one
thread; then ``TrainLoader`` end to end with its background threads. Ends with the memory
of the preprocessing workers and of this process (peak, anonymous, and the file pages of
the memory-mapped cache, which count in RSS but are the kernel's page cache).
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: alexnet_np, uninstalled

import numpy as np

from alexnet_np.data import augment, loader
from alexnet_np.nn.backend import Device
from alexnet_np.config import Config
from alexnet_np.data.prepare import prepare, usable_cores

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def _cpu_seconds():
    """CPU time used so far by this process (all threads) and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rate(fn, images_per_call, seconds):
    """``(images per second, images per CPU-second)`` of ``fn()``, repeated for about ``seconds``.

    The second figure does not fall when other programs share the cores.
    """
    fn()
    calls, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            images = calls * images_per_call
            return images / elapsed, images / max(_cpu_seconds() - cpu, 1e-9)


def _count_files(root, splits):
    return sum(len(files) for s in splits for _, _, files in os.walk(os.path.join(root, s)))


def bench_prepare(sets, tmp, cores):
    """Rows ``(what, images/s, images per CPU-s)`` of preprocessing each set, 1 worker and all."""
    rows, caches = [], []
    for name, root, splits in sets:
        files = _count_files(root, splits)
        for workers in sorted({1, cores}):
            dst = os.path.join(tmp, f"{name}-{workers}")
            start, cpu = time.perf_counter(), _cpu_seconds()
            prepare(root, dst, workers=workers, progress=False, splits=splits, print_fn=lambda *a: None)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            rows.append((f"prepare {name} ({files} files), {workers} worker{'s' * (workers > 1)}",
                         files / seconds, files / cpu))
        caches.append(dst)
    return rows, caches


def tiled_cache(source, dst, rows):
    """A copy of cache ``source`` whose first split is tiled to at least ``rows`` images."""
    cache = loader.Cache(source)
    split = cache.split(cache.splits[0])
    copies = -(-rows // len(split))
    os.makedirs(dst)
    for name in (loader.MEAN_FILE, loader.PCA_FILE, loader.REPORT_FILE):
        shutil.copy(os.path.join(source, name), dst)
    header = {"descr": "|u1", "fortran_order": False, "shape": (copies * len(split),) + split.images.shape[1:]}
    with open(os.path.join(dst, loader.images_file("train")), "wb") as f:  # written, not mapped: RSS stays low
        np.lib.format.write_array_header_1_0(f, header)
        for _ in range(copies):
            f.write(np.ascontiguousarray(split.images).tobytes())
    np.save(os.path.join(dst, loader.labels_file("train")), np.tile(split.labels, copies))
    with open(os.path.join(dst, loader.paths_file("train")), "w") as f:
        json.dump(split.relpaths * copies, f)
    meta = dict(cache.meta, splits=["train"], counts={"train": copies * len(split)})
    with open(os.path.join(dst, loader.META_FILE), "w") as f:
        json.dump(meta, f)
    return dst


def bench_batches(cache_path, batch, size, seconds, threads):
    """Rows ``(what, images/s, images per CPU-s)`` of batch assembly on the CPU."""
    cache = loader.Cache(cache_path)
    split = cache.split("train")
    device = Device()
    config = Config(batch_size=batch, input_size=size, seed=0)
    rng = np.random.default_rng(0)
    rows = []

    def draws():
        index = np.sort(rng.integers(0, len(split), batch))               # (N,)
        return (index,) + augment.draw_augmentation(rng, batch, cache.image_size, size)

    def crops_only():
        index, ys, xs, flips, _ = draws()
        augment.crop_flip(split.images, index, ys, xs, flips, size)       # (N, S, S, C)

    rows.append(("uint8 crops + flips (host, 1 thread)",) + _rate(crops_only, batch, seconds))
    for mean in ("pixel", "channel"):
        train_loader = loader.TrainLoader(cache, config.replace(mean=mean), device, threads=0)
        rows.append((f"+ lighting + {mean} mean, float32 (1 thread)",)
                    + _rate(lambda: train_loader.batch(0), batch, seconds))

    def epoch():
        train_loader = loader.TrainLoader(cache, config, device, epoch=int(rng.integers(1 << 30)), threads=threads)
        for _ in train_loader:
            pass
        return train_loader

    per_epoch = len(epoch())
    rows.append((f"TrainLoader end to end, {threads} background threads",)
                + _rate(epoch, per_epoch * batch, seconds))
    return rows


def memory_line():
    """Peak RSS, and now: anonymous memory (batches, buffers) and file pages of the mapped cache."""
    try:
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f)
    except OSError:
        return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    mib = {k: int(status[k].split()[0]) / 1024 for k in ("VmHWM", "RssAnon", "RssFile")}
    return (f"peak RSS {mib['VmHWM']:.0f} MiB; after the loader runs: {mib['RssAnon']:.0f} MiB anonymous, "
            f"{mib['RssFile']:.0f} MiB file pages (the cache's memory map, reclaimable)")


def table(rows):
    """The rows ``(measurement, images/s, per CPU-s)`` as a Markdown table whose columns line up
    whatever the lengths of the names and numbers."""
    head = ("measurement", "images/s", "per CPU-s")
    cells = [head] + [(what, f"{rate:.0f}", f"{per_cpu:.0f}") for what, rate, per_cpu in rows]
    width = [max(len(row[k]) for row in cells) for k in range(3)]
    lines = [f"| {head[0]:<{width[0]}} | {head[1]:>{width[1]}} | {head[2]:>{width[2]}} |",
             f"|{'-' * (width[0] + 2)}|{'-' * (width[1] + 1)}:|{'-' * (width[2] + 1)}:|"]
    lines += [f"| {a:<{width[0]}} | {b:>{width[1]}} | {c:>{width[2]}} |" for a, b, c in cells[1:]]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_data.py", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder of the real photo sets")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=227, help="crop side S")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per batch measurement")
    parser.add_argument("--threads", type=int, default=2, help="TrainLoader background threads")
    args = parser.parse_args(argv)
    cores = usable_cores()
    sets = [(name, os.path.join(args.data, name), splits)
            for name, splits in [("hymenoptera", ["train", "val"]), ("imagenet-sample", ["sample"])]
            if os.path.isdir(os.path.join(args.data, name))]
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        generated = not sets
        if generated:
            from alexnet_np.data.demo import make_demo_dataset
            sets = [("demo", make_demo_dataset(os.path.join(tmp, "demo")), ["train", "val"])]
        prep_rows, caches = bench_prepare(sets, tmp, cores)
        tiled = tiled_cache(caches[0], os.path.join(tmp, "tiled"), 8 * args.batch)
        batch_rows = bench_batches(tiled, args.batch, args.size, args.seconds, args.threads)
        memory = memory_line()
    print(f"Data pipeline throughput on {cores} cores (NumPy {np.__version__}); "
          f"batch {args.batch}, crops {args.size} of 256")
    if generated:
        print("no real photos in --data: preprocessing measured on the generated demo set")
    print(table(prep_rows + batch_rows))
    print("images/s: wall clock; per CPU-s: images per second of CPU time used (all threads and "
          "worker processes), i.e. per core, unaffected by other programs on the machine")
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"memory: preprocessing workers peak {child:.0f} MiB RSS each; this process {memory}")


if __name__ == "__main__":
    main()
