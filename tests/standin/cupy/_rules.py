"""The state and the rules of the CuPy stand-in: current devices, contexts, launches, streams,
host synchronisations.

Settings, read once from the environment (so that subprocesses such as ``mpiexec`` ranks
inherit them):
    CUPY_STANDIN_GPUS     GPUs this process sees (default 2); CUDA_VISIBLE_DEVICES narrows them
    CUPY_STANDIN_PEER     1: the GPUs have a peer-to-peer link, so a kernel reading another
                          GPU's array turns peer access on with CuPy's PerformanceWarning;
                          0 (default): it raises CuPy's ValueError
    CUPY_STANDIN_MODE     raise (default): a broken rule raises as CuPy would;
                          count: it is counted (with the place in our code) and the run goes on
    CUPY_STANDIN_LOG      a file: at exit, one JSON line per process is appended with what it
                          did (devices that got a CUDA context, rule breaks by place, launches)
    CUPY_STANDIN_MISSING  comma list of cublas, curand, nvrtc: libraries that fail as when a
                          wheel without them (cupy-cuda12x without [ctk]) is installed
    CUPY_STANDIN_CUDA     the CUDA runtime version reported (default 13000)
"""
import atexit
import collections
import json
import os
import sys
import threading
import traceback
import warnings


def _visible_count():
    count = int(os.environ.get("CUPY_STANDIN_GPUS", "2"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return count
    ids = [v for v in visible.split(",") if v.strip()]
    return len([v for v in ids if v.strip().isdigit() and int(v) < count])


GPUS = _visible_count()
PEER = os.environ.get("CUPY_STANDIN_PEER", "0") == "1"
MODE = os.environ.get("CUPY_STANDIN_MODE", "raise")
LOG = os.environ.get("CUPY_STANDIN_LOG")
MISSING = {m.strip() for m in os.environ.get("CUPY_STANDIN_MISSING", "").split(",") if m.strip()}
CUDA_VERSION = int(os.environ.get("CUPY_STANDIN_CUDA", "13000"))

_thread = threading.local()
_lock = threading.Lock()
contexts = set()                         # devices that got a CUDA context in this process
broken = collections.Counter()           # (rule, place) -> times
launches = collections.Counter()         # stream key -> kernels queued on that stream (see stream_key)
syncs = collections.Counter()            # (what, place) -> host synchronisations (get, float(), ...)
peer_enabled = set()                     # (device, peer)
peer_copies = 0                          # arrays copied from one device to another
nccl_calls = 0                           # NCCL collectives called (cuda.nccl)
on_reset = []                            # what else forgets with ``reset`` (the streams' waits)
sequence = None                          # a list: the device of every launch, in order, is appended


class PerformanceWarning(RuntimeWarning):
    """CuPy's warning for an automatic peer access (cupy._util.PerformanceWarning)."""


def current():
    """This thread's current device: 0 until setDevice says otherwise (no context yet)."""
    return getattr(_thread, "device", 0)


def set_device(index):
    """cudaSetDevice: since CUDA 12 this creates the device's primary context."""
    if not 0 <= index < GPUS:
        raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {index}")
    _thread.device = index
    with _lock:
        contexts.add(index)


def place():
    """file:line of the first frame outside the stand-in (where our code made the call)."""
    import numpy
    skip = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(numpy.__file__)))
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not os.path.abspath(frame.filename).startswith(skip):
            return f"{os.path.relpath(frame.filename)}:{frame.lineno}"
    return "?"


def breaks(rule, error):
    """A broken rule: raise ``error`` (mode raise) or count it with its place (mode count)."""
    with _lock:
        broken[(rule, place())] += 1
    if MODE != "count":
        raise error


def default_stream_key(device):
    """The stream a thread's work on ``device`` goes to when no stream was entered: the
    thread's own (as under CuPy's per-thread default streams, the strictest case). A key is
    (device, tag); ``cuda`` replaces this function with one that knows entered streams."""
    return (device, threading.get_ident())


stream_key = default_stream_key


def launch(device_ids, what, kernel=True):
    """A kernel launched on the current device that reads or writes arrays on ``device_ids``
    (``kernel=False``: an allocation, which only creates the device's context). Returns
    (stream key, the launch's number on that stream) for a kernel, else None."""
    dev = current()
    mark = None
    with _lock:
        contexts.add(dev)    # work on a device creates its context
        if kernel:
            key = stream_key(dev)
            launches[key] += 1
            mark = (key, launches[key])
            if sequence is not None:
                sequence.append(dev)
    for other in set(device_ids) - {dev}:
        msg = (f"{what}: the device where the array resides ({other}) is different from the "
               f"current device ({dev}).")
        if PEER:
            peer_enabled.add((dev, other))
            with _lock:
                broken[("peer access", place())] += 1
            if MODE != "count":
                warnings.warn(f"{msg} Peer access has been activated automatically.", PerformanceWarning,
                              stacklevel=3)
        else:
            breaks("wrong device", ValueError(f"{msg} Peer access is unavailable between these devices."))
    return mark


def host_sync(what):
    """The host waits for a device (a copy to the host, a scalar read, a synchronize):
    counted with its place in our code; the training step may do at most one."""
    with _lock:
        syncs[(what, place())] += 1


def require_library(name, what):
    if name in MISSING:
        raise RuntimeError(f"CuPy failed to load lib{name}.so: {what} needs it "
                           "(the CUDA Toolkit libraries are not installed)")


def report():
    """What this process did, as a dict (also written to CUPY_STANDIN_LOG at exit)."""
    return {"pid": os.getpid(), "argv": sys.argv[:3], "contexts": sorted(contexts),
            "broken": {f"{rule} at {where}": n for (rule, where), n in sorted(broken.items())},
            "peer_copies": peer_copies, "nccl_calls": nccl_calls,
            "launches": {str(d): sum(n for (e, _), n in launches.items() if e == d)
                         for d in sorted({d for d, _ in launches})},
            "syncs": sum(syncs.values())}


def reset():
    """Forget what was recorded (tests that look at one piece of work)."""
    global peer_copies, nccl_calls
    with _lock:
        contexts.clear()
        broken.clear()
        launches.clear()
        syncs.clear()
        peer_copies = nccl_calls = 0
    for forget in on_reset:
        forget()


def _write_log():
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps(report()) + "\n")


atexit.register(_write_log)
