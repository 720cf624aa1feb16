"""``python -m alexnet_np.paper.trace``: one forward and backward pass, layer by layer, with numbers.

Dimensions:
    N  batch    C  channels    H, W  map size    D  features    K  classes

For any configuration (the demo's by default, ``--paper`` for the full net, every Config
field it uses as an option: ``--activation tanh``, ``--no-lrn``, ``--towers 1`` ...) it runs one
batch (``--batch N``) of validation images (the demo data, or ``--data``) through the net,
forward and backward, and prints one row per layer and tower, in the order they ran:
input and output shapes (convolutional maps are (C, N, H, W) inside the net, see
layers.py), mean and standard deviation of the output and of the gradient arriving at it,
the fraction of zeros after each ReLU and of dead units (zero for every image of the
batch), of saturated outputs after each tanh (|y| > 0.99), time forward and backward, and the output's bytes; then the crossings between the
towers (Figure 2's lines), what they moved and where.

The layers are the plain forms (``nn/layers.py``: the paper's operations, one screen each);
``--fast`` runs the fast forms beside them instead (``nn/fast.py``).

``--break LAYER[:TOWER]`` (e.g. ``--break lrn1:1``, ``--break conv3``, ``--break fc8``)
stops in Python's debugger (pdb) at the first line of that layer's ``forward``, with the
real input array ``x``: step through the code next to the paper (``n`` next line, ``p
x.shape``, ``c`` continue). ``--break-backward`` stops at its ``backward`` too. ``q`` (or
the end of the debugger's input) quits: one line saying where, exit status 1.

How: each layer of the model is wrapped, in place, by a ``Traced`` stand-in that records
and then calls it; the model's own forward and backward run unchanged. The towers share one
device here, so they run one after the other in the main thread (where the debugger works),
not side by side as in training.
"""
import bdb
import pdb
import sys
import time

import numpy as np

from ..accepts import POSITIVE_INT
from ..nn.backend import Device
from ..cli import Parser, existing_path
from ..config import DEMO, Config, add_config_arguments, config_from_arguments
from ..nn.layers import ReLU, Tanh
from ..nn.model import AlexNet

CROSSINGS = ("exchange3", "exchange6", "exchange7", "gather8")
# The fields a trace uses: the architecture, the initialisation (init_std, seed: also the
# dropout masks) and the validation images' preparation; nothing is trained or augmented.
FIELDS = Config.ARCHITECTURE + ("init_std", "seed", "image_size", "mean")
LRN_CROSSINGS = ("exchange_lrn1", "exchange_lrn2")   # with --lrn-across-towers (Caffe's LRN)


class DebuggerQuit(Exception):
    """The user quit the debugger (``q``, or its input ended) at a ``--break``: the trace stops."""


def crossings(model):
    """The model's crossings between towers: Figure 2's four, and LRN's two when it spans the towers."""
    return CROSSINGS + tuple(name for name in LRN_CROSSINGS if hasattr(model, name))


class Stop:
    """Where to break: layer name, tower (None: the first to run it), and whether backward too."""

    def __init__(self, text, backward=False, debugger=None):
        layer, _, tower = text.partition(":")
        try:
            self.tower = int(tower) if tower else None
        except ValueError:
            raise ValueError(f"--break {text}: the tower after ':' must be a number, e.g. lrn1:1") from None
        self.layer, self.backward = layer, backward
        self.debugger = debugger or pdb.Pdb()
        self.reached = []   # [(layer, tower, "forward" | "backward")], for tests and the summary

    def wants(self, name, tower, direction):
        if name != self.layer or (direction == "backward" and not self.backward):
            return False
        if self.tower is not None and tower != self.tower:
            return False
        # Without a tower, stop once per direction, in the first tower that runs the layer.
        return self.tower is not None or not any(d == direction for _, _, d in self.reached)

    def run(self, name, tower, direction, method, args):
        """Call ``method(*args)`` under the debugger, which stops at its first line."""
        self.reached.append((name, tower, direction))
        where = f"{name}.{direction}" + ("" if tower is None else f" of tower {tower}")
        shapes = ", ".join(str(tuple(a.shape)) for a in args if hasattr(a, "shape"))
        print(f"\n--break: stopping at the first line of {where} ({type(method.__self__).__name__}); "
              f"its input: {shapes}. pdb: ll = this function, n = next line, s = step in, p x.shape, c = continue\n", flush=True)
        if not isinstance(self.debugger, bdb.Bdb):   # a stand-in (the tests)
            return self.debugger.runcall(method, *args)
        # pdb's own runcall, except that a quit is not swallowed: Bdb.runcall returns None
        # then, and the trace would go on with no output.
        self.debugger.reset()
        sys.settrace(self.debugger.trace_dispatch)
        try:
            return method(*args)
        except bdb.BdbQuit:
            raise DebuggerQuit(f"--break: quit in the debugger at {where}; the trace stopped there") from None
        finally:
            self.debugger.quitting = True
            sys.settrace(None)


class Traced:
    """Stands in for one layer (or crossing) of the model: times it, records statistics of what
    goes in and out, breaks there when asked, and otherwise behaves as the layer itself."""

    def __init__(self, layer, name, tower, trace):
        self.layer, self.name, self.tower, self.trace = layer, name, tower, trace
        self.row = {"layer": name, "tower": "-" if tower is None else str(tower),
                    "kind": type(layer).__name__}

    def __getattr__(self, attribute):      # device, params, grads, ...: the layer's own
        return getattr(self.layer, attribute)

    def _call(self, direction, args):
        method = getattr(self.layer, direction)
        started = time.perf_counter()
        if self.trace.stop is not None and self.trace.stop.wants(self.name, self.tower, direction):
            out = self.trace.stop.run(self.name, self.tower, direction, method, args)
        else:
            out = method(*args)
        self.row[f"{direction} ms"] = 1000 * (time.perf_counter() - started)
        return out

    def forward(self, *args):
        x = args[0]
        if not self.row.get("in"):
            self.trace.rows.append(self.row)   # rows in the order the layers first run
        self.row["in"] = shape_text(x)
        y = self._call("forward", args)
        self.row["out"] = shape_text(y)
        values = y if isinstance(y, list) else [y]
        self.row["out mean"], self.row["out std"] = moments(values)
        self.row["bytes"] = sum(int(v.nbytes) for v in values)
        if isinstance(self.layer, ReLU):
            self.row["zeros %"], self.row["dead %"] = zeros(y)
        if isinstance(self.layer, Tanh):   # saturated: |y| > 0.99, where tanh's gradient is < 0.02
            self.row["sat %"] = 100 * float((abs(np.asarray(y.get() if hasattr(y, "get") else y)) > 0.99).mean())
        return y

    def backward(self, *args):
        if args:
            self.row["grad mean"], self.row["grad std"] = moments(args[0] if isinstance(args[0], list) else [args[0]])
        return self._call("backward", args)


def shape_text(x):
    if isinstance(x, list):
        return " + ".join("x".join(map(str, v.shape)) for v in x)
    return "x".join(map(str, x.shape)) if x.ndim else "scalar"


def moments(arrays):
    """Mean and standard deviation over all entries of ``arrays`` (float64 on the host)."""
    flat = np.concatenate([np.asarray(a.get() if hasattr(a, "get") else a, dtype=np.float64).ravel()
                           for a in arrays])
    return float(flat.mean()), float(flat.std())


def zeros(y):
    """(% of outputs that are 0, % of units that are 0 for every image of the batch).
    Conv maps are (C, N, H, W) (batch axis 1); fc outputs (N, D) (batch axis 0)."""
    host = np.asarray(y.get() if hasattr(y, "get") else y)
    batch_axis = 1 if host.ndim == 4 else 0
    zero = host == 0
    return 100 * float(zero.mean()), 100 * float(zero.all(axis=batch_axis).mean())


class Trace:
    """Wraps every layer and crossing of ``model`` (in place) and collects their rows."""

    def __init__(self, model, stop=None):
        self.model, self.stop, self.rows = model, stop, []
        for tower in model.towers:
            for stage in tower.stages:
                for i, layer in enumerate(stage):
                    stage[i] = Traced(layer, tower.layer_name(layer), tower.index, self)
        for name in crossings(model):
            setattr(model, name, Traced(getattr(model, name), name, None, self))
        model.fc8 = Traced(model.fc8, "fc8", None, self)
        model.loss_layer = Traced(model.loss_layer, "loss", None, self)

    def run(self, images, labels):
        """One forward (training mode: dropout on) and backward; returns the loss."""
        loss = float(self.model.forward_loss(images, labels, train=True))
        self.model.backward()
        return loss


def check_stop(stop, model):
    """A one-line ValueError when ``--break`` names no layer or tower of ``model``."""
    layers = {tower.layer_name(layer) for tower in model.towers for stage in tower.stages for layer in stage}
    untowered = set(crossings(model)) | {"fc8", "loss"}
    layers |= untowered
    if stop.layer not in layers:
        raise ValueError(f"--break {stop.layer}: no such layer; the layers are {', '.join(sorted(layers))}")
    towered = stop.layer not in untowered
    if stop.tower is not None and (not towered or not 0 <= stop.tower < len(model.towers)):
        raise ValueError(f"--break {stop.layer}:{stop.tower}: " + (
            f"{stop.layer} belongs to no tower (give it without ':')" if not towered else
            f"the net has towers 0..{len(model.towers) - 1}"))


COLUMNS = [("layer", 13, "s"), ("tower", 5, "s"), ("in", 22, "s"), ("out", 22, "s"),
           ("out mean", 10, ".3g"), ("out std", 10, ".3g"), ("zeros %", 8, ".1f"), ("dead %", 7, ".1f"), ("sat %", 6, ".1f"),
           ("grad mean", 10, ".2e"), ("grad std", 10, ".2e"), ("forward ms", 10, ".1f"),
           ("backward ms", 11, ".1f"), ("bytes", 12, ",")]


def format_table(rows):
    head = " ".join(f"{name:>{width}}" if fmt != "s" else f"{name:<{width}}" for name, width, fmt in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = []
        for name, width, fmt in COLUMNS:
            value = row.get(name)
            if value is None:
                cells.append(f"{'':>{width}}")
            elif fmt == "s":
                cells.append(f"{value:<{width}}")
            else:
                cells.append(f"{value:>{width}{fmt}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def format_crossings(model, rows):
    """One line per crossing: shapes in and out and arrays moved between devices."""
    counts = model.crossings()   # the Exchange objects count the arrays that changed device
    by_name = {row["layer"]: row for row in rows}
    lines = ["Crossings between the towers (Figure 2's lines): each receiving tower gets all towers' outputs"]
    for name, key in zip(CROSSINGS, ("conv3", "fc6", "fc7", "fc8")):
        row = by_name.get(name, {})
        lines.append(f"  {name:9} before {key}: {row.get('in', '?')} -> {row.get('out', '?')}; "
                     f"{counts[key]} arrays changed device (0: the towers share one device here)")
    return "\n".join(lines)


def load_batch(config, data, batch):
    """(images (N, 3, S, S), labels (N,)) of the first ``batch`` validation images, mean subtracted."""
    from ..data.loader import Cache, eval_batches
    from ..train.runs import open_data
    if data is None:
        from ..data.demo import demo_cache
        cache = Cache(demo_cache("data_cache", image_size=config.image_size))
    else:
        cache, _ = open_data(data, config.image_size, progress=False)
    stream = eval_batches(cache, "val", config, Device(), batch, threads=0)
    images, labels = next(iter(stream))
    return cache, images, labels


def main(argv=None, debugger=None):
    parser = Parser(prog="python -m alexnet_np.paper.trace", description=__doc__.splitlines()[0],
                    epilog="Without --paper: the DEMO configuration (alexnet_np/config.py), the defaults shown "
                           "being the paper's; any option given overrides either.")
    parser.add_argument("--paper", action="store_true", help="the paper's full configuration (default: the demo's)")
    parser.add_argument("--batch", type=POSITIVE_INT, default=8, help="images in the batch (default 8)")
    parser.add_argument("--data", type=existing_path, default=None, help="an ImageFolder root or prepared cache (default: the demo data)")
    parser.add_argument("--break", dest="stop", default=None, metavar="LAYER[:TOWER]",
                        help="stop in pdb at the start of that layer's forward, e.g. lrn1:1, conv3, fc8")
    parser.add_argument("--break-backward", action="store_true", help="with --break: stop at its backward too")
    parser.add_argument("--fast", action="store_true",
                        help="the fast forms of the layers (nn/fast.py; default: the plain forms, nn/layers.py)")
    add_config_arguments(parser, fields=FIELDS, title="configuration (defaults shown: the paper's, used with "
                                                      "--paper; without it the demo's, DEMO in config.py)")
    args = parser.parse_args(argv)
    try:
        base = Config() if args.paper else DEMO
        config = config_from_arguments(args, base.replace(layer_form="fast" if args.fast else "plain"))
        cache, images, labels = load_batch(config, args.data, args.batch)
        if len(cache.classes) != config.num_classes:
            config = config.replace(num_classes=len(cache.classes))
        model = AlexNet(config, [Device()] * config.towers)
        stop = None
        if args.stop is not None:
            stop = Stop(args.stop, args.break_backward, debugger)
            check_stop(stop, model)
        trace = Trace(model, stop)
        loss = trace.run(images, labels)
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    except DebuggerQuit as quit:
        parser.exit(1, f"{quit}\n")
    print(f"{'paper' if args.paper else 'demo'} configuration, {config.towers} tower(s), batch {args.batch} "
          f"of {cache.path} (val), training mode (dropout on); loss {loss:.4f} (ln K = {np.log(config.num_classes):.4f})")
    print("Shapes: conv maps (C, N, H, W), fc (N, D); 'grad' is dL/d(output); zeros/dead: after each ReLU; "
          "sat: tanh outputs beyond +-0.99; time on this CPU, towers one after the other")
    print(format_table(trace.rows))
    print(format_crossings(model, trace.rows))
    return trace


if __name__ == "__main__":
    main()
