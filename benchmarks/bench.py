"""Speed and memory of our AlexNet, against the identical network in PyTorch (issue "Speed").

    python benchmarks/bench.py                     # CPU: the full run (6-10 minutes on 2 busy cores)
    python benchmarks/bench.py --quick             # a smoke run: batch 16, 2 repetitions (about a minute)
    python benchmarks/bench.py --layers            # the per-layer breakdown only
    python benchmarks/bench.py --device gpu        # CuPy, CUDA events; PyTorch CUDA (cuDNN) as reference
    python benchmarks/bench.py --no-torch          # our figures only
    python benchmarks/bench.py --count-ops         # array operations per step, per layer (GPU path, no GPU)

Figures, all on the paper's configuration (``Config()``: 227x227, two towers, LRN, float32):

    train b=B   one training step (forward, loss, backward, SGD update), for B in --batch-sizes
    infer b=B   a test-time forward (dropout off), B = the largest of --batch-sizes
    memory      peak RSS (VmHWM: ru_maxrss of this process image) of a fresh process doing
                only that figure's work, warm-up step included, nothing subtracted; the
                baseline RSS after imports is printed beside it. On the GPU: the memory
                pool's high-water mark instead (CuPy's pool total, max_memory_reserved).
    layers      forward and backward time of every layer (both towers together, and tower 0
                alone), the tower exchanges, the loss and the optimiser, at the largest batch.

Method. Each figure runs in its own child process (``--child``), so that peak memory is the
figure's own and no figure inherits another's heap. Timing: the child holds our net and
PyTorch's (built from *our* weights, same dtype, PyTorch limited to as many threads as
NumPy's OpenBLAS uses), runs ``--warmup`` steps of each, then ``--repeats`` timed steps
alternating ours / PyTorch (the order swapped every repetition), and reports the median.
Memory: one child with only our net, one with only PyTorch's (its own initialisation:
weights do not change memory). On the CPU time is ``time.perf_counter``; on the GPU, CUDA
events (cupy.cuda.Event, torch.cuda.Event).

The per-layer breakdown runs our towers one after the other (in a training step they run
side by side on the CPU's cores), so that its rows add up; it times each layer call from
the outside: ours by wrapping the
``forward``/``backward`` of the layer *instances* this script creates (the package is not
changed); PyTorch's by running each layer on a detached view of its input (a leaf that
requires grad) and then calling ``backward`` layer by layer in reverse. PyTorch's sum of
rows is therefore above its real step (one autograd call per layer, no in-place ReLU;
10-40% above here): its whole-step time, for that same net, is printed below the rows.

PyTorch's side is ``torch.optim.SGD`` (``reference_torch.torch_sgd``: the paper's update
while the learning rate is constant), ``F.cross_entropy``, in-place ReLUs (as torchvision
writes AlexNet) and masks drawn by ``torch.rand``; ours is ``alexnet_np.optim.SGD`` and our
Dropout's generator.
"""
import argparse
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: alexnet_np, uninstalled

import numpy as np

from alexnet_np.nn.backend import DeviceError, SideBySide, memories, move, tower_devices
from alexnet_np.config import Config

# The floors we hold ourselves to, ours / PyTorch (issue "Speed"): images/s at least, peak
# memory at most; a figure not listed has none.
SPEED_FLOORS = {("train", 32): 1.2, ("train", 128): 1.3, ("infer", 128): 1.3}
MEMORY_CEILINGS = {"train": 1.0, "infer": 1.1}
LAYER_KINDS = {"ReLU": "relu", "LocalResponseNorm": "lrn", "MaxPool": "pool", "Dropout": "drop"}


# --------------------------------------------------------------------------- machine

def blas_threads():
    """The number of threads NumPy's OpenBLAS runs (asked from the library itself)."""
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    for path in paths:
        library = ctypes.CDLL(path)
        for symbol in ("openblas_get_num_threads", "openblas_get_num_threads64_",
                       "scipy_openblas_get_num_threads64_"):
            if hasattr(library, symbol):
                return int(getattr(library, symbol)())
    return len(os.sched_getaffinity(0))  # not OpenBLAS: assume one thread per core


def cpu_name():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_name():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except Exception:  # older NumPy: no dicts mode
        return "BLAS"


def peak_rss():
    """Peak resident memory of this process so far, in bytes.

    On Linux this is VmHWM, the high-water mark of this process image: ``ru_maxrss`` of a
    child started by ``subprocess`` (vfork + exec) also counts the parent's peak at the time
    of the fork, which would put a floor under every child's figure. Elsewhere ru_maxrss."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024   # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# --------------------------------------------------------------------------- clocks

class HostClock:
    """CPU timing: ``perf_counter`` marks; there is nothing to wait for."""

    def mark(self):
        return time.perf_counter()

    def join(self):
        pass

    def ms(self, start, end):
        return (end - start) * 1e3


class CupyClock:
    """CUDA events on the first tower's GPU (CuPy's guide: time GPU work with events), which
    cover every tower: before each mark, the first GPU's stream waits for an event recorded
    on every other GPU, so that a mark comes after all the towers' work queued so far. CUDA
    measures the time between two events of one device only (and none made without timing)."""

    def __init__(self, cupy, devices):
        self.cupy, self.head = cupy, devices[0]
        self.others = list({d.name: d for d in devices if d.name != self.head.name}.values())

    def mark(self):
        for device in self.others:
            self.head.wait(device.record())
        with self.head:
            event = self.cupy.cuda.Event()
            event.record()
        return event

    def join(self):
        pass   # ``mark`` waits for every tower

    def ms(self, start, end):
        with self.head:
            end.synchronize()
            return self.cupy.cuda.get_elapsed_time(start, end)


class TorchCudaClock:
    """torch.cuda.Event marks on the current stream."""

    def __init__(self, torch):
        self.torch = torch

    def mark(self):
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def join(self):
        pass

    def ms(self, start, end):
        end.synchronize()
        return start.elapsed_time(end)


def timed_ms(clock, fn):
    """Milliseconds that ``fn()`` takes on ``clock``."""
    start = clock.mark()
    fn()
    clock.join()
    end = clock.mark()
    return clock.ms(start, end)


# --------------------------------------------------------------------------- the two nets

def batch(config, n):
    """Images (N, 3, S, S) of pixel scale (mean-subtracted 0-255 values) and labels (N,)."""
    rng = np.random.default_rng(0)
    S = config.input_size
    images = rng.standard_normal((n, 3, S, S), dtype=np.float32) * np.float32(50)  # (N, 3, S, S)
    labels = rng.integers(0, config.num_classes, n)                                 # (N,)
    return images, labels


class Ours:
    """Our net, its optimiser and a batch on its devices."""

    def __init__(self, config, device, images, labels, train=True):
        from alexnet_np.nn.model import AlexNet
        self.devices = tower_devices(device, config.towers)
        self.net = AlexNet(config, self.devices)
        if not train:   # as evaluation opens a trained net: no gradient arrays
            self.net.for_inference()
        if train:  # no momentum buffers in an inference figure (PyTorch makes its own lazily)
            self.opt = self.net.optimizer(config)   # §5's SGD, in the net's form
        head = self.devices[0]
        # The batch on each tower's GPU, as the training loader gives it (no copy on the CPU:
        # PyTorch shares the NumPy batch too); the labels on the head.
        placed = [move(images, d) for d in memories(self.devices)]
        self.images = placed[0] if len(placed) == 1 else tuple(placed)
        self.labels = move(labels, head)
        if device == "gpu":
            self.clock = CupyClock(head.xp, self.devices)
        else:
            self.clock = HostClock()

    def train_step(self):
        self.net.forward_loss(self.images, self.labels, train=True)
        self.net.backward()
        self.opt.step()

    def infer(self):
        self.net.infer(self.images)

    def memory(self):
        """Peak memory figure: device pool high-water mark on the GPU, else peak RSS."""
        if self.devices[0].xp is np:
            return peak_rss()
        pool, total = self.devices[0].xp.get_default_memory_pool(), 0
        for device in {id(d): d for d in self.devices}.values():
            with device:   # the pool counts per device; it never shrinks by itself
                total += pool.total_bytes()
        return total


class Theirs:
    """PyTorch's identical net (alexnet_np.interop.reference_torch), its SGD and the same batch."""

    def __init__(self, config, device, images, labels, state=None, inplace_relu=True):
        import torch
        from alexnet_np.interop import reference_torch
        self.torch, self.reference = torch, reference_torch
        where = "cuda" if device == "gpu" else "cpu"
        if where == "cuda":
            torch.backends.cudnn.benchmark = True   # fixed shapes: let cuDNN pick (during warm-up)
        self.net = reference_torch.build(config, state, where, inplace_relu)
        self.opt = reference_torch.torch_sgd(self.net, config)
        self.images = torch.from_numpy(images).to(where)
        self.labels = torch.from_numpy(labels).to(where)
        self.clock = TorchCudaClock(torch) if where == "cuda" else HostClock()
        self.where = where

    def train_step(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self.net.forward_loss(self.images, self.labels, train=True)
        loss.backward()
        self.opt.step()

    def infer(self):
        with self.torch.inference_mode():
            self.net(self.images, train=False)

    def memory(self):
        if self.where == "cuda":
            return self.torch.cuda.max_memory_reserved()
        return peak_rss()


def torch_threads(torch):
    """PyTorch gets as many threads as NumPy's BLAS has: the same CPU for both."""
    torch.set_num_threads(blas_threads())


# --------------------------------------------------------------------------- child jobs

def child_time(spec):
    """Median step time of ours and PyTorch's, alternating, in one process holding both."""
    config = Config(layer_form=spec["layer_form"])
    images, labels = batch(config, spec["batch"])
    ours = Ours(config, spec["device"], images, labels, train=spec["figure"] == "train")
    runners = {"ours": ours}
    if spec["torch"]:
        import torch
        torch_threads(torch)
        runners["torch"] = Theirs(config, spec["device"], images, labels, ours.net.state_dict())
    work = {name: getattr(r, "train_step" if spec["figure"] == "train" else "infer")
            for name, r in runners.items()}
    for _ in range(spec["warmup"]):
        for name in work:
            work[name]()
    times = {name: [] for name in work}
    for rep in range(spec["repeats"]):
        order = list(work) if rep % 2 == 0 else list(reversed(list(work)))
        for name in order:
            times[name].append(timed_ms(runners[name].clock, work[name]) / 1e3)
    return {"seconds": times}


def child_memory(spec):
    """Peak memory of one implementation doing one figure's work, alone in this process."""
    config = Config(layer_form=spec["layer_form"])
    if spec["impl"] == "torch":
        import torch
        from alexnet_np.interop import reference_torch  # noqa: F401  (imports count in the baseline)
        torch_threads(torch)
    else:
        from alexnet_np.nn import model, optim  # noqa: F401
        if spec["device"] == "gpu":
            import cupy  # noqa: F401
    baseline = peak_rss()
    images, labels = batch(config, spec["batch"])
    if spec["impl"] == "torch":
        runner = Theirs(config, spec["device"], images, labels)
    else:
        runner = Ours(config, spec["device"], images, labels, train=spec["figure"] == "train")
    work = runner.train_step if spec["figure"] == "train" else runner.infer
    for _ in range(spec["steps"]):
        work()
    return {"peak": runner.memory(), "baseline_rss": baseline, "peak_rss": peak_rss()}


def our_layer_names(tower):
    """[(name, layer)] of a tower's layers in forward order: conv1, relu1, lrn1, pool1, ...

    Layers that are attributes of the tower keep that name (conv1, fc6, drop6); the others
    take their kind and the number of the layer they follow (relu1 after conv1, pool5)."""
    attribute = {id(layer): name for name, layer in vars(tower).items() if hasattr(layer, "forward")}
    names, number = [], ""
    for stage in tower.stages:
        for layer in stage:
            name = attribute.get(id(layer))
            if name is not None:
                number = name.lstrip("abcdefghijklmnopqrstuvwxyz")
            elif type(layer).__name__ == "Flatten":
                name = "flatten"
            else:
                kind = type(layer).__name__.removeprefix("Fast")   # the plain form's name
                name = LAYER_KINDS.get(kind, kind.lower()) + number
            names.append((name, layer))
    return names


def instrument(obj, method, key, records, clock):
    """Wrap ``obj.method`` (this instance only) so each call appends (key, start, end) marks."""
    original = getattr(obj, method)

    def wrapper(*args, **kwargs):
        start = clock.mark()
        out = original(*args, **kwargs)
        end = clock.mark()
        records.append((key, start, end))
        return out

    setattr(obj, method, wrapper)


def our_layer_step(ours, records):
    """One instrumented training step: {(tower or None, name, pass): ms}, and the whole step."""
    records.clear()
    clock = ours.clock
    total = timed_ms(clock, ours.train_step)
    out = {}
    for key, start, end in records:
        out[key] = out.get(key, 0.0) + clock.ms(start, end)
    return out, total


def torch_layer_step(theirs):
    """One training step of PyTorch's net, cut into per-layer pieces: {(name, pass): ms}."""
    torch, net, clock = theirs.torch, theirs.net, theirs.clock
    MaskedDropout = theirs.reference.MaskedDropout
    F = torch.nn.functional
    marks, saved = [], []
    theirs.opt.zero_grad(set_to_none=True)
    x = theirs.images
    for name, layer in net.layers():
        x_in = x.detach().requires_grad_(name != "conv1")   # conv1: no gradient for the image
        start = clock.mark()
        x = layer(x_in, True) if isinstance(layer, MaskedDropout) else layer(x_in)
        marks.append(((name, "fwd"), start, clock.mark()))
        saved.append((name, x_in, x))
    logits = x.detach().requires_grad_()
    start = clock.mark()
    loss = F.cross_entropy(logits, theirs.labels)
    marks.append((("loss", "fwd"), start, clock.mark()))
    start = clock.mark()
    loss.backward()
    marks.append((("loss", "bwd"), start, clock.mark()))
    grad = logits.grad
    for name, x_in, y in reversed(saved):
        start = clock.mark()
        y.backward(grad)
        marks.append(((name, "bwd"), start, clock.mark()))
        grad = x_in.grad
    start = clock.mark()
    theirs.opt.step()
    marks.append((("sgd", "step"), start, clock.mark()))
    return {key: clock.ms(start, end) for key, start, end in marks}


def child_layers(spec):
    """Per-layer forward/backward times of ours (instrumented) and PyTorch's (cut)."""
    config = Config(layer_form=spec["layer_form"])
    images, labels = batch(config, spec["batch"])
    ours = Ours(config, spec["device"], images, labels)
    records = []
    net, clock = ours.net, ours.clock
    # The rows are timed with the towers one after the other: side by side on the CPU's
    # cores, each layer's time would include the other tower's competition for them.
    net.side_by_side.parallel = False
    ours.opt.side_by_side = SideBySide(ours.devices[:1])
    order = []   # row names in forward order
    for g, tower in enumerate(net.towers):
        stage_names = our_layer_names(tower)
        if g == 0:
            order += [name for name, _ in stage_names]
        for name, layer in stage_names:
            instrument(layer, "forward", (g, name, "fwd"), records, clock)
            instrument(layer, "backward", (g, name, "bwd"), records, clock)
    for name, exchange in zip(("exchange3", "exchange6", "exchange7", "gather8"), net.exchanges):
        instrument(exchange, "forward", (None, name, "fwd"), records, clock)
        instrument(exchange, "backward", (None, name, "bwd"), records, clock)
    for name, layer in (("fc8", net.fc8), ("loss", net.loss_layer)):
        instrument(layer, "forward", (None, name, "fwd"), records, clock)
        instrument(layer, "backward", (None, name, "bwd"), records, clock)
    instrument(ours.opt, "step", (None, "sgd", "step"), records, clock)
    # Rows in forward order, the exchanges where Figure 2 draws them.
    order = (order[:order.index("pool2") + 1] + ["exchange3"]
             + order[order.index("pool2") + 1:order.index("flatten") + 1] + ["exchange6"]
             + order[order.index("flatten") + 1:order.index("drop6") + 1] + ["exchange7"]
             + order[order.index("drop6") + 1:] + ["gather8", "fc8", "loss", "sgd"])

    theirs = None
    if spec["torch"]:
        import torch
        torch_threads(torch)
        # inplace_relu=False: each layer gets a fresh leaf, which an in-place op may not change.
        theirs = Theirs(config, spec["device"], images, labels, net.state_dict(), inplace_relu=False)
    for _ in range(spec["warmup"]):
        our_layer_step(ours, records)
        if theirs:
            torch_layer_step(theirs)
            theirs.train_step()
    ours_steps, ours_totals, torch_steps, torch_totals = [], [], [], []
    for _ in range(spec["repeats"]):
        rows, total = our_layer_step(ours, records)
        ours_steps.append(rows)
        ours_totals.append(total)
        if theirs:
            torch_steps.append(torch_layer_step(theirs))
            torch_totals.append(timed_ms(theirs.clock, theirs.train_step))

    def median_of(steps, key):
        values = [s.get(key) for s in steps]
        return statistics.median(values) if steps and None not in values else None

    towers = range(len(net.towers))
    rows = []
    for name in order:
        row = {"layer": name}
        for kind in ("fwd", "bwd", "step"):
            tower_keys = [(g, name, kind) for g in towers]
            if all(median_of(ours_steps, k) is not None for k in tower_keys):
                row[f"ours_{kind}"] = sum(median_of(ours_steps, k) for k in tower_keys)
                row[f"t0_{kind}"] = median_of(ours_steps, (0, name, kind))
            elif median_of(ours_steps, (None, name, kind)) is not None:
                row[f"ours_{kind}"] = median_of(ours_steps, (None, name, kind))
            if theirs and median_of(torch_steps, (name, kind)) is not None:
                row[f"torch_{kind}"] = median_of(torch_steps, (name, kind))
        rows.append(row)
    return {"rows": rows, "ours_step_ms": statistics.median(ours_totals),
            "torch_step_ms": statistics.median(torch_totals) if torch_totals else None}


# --------------------------------------------------------------------------- array operations

def count_ops(batch_size, layer_form="auto"):
    """Array operations per training step and per inference batch, per layer, counted through
    the GPU code path on two GPUs of the CuPy stand-in (tests/standin: each ufunc, reduction,
    copy, indexing write, matmul... is one CuPy kernel launch or copy), with the GPU's
    whole-batch chunks; ``layer_form``: the layers' form (``Config.layer_form``; "auto": the GPU's).
    Returns ({(layer, pass): operations}, {"train": total, "infer": total}, "plain" or "fast")."""
    import collections
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from standin_gpus import standin_gpus
    from alexnet_np.nn.model import FAST, AlexNet
    config = Config(layer_form=layer_form)
    devices = standin_gpus(2)
    rules = devices[0].xp._rules
    launched = lambda: sum(rules.launches.values())  # noqa: E731
    net = AlexNet(config, devices)
    opt = net.optimizer(config)
    images, labels = batch(config, batch_size)
    counts = collections.Counter()

    def count(obj, method, key):
        original = getattr(obj, method)

        def counted(*args, **kwargs):
            before = launched()
            out = original(*args, **kwargs)
            counts[key] += launched() - before
            return out
        setattr(obj, method, counted)

    for tower in net.towers:
        for name, layer in our_layer_names(tower):
            for method in ("forward", "backward", "infer"):
                count(layer, method, (name, method))
    for name, exchange in zip(("exchange3", "exchange6", "exchange7", "gather8"), net.exchanges):
        count(exchange, "forward", (name, "forward"))
        count(exchange, "backward", (name, "backward"))
    for name, layer in (("fc8", net.fc8), ("loss", net.loss_layer)):
        for method in ("forward", "backward", "infer"):
            count(layer, method, (name, method))
    count(opt, "step", ("sgd", "backward"))

    def train_step():
        net.forward_loss(images, labels, train=True)
        net.backward()
        opt.step()

    totals = {}
    for figure, work in (("train", train_step), ("infer", lambda: net.infer(images))):
        work()                      # warm: the reused memory is allocated on the first calls
        counts.clear()
        before = launched()
        work()
        totals[figure] = launched() - before
        if figure == "train":
            per_layer = dict(counts)
    per_layer.update({(name, "infer"): n for (name, method), n in counts.items() if method in ("infer", "forward")})
    return per_layer, totals, "fast" if net.forms is FAST else "plain"


def count_step_syncs(steps=(1, 5)):
    """Host synchronisations and launches per step of train.py's loop (the trainer's step:
    loader, forward, backward, update, its one read), on two GPUs of the CuPy stand-in with a
    small net on generated images: the difference between two runs that differ only in
    their number of steps, over those steps. Returns (syncs per step, launches per step)."""
    import tempfile
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    sys.path.insert(0, tests)
    from standin_gpus import standin_env
    from test_train_helpers import TINY_ARGS, make_tiny_cache
    args = [a for a in TINY_ARGS if a not in ("--device", "cpu")] + ["--no-figures", "--device", "gpu"]
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = make_tiny_cache(os.path.join(tmp, "cache"))
        for n in steps:
            log = os.path.join(tmp, f"log-{n}.jsonl")
            train = os.path.join(os.path.dirname(tests), "train.py")
            subprocess.run([sys.executable, train, "--data", cache, "--out", os.path.join(tmp, f"run-{n}"),
                            *args, "--max-steps", str(n)], env=standin_env(log), check=True,
                           stdout=subprocess.DEVNULL)
            with open(log) as f:
                record = json.loads(f.readline())
            totals.append((record["syncs"], sum(record["launches"].values())))
    span = steps[1] - steps[0]
    return (totals[1][0] - totals[0][0]) / span, (totals[1][1] - totals[0][1]) / span


def print_count_ops(batch_size, layer_form="auto"):
    per_layer, totals, form = count_ops(batch_size, layer_form)
    rows = list(dict.fromkeys(name for name, _ in per_layer))
    print(f"array operations (CuPy kernel launches and copies) at batch {batch_size}, paper net, two GPUs, "
          f"--layer-form {layer_form} (the {form} forms), counted on the CuPy stand-in "
          "(both towers together):")
    print("| layer | train forward | train backward | inference |\n|---|---:|---:|---:|")
    for name in rows:
        cells = [per_layer.get((name, m), 0) for m in ("forward", "backward", "infer")]
        print(f"| {name} | " + " | ".join(str(c) if c else "" for c in cells) + " |")
    listed_train = sum(n for (_, m), n in per_layer.items() if m in ("forward", "backward"))
    listed_infer = sum(n for (_, m), n in per_layer.items() if m == "infer")
    print(f"| glue (images to the towers, dropout positions, the loss's labels) | "
          f"{totals['train'] - listed_train} (both passes) | | {totals['infer'] - listed_infer} |")
    print(f"| **total** | **{totals['train']}** per training step | | **{totals['infer']}** per inference batch |")
    syncs, launches = count_step_syncs()
    print(f"train.py's step (small net, loader and the step's figures included): {syncs:g} host "
          f"synchronisation(s) and about {launches:.0f} launches a step")


CHILDREN = {"time": child_time, "memory": child_memory, "layers": child_layers}


def run_child(spec):
    """Run one job in a fresh Python process; returns its JSON answer (the last stdout line)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"bench.py: the child job {spec} failed (exit code {done.returncode}); "
                 "its error is printed above")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report

def gib(n):
    return f"{n / 2**30:.2f} GiB" if n is not None else "-"


def ratio_text(ratio, floor, higher_is_better=True):
    if ratio is None:
        return "-"
    ok = ratio >= floor if higher_is_better else ratio <= floor
    return f"{ratio:.2f}x " + ("(ok)" if ok else "(BELOW FLOOR)" if higher_is_better else "(ABOVE CEILING)")


def figure_rows(results, use_torch):
    """One dict per figure with everything the tables print."""
    rows = []
    for fig in results:
        figure, B = fig["figure"], fig["batch"]
        ours_s = statistics.median(fig["time"]["seconds"]["ours"])
        torch_s = statistics.median(fig["time"]["seconds"]["torch"]) if use_torch else None
        row = {"name": f"{figure} b={B}", "figure": figure, "batch": B,
               "ours_s": ours_s, "ours_ips": B / ours_s,
               "ours_spread": (min(fig["time"]["seconds"]["ours"]), max(fig["time"]["seconds"]["ours"])),
               "torch_s": torch_s, "torch_ips": B / torch_s if torch_s else None,
               "ours_mem": fig["memory"]["ours"]["peak"],
               "ours_base": fig["memory"]["ours"]["baseline_rss"],
               "torch_mem": fig["memory"]["torch"]["peak"] if use_torch else None,
               "torch_base": fig["memory"]["torch"]["baseline_rss"] if use_torch else None}
        if use_torch:
            row["torch_spread"] = (min(fig["time"]["seconds"]["torch"]), max(fig["time"]["seconds"]["torch"]))
            row["speed_ratio"] = row["ours_ips"] / row["torch_ips"]
            row["mem_ratio"] = row["ours_mem"] / row["torch_mem"]
        rows.append(row)
    return rows


def print_figures(rows, use_torch, device):
    mem_word = "peak RSS" if device == "cpu" else "peak GPU pool"
    print()
    print(f"{'figure':13s} {'ours img/s':>11s} {'(median step, min-max)':>24s} {'torch img/s':>12s} "
          f"{'ours/torch':>20s}   {'ours ' + mem_word:>17s} {'torch ' + mem_word:>18s} {'ours/torch':>22s}")
    for r in rows:
        spread = f"{r['ours_s']:.2f} s ({r['ours_spread'][0]:.2f}-{r['ours_spread'][1]:.2f})"
        speed_floor = SPEED_FLOORS.get((r["figure"], r["batch"]))
        mem = "-"
        if use_torch:
            mem = ratio_text(r["mem_ratio"], MEMORY_CEILINGS[r["figure"]], higher_is_better=False)
        torch_ips = f"{r['torch_ips']:.1f}" if use_torch else "-"
        speed = "-"
        if use_torch:
            speed = ratio_text(r["speed_ratio"], speed_floor) if speed_floor else f"{r['speed_ratio']:.2f}x"
        print(f"{r['name']:13s} {r['ours_ips']:11.1f} {spread:>24s} {torch_ips:>12s} {speed:>20s}   "
              f"{gib(r['ours_mem']):>17s} {gib(r['torch_mem']):>18s} {mem:>22s}")
    if device == "cpu":
        base = rows[0]
        print(f"(baseline RSS after imports: ours {gib(base['ours_base'])}"
              + (f", PyTorch {gib(base['torch_base'])}" if use_torch else "") + "; included in the peaks)")


def print_layers(layers, use_torch, batch_size):
    rows = layers["rows"]
    step = layers["ours_step_ms"]
    print()
    print(f"Per-layer breakdown, training step at batch {batch_size}, median ms "
          "(ours: both towers together; t0 = tower 0 alone):")
    head = (f"{'layer':10s} {'ours fwd':>9s} {'ours bwd':>9s} {'torch fwd':>10s} {'torch bwd':>10s} "
            f"{'ours/torch':>10s} {'ours-torch':>10s} {'% ours':>7s} {'t0 fwd':>8s} {'t0 bwd':>8s}")
    print(head)

    def cell(row, key, width):
        value = row.get(key)
        return f"{value:{width}.1f}" if value is not None else f"{'-':>{width}s}"

    ours_sum = torch_sum = 0.0
    for row in rows:
        ours_t = row.get("ours_fwd", 0.0) + row.get("ours_bwd", 0.0) + row.get("ours_step", 0.0)
        torch_t = row.get("torch_fwd", 0.0) + row.get("torch_bwd", 0.0) + row.get("torch_step", 0.0)
        ours_sum, torch_sum = ours_sum + ours_t, torch_sum + torch_t
        fwd_key = "ours_step" if row["layer"] == "sgd" else "ours_fwd"
        tfwd_key = "torch_step" if row["layer"] == "sgd" else "torch_fwd"
        has_torch = use_torch and (tfwd_key in row or "torch_bwd" in row)
        ratio = f"{ours_t / torch_t:10.2f}" if has_torch and torch_t > 0 else f"{'-':>10s}"
        gap = f"{ours_t - torch_t:10.1f}" if has_torch else f"{'-':>10s}"
        print(f"{row['layer']:10s} {cell(row, fwd_key, 9)} {cell(row, 'ours_bwd', 9)} "
              f"{cell(row, tfwd_key, 10)} {cell(row, 'torch_bwd', 10)} {ratio} {gap} "
              f"{100 * ours_t / step:6.1f}% {cell(row, 't0_fwd', 8)} {cell(row, 't0_bwd', 8)}")
    print(f"{'sum of rows':10s} {ours_sum:19.1f} "
          + (f"{torch_sum:21.1f} {ours_sum / torch_sum:10.2f}" if use_torch and torch_sum else f"{'-':>21s}"))
    torch_step = layers["torch_step_ms"]
    print(f"{'whole step':10s} {step:19.1f} "
          + (f"{torch_step:21.1f} {step / torch_step:10.2f}" if torch_step else f"{'-':>21s}")
          + "   (outside the rows, ours: input transpose, glue: "
          f"{step - ours_sum:.1f} ms)")
    if use_torch:
        gaps = sorted(rows, key=lambda r: -(r.get("ours_fwd", 0) + r.get("ours_bwd", 0) + r.get("ours_step", 0)
                                             - r.get("torch_fwd", 0) - r.get("torch_bwd", 0)
                                             - r.get("torch_step", 0)))
        print("largest gaps (ours - torch, ms): " + ", ".join(
            f"{r['layer']} {r.get('ours_fwd', 0) + r.get('ours_bwd', 0) + r.get('ours_step', 0) - r.get('torch_fwd', 0) - r.get('torch_bwd', 0) - r.get('torch_step', 0):+.0f}"
            for r in gaps[:5]))


def print_markdown(rows, use_torch, device, command, machine):
    mem_word = "peak RSS" if device == "cpu" else "peak GPU memory"
    print()
    print(f"Markdown (README): `{command}` on {machine}, {time.strftime('%Y-%m-%d')}")
    print()
    if use_torch:
        print(f"| figure | ours (images/s) | PyTorch (images/s) | ours / PyTorch | floor "
              f"| ours {mem_word} | PyTorch {mem_word} | ours / PyTorch |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            floor = SPEED_FLOORS.get((r["figure"], r["batch"]))
            print(f"| {r['figure']} batch {r['batch']} | {r['ours_ips']:.1f} | {r['torch_ips']:.1f} "
                  f"| {r['speed_ratio']:.2f}x | {f'>= {floor}x' if floor else '-'} | {gib(r['ours_mem'])} "
                  f"| {gib(r['torch_mem'])} | {r['mem_ratio']:.2f}x (<= {MEMORY_CEILINGS[r['figure']]}x) |")
    else:
        print(f"| figure | ours (images/s) | ours {mem_word} |")
        print("|---|---:|---:|")
        for r in rows:
            print(f"| {r['figure']} batch {r['batch']} | {r['ours_ips']:.1f} | {gib(r['ours_mem'])} |")


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] + " The full CPU run takes about 7 "
                                     "minutes on 2 cores (--quick: about one); it says so, and the time left.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--batch-sizes", default=None,
                        help="training batch sizes, comma-separated; inference and the per-layer "
                             "breakdown use the largest (default: 32,128; --quick: 16)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions per figure (default: 5 up to batch 64, else 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    parser.add_argument("--no-torch", action="store_true", help="do not build PyTorch's net")
    parser.add_argument("--layers", action="store_true", help="the per-layer breakdown only")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: batch 16, 2 repetitions (unless given)")
    parser.add_argument("--count-ops", action="store_true",
                        help="array operations per training step and inference batch, per layer, through "
                             "the GPU code path on the CuPy stand-in (no GPU needed; batch: the largest)")
    parser.add_argument("--layer-form", choices=["auto", "plain", "fast"], default="auto",
                        help="the layers' form (Config.layer_form): the plain ones (nn/layers.py), the fast "
                             "ones (nn/fast.py), or auto, the device's fastest (default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.repeats = args.batch_sizes or "16", args.repeats or 2
    args.batch_sizes = args.batch_sizes or "32,128"
    try:
        args.batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    except ValueError:
        parser.error(f"--batch-sizes must be integers separated by commas, not {args.batch_sizes!r}")
    return args


def repeats_for(args, B):
    return args.repeats if args.repeats else (5 if B <= 64 else 3)


# --------------------------------------------------------------------------- the jobs and their progress

def job_specs(args, use_torch):
    """Every child job of a run, in order: each figure's timing and memory, then the layers."""
    base = {"device": args.device, "torch": use_torch, "warmup": args.warmup, "layer_form": args.layer_form}
    specs = []
    if not args.layers:
        for figure, B in [("train", b) for b in args.batch_sizes] + [("infer", max(args.batch_sizes))]:
            specs.append({**base, "kind": "time", "figure": figure, "batch": B, "repeats": repeats_for(args, B)})
            for impl in (["ours", "torch"] if use_torch else ["ours"]):
                specs.append({**base, "kind": "memory", "impl": impl, "figure": figure, "batch": B,
                              "steps": max(2, args.warmup + 1)})
    specs.append({**base, "kind": "layers", "batch": max(args.batch_sizes),
                  "repeats": 2 if args.repeats is None else args.repeats})
    return specs


def job_label(spec):
    """``time train b=32``, ``memory infer b=128 torch``, ``layers b=128``."""
    if spec["kind"] == "layers":
        return f"layers b={spec['batch']}"
    return " ".join([spec["kind"], spec["figure"], f"b={spec['batch']}"] + ([spec["impl"]] if "impl" in spec else []))


START = 200   # a child's start (imports, the paper's 61M weights drawn, the batch made), in the units below


def job_cost(spec):
    """A job's work, roughly: images through a net (a training image 3, a test image 1) times
    the nets it runs, plus its start. Only the proportions matter (``Progress``)."""
    per_image = 3 if spec.get("figure", "train") == "train" else 1
    nets = 2 if spec["torch"] and spec["kind"] != "memory" else 1
    steps = {"time": spec["warmup"] + spec.get("repeats", 0), "memory": spec.get("steps", 0),
             "layers": 1 + spec.get("repeats", 0)}[spec["kind"]]
    return START + steps * spec["batch"] * per_image * nets


# The default CPU run (batches 32 and 128, PyTorch beside) took about 7 minutes on the 2-core
# AMD EPYC of docs/speed.md; the first estimate scales that by the jobs' costs.
REFERENCE_SECONDS = 420


class Progress:
    """What a run will do and how long it should take, then a line per finished job with the
    time left, estimated from the time the finished jobs took for their cost."""

    def __init__(self, specs, device, started):
        self.specs, self.device, self.started = specs, device, started
        self.costs = [job_cost(spec) for spec in specs]
        self.finished = 0
        defaults = parse_args([])
        self.reference = sum(job_cost(spec) for spec in job_specs(defaults, True))

    def plan(self):
        n = len(self.specs)
        if self.device == "cpu":
            minutes = REFERENCE_SECONDS * sum(self.costs) / self.reference / 60
            how_long = (f"about {max(1, round(minutes))} minute{'s' * (round(minutes) > 1)} on 2 cores like "
                        "those of docs/speed.md (the default run: about 7), more on fewer or busier cores")
        else:
            how_long = "on a GPU much less than the CPU's 7 minutes"
        return (f"{n} job{'s' * (n > 1)}, each in a fresh process: {', '.join(job_label(s) for s in self.specs)}\n"
                f"expected: {how_long}; a line as each job ends, with the time left")

    def done(self, spec, said):
        self.finished += 1
        elapsed = time.perf_counter() - self.started
        done_cost = sum(self.costs[:self.finished])
        left = elapsed / done_cost * sum(self.costs[self.finished:])
        rest = f"; about {format_duration(left)} left" if self.finished < len(self.specs) else ""
        print(f"[{elapsed:6.0f} s] job {self.finished}/{len(self.specs)} {job_label(spec)}: {said}{rest}", flush=True)


def format_duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def torch_status(device):
    """(usable, why not) for PyTorch as the reference on ``device``."""
    if importlib.util.find_spec("torch") is None:
        return False, "PyTorch is not installed: ours only"
    if device == "gpu":
        import torch
        if not torch.cuda.is_available():
            return False, "PyTorch has no CUDA here: ours only"
    return True, ""


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["kind"]](spec)))
        return
    if args.count_ops:
        print_count_ops(max(args.batch_sizes), args.layer_form)
        return 0
    try:
        devices = tower_devices(args.device)
    except DeviceError as error:   # one line and status 2, as every script of the project
        print(f"error: {error}", file=sys.stderr)
        return 2
    use_torch, why = (False, "--no-torch") if args.no_torch else torch_status(args.device)
    threads = blas_threads()
    if args.device == "cpu":
        machine = f"{cpu_name()}, {threads} threads ({blas_name()}, NumPy {np.__version__}"
    else:
        cupy = devices[0].xp
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else name
        machine = f"{name} (CuPy {cupy.__version__}"
    if use_torch and args.device == "cpu":   # the parent stays small: no import of torch
        machine += f"; PyTorch {importlib.metadata.version('torch')}, {threads} threads)"
    elif use_torch:
        import torch
        machine += f"; PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()})"
    else:
        machine += ")"
    command = "python benchmarks/bench.py" + ("" if not sys.argv[1:] else " " + " ".join(sys.argv[1:]))
    largest = max(args.batch_sizes)
    print(f"AlexNet, paper configuration (Config(): 227x227, two towers, LRN, float32), "
          f"device {args.device}: {machine}")
    if not use_torch:
        print(f"no PyTorch reference ({why})")
    load_before = os.getloadavg()[0]
    if args.device == "cpu" and load_before > 0.5:
        print(f"warning: load average {load_before:.1f} before starting: other processes compete "
              "for the CPU, and the figures (multi-threaded BLAS above all) will be slow and noisy")
    started = time.perf_counter()
    specs = job_specs(args, use_torch)
    progress = Progress(specs, args.device, started)
    print(progress.plan(), flush=True)
    answers = {}
    for spec in specs:
        answers[job_label(spec)] = answer = run_child(spec)
        if spec["kind"] == "time":
            times = answer["seconds"]
            said = (f"ours {statistics.median(times['ours']):.2f} s/step"
                    + (f", torch {statistics.median(times['torch']):.2f} s/step" if use_torch else ""))
        elif spec["kind"] == "memory":
            said = f"peak {gib(answer['peak'])}"
        else:
            said = "done"
        progress.done(spec, said)
    results = []
    if not args.layers:
        for figure, B in [("train", b) for b in args.batch_sizes] + [("infer", largest)]:
            fig = {"figure": figure, "batch": B, "time": answers[f"time {figure} b={B}"],
                   "memory": {impl: answers[f"memory {figure} b={B} {impl}"]
                              for impl in (["ours", "torch"] if use_torch else ["ours"])}}
            results.append(fig)
    layers = answers[f"layers b={largest}"]

    print(f"\n{'=' * 30} results: {command} {'=' * 30}")
    print(f"{machine}; median of {args.repeats or '5 (batch <= 64) / 3'} repetitions after "
          f"{args.warmup} warm-up; ours/PyTorch alternating in one process; memory per figure "
          f"in fresh processes; load average {load_before:.1f} before starting")
    rows = figure_rows(results, use_torch) if results else []
    if rows:
        print_figures(rows, use_torch, args.device)
    print_layers(layers, use_torch, largest)
    if rows:
        print_markdown(rows, use_torch, args.device, command, machine)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
