"""Devices, their array modules, and the one function that moves arrays between them.

The paper's net is split over two GPUs ("towers", §3.2). Here a *device* is the CPU
(NumPy) or one GPU (CuPy). A device carries:

- ``xp``: its array module (``numpy`` or ``cupy``), chosen once, here; layer code
  writes ``xp = self.device.xp`` and never asks "am I on the GPU?";
- ``memory``: its reusable output buffers and workspace (``memory.DeviceMemory``), so
  that a training step does not allocate (and page-fault) its large arrays afresh.

``crossing([(x, device), ...])`` is the only way arrays change device, and ``move(x,
device)`` its form for one array. It is a no-op for an array already on its device; the
model calls it exactly where the paper's towers talk (conv3, fc6, fc7, fc8), forward for
activations and backward for gradients, so every crossing of a tower boundary is visible
and can be counted in a test. Between GPUs it orders each copy by CUDA events, each
recorded on its own GPU (``Device.record`` and ``Device.wait``, which the loader's threads
use too: on a GPU, work queued by one thread or on one device comes before another's
only through an event).

Using a device as a context manager (``with device:``) makes it CuPy's current device,
so that arrays made inside land on it and kernels run on it (CuPy's guide: ``with
cupy.cuda.Device(i)``). Every device operation runs inside its device's context, arranged
by the model, the optimiser, the loader and the trainer's checks, never by the layers; a
process only ever makes its own GPUs current (``GPU``). On the CPU the context does nothing.
A GPU is checked before use: a kernel, a GEMM, a random draw and a compiled kernel
(``check_gpu_works``), so that missing CUDA libraries are one line, not a traceback later.

On the CPU each tower gets a ``Device`` of its own (the same RAM, its own buffers), and
``SideBySide`` runs the towers at once, one thread each, with single-threaded BLAS: the
paper's model parallelism, on cores instead of GPUs. NumPy releases the GIL in its loops
and BLAS calls, so im2col, LRN and pooling, single-threaded in NumPy, use every core
(measured on 2 cores, batch 128: a training step takes 3.7 s, against 4.9 s with one tower
after the other and 2-thread BLAS). GPU towers need no threads: their kernels are queued
asynchronously, layer by layer alternately on distinct GPUs (``model.AlexNet.in_lockstep``),
so two GPUs work at once.
"""
import contextlib
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .memory import DeviceMemory


class DeviceError(RuntimeError):
    """A device was asked for that cannot be had; the message says why and what to do."""


class Device:
    """The CPU, running NumPy. Subclass: ``GPU`` (CuPy, or in the tests the CuPy stand-in)."""

    name = "cpu"
    kind = "cpu"   # what --device calls it
    xp = np
    # The most entries of an unfolded convolution input (im2col) built at once: 64 MiB of
    # float32 on the CPU, large enough for GEMMs at full speed and kind to its caches.
    col_elements = 2 ** 24
    # The same for a convolution with few filters (conv1: 48 a tower), whose GEMM does only
    # 2F flops per unfolded entry, too few to hide a trip to memory: one image at a time
    # (conv1's is 1.1M entries, 4.4 MB), so that the GEMM reads what the unfold has just
    # written while it is still in the cache. Measured 0.87x conv1's time at batch 32.
    few_filters_col_elements = 2 ** 20
    # 3 x 3 convolutions at stride 1 (conv3-conv5) by Winograd's F(2x2, 3x3): 1.94x fewer
    # multiply-adds for many more, smaller array operations (``winograd``, ``layers.Conv2D``).
    winograd = True
    # Winograd's transforms go a block of channels at a time, with at most this many entries
    # of temporaries (1 MiB of float32), so that their passes meet in the cache
    # (``memory.blocks``): measured 0.63x their time.
    block_elements = 2 ** 18
    # The SGD update runs over at most this many entries of a parameter at a time, so that
    # its six passes meet in the cache instead of in memory: 1 MiB of float32, measured 1.8x
    # faster than whole arrays here (the update is memory-bound).
    update_elements = 2 ** 18

    def __init__(self):
        self.memory = DeviceMemory(self)   # the layers' output buffers and workspace

    def __repr__(self):
        return f"<Device {self.name}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def holds(self, x):
        """True when the array ``x`` lives on this device."""
        return isinstance(x, np.ndarray)

    def receive(self, x, ready=None):
        """A copy of ``x`` (from the host or another device) on this device."""
        if hasattr(x, "get"):  # a CuPy array: copy it to the host
            return x.get()
        return np.array(x)

    def is_peer(self, x):
        """True when moving ``x`` here is a copy between two GPUs (never, to the CPU)."""
        return False

    def record(self):
        """A marker of the work queued so far, for ``wait`` on another thread or device (a
        CUDA event on a GPU; nothing on the CPU, where work is done when queued)."""
        return None

    def wait(self, event):
        """Later work here waits for ``event`` (``record``'s); nothing to wait for on the CPU."""

    def to_host(self, x):
        """``x`` as a NumPy array (no copy on the CPU)."""
        return x

    def synchronize(self):
        """Wait until queued work is done (for timing); nothing to wait for on the CPU."""


class GPU(Device):
    """GPU number ``index``, running CuPy.

    Its context (``with gpu:``) makes GPU ``index`` current for the thread and, on leaving
    the outermost one, leaves it current. CuPy's own ``with cupy.cuda.Device(i)`` sets the
    device that was current before again, which in the main thread and in every new
    (loader) thread is GPU 0: since CUDA 12 that creates a context there (about 0.5 GB of
    GPU 0 in every rank, and a failure in exclusive-process mode). So a process only ever
    makes its own GPUs current. Nested contexts of two GPUs restore the outer one.
    """

    _threads = threading.local()   # .stack: the GPUs entered in this thread, outermost first
    kind = "gpu"
    # Unfold a convolution's whole batch at once (conv1 at batch 128: 140M entries, 563 MB of
    # float32): one GEMM a layer, nothing to gain from cache-sized chunks. 2^28 entries
    # (1 GiB of float32) holds every layer of the paper's net at batch 128.
    col_elements = 2 ** 28
    few_filters_col_elements = 2 ** 28
    winograd = False         # im2col: one GEMM in a few kernels; Winograd's transforms are ~30
    block_elements = None   # whole arrays: one kernel per pass
    update_elements = None   # whole arrays: one kernel per operation, no chunks

    def __init__(self, cupy, index):
        super().__init__()
        self.xp = cupy
        self.index = index
        self.name = f"gpu:{index}"
        self._peers = {index: self}

    def __enter__(self):
        stack = self._stack()
        current = self.xp.cuda.runtime.getDevice()
        stack.append(current if stack else None)   # None: entered from outside any GPU of ours
        if current != self.index:
            self.xp.cuda.Device(self.index).use()
        return self

    def __exit__(self, *exc):
        previous = self._stack().pop()
        if previous is not None and previous != self.index:
            self.xp.cuda.Device(previous).use()
        return False

    def _stack(self):
        if not hasattr(self._threads, "stack"):
            self._threads.stack = []
        return self._threads.stack

    def holds(self, x):
        return isinstance(x, self.xp.ndarray) and x.device.id == self.index

    def receive(self, x, ready=None):
        """A copy of ``x`` on this GPU: from the host, this GPU, or another GPU (a peer copy,
        ``ready`` an event recorded on x's GPU after the work that wrote it: ``crossing``)."""
        with self:
            if not isinstance(x, self.xp.ndarray):
                return self.xp.asarray(x)      # host -> device
            if x.device.id == self.index:
                return x.copy()
            if ready is None:
                raise ValueError("a peer copy needs the event that says its source is ready (use move)")
            self.xp.cuda.get_current_stream().wait_event(ready)
            return x.copy()                    # ndarray.copy() copies into the current device

    def is_peer(self, x):
        """True when ``x`` is an array of another GPU (moving it here is a peer copy)."""
        return isinstance(x, self.xp.ndarray) and x.device.id != self.index

    def peer(self, index):
        """GPU ``index`` as a device, to make it current and order work there (a copy's
        source); made once."""
        if index not in self._peers:
            self._peers[index] = GPU(self.xp, index)
        return self._peers[index]

    def record(self):
        """An event recorded now on this GPU's current stream (it belongs to this GPU)."""
        with self:
            event = self.xp.cuda.Event(disable_timing=True)
            event.record()
        return event

    def wait(self, event):
        """This GPU's current stream waits for ``event`` (of any GPU) before its later work."""
        if event is not None:
            with self:
                self.xp.cuda.get_current_stream().wait_event(event)

    def to_host(self, x):
        with self:   # the transfer runs in this GPU's context (CuPy's would return to GPU 0)
            return self.xp.asnumpy(x)

    def synchronize(self):
        with self:
            self.xp.cuda.Device(self.index).synchronize()


def memories(devices):
    """One device per distinct memory among ``devices``, in order: the CPU devices share one
    (the first stands for all), each GPU has its own."""
    kept = {}
    for device in devices:
        kept.setdefault(device.name if isinstance(device, GPU) else "cpu", device)
    return list(kept.values())


def move(x, device):
    """Put the array ``x`` on ``device``: the one crossing, for one array (see ``crossing``).

    A no-op (``x`` itself) when ``x`` already lives there. Its backward is the same
    call in the other direction: ``move(dy, device_of_x)``.
    """
    return crossing([(x, device)])[0]


def crossing(requests):
    """``[(x, device), ...]`` -> ``[x on device, ...]``: the one place where data changes
    device, a no-op for an array already there. A tower crossing asks for all of its copies
    at once.

    Between GPUs each copy is queued on the destination's stream, in stream order on both
    sides, with CUDA's rule that an event belongs to the GPU it was made on: first, on each
    source GPU, the arrays are made contiguous and one event recorded there (``ready``);
    then each destination waits for the ready events of its sources and queues its copies;
    then it records an event (``copied``) that each of its sources waits for, so that a
    source does not overwrite an array (often a reused buffer) before it has been read.
    Every ready event is recorded before any copy is queued, and every ``copied`` waited for
    after, so that the two directions of a crossing do not wait for each other.
    """
    sources = {}    # id(source GPU) -> source GPU, for the arrays that leave one
    leaving = []    # per request: the source GPU of a peer copy, or None
    for x, device in requests:
        source = device.peer(x.device.id) if device.is_peer(x) else None
        leaving.append(source)
        if source is not None:
            sources[id(source)] = source
    arrays = [x for x, _ in requests]
    ready = {}
    for key, source in sources.items():
        with source:
            for i, x in enumerate(arrays):
                if leaving[i] is source:
                    arrays[i] = source.xp.ascontiguousarray(x)     # a peer copy reads contiguous memory
        ready[key] = source.record()
    moved = [None] * len(requests)
    destinations = {id(device): device for _, device in requests}
    copied = []
    for device in destinations.values():
        mine = [i for i, (_, d) in enumerate(requests) if d is device]
        for i in mine:
            x, source = arrays[i], leaving[i]
            if source is not None:
                moved[i] = device.receive(x, ready[id(source)])
            else:
                moved[i] = x if device.holds(x) else device.receive(x)
        read_from = {id(leaving[i]): leaving[i] for i in mine if leaving[i] is not None}
        if read_from:
            copied.append((device.record(), list(read_from.values())))
    for event, read_from in copied:
        for source in read_from:
            source.wait(event)
    return moved


class SideBySide:
    """Runs one task per tower at once when the towers are on distinct CPU devices."""

    def __init__(self, devices):
        on_cpu = all(not isinstance(d, GPU) for d in devices)
        self.parallel = on_cpu and len({id(d) for d in devices}) == len(devices) > 1
        self.threads = ThreadPoolExecutor(len(devices), thread_name_prefix="tower") if self.parallel else None
        self.blas = _single_threaded_blas() if self.parallel else None

    def run(self, tasks):
        """[task() for task in tasks], side by side where possible; exceptions propagate."""
        if not self.parallel:
            return [task() for task in tasks]
        with self.blas():
            # Each task runs in a copy of the caller's context, so that settings such as
            # np.errstate (a context variable) hold in the threads too.
            futures = [self.threads.submit(contextvars.copy_context().run, task) for task in tasks]
            return [future.result() for future in futures]


def _single_threaded_blas():
    """A context that limits BLAS to one thread per call (threadpoolctl), or does nothing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext
    controller = ThreadpoolController()
    return lambda: controller.limit(limits=1, user_api="blas")


INSTALL_CUPY = ('pip install "cupy-cuda13x[ctk]" (CUDA 13) or "cupy-cuda12x[ctk]" (CUDA 12); '
                '[ctk] brings the CUDA libraries CuPy needs (cuBLAS, cuRAND, NVRTC) where only a '
                'driver is installed')


def _import_cupy():
    """CuPy and the number of GPUs it sees (no CUDA context is made). Raises DeviceError."""
    try:
        import cupy
    except ImportError as error:
        raise DeviceError(f"--device gpu needs CuPy, which cannot be imported ({error}); "
                          f"install it with: {INSTALL_CUPY}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken
        raise DeviceError(f"--device gpu: CuPy cannot reach a GPU ({one_line(error)})") from None
    if count == 0:
        raise DeviceError("--device gpu: CuPy sees no GPU on this machine; use --device cpu")
    return cupy, count


def cuda_major(cupy):
    """The major version of the CUDA runtime CuPy runs on (12, 13, ...)."""
    return cupy.cuda.runtime.runtimeGetVersion() // 1000


def cupy_distribution():
    """The name of the installed package that provides ``cupy`` (e.g. cupy-cuda13x), or None."""
    import importlib.metadata
    names = importlib.metadata.packages_distributions().get("cupy", [])
    return names[0] if names else None


def missing_libraries_hint(distribution, major):
    """What to run when CuPy is installed but a CUDA library it needs is missing: the same
    package with its [ctk] extra (never a second CuPy beside the installed one)."""
    if distribution and distribution.startswith("cupy-cuda"):
        return f'pip install "{distribution}[ctk]" (the same CuPy, with the CUDA {major} libraries)'
    return (f"install the CUDA {major} libraries CuPy needs (cuBLAS, cuRAND, NVRTC) for the CuPy "
            f"you have ({distribution or 'not from a wheel'})")


def _probe_steps(cupy):
    """(what, check) pairs: each runs one kind of work that training needs."""
    def kernel():
        return float((cupy.arange(4, dtype=cupy.float32) * 2).sum()) == 12.0

    def matmul():
        a = cupy.ones((2, 3), dtype=cupy.float32)
        return float((a @ a.T).sum()) == 12.0

    def random():
        return float(cupy.random.default_rng(0).random(8).sum()) > 0.0

    def compiled():
        twice = cupy.ElementwiseKernel("float32 x", "float32 y", "y = x * 2", "alexnet_np_probe")
        return float(twice(cupy.ones(3, dtype=cupy.float32)).sum()) == 6.0

    return [("a kernel", kernel), ("a matrix product (cuBLAS)", matmul),
            ("a random draw (cuRAND)", random), ("a compiled kernel (NVRTC)", compiled)]


def check_gpu_works(device):
    """Run one tiny piece of each kind of work on ``device`` before anything else is done.

    CuPy imports and counts GPUs even when the CUDA libraries it loads later are missing
    (the cupy-cuda12x wheel without its [ctk] extra): the first matrix product would end in
    a traceback. Raises DeviceError with one line naming what failed and what to install.
    """
    cupy = device.xp
    with device:
        for what, check in _probe_steps(cupy):
            try:
                ok = check()
            except Exception as error:
                hint = missing_libraries_hint(cupy_distribution(), cuda_major(cupy))
                raise DeviceError(f"--device gpu: CuPy {cupy.__version__} cannot run {what} on GPU "
                                  f"{device.index} ({one_line(error)}); {hint}") from None
            if not ok:
                raise DeviceError(f"--device gpu: {what} on GPU {device.index} gave a wrong result")


def one_line(message):
    """``message`` (a string or an exception) with its line breaks joined: an error is said
    in one line. An exception without a message gives its type's name."""
    text = " ".join(str(message).splitlines())
    return text or (type(message).__name__ if isinstance(message, BaseException) else "")


def gpu_available():
    """True when CuPy is installed and sees at least one GPU (nothing is run on it)."""
    try:
        _import_cupy()
    except DeviceError:
        return False
    return True


def tower_devices(kind, towers=2, gpu_ids=None, winograd=None):
    """The device of each tower, as the paper places them.

    ``kind`` is ``"cpu"``, ``"gpu"`` or ``"auto"`` (the GPU when one is usable).
    On the CPU each tower gets a device of its own (the same memory; the towers run side
    by side on the cores, see ``SideBySide``). On GPUs tower ``g`` goes to GPU
    ``gpu_ids[g]`` (``--gpus``: one id per tower, or one for all; default 0, 1, 0, 1...);
    with a single GPU all towers share it. Returns a list, one device per tower (the
    same object where towers share a device). ``winograd``: True or False sets the devices'
    choice of 3 x 3 convolutions (``Device.winograd``; None: each kind's own).
    """
    devices = _tower_devices(kind, towers, gpu_ids)
    if winograd is not None:
        for device in devices:
            device.winograd = winograd
    return devices


def _tower_devices(kind, towers, gpu_ids):
    if gpu_ids is not None and len(gpu_ids) not in (1, towers):
        raise DeviceError(f"--gpus {','.join(map(str, gpu_ids))}: one GPU id per tower "
                          f"({towers} tower{'s' * (towers != 1)}), or one for all")
    gpu_ids = gpu_ids or (0, 1)
    if kind == "auto":
        kind = "gpu" if gpu_available() else "cpu"
    if kind == "cpu":
        return [Device() for _ in range(towers)]  # one per tower: same RAM, own buffers
    if kind != "gpu":
        raise DeviceError(f"--device must be cpu, gpu or auto, not {kind!r}")
    cupy, count = _import_cupy()
    ids = [gpu_ids[g % len(gpu_ids)] for g in range(towers)]
    if count == 1:
        ids = [0] * towers
    for index in ids:
        if index >= count:
            raise DeviceError(f"--gpus asks for GPU {index} but this machine has {count}")
    devices = {index: GPU(cupy, index) for index in sorted(set(ids))}
    for device in devices.values():
        check_gpu_works(device)
    return [devices[index] for index in ids]

