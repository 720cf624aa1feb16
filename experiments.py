"""Rerun the paper's claims: each trick on and off, several seeds, the measured effect.

    python experiments.py lrn                     # §3.3 on the demo data, 3 seeds
    python experiments.py all                     # every experiment in turn
    python experiments.py figure1 --cifar10 ~/cifar-10-batches-bin   # Figure 1 on CIFAR-10
    python experiments.py --report runs/experiments/lrn-*            # the tables again

Experiments: lrn (§3.3), pooling (§3.4), towers (§3.2), crops, flips, lighting (§4.1),
dropout (§4.2), figure1 (§3.1). What each switches off, the paper's claim and how the effect
is measured: alexnet_np/paper/experiments.py. Exit status 0, or 2 with one line ``error: ...``.
"""
import os
import sys
import time

from alexnet_np.accepts import POSITIVE, POSITIVE_INT, Choice
from alexnet_np.nn.backend import DeviceError
from alexnet_np.cli import Parser, existing_path, fail, folder_to_write
from alexnet_np.data.loader import DataError
from alexnet_np.paper.experiments import ORDER, ExperimentError, format_overview, format_report, report, run_experiment
from alexnet_np.train.trainer import TrainingError


def build_parser():
    parser = Parser(prog="python experiments.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", type=Choice(*ORDER, "all"), nargs="?", metavar="EXPERIMENT",
                        help="the experiment, or all of them in turn")
    parser.add_argument("--report", nargs="+", default=None, metavar="FOLDER",
                        help="print the tables of finished experiments again, from their results.json")
    parser.add_argument("--seeds", type=POSITIVE_INT, default=None, help="seeds per arm (default 3; figure1: 2)")
    parser.add_argument("--epochs", type=POSITIVE_INT, default=None,
                        help="epochs per run (default: 12 on the demo data; figure1 8, or 30 on CIFAR-10)")
    parser.add_argument("--data", type=existing_path, default=None, help="an ImageFolder root or prepared cache (default: the demo data)")
    parser.add_argument("--cifar10", type=existing_path, default=None, metavar="DIR",
                        help="figure1 on CIFAR-10: the folder cifar-10-batches-bin (binary version)")
    parser.add_argument("--target", type=POSITIVE, default=25.0,
                        help="figure1: the training top-1 error (%%) to reach (default 25, the paper's)")
    parser.add_argument("--out", type=folder_to_write, default=None, help="folder of the experiment (default runs/experiments/<name>-<time>)")
    parser.add_argument("--device", type=Choice("cpu", "gpu", "auto"), default="cpu", help="default cpu")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report:
        try:
            done = [report(folder) for folder in args.report]
        except ExperimentError as error:
            return fail(error)
        for results in done:
            print(format_report(results))
        print(format_overview(done))
        return 0
    if args.name is None:
        parser.error("give an experiment (or all), or --report FOLDER")
    if args.cifar10 is not None and args.name not in ("figure1", "all"):
        return fail("--cifar10 is for figure1 (the paper's Figure 1 is on CIFAR-10)")
    names = ORDER if args.name == "all" else (args.name,)
    started = time.perf_counter()
    done, runs = [], {}   # runs: every run made so far, reused where an experiment repeats one
    try:
        for name in names:
            out = os.path.join(args.out, name) if args.out and len(names) > 1 else args.out
            done.append(run_experiment(name, args.seeds, args.epochs, args.data,
                                       args.cifar10 if name == "figure1" else None, out, args.device, args.target,
                                       done=runs))
    except (DataError, DeviceError, ExperimentError, TrainingError, ValueError) as error:   # ValueError: a
        # configuration the data cannot take (ConfigError), one line
        return fail(error)
    if len(done) > 1:
        print(format_overview(done))
    print(f"\n{len(names)} experiment(s) in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
