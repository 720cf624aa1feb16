"""Train AlexNet as §5 does: SGD, batch 128, momentum 0.9, weight decay 0.0005, lr 0.01
divided by 10 when the validation error stops improving (at most three times), 90 epochs.

    python train.py                                   # the built-in demo data set, on a CPU, ~2 minutes
    python train.py --data /data/imagenet --device gpu          # ImageNet, both towers on GPUs 0 and 1
    python train.py --data PHOTOS --preset demo                 # the demo's small net on your photos
    python train.py --resume runs/20250101-120000               # continue exactly where it stopped
    mpiexec -n 4 python train.py --data /data/imagenet          # 4 ranks, data parallel (docs/ranks.md)

Every field of the configuration (alexnet_np/config.py) is an option (``--input-size``,
``--lrn-alpha-over-n``, ``--dropout-inverted``, ``--conv-channels 96,256,384,384,256``...).
Defaults: the paper's (``Config()``) with ``--data``; the demo configuration (``DEMO``)
without it; ``--preset NAME`` chooses one (``config.PRESETS``). The run folder (``--out``, default ``runs/<date-time>``) receives
config.json, log.jsonl (one JSON line per logging interval and per epoch), last.npz and
best.npz (checkpoints), curves.png, conv1_kernels.png and, at the end, Figure 4.

Exit status: 0 done (or stopped by --max-steps), 2 an error (one line ``error: ...``),
130 interrupted by Ctrl-C or SIGTERM (after saving a checkpoint). Under ``mpiexec`` rank 0
alone prints and writes; an error on any rank ends the whole job (``distributed``).
"""
import argparse
import dataclasses
import os
import sys
import time

from alexnet_np.parallel import distributed
from alexnet_np.accepts import NON_NEGATIVE_INT, POSITIVE_INT, WORKERS, Choice, Several
from alexnet_np.nn.backend import DeviceError
from alexnet_np.train.checkpoint import CheckpointError, check_architecture, load, require_training_state
from alexnet_np.cli import Parser, existing_path, folder_to_write
from alexnet_np.config import (PRESETS, Config, ConfigError, add_config_arguments, config_from_arguments,
                               describe_presets)
from alexnet_np.data.loader import DataError
from alexnet_np.nn.model import check_input_size
from alexnet_np.train.runs import (BEST, CONFIG_FILE, LAST, RUNS, check_data, data_of_checkpoint,
                                   describe_devices, open_data_once, rank_devices)
from alexnet_np.train.trainer import Options, Trainer, TrainingError

def build_parser():
    parser = Parser(
        prog="python train.py",
        description=__doc__.split("\n\n")[0] + "\n\n"
                    "The defaults shown below are the paper's, used with --data. Without --data: the built-in\n"
                    "demo data set (10 generated classes) and the demo preset's values (--preset demo, listed\n"
                    "at the end). --preset NAME chooses a configuration; an option given beside it changes one value.",
        epilog="presets (--preset NAME):\n" + describe_presets())
    run = parser.add_argument_group("run")
    run.add_argument("--device", type=Choice("auto", "cpu", "gpu"), default=None,
                     help="cpu (NumPy) or gpu (CuPy); default: the GPU when one is usable, else the CPU; "
                          "with --resume, the device the run was trained on")
    run.add_argument("--gpus", type=Several(NON_NEGATIVE_INT), default=None, metavar="I,J",
                     help="the GPU of each tower (default 0,1; with one GPU both towers share it)")
    run.add_argument("--winograd", action=argparse.BooleanOptionalAction, default=None,
                     help="3x3 convolutions at stride 1 (conv3-conv5) by Winograd's F(2x2, 3x3) instead of im2col (default: on the CPU, where it is faster; not on a GPU)")
    run.add_argument("--data", default=None,
                     help="an ImageFolder root (train/<class>/<image>, val/...) or a prepared cache "
                          "(default: the built-in demo data set)")
    run.add_argument("--cache", type=folder_to_write, default=None,
                     help="where to prepare an ImageFolder --data (default data_cache/<name>-<image size>)")
    run.add_argument("--workers", type=WORKERS, default=None, help="processes for preparing the data (default: all cores)")
    run.add_argument("--out", type=folder_to_write, default=None, help=f"run folder (default {RUNS}/<date-time>; with --resume, the run's)")
    run.add_argument("--resume", type=existing_path, default=None, metavar="RUN_OR_CHECKPOINT",
                     help=f"continue a run: its folder (uses {LAST}) or a checkpoint file")
    run.add_argument("--preset", type=Choice(*PRESETS), default=None,
                     help="a whole configuration by name (listed at the end); default: paper with --data, "
                          "demo without")
    o = Options()
    run.add_argument("--log-every", type=POSITIVE_INT, default=None, help=f"steps between log lines (default {o.log_every})")
    run.add_argument("--checkpoint-every", type=NON_NEGATIVE_INT, default=None,
                     help=f"steps between mid-epoch checkpoints, 0 = epoch ends only (default {o.checkpoint_every})")
    run.add_argument("--keep-epochs", action=argparse.BooleanOptionalAction, default=None,
                     help="keep a checkpoint of every epoch (epoch-NNN.npz) besides last and best")
    run.add_argument("--lr-steps", type=Several(POSITIVE_INT), default=None, metavar="E,E,...",
                     help="a fixed schedule instead of §5's plateau rule: divide the rate by 10 after these epochs")
    run.add_argument("--max-steps", type=NON_NEGATIVE_INT, default=None,
                     help="stop after this many steps in all, with a checkpoint (default, or 0: no limit); "
                          "--resume goes on to the run's epochs unless given again")
    run.add_argument("--stall-steps", type=NON_NEGATIVE_INT, default=None,
                     help="report a loss stuck at ln K after this many steps (default, or 0: max(200, one epoch))")
    run.add_argument("--eval-batch-size", type=NON_NEGATIVE_INT, default=None,
                     help="validation batch (default, or 0: --batch-size)")
    run.add_argument("--neighbour-pool", type=NON_NEGATIVE_INT, default=None,
                     help="training images searched for Figure 4's neighbours (default 0 = all)")
    run.add_argument("--threads", type=NON_NEGATIVE_INT, default=None,
                     help=f"data threads, 0 = none: batches made when needed (default {o.threads})")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bars (default on)")
    run.add_argument("--figures", action=argparse.BooleanOptionalAction, default=None,
                     help="draw curves and kernels every epoch and Figure 4 at the end (default on)")
    add_config_arguments(parser, Config(), title="configuration (defaults shown: the paper's, used with --data; "
                                                 "without it, or with --preset, the preset's; §-numbers in config.py)")
    return parser


def options_from(args, base):
    """``base`` Options with every script option the user gave."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **given)


def describe_config(config, reference, reference_name):
    """One line per field, marking those that differ from ``reference``."""
    lines = []
    for field in dataclasses.fields(Config):
        value, ref = getattr(config, field.name), getattr(reference, field.name)
        note = "" if value == ref else f"   ({reference_name}: {ref})"
        lines.append(f"  {field.name:18s} {value}{note}")
    return "\n".join(lines)


def new_run_folder():
    """runs/<date-time>, with a suffix if that folder is taken."""
    base = os.path.join(RUNS, time.strftime("%Y%m%d-%H%M%S"))
    out, n = base, 1
    while os.path.exists(out):
        n += 1
        out = f"{base}-{n}"
    return out


def device_kind(asked, ckpt):
    """--device as given; else, resuming, the kind of device the run was trained on (its
    checkpoint says); else auto. A resumed run keeps its arithmetic unless told otherwise."""
    if asked is not None:
        return asked
    if ckpt is not None:
        return ckpt.meta.get("device", "auto")   # checkpoints older than this record: auto
    return "auto"


def resumed_limit(options, asked, step):
    """The step limit of a resumed run at ``step``: --max-steps as given on the resume; else the
    run's own limit while the run has not reached it (a Ctrl-C before it); else none, so that the
    run goes on to its epochs (the limit that stopped it would stop it again after one step)."""
    if asked is not None:
        if asked and asked <= step:
            raise ConfigError("max_steps", asked, f"more than the {step} steps the run has taken "
                              "(or 0: no limit)")
        return options
    if options.max_steps and options.max_steps <= step:
        return dataclasses.replace(options, max_steps=0)
    return options


def classes_differ(found, asked, ckpt):
    return DataError(f"the data has {found} classes but the configuration "
                     f"{'of the checkpoint ' if ckpt else ''}asks for {asked}")


def one_class(data, count):
    return DataError(f"the data {data} has {count} class: a classifier needs at least 2")


def too_few_images(batch_size, images, data):
    return ConfigError("batch_size", batch_size, f"at most the {images} training images of {data}")


def resume_point(path):
    if os.path.isdir(path):
        return os.path.join(path, LAST)
    return path


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset is not None and args.resume is not None:
        parser.error("--preset is for a new run: --resume continues with the run's configuration "
                     "(options given change single values)")
    return distributed.run_on_ranks(
        run, args,
        agreed=(ConfigError, TrainingError, distributed.SharedError),   # met by every rank at one point
        errors=(DeviceError, DataError, CheckpointError,
                ValueError),   # ValueError: an impossible configuration (sizes that do not fit, ...)
        interrupted="interrupted: stopped without saving; the last checkpoint, if any, is kept")


def run(args, world=None):
    world = world or distributed.World()
    ckpt = None
    if args.resume:
        ckpt = load(resume_point(args.resume))
        require_training_state(ckpt)
        config = config_from_arguments(args, ckpt.config)
        check_architecture(ckpt.path, config, ckpt.config)
        options = options_from(args, Options(**{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in ckpt.meta["options"].items()}))
        options = resumed_limit(options, args.max_steps, ckpt.position[2])
        out = args.out or os.path.dirname(os.path.abspath(ckpt.path))
        data = args.data if args.data is not None else data_of_checkpoint(ckpt)
        source = f"the configuration of {ckpt.path}"
        changed = [f"{f.name} {getattr(ckpt.config, f.name)} -> {getattr(config, f.name)}"
                   for f in dataclasses.fields(Config) if getattr(config, f.name) != getattr(ckpt.config, f.name)]
    else:
        data = args.data
        preset = args.preset or ("paper" if data is not None else "demo")
        base = PRESETS[preset][0]
        source = f"the {preset} preset"
        config = config_from_arguments(args, base)
        options = options_from(args, Options())
        out = world.bcast(args.out or new_run_folder())   # one name, rank 0's clock
        if os.path.exists(os.path.join(out, LAST)) or os.path.exists(os.path.join(out, BEST)):
            raise CheckpointError(f"{out} already holds a run: continue it with --resume {out}, "
                                  "or choose another --out")
        changed = []

    check_input_size(config)
    world.rows(config.batch_size)   # refuse a batch that does not divide among the ranks
    check_data(data)                # a mistyped --data before anything else is said
    if world.size > 1:
        print(f"ranks: {world.describe()}; each computes {config.batch_size // world.size} of every "
              f"batch of {config.batch_size}")
    # The device first: a wrong --device should fail before any data is prepared.
    kind = device_kind(args.device, ckpt)
    try:
        devices = rank_devices(kind, config.towers, args.gpus, world, args.winograd)
    except DeviceError as error:
        if args.device is None and ckpt is not None:   # the kind came from the checkpoint
            raise DeviceError(f"{error} (--resume continues on the {kind.upper()} the run was trained "
                              "on: give --device cpu to continue on the CPU)") from None
        raise
    print(describe_devices(kind, devices))

    if data is None and ckpt is None:
        print("no --data: training on the built-in demo data set (10 generated classes of shapes) "
              + ("with the demo preset (alexnet_np/config.py, DEMO; why each value: the comment there), "
                 "small enough for a CPU" if args.preset in (None, "demo") else f"with the {args.preset} preset"))
    fixed_classes = args.num_classes is not None or ckpt is not None
    recorded = ckpt.meta.get("classes") if ckpt is not None else None   # None: written before runs recorded them

    def check_classes(classes):
        if fixed_classes and len(classes) != config.num_classes:
            raise classes_differ(len(classes), config.num_classes, ckpt)
        if recorded is not None and list(classes) != list(recorded):
            k = next(k for k, (mine, theirs) in enumerate(zip(classes, recorded)) if mine != theirs)
            raise DataError(f"the data's classes are not those of checkpoint {ckpt.path} (class {k}: "
                            f"{classes[k]} here, {recorded[k]} there): resume on the data the run was trained on")

    def check(classes, files):
        """Before a source is prepared: what would refuse it after (below), on its listing."""
        check_classes(classes)
        if len(classes) < 2:
            raise one_class(data, len(classes))
        if files < config.batch_size:
            raise too_few_images(config.batch_size, files, data)

    cache, info = open_data_once(world, data, config.image_size, args.cache, args.workers, options.progress,
                                 check=check)
    print(f"data: {cache!r}")
    fixes = {}
    if cache.image_size != config.image_size:
        if cache.image_size < config.input_size:
            raise DataError(f"the data {cache.path} holds {cache.image_size}x{cache.image_size} images, "
                            f"smaller than the crops of --input-size {config.input_size}")
        fixes["image_size"] = cache.image_size
    check_classes(cache.classes)
    if len(cache.classes) != config.num_classes:
        if len(cache.classes) < 2:
            raise one_class(cache.path, len(cache.classes))
        fixes["num_classes"] = len(cache.classes)
    if fixes:
        config = config.replace(**fixes)
        print("from the data: " + ", ".join(f"{k} = {v}" for k, v in fixes.items()))
    if "val" not in cache.splits:
        raise DataError(f"the data {cache.path} has no val split: the schedule (§5) needs one")
    if len(cache.split("train")) < config.batch_size:
        raise too_few_images(config.batch_size, len(cache.split("train")), cache.path)

    print(f"configuration: {source} with the options given (where a value differs from the paper's, "
          "the paper's follows in brackets):")
    print(describe_config(config, Config(), "paper"))
    if ckpt is not None and changed:
        print("note: resuming with changed settings (" + "; ".join(changed) + "); the continuation is "
              "exact only with the same settings")

    if world.is_root:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, CONFIG_FILE), "w") as f:
            f.write(config.to_json() + "\n")
    trainer = Trainer(config, cache, devices, out, options, info, world=world)
    if ckpt is not None:
        trainer.resume(ckpt)
        if args.lr is not None and args.lr != ckpt.config.lr:
            trainer.optimizer.lr = trainer.schedule.lr = args.lr
            print(f"learning rate set to {args.lr:g} (--lr)")
        until = (f"to step {options.max_steps}" if options.max_steps
                 else f"to the end of epoch {config.epochs}")
        print(f"resumed from {ckpt.path}: epoch {trainer.epoch + 1}, batch {trainer.batch}, "
              f"step {trainer.step}, lr {trainer.optimizer.lr:g}; training {until}")
    print(f"run folder: {out}; schedule: {trainer.schedule.describe()}")
    outcome = trainer.run()
    if outcome == "interrupted":
        return 130
    if outcome == "finished" and trainer.history:
        best = trainer.best
        print(f"done: best validation top-1 error {100 * best['val_top1']:.2f}% (top-5 "
              f"{100 * best['val_top5']:.2f}%) at epoch {best['epoch']}, centre crop; "
              f"chance is {100 * (1 - 1 / config.num_classes):.1f}%. Checkpoints: {os.path.join(out, BEST)}, "
              f"{os.path.join(out, LAST)}. Next: python evaluate.py --ten-crop --checkpoint {os.path.join(out, BEST)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
