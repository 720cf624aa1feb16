"""Classify photos with a trained net: each photo's most probable classes, named, with probabilities.

    python classify.py PATH... [--checkpoint CKPT] [--top K] [--ten-crop]
        [--device cpu|gpu|auto] [--json FILE] [--figure FILE.png]

PATH: image files (any format and mode ``prepare`` takes: JPEG, PNG, grayscale, CMYK, 16-bit,
whatever their names) or folders, searched at any depth for files with an image extension.
CKPT: a checkpoint trained here or converted from Caffe (default: best.npz of the newest run
under runs/). Each photo is prepared as ``prepare`` stores it and cut as evaluation cuts it
(``alexnet_np.train.trained``): the centre crop, or with ``--ten-crop`` §4.1's ten views, their
softmax outputs averaged; so it gets the probabilities ``evaluate.py --predictions`` gives it.

Prints one block per photo: its path, then its ``--top`` classes, most probable first (ties
by class index), with probability and name. ``--json`` writes the same for programs;
``--figure`` draws Figure 4's left half for the photos (each with its five most probable
classes as bars). A missing path, a folder without images or a file that cannot be decoded
gets one line ``error: PATH: why`` on stderr and the other photos are still classified.
Exit status: 0 all classified, 1 some paths failed, 2 refused (an option, the checkpoint,
the device) with one line.
"""
import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

from alexnet_np.accepts import NON_NEGATIVE_INT, POSITIVE_INT, Choice, Several
from alexnet_np.nn.backend import DeviceError
from alexnet_np.train.checkpoint import CheckpointError
from alexnet_np.cli import Parser, existing_file, fail, output_file
from alexnet_np.config import ConfigError
from alexnet_np.data.loader import DataError, prefetch
from alexnet_np.train.evaluation import progress_bar
from alexnet_np.train.figures import fit, prediction_sheet
from alexnet_np.files import write_json, write_then_rename
from alexnet_np.data.prepare import BadImage
from alexnet_np.train.runs import describe_devices
from alexnet_np.train.trained import load

PROGRESS_FROM = 48         # a progress bar for more images than this
FIGURE_IMAGES = 100        # at most this many photos on the figure
THUMBNAIL = 150            # their side on it, in pixels
PROCEDURES = {False: "centre-crop", True: "ten-crop"}


def build_parser():
    parser = Parser(prog="python classify.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument("--checkpoint", type=existing_file, default=None,
                        help="a checkpoint file (default: best.npz of the newest run under runs/)")
    parser.add_argument("--top", type=POSITIVE_INT, default=5, help="classes shown per photo (default 5)")
    parser.add_argument("--ten-crop", action="store_true", help="§4.1's ten views, softmax outputs averaged")
    parser.add_argument("--device", type=Choice("auto", "cpu", "gpu"), default="auto",
                        help="cpu or gpu (default: the GPU when one is usable)")
    parser.add_argument("--gpus", type=Several(NON_NEGATIVE_INT), default=None, metavar="I,J",
                        help="the GPU of each tower (default 0,1; with one GPU both towers share it)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=None,
                        help="views per forward pass (default: the training batch size)")
    parser.add_argument("--json", type=output_file, default=None, help="write the classes of every photo as JSON")
    parser.add_argument("--figure", type=output_file, default=None, metavar="FILE.png",
                        help=f"draw the photos (the first {FIGURE_IMAGES}) with their five most probable "
                             "classes (Figure 4, left)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return parser


# --------------------------------------------------------------------------- finding the photos

def image_extensions():
    """Lower-case file extensions Pillow can open (".jpg", ".jpeg", ".png", ".tif", ...)."""
    return {ext for ext, name in Image.registered_extensions().items() if name in Image.OPEN}


def find_images(paths):
    """``(files, failures, notes)``: the files to classify, in the order given (a folder's
    sorted, at any depth, names starting with '.' left out), ``[(path, why)]`` for paths that
    give none, and one line per folder that held other files, saying how many."""
    extensions = image_extensions()
    files, failures, notes = [], [], []
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
            continue
        if not os.path.isdir(path):
            failures.append((path, "no such file or folder"))
            continue
        found, others = [], 0
        for folder, dirs, names in os.walk(path, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(n for n in names if not n.startswith(".")):
                if os.path.splitext(name)[1].lower() in extensions:
                    found.append(os.path.join(folder, name))
                else:
                    others += 1
        if others:
            notes.append(f"{path}: {others} file{'s' * (others != 1)} without an image extension left out")
        if not found:
            failures.append((path, "a folder with no image files"))
        files += found
    return files, failures, notes


# --------------------------------------------------------------------------- classifying

def classify_files(net, files, ten_crop, top, keep_thumbnails, progress):
    """Every file through ``net`` (a ``trained.TrainedNet``), in batches decoded ahead in threads.

    Returns ``(results, failures)``: results ``[(path, [(class, name, p), ...] top-k,
    top-5 ([classes], [probabilities]), thumbnail (T, T, C) uint8 or None)]`` in file order;
    failures ``[(path, why)]`` for files that cannot be decoded.
    """
    n = max(1, net.batch_size // 10) if ten_crop else net.batch_size

    def decode(start):
        stored, good, bad = [], [], []
        for path in files[start:start + n]:
            try:
                stored.append(net.stored(path))                               # (R, R, C)
                good.append(path)
            except BadImage as error:
                bad.append((path, str(error)))
        return stored, good, bad

    results, failures = [], []
    bar = progress_bar(progress and len(files) > PROGRESS_FROM, len(files), "classify")
    try:
        for stored, good, bad in prefetch(decode, range(0, len(files), n), threads=2, depth=2):
            failures += bad
            if stored:
                batch = np.stack(stored)                                       # (N, R, R, C)
                probs = net.probabilities(batch, ten_crop)                     # (N, K)
                five = net.top(probs, max(top, 5))
                for i, path in enumerate(good):
                    thumb = np.asarray(fit(batch[i], THUMBNAIL)) if keep_thumbnails and \
                        len(results) < FIGURE_IMAGES else None
                    results.append((path, five[i][:top], five[i][:5], thumb))
            if bar is not None:
                bar.update(len(good) + len(bad))
    finally:
        if bar is not None:
            bar.close()
    return results, failures


def report_lines(path, ranked):
    """One photo's block: its path, then rank, probability and name, aligned."""
    return [path] + [f"  {r:>3}  {100 * p:6.2f}%  {name}" for r, (_, name, p) in enumerate(ranked, 1)]


def describe_checkpoint(path, ckpt):
    source = ckpt.meta.get("converted_from")
    if source:
        return f"checkpoint: {path} (converted from {source['framework']}: {source['file']})"
    epoch, _, step = ckpt.position
    return f"checkpoint: {path} (after {epoch} epoch{'s' * (epoch != 1)}, step {step})"


def check_figure_format(path):
    """Refuse (one line) a --figure name whose extension Pillow cannot write."""
    ext = os.path.splitext(path)[1].lower()
    if Image.registered_extensions().get(ext) not in Image.SAVE:
        raise DataError(f"--figure {path}: a file name ending in an image format Pillow writes (e.g. .png)")


def run(args):
    if args.figure:
        check_figure_format(args.figure)
    files, failures, notes = find_images(args.paths)
    net = load(args.checkpoint, args.device, args.gpus, args.batch_size)
    procedure = PROCEDURES[args.ten_crop]
    print(describe_checkpoint(net.path, net.checkpoint))
    print(describe_devices(args.device, net.model.devices))
    print(f"procedure: {procedure}; {len(files)} image file{'s' * (len(files) != 1)}, "
          f"{len(net.class_names)} classes")
    for note in notes:
        print(note)
    started = time.perf_counter()
    results, bad = classify_files(net, files, args.ten_crop, args.top, bool(args.figure), args.progress)
    seconds = time.perf_counter() - started
    failures += bad
    for path, ranked, _, _ in results:
        print("\n".join(report_lines(path, ranked)))
    if results:
        print(f"classified {len(results)} image{'s' * (len(results) != 1)} in {seconds:.2f} s "
              f"({len(results) / seconds:.1f} images/s, decoding included)")
    for path, why in failures:
        print(f"error: {path}: {why}", file=sys.stderr)
    if args.json:
        write_json(args.json, {
            "checkpoint": os.path.abspath(net.path), "procedure": procedure, "top": args.top,
            "images": [{"path": path, "top": [{"class": c, "id": net.classes[c], "name": name, "probability": p}
                                              for c, name, p in ranked]} for path, ranked, _, _ in results],
            "failed": [{"path": path, "reason": why} for path, why in failures]})
        print(f"wrote {args.json}")
    shown = [r for r in results if r[3] is not None]
    if args.figure and shown:
        write_then_rename(args.figure, lambda tmp: prediction_sheet(
            np.stack([thumb for *_, thumb in shown]),
            np.array([[c for c, _, _ in five] for _, _, five, _ in shown]),
            np.array([[p for _, _, p in five] for _, _, five, _ in shown]), None, net.class_names, tmp,
            columns=min(6, len(shown)), size=THUMBNAIL, captions=[os.path.basename(r[0]) for r in shown],
            title=f"five most probable classes, {procedure} (Figure 4, left)"))
        more = f" (the first {len(shown)} of {len(results)})" if len(shown) < len(results) else ""
        print(f"wrote {args.figure}{more}")
    return 1 if failures else 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, DeviceError, DataError, CheckpointError) as error:
        return fail(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
