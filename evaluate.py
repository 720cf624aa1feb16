"""Evaluate a checkpoint: top-1 and top-5 error (§6) on a split, centre crop or ten-crop.

    python evaluate.py                       # the best checkpoint of the latest run, its data, val, centre crop
    python evaluate.py --ten-crop            # §4.1's test procedure: the mean of the softmax of 10 views
    python evaluate.py --checkpoint runs/X/best.npz --data /data/imagenet --split val --ten-crop \\
        --predictions val_top5.csv --figures

The result is printed with its procedure and split on every line that carries a number,
and written as JSON (default: next to the checkpoint, eval-<checkpoint>-<split>-<procedure>.json),
through a temporary file renamed into place, as the predictions CSV.
Errors follow §6's definition, with ties broken by class index (alexnet_np/train/metrics.py).
Exit status: 0, or 2 with one line ``error: ...``. Under ``mpiexec -n R`` the batches are
shared among the ranks and the result equals one process's (``alexnet_np.train.evaluation``);
rank 0 alone prints and writes.
"""
import argparse
import csv
import math
import os
import sys
import time

from alexnet_np.parallel import distributed
from alexnet_np.train import figures
from alexnet_np.accepts import NON_NEGATIVE_INT, POSITIVE_INT, WORKERS, Choice, Several
from alexnet_np.nn.backend import DeviceError
from alexnet_np.train.checkpoint import CheckpointError
from alexnet_np.cli import Parser, existing_file, folder_to_write, output_file
from alexnet_np.config import ConfigError
from alexnet_np.data.loader import DataError
from alexnet_np.files import write_json, write_text
from alexnet_np.train.evaluation import draw_figure4, evaluate_split, kernel_weights, sample_indices
from alexnet_np.train.runs import open_trained_model

PROCEDURES = {
    False: ("centre-crop", "one view per image: the central crop"),
    True: ("ten-crop", "the mean of the softmax outputs of 10 views: 4 corner and the centre crops, "
                       "and their horizontal reflections (§4.1)"),
}


def build_parser():
    parser = Parser(prog="python evaluate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=existing_file, default=None,
                        help="a checkpoint file (default: best.npz of the newest run under runs/)")
    parser.add_argument("--data", default=None,
                        help="an ImageFolder root or a prepared cache (default: the data of the checkpoint's run)")
    parser.add_argument("--cache", type=folder_to_write, default=None, help="where to prepare an ImageFolder --data")
    parser.add_argument("--workers", type=WORKERS, default=None, help="processes for preparing the data")
    parser.add_argument("--split", default="val", help="the split to evaluate (default val)")
    parser.add_argument("--ten-crop", action="store_true", help="§4.1's ten views, softmax outputs averaged")
    parser.add_argument("--device", type=Choice("auto", "cpu", "gpu"), default="auto",
                        help="cpu or gpu (default: the GPU when one is usable)")
    parser.add_argument("--gpus", type=Several(NON_NEGATIVE_INT), default=None, metavar="I,J",
                        help="the GPU of each tower (default 0,1; with one GPU both towers share it; "
                             "under mpiexec by node-local rank)")
    parser.add_argument("--winograd", action=argparse.BooleanOptionalAction, default=None,
                        help="3x3 convolutions at stride 1 (conv3-conv5) by Winograd's F(2x2, 3x3) instead of im2col (default: on the CPU, where it is faster; not on a GPU)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=None,
                        help="views per forward pass (default: the training batch size)")
    parser.add_argument("--json", type=output_file, default=None, help="where to write the result (default: next to the checkpoint)")
    parser.add_argument("--predictions", type=output_file, default=None, metavar="FILE.csv",
                        help="write every image's five most probable classes and their probabilities")
    parser.add_argument("--figures", action="store_true",
                        help="draw Figure 3 (conv1 kernels) and Figure 4 (centre-crop predictions, fc7 "
                             "neighbours) for this checkpoint into <run>/figures-<checkpoint>/")
    parser.add_argument("--neighbour-pool", type=NON_NEGATIVE_INT, default=0,
                        help="training images searched for Figure 4's neighbours (default 0 = all)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return distributed.run_on_ranks(run, args, errors=(ConfigError, DeviceError, DataError, CheckpointError))


def run(args, world=None):
    world = world or distributed.World()
    path, ckpt, model, cache = open_trained_model(args.checkpoint, args.device, args.gpus, args.data,
                                                  args.cache, args.workers, args.progress and world.is_root,
                                                  world=world, winograd=args.winograd)
    config, devices = ckpt.config, model.devices
    if args.split not in cache.splits:
        raise DataError(f"--split {args.split}: one of the splits of {cache.path}: {', '.join(cache.splits)}")
    split = cache.split(args.split)
    epoch, _, step = ckpt.position
    procedure, how = PROCEDURES[args.ten_crop]
    batch_size = args.batch_size or config.batch_size
    source = ckpt.meta.get("converted_from")
    print(f"checkpoint: {path} (" + (f"converted from {source['framework']}: {source['file']}" if source
                                     else f"after {epoch} epoch{'s' * (epoch != 1)}, step {step}") + ")")
    print(f"data: {cache!r}; split {args.split!r}, {len(split)} images")
    print(f"procedure: {procedure}: {how}")
    started = time.perf_counter()
    keep = sample_indices(len(split), 5) if (args.figures and not args.ten_crop) else ()
    result = evaluate_split(model, cache, args.split, config, devices[0], batch_size, ten_crop=args.ten_crop,
                            keep=keep, progress=args.progress, desc=f"{args.split} {procedure}", world=world)
    seconds = time.perf_counter() - started
    if not world.is_root:
        return 0   # rank 0 writes the result and draws
    K, n = config.num_classes, result["count"]
    tag = f"[{args.split}, {procedure}]"
    print(f"{tag} top-1 error {100 * result['top1']:.2f}% ({result['wrong1']} of {n} images wrong; "
          f"accuracy {100 * (1 - result['top1']):.2f}%)")
    print(f"{tag} top-5 error {100 * result['top5']:.2f}% ({result['wrong5']} of {n} images wrong; "
          f"accuracy {100 * (1 - result['top5']):.2f}%)")
    print(f"{tag} loss {result['loss']:.4f} (cross-entropy of the {procedure} prediction); chance: "
          f"top-1 error {100 * (1 - 1 / K):.2f}%, top-5 error {100 * max(0.0, 1 - 5 / K):.2f}%, "
          f"loss ln {K} = {math.log(K):.4f}")
    record = {"split": args.split, "procedure": procedure, "views_per_image": 10 if args.ten_crop else 1,
              "images": n, "top1_error": result["top1"], "top5_error": result["top5"],
              "top1_wrong": result["wrong1"], "top5_wrong": result["wrong5"], "loss": result["loss"],
              "chance_top1_error": 1 - 1 / K, "chance_top5_error": max(0.0, 1 - 5 / K),
              "checkpoint": os.path.abspath(path), "epochs_trained": epoch, "step": step,
              "data": os.path.abspath(cache.path), "device": devices[0].name, "ranks": world.size,
              "seconds": round(seconds, 2),
              "tie_rule": "equal scores ranked by lower class index", "config": config.to_dict()}
    stem = os.path.splitext(os.path.basename(path))[0]
    out = args.json or os.path.join(os.path.dirname(os.path.abspath(path)),
                                    f"eval-{stem}-{args.split}-{procedure}.json")
    write_json(out, record)
    print(f"wrote {out}")
    if args.predictions:
        write_predictions(args.predictions, split, result, cache.class_names, procedure)
        print(f"wrote {args.predictions} ({n} rows: each image's five most probable classes, {procedure})")
    if args.figures:
        folder = os.path.join(os.path.dirname(os.path.abspath(path)), f"figures-{stem}")
        os.makedirs(folder, exist_ok=True)
        kernels = figures.conv1_kernels(kernel_weights(model), os.path.join(folder, "conv1_kernels.png"),
                                        title=f"conv1 kernels after epoch {epoch} (Figure 3)")
        left, right = draw_figure4(model, cache, config, devices[0], folder, batch_size,
                                   pool=args.neighbour_pool, split=args.split, progress=args.progress,
                                   result=None if args.ten_crop else result)
        print(f"figures: {kernels}, {left}, {right}")
    return 0


def write_predictions(path, split, result, class_names, procedure):
    """CSV: one row per image: its file, true class, and the five most probable with probabilities."""
    k = result["top_classes"].shape[1]
    header = ["index", "path", "procedure", "true_class", "true_name", "top1_correct", "top5_correct"]
    for r in range(1, k + 1):
        header += [f"class{r}", f"name{r}", f"prob{r}"]

    def write(f):
        writer = csv.writer(f)
        writer.writerow(header)
        for i, (cls, probs, label) in enumerate(zip(result["top_classes"], result["top_probs"], result["labels"])):
            row = [i, split.relpaths[i], procedure, int(label), class_names[int(label)],
                   int(cls[0] == label), int(label in cls[:5])]
            for c, p in zip(cls, probs):
                row += [int(c), class_names[int(c)], f"{float(p):.6f}"]
            writer.writerow(row)
    write_text(path, write)


if __name__ == "__main__":
    sys.exit(main())
