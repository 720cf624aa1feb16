"""One-time preprocessing of an ImageFolder data set into a cache (§2).

Dimensions:
    M  images written in a split    F  files listed in a split (F >= M: bad files are skipped)
    R  stored image side (256)      C  colour channels (3, RGB)    K  classes

    python -m alexnet_np.data.prepare SRC DST [--image-size 256] [--workers N] [--splits train val]
    prepare(src, dst, image_size=256, workers=None, progress=True, splits=None,
            class_names=None, checkpoint_seconds=10.0, print_fn=print, classes=None) -> dst
    load_image(path, size) -> (R, R, C) uint8, or raises BadImage(reason)
    stored_image(pil_image, size) -> (R, R, C) uint8: the same for an image already decoded
    resize_box(width, height, size) -> the source box whose resize is the centre crop

SRC holds ``train/<class>/<image>`` and optionally ``val/<class>/<image>`` (or the splits
named in ``splits``; the first one, ``train`` by default, defines the classes and gives the
mean image and the PCA). Class folders, sorted, give the class index; every split must have
the same class folders (or, with ``classes=`` a list or a file such as synset_words.txt,
the class list is fixed and each split's folders need only be among it). An empty class
folder keeps its index (no label shifts) and is noted. A class-names file
(``class_names.txt``, ``classes.txt``, ``synset_words.txt`` or ``LOC_synset_mapping.txt`` in
SRC, or ``class_names=``; else synset_words.txt or LOC_synset_mapping.txt beside the
validation label file, else a devkit's meta.mat in either place) gives printable names:
either one line per class in class order, or lines ``<folder name> <name>`` (Caffe's synset_words).

SRC may also hold ILSVRC-2012's files as distributed: ``ILSVRC2012_img_train.tar`` (a tar of
class tars) instead of ``train/``, ``ILSVRC2012_img_val.tar`` or a flat ``val/`` folder of its
JPEGs with a validation label file. They are read in place, listed by ``alexnet_np/data/ilsvrc.py``;
their files' bytes are read here, in order, and handed to the workers.

Each image (§2): decoded (JPEGs in Pillow's draft mode at the smallest DCT scale that keeps
the shorter side >= 2R: on the photos here with a shorter side >= 1024 it is 2.3x faster and
changes the stored pixels by 0.36 level on average, 0.74 at most for one photo), converted to
RGB (grayscale, CMYK, palette, alpha dropped as Pillow's ``convert("RGB")``, 16-bit scaled
by 1/257; EXIF orientation ignored, as the usual ImageNet pipelines do), rescaled with an
antialiased Lanczos filter so that the shorter side is R (the longer side rounded; small
images are upscaled), and its central R x R cut. Only that central region is resampled
(Pillow's ``resize(box=...)``); that equals resizing all then cropping up to the rounding of
Pillow's 8-bit intermediate, whose two passes may then run in the other order (0.2 level
on average on the real photos here).

Bad files (empty, not an image, truncated, corrupt, too many pixels) are skipped and listed
with their reason in ``DST/report.tsv`` and in one summary line; labels are written with
each good row, so they never shift. Tar members that damaged headers cost (``ilsvrc``) are
listed there too (reason ``lost: ...``) and counted in the summary line: exit status 0
means every image intact in the source is in the cache or in ``report.tsv``. Work runs in a pool of processes over all cores, with
at most a few chunks in flight (memory does not grow with the data set); rows are written
with ``pwrite`` in file order. Every ``checkpoint_seconds`` the split's progress (files
done, rows written, skipped files, running sums for the mean and PCA in float64) is saved
atomically; a rerun resumes there, and gives the same bytes as an uninterrupted run.
``meta.json`` is written last: until then the folder is not a cache (``loader.is_cache``).
"""
import collections
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np
from PIL import Image, ImageFile

from . import loader
from .folders import FolderTree, read_class_list
from .ilsvrc import ILSVRC
from .source import Source
from ..accepts import NON_NEGATIVE, POSITIVE_INT, WORKERS
from ..cli import Parser, existing_file, folder_to_write

RECIPE = {"version": 1, "filter": "lanczos", "draft_factor": 2}  # changes here invalidate partial work
CHUNK = 8              # files per task sent to a worker
WORKER_TIMEOUT = 600   # seconds without an answer from a worker before giving up (a crashed worker's
                       # task is never answered by multiprocessing.Pool)


class BadImage(Exception):
    """A file that cannot be used as an image; ``str()`` is the reason."""


# --------------------------------------------------------------------------- one image

def resize_box(width, height, size):
    """The source box that maps onto the central ``size`` x ``size`` crop of the resized image.

    The image is rescaled to ``(new_w, new_h)`` with the shorter side ``size`` and the
    longer ``round(longer * size / shorter)``, and the crop starts at
    ``((new_w - size) // 2, (new_h - size) // 2)``. Returns ``(new_w, new_h, left, top, box)``,
    ``box = (x0, y0, x1, y1)`` in source pixels for ``Image.resize(..., box=box)``.
    """
    scale = size / min(width, height)
    new_w = max(size, round(width * scale))
    new_h = max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return new_w, new_h, left, top, box


def to_rgb(image):
    """Any Pillow image as mode RGB: 16-bit and 32-bit integer grayscale scaled by 1/257."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        levels = np.asarray(image).astype(np.float64) / 257.0              # (H, W)
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        levels = np.asarray(image)                                         # (H, W)
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def stored_image(image, size):
    """A decoded Pillow image, any mode, as stored (§2): RGB, shorter side to ``size``, the
    central ``size`` x ``size`` (Lanczos). Returns (R, R, C) uint8."""
    image = to_rgb(image)
    *_, box = resize_box(image.width, image.height, size)
    return np.asarray(image.resize((size, size), Image.LANCZOS, box=box))   # (R, R, C)


def load_image(path, size, draft_factor=RECIPE["draft_factor"]):
    """The file at ``path`` (or the file's bytes) as the stored image (§2): (R, R, C) uint8, R = ``size``.

    Raises ``BadImage`` with the reason for a file that is empty, not an image, truncated
    or otherwise undecodable. Truncated files are detected only while Pillow's
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is False, as the workers of ``prepare`` make sure.
    """
    if (len(path) if isinstance(path, bytes) else os.path.getsize(path)) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
                width, height = image.size
                if image.format == "JPEG" and draft_factor:
                    ratio = draft_factor * size / min(width, height)
                    if ratio <= 0.5:  # only when a DCT scale of 1/2 or less keeps >= 2R
                        image.draft(None, (int(np.ceil(width * ratio)), int(np.ceil(height * ratio))))
                image.load()
                out = stored_image(image, size)                                 # (R, R, C)
    except Image.UnidentifiedImageError:
        raise BadImage("not an image (Pillow cannot identify the format)") from None
    except Image.DecompressionBombError as error:
        raise BadImage(f"too many pixels: {error}") from None
    except OSError as error:
        raise BadImage(f"truncated or corrupt: {error}") from None
    except Exception as error:  # a decoder may raise anything on a broken file
        raise BadImage(f"cannot decode: {type(error).__name__}: {error}") from None
    assert out.shape == (size, size, 3) and out.dtype == np.uint8, out.shape
    return out


def _worker_init(parent=None):
    """Each worker process: fail on truncated files instead of padding them (Pillow's default),
    and end quietly with its parent (``parent``: its pid)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if parent is not None:
        _end_with_parent(parent)


def _end_with_parent(parent):
    """A worker whose parent was killed (SIGKILL) would print a BrokenPipeError traceback at
    its next answer. On Linux the kernel ends it with its parent instead (PR_SET_PDEATHSIG);
    elsewhere a thread checks every 0.2 s that the parent is still there."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        else:
            if os.getppid() != parent:   # it died before the call
                os._exit(0)
            return

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def decoded_image(pixels, size):
    """An image its source gives decoded, (H, W, C) uint8 (CIFAR-10's records): stored as it is
    when it has the stored size, else resized as a file would be (``stored_image``)."""
    if pixels.shape == (size, size, 3):
        return np.ascontiguousarray(pixels, dtype=np.uint8)                 # (R, R, C)
    return stored_image(Image.fromarray(pixels, "RGB"), size)


def _decode_chunk(paths, size, with_pca):
    """Worker: ``[(pixels bytes or None, reason, X^T X (C, C) float64 or None), ...]``.

    ``paths``: file paths, the files' bytes (tar members read by the parent), or images
    already decoded (arrays)."""
    results = []
    for path in paths:
        try:
            image = (decoded_image(path, size) if isinstance(path, np.ndarray)
                     else load_image(path, size))                          # (R, R, C)
        except BadImage as error:
            results.append((None, str(error), None))
            continue
        xtx = None
        if with_pca:
            pixels = image.reshape(-1, 3).astype(np.float64)               # (R*R, C)
            xtx = pixels.T @ pixels                                        # (C, C), exact integers
        results.append((image.tobytes(), "", xtx))
    return results


# --------------------------------------------------------------------------- the source

def open_source(src, val_labels=None):
    """The source (``source.Source``) that the folder ``src`` is: ILSVRC-2012's files as
    downloaded (``ilsvrc.ILSVRC``: its tars, a flat val folder, label files, the devkit), else
    a folder tree (``folders.FolderTree``). ``val_labels``: the label file of a flat val split."""
    return ILSVRC(src, val_labels) if ILSVRC.holds(src, val_labels) else FolderTree(src)


def fingerprint(relpaths, labels, image_size, source=""):
    """A digest of the file list and the recipe (and ``source``, a ``source_digest``): partial
    work is reused only when it matches."""
    digest = hashlib.sha256(json.dumps([RECIPE, image_size, loader.FORMAT_VERSION]).encode())
    for path, label in zip(relpaths, labels):
        digest.update(f"{label}\t{path}\n".encode("utf-8", "surrogateescape"))
    digest.update(source.encode())
    return digest.hexdigest()


def source_digest(root, relpaths):
    """A digest of the files' names (relative to ``root``), sizes and modification times: a
    second source whose files have the same names, or the same files changed, differ in it."""
    digest = hashlib.sha256()
    for path in relpaths:
        stat = os.stat(os.path.join(root, path))
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


# --------------------------------------------------------------------------- progress

class Progress:
    """Images done, images/s and ETA: a tqdm bar on a terminal, else a line every 10 s."""

    def __init__(self, name, total, done, enabled):
        self.name, self.total, self.done, self.enabled = name, total, done, enabled
        self.start, self.start_done, self.last_line = time.time(), done, time.time()
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                import tqdm
                self.bar = tqdm.tqdm(total=total, initial=done, desc=name, unit="img",
                                     dynamic_ncols=True, smoothing=0.1)
            except ImportError:
                pass

    def update(self, count):
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.enabled and time.time() - self.last_line >= 10.0:
            self.last_line = time.time()
            print(self.line(), file=sys.stderr, flush=True)

    def line(self):
        elapsed = max(time.time() - self.start, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return f"{self.name}: {self.done}/{self.total} images, {rate:.0f} images/s, ETA {eta:.0f} s"

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- one split

def _state_file(dst, split):
    return os.path.join(dst, f".{split}.state.npz")


def _done_file(dst, split):
    return os.path.join(dst, f".{split}.done.json")


def _write_atomic(path, write):
    """Write a file under a temporary name, flush it to disk, then rename it into place."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SplitWork:
    """The resumable state of one split being written: files done, rows, skips, sums."""

    def __init__(self, count, size, with_pca, print_fn):
        self.next = 0                                          # files consumed, in list order
        self.rows = 0                                          # images written
        self.skipped = []                                      # [(file index, reason)]
        self.mean_sum = np.zeros((size, size, 3), np.float64)  # (R, R, C) sum of images
        self.xtx = np.zeros((3, 3), np.float64)                # (C, C) sum of pixel outer products
        self.count, self.with_pca, self.print = count, with_pca, print_fn

    def save(self, path, key):
        def write(f):
            np.savez(f, next=self.next, rows=self.rows, key=key, mean_sum=self.mean_sum, xtx=self.xtx,
                     skipped=json.dumps(self.skipped))
        _write_atomic(path, write)

    def load(self, path, key):
        """Take the saved state when it belongs to the same file list and recipe."""
        try:
            with np.load(path) as saved:
                if str(saved["key"]) != key:
                    self.print(f"{path}: partial work of another file list or recipe, starting again")
                    return False
                self.next, self.rows = int(saved["next"]), int(saved["rows"])
                self.mean_sum, self.xtx = saved["mean_sum"], saved["xtx"]
                self.skipped = [tuple(s) for s in json.loads(str(saved["skipped"]))]
                return True
        except (OSError, ValueError, KeyError):
            return False


def _create_images_file(path, count, size):
    """An .npy file of ``count`` rows (a sparse file); returns its header length in bytes."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
    return _header_length(path)


def _header_length(path):
    images = np.load(path, mmap_mode="r")
    offset = images.offset
    del images
    return offset


def _finish_images_file(path, rows, size, header_length):
    """Rewrite the header for ``rows`` images (same length: numpy leaves room) and truncate."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (rows, size, size, 3)}
    with open(path, "r+b") as f:
        np.lib.format.write_array_header_1_0(f, header)
        assert f.tell() == header_length, "the .npy header changed length"
        f.truncate(header_length + rows * size * size * 3)
        f.flush()
        os.fsync(f.fileno())


def prepare_split(pool, workers, src, dst, split, relpaths, labels, size, with_pca,
                  progress, checkpoint_seconds, print_fn, read=None, key=None):
    """Decode, resize and write one split; resumes saved work. Returns ``SplitWork``.

    ``read(start, stop)``: what the workers decode for files ``start..stop-1`` (tar members'
    bytes, read here in list order); default: their paths under ``src``. ``key``: what saved
    work must match (default: ``fingerprint`` of the files and size)."""
    key = key or fingerprint(relpaths, labels, size)
    path = os.path.join(dst, loader.images_file(split))
    work = SplitWork(len(relpaths), size, with_pca, print_fn)
    resumed = os.path.exists(path) and work.load(_state_file(dst, split), key)
    if resumed:
        header_length = _header_length(path)
        print_fn(f"{split}: resuming at file {work.next} of {len(relpaths)}")
    else:
        header_length = _create_images_file(path, len(relpaths), size)
    row_bytes = size * size * 3
    bar = Progress(split, len(relpaths), work.next, progress)
    fd = os.open(path, os.O_RDWR)
    try:
        todo = [(start, relpaths[start:start + CHUNK]) for start in range(work.next, len(relpaths), CHUNK)]
        pending, chunks = collections.deque(), iter(todo)

        def submit():
            item = next(chunks, None)
            if item is not None:
                sources = (read(item[0], item[0] + len(item[1])) if read is not None
                           else [os.path.join(src, p) for p in item[1]])
                pending.append(pool.apply_async(_decode_chunk, (sources, size, with_pca)))

        for _ in range(3 * workers):
            submit()
        last_save = time.time()
        while pending:
            start = work.next
            try:
                results = pending.popleft().get(timeout=WORKER_TIMEOUT)
            except multiprocessing.TimeoutError:
                raise loader.DataError(f"{split}: no answer from a worker in {WORKER_TIMEOUT} s for the files from "
                                     f"{relpaths[start]} on (a crashed decoder?); rerun to resume") from None
            submit()
            for pixels, reason, xtx in results:
                if pixels is None:
                    work.skipped.append((work.next, reason))
                else:
                    os.pwrite(fd, pixels, header_length + work.rows * row_bytes)
                    image = np.frombuffer(pixels, np.uint8).reshape(size, size, 3)  # (R, R, C)
                    np.add(work.mean_sum, image, out=work.mean_sum)
                    if with_pca:
                        work.xtx += xtx
                    work.rows += 1
                work.next += 1
            bar.update(len(results))
            if time.time() - last_save >= checkpoint_seconds and pending:
                os.fsync(fd)
                work.save(_state_file(dst, split), key)
                last_save = time.time()
        os.fsync(fd)
    finally:
        os.close(fd)
        bar.close()
    if work.rows == 0:
        raise loader.DataError(f"split {split}: none of its {len(relpaths)} files is a readable image "
                             f"(see {os.path.join(dst, loader.REPORT_FILE)})")
    _finish_images_file(path, work.rows, size, header_length)
    return work


def pca_from_sums(mean_sum, xtx, images):
    """Covariance (C, C), eigenvalues (C,) descending and eigenvectors (C, C) as columns.

    From the sum of the images (R, R, C) and the sum of pixel outer products (C, C), over
    ``images`` images, all float64: cov = (X^T X - n mu mu^T) / (n - 1) (as ``np.cov``).
    Each eigenvector's largest component is made positive, so the signs are reproducible.
    """
    n = images * mean_sum.shape[0] * mean_sum.shape[1]               # pixels
    mu = mean_sum.sum(axis=(0, 1)) / n                               # (C,)
    cov = (xtx - n * np.outer(mu, mu)) / (n - 1)                     # (C, C)
    eigvals, eigvecs = np.linalg.eigh(cov)                           # ascending
    eigvals, eigvecs = eigvals[::-1].copy(), eigvecs[:, ::-1].copy() # (C,), (C, C) descending
    signs = np.sign(eigvecs[np.abs(eigvecs).argmax(axis=0), np.arange(3)])
    return cov, np.maximum(eigvals, 0.0), eigvecs * signs


def _finish_split(dst, split, relpaths, labels, work, size, lost=(), key=None):
    """Labels, paths and (for the statistics split) the mean and PCA of a written split.
    ``lost``: ``[(relpath, reason)]``, tar members that damaged headers cost, reported with
    the skipped files."""
    bad = {index for index, _ in work.skipped}
    good = [i for i in range(len(relpaths)) if i not in bad]
    np.save(os.path.join(dst, loader.labels_file(split)), labels[good])
    with open(os.path.join(dst, loader.paths_file(split)), "w") as f:
        json.dump([relpaths[i] for i in good], f)
    if work.with_pca:
        np.save(os.path.join(dst, loader.MEAN_FILE), (work.mean_sum / work.rows).astype(np.float32))
        cov, eigvals, eigvecs = pca_from_sums(work.mean_sum, work.xtx, work.rows)
        np.savez(os.path.join(dst, loader.PCA_FILE), cov=cov, eigvals=eigvals, eigvecs=eigvecs,
                 pixels=work.rows * size * size)
    done = {"rows": work.rows, "files": len(relpaths),
            "skipped": [[split, relpaths[i], reason] for i, reason in work.skipped],
            "lost": [[split, relpath, reason] for relpath, reason in lost],
            "key": key or fingerprint(relpaths, labels, size)}
    _write_atomic(_done_file(dst, split), lambda f: f.write(json.dumps(done).encode()))
    if os.path.exists(_state_file(dst, split)):
        os.remove(_state_file(dst, split))
    return done


# --------------------------------------------------------------------------- whole data set

def usable_cores():
    """The cores this process may run on (all of them where the OS does not say)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_destination(dst):
    """Refuse a non-empty folder that is neither a cache nor our partial work."""
    if not os.path.isdir(dst):
        os.makedirs(dst)
        return
    ours = {loader.META_FILE, loader.MEAN_FILE, loader.PCA_FILE, loader.REPORT_FILE}
    foreign = [f for f in os.listdir(dst)
               if f not in ours and not f.startswith(".") and not f.endswith((".npy", ".json", ".tmp"))]
    if foreign:
        raise loader.DataError(f"{dst} holds other files ({foreign[0]}, ...): "
                             "choose an empty or new folder for the cache")


def _other_cache(dst, src, keys, sources):
    """Why the finished cache ``dst`` is not that of ``src``'s files (None when it is)."""
    with open(os.path.join(dst, loader.META_FILE)) as f:
        meta = json.load(f)
    recorded = meta.get("sources")      # None: made before the sources' digests were recorded
    if meta["keys"] == keys and recorded in (None, sources):
        return None
    if meta["keys"] != keys:
        return f"{dst} holds a cache of other files, splits or image size (of {meta['source']})"
    if meta["source"] == os.path.abspath(src):
        return f"{dst} holds a cache of {meta['source']} made before its files changed (other sizes or times)"
    return (f"{dst} holds a cache of {meta['source']}, whose files have the names of {os.path.abspath(src)}'s "
            "but other sizes or times")


def _cache_folder(dst, src, keys, sources, elsewhere, print_fn):
    """``(folder, finished)``: ``dst``, or with ``elsewhere`` ``dst-<digest>`` when ``dst`` is a
    finished cache of another source; ``finished`` when that folder is already this source's cache."""
    for moved in (False, True):
        if not loader.is_cache(dst):
            return dst, False
        why = _other_cache(dst, src, keys, sources)
        if why is None:
            return dst, True
        if not elsewhere or moved:
            raise loader.DataError(f"{why}: remove it or choose another folder")
        other = f"{os.path.normpath(dst)}-{hashlib.sha256(json.dumps([keys, sources]).encode()).hexdigest()[:8]}"
        print_fn(f"{why}: preparing {src} into {other} instead")
        dst = other
    raise AssertionError("unreachable")


def prepare(src, dst, image_size=256, workers=None, progress=True, splits=None,
            class_names=None, checkpoint_seconds=10.0, print_fn=print, classes=None, val_labels=None,
            elsewhere=False, check=None):
    """Build the cache of ``src`` in ``dst`` (or resume it, or skip it). Returns ``dst``.

    ``src``: a ``source.Source`` (a folder tree, ILSVRC's files, CIFAR-10, the demo), or a
    folder, opened as the source it is (``open_source``). Every question about the images
    (which splits, members, labels and class names) goes to the source.
    ``splits`` defaults to the source's (``train`` plus ``val`` when SRC has it); the first split gives the
    classes, the mean image and the PCA. ``workers`` defaults to every core this process
    may use. ``classes`` (a list of folder names, or a file whose lines start with them,
    such as synset_words.txt) fixes the class list and its order, for subsets of ImageNet
    whose labels must be the 1000-class indices; every split's folders must then be in it,
    and its names serve as class names unless ``class_names`` is given. A finished cache
    of the same files and size is left alone; one of other files or another size, or of
    files of the same names with other sizes or times (another source, ``source_digest``),
    is refused (remove it or choose another DST), or with ``elsewhere`` (a default folder
    named after the source) left alone and the cache made in ``DST-<digest>``, whose path
    is returned. ``val_labels``: the label file of a flat
    validation split (LOC_val_solution.csv, the devkit's ground truth or the devkit archive;
    default: found in SRC), see ``alexnet_np/data/ilsvrc.py``. ``check(classes, files)``: called
    with the first split's class list and number of files once they are listed, before any
    image is read or written; it raises to refuse the data (train.py: too few images for a
    batch, other classes than a checkpoint's).
    """
    source = src if isinstance(src, Source) else open_source(src, val_labels)
    src = source.root
    if loader.is_cache(dst) and not os.path.isdir(src):
        return dst  # the cache is all that is needed
    if not os.path.isdir(src):
        raise loader.DataError(f"data folder {src} does not exist")
    splits = list(source.splits() if splits is None else splits)
    if isinstance(classes, str):
        class_names = classes if class_names is None else class_names
        classes = read_class_list(classes)
    listings = _list_keeping(source, dst, splits, classes, print_fn, check)
    classes = listings[splits[0]][0]
    keys = {s: fingerprint(listings[s][1], listings[s][2], image_size) for s in splits}
    sources = {s: source_digest(src, listings[s].files) for s in splits}
    dst, finished = _cache_folder(dst, src, keys, sources, elsewhere, print_fn)
    if finished:
        print_fn(f"{dst}: the cache is complete; nothing to do")
        return dst
    _check_destination(dst)
    work_keys = {s: fingerprint(listings[s][1], listings[s][2], image_size, sources[s]) for s in splits}
    names = source.class_names(classes, class_names)
    workers = workers or usable_cores()
    done = {}
    with multiprocessing.Pool(workers, initializer=_worker_init, initargs=(os.getpid(),)) as pool:
        for k, split in enumerate(splits):
            _, relpaths, labels, empty = listings[split]
            _say_empty(dst, split, empty, print_fn)
            try:
                with open(_done_file(dst, split)) as f:
                    done[split] = json.load(f)
                if done[split]["key"] == work_keys[split]:
                    print_fn(f"{split}: already written, skipping")
                    continue
            except (OSError, ValueError):
                pass
            work = prepare_split(pool, workers, src, dst, split, relpaths, labels, image_size,
                                 k == 0, progress, checkpoint_seconds, print_fn,
                                 read=listings[split].read, key=work_keys[split])
            done[split] = _finish_split(dst, split, relpaths, labels, work, image_size,
                                        listings[split].lost, work_keys[split])
            print_fn(_summary(dst, split, done[split]))
    _write_meta(src, dst, splits, classes, names, listings, done, keys, image_size, sources)
    return dst


def _list_keeping(source, dst, splits, classes, print_fn, check=None):
    """``source.listings``, a tar's listing kept in ``dst`` (made for it; removed again when the
    listing fails, or ``check`` refuses it, and nothing was kept in it)."""
    made = not os.path.exists(dst)
    if not loader.is_cache(dst):
        _check_destination(dst)
    try:
        listings = source.listings(splits, classes, print_fn, listing_dir=dst)
        if check is not None:
            first = listings[splits[0]]
            check(first[0], len(first[1]))
        return listings
    except (loader.DataError, ValueError):
        if made and os.path.isdir(dst) and not os.listdir(dst):
            os.rmdir(dst)
        raise


def _say_empty(dst, split, empty, print_fn):
    """A line per empty class, or one line for many (a cut train tar may lack hundreds)."""
    if len(empty) > 5:
        print_fn(f"{split}: {len(empty)} classes are empty ({', '.join(empty[:3])}, ...; "
                 f"their indices are kept; listed in {os.path.join(dst, loader.REPORT_FILE)})")
        return
    for name in empty:
        print_fn(f"{split}: class folder {name} is empty (its index is kept)")


def _summary(dst, split, done):
    """One line: images written, files skipped, tar members lost, and where they are listed."""
    skipped, lost = len(done["skipped"]), len(done.get("lost", []))
    return (f"{split}: {done['rows']} images written, {skipped} file{'s' * (skipped != 1)} skipped"
            + (f", {lost} lost to damaged tar headers" if lost else "")
            + (f" (listed in {os.path.join(dst, loader.REPORT_FILE)})" if skipped or lost else ""))


def _write_meta(src, dst, splits, classes, names, listings, done, keys, image_size, sources):
    """The report, then ``meta.json``, last: the mark of a finished cache."""
    skipped = [row for s in splits for row in done[s]["skipped"] + done[s].get("lost", [])]
    empty = [[s, name] for s in splits for name in listings[s][3]]
    lines = ["split\tpath\treason"] + ["\t".join(row) for row in skipped]
    lines += [f"{s}\t{os.path.join(s, name)}/\tempty class folder (index kept)" for s, name in empty]
    _write_atomic(os.path.join(dst, loader.REPORT_FILE), lambda f: f.write(("\n".join(lines) + "\n").encode()))
    meta = {"format": loader.FORMAT_VERSION, "complete": True, "source": os.path.abspath(src),
            "image_size": image_size, "recipe": RECIPE, "splits": splits, "stats_split": splits[0],
            "classes": classes, "class_names": names,
            "counts": {s: done[s]["rows"] for s in splits}, "files": {s: done[s]["files"] for s in splits},
            "skipped": skipped, "empty_classes": empty, "keys": keys, "sources": sources}
    _write_atomic(os.path.join(dst, loader.META_FILE), lambda f: f.write(json.dumps(meta, indent=1).encode()))
    for name in os.listdir(dst):  # work files, and temporaries left by a killed run
        if name.endswith(".tmp") or (name.startswith(".") and name.endswith((".state.npz", ".done.json"))):
            os.remove(os.path.join(dst, name))


def build_parser():
    parser = Parser(
        prog="python -m alexnet_np.data.prepare",
        description="Preprocess an ImageFolder data set (train/<class>/<image>, val/...) into a cache "
                    "of 256x256 RGB images, with the training mean image and RGB PCA (AlexNet §2).")
    parser.add_argument("src", help="the data set root, holding train/ and optionally val/")
    parser.add_argument("dst", type=folder_to_write, help="the cache folder to write (resumed if a run was interrupted)")
    parser.add_argument("--image-size", type=POSITIVE_INT, default=256, help="stored side R (default 256, §2)")
    parser.add_argument("--workers", type=WORKERS, default=None, help="processes (default: all cores)")
    parser.add_argument("--splits", nargs="+", default=None,
                        help="split folders, the first giving classes, mean and PCA (default: train [val])")
    parser.add_argument("--class-names", type=existing_file, default=None, help="class names file (default: found in SRC)")
    parser.add_argument("--classes", type=existing_file, default=None,
                        help="file fixing the class list and order, first word of each line "
                             "(e.g. synset_words.txt for ImageNet subsets; default: the train folders)")
    parser.add_argument("--val-labels", type=existing_file, default=None,
                        help="labels of a flat val split (LOC_val_solution.csv, the devkit's "
                             "ILSVRC2012_validation_ground_truth.txt or ILSVRC2012_devkit_t12.tar.gz; default: found in SRC)")
    parser.add_argument("--checkpoint-seconds", type=NON_NEGATIVE, default=10.0,
                        help="how often progress is saved for a resume, 0 = after every chunk (default 10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        prepare(args.src, args.dst, args.image_size, args.workers, not args.no_progress,
                args.splits, args.class_names, args.checkpoint_seconds, classes=args.classes,
                val_labels=args.val_labels)
    except loader.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
