"""Draw the paper's figures for a checkpoint, as PNG files (Pillow only).

    python figures.py                                   # the best checkpoint of the newest run
    python figures.py --checkpoint runs/X/best.npz --data /data/imagenet --neighbour-pool 50000

Writes into ``<run>/figures-<checkpoint>/`` (or ``--out``):
    curves.png               loss and top-1 / top-5 error by epoch, learning-rate changes marked
                             (not drawn, with one line saying so, for a checkpoint without history)
    conv1_kernels.png        Figure 3: the conv1 kernels, tower 0's block apart from tower 1's
    figure4_predictions.png  Figure 4, left: validation images, their five most probable labels
    figure4_neighbours.png   Figure 4, right: validation images and the six training images
                             nearest in fc7 feature space (Euclidean)
train.py draws the same into the run folder after each epoch (curves, kernels) and at the end.
Exit status: 0, or 2 with one line ``error: ...``.
"""
import argparse
import os
import sys

from alexnet_np.train import figures
from alexnet_np.accepts import NON_NEGATIVE_INT, POSITIVE_INT, Choice, Several
from alexnet_np.nn.backend import DeviceError
from alexnet_np.train.checkpoint import CheckpointError
from alexnet_np.cli import Parser, existing_file, fail, folder_to_write
from alexnet_np.config import ConfigError
from alexnet_np.data.loader import DataError
from alexnet_np.train.evaluation import draw_figure4, kernel_weights
from alexnet_np.train.runs import open_trained_model


def build_parser():
    parser = Parser(prog="python figures.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=existing_file, default=None, help="default: best.npz of the newest run under runs/")
    parser.add_argument("--data", default=None, help="default: the data of the checkpoint's run")
    parser.add_argument("--cache", type=folder_to_write, default=None, help="where to prepare an ImageFolder --data")
    parser.add_argument("--split", default="val", help="the images shown in Figure 4 (default val)")
    parser.add_argument("--out", type=folder_to_write, default=None, help="folder (default <run>/figures-<checkpoint name>)")
    parser.add_argument("--device", type=Choice("auto", "cpu", "gpu"), default="auto",
                        help="cpu or gpu (default: the GPU when one is usable)")
    parser.add_argument("--gpus", type=Several(NON_NEGATIVE_INT), default=None, help="the GPU of each tower (default 0,1)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=None, help="default: the training batch size")
    parser.add_argument("--neighbour-pool", type=NON_NEGATIVE_INT, default=0,
                        help="how many training images (the first ones) to search for neighbours (default 0 = all)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        path, ckpt, model, cache = open_trained_model(args.checkpoint, args.device, args.gpus, args.data,
                                                      args.cache, progress=args.progress)
        config, devices = ckpt.config, model.devices
        if args.split not in cache.splits:
            raise DataError(f"--split {args.split}: one of the splits of {cache.path}: {', '.join(cache.splits)}")
        stem = os.path.splitext(os.path.basename(path))[0]
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(path)), f"figures-{stem}")
        os.makedirs(out, exist_ok=True)
        epoch = ckpt.position[0]
        history = ckpt.meta.get("history", [])
        paths = []
        if figures.has_curves(history):
            paths.append(figures.training_curves(history, ckpt.meta.get("schedule", {}).get("changes", []),
                                                 os.path.join(out, "curves.png"), num_classes=config.num_classes,
                                                 title=f"{path}: training curves"))
        else:
            print(f"curves.png not drawn: {path} holds no training history "
                  + ("(a converted model)" if ckpt.meta.get("converted_from") else "(no epoch finished)"))
        paths.append(figures.conv1_kernels(kernel_weights(model), os.path.join(out, "conv1_kernels.png"),
                                           title=f"conv1 kernels after epoch {epoch} (Figure 3)"))
        paths += draw_figure4(model, cache, config, devices[0], out, args.batch_size or config.batch_size,
                              pool=args.neighbour_pool, split=args.split, progress=args.progress)
    except (ConfigError, DeviceError, DataError, CheckpointError) as error:
        return fail(error)
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
