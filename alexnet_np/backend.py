"""Devices, their array modules, and the one function that moves arrays between them.

The paper's net is split over two GPUs ("towers", §3.2). Here a *device* is the CPU
(NumPy) or one GPU (CuPy). A device carries:

- ``xp``: its array module (``numpy`` or ``cupy``), chosen once, here; layer code
  writes ``xp = self.device.xp`` and never asks "am I on the GPU?";
- random generators made from a seed (``device.generator(seed)``);
- reusable scratch buffers (``device.scratch``) so that a training step does not
  allocate (and page-fault) the large im2col matrices afresh every time.

``move(x, device)`` is the only way an array changes device. It is a no-op when ``x``
already lives on ``device``; the model calls it exactly where the paper's towers talk
(conv3, fc6, fc7, fc8), forward for activations and backward for gradients, so every
crossing of a tower boundary is visible and can be counted in a test.

Using a device as a context manager (``with device:``) makes it CuPy's current device,
so that arrays made inside land on it (CuPy's guide: ``with cupy.cuda.Device(i)``).
On the CPU the context does nothing.

On the CPU each tower gets a ``Device`` of its own (the same memory, its own scratch), and
``SideBySide`` runs the towers at once, one thread each, with single-threaded BLAS: the
paper's model parallelism, on cores instead of GPUs. NumPy releases the GIL in its loops
and BLAS calls, so im2col, LRN and pooling, single-threaded in NumPy, use every core
(measured on 2 cores, batch 128: a training step takes 4.0 s, against 6.2 s with one tower
after the other and 2-thread BLAS). GPU towers run in turn: their kernels are queued asynchronously, so two
GPUs work at once anyway.
"""
import contextlib
import contextvars
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class DeviceError(RuntimeError):
    """A device was asked for that cannot be had; the message says why and what to do."""


class Device:
    """The CPU, running NumPy. Subclasses: ``GPU`` (CuPy) and, in the tests, tagged fakes."""

    name = "cpu"
    xp = np
    # The most entries of an unfolded convolution input (im2col) built at once: 64 MiB of
    # float32 on the CPU, large enough for GEMMs at full speed and kind to its caches.
    col_elements = 2 ** 24

    def __init__(self):
        self._scratch = {}  # name -> flat buffer, grown on demand

    def __repr__(self):
        return f"<Device {self.name}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def holds(self, x):
        """True when the array ``x`` lives on this device."""
        return isinstance(x, np.ndarray)

    def receive(self, x):
        """A copy of ``x`` (from the host or another device) on this device."""
        if hasattr(x, "get"):  # a CuPy array: copy it to the host
            return x.get()
        return np.array(x)

    def to_host(self, x):
        """``x`` as a NumPy array (no copy on the CPU)."""
        return x

    def generator(self, seed):
        """A random generator on this device, seeded; passed explicitly to whoever draws."""
        return np.random.default_rng(seed)

    def synchronize(self):
        """Wait until queued work is done (for timing); nothing to wait for on the CPU."""

    def scratch(self, name, shape, dtype):
        """A reusable buffer of ``shape``, shared by every layer on this device.

        Contents are undefined on return, and the next call with the same ``name``
        may hand out the same memory: use it only within one forward or backward call.
        """
        size = int(np.prod(shape))
        dtype = np.dtype(dtype)
        flat = self._scratch.get((name, dtype))
        if flat is None or flat.size < size:
            with self:
                flat = self.xp.empty(size, dtype=dtype)  # (size,)
            self._scratch[(name, dtype)] = flat
        return flat[:size].reshape(shape)


class GPU(Device):
    """GPU number ``index``, running CuPy."""

    def __init__(self, cupy, index):
        super().__init__()
        self.xp = cupy
        self.index = index
        self.name = f"gpu:{index}"
        self._contexts = []

    def __enter__(self):
        context = self.xp.cuda.Device(self.index)
        context.__enter__()
        self._contexts.append(context)
        return self

    def __exit__(self, *exc):
        return self._contexts.pop().__exit__(*exc)

    def holds(self, x):
        return isinstance(x, self.xp.ndarray) and x.device.id == self.index

    def receive(self, x):
        with self:
            if isinstance(x, self.xp.ndarray):
                # A peer copy: ndarray.copy() copies into the *current* device.
                return x.copy()
            return self.xp.asarray(x)  # host -> device

    def to_host(self, x):
        return self.xp.asnumpy(x)

    def generator(self, seed):
        # CuPy's default_rng takes an int: reduce an entropy list the way NumPy would.
        with self:
            return self.xp.random.default_rng(int(np.random.SeedSequence(seed).generate_state(1)[0]))

    def synchronize(self):
        with self:
            self.xp.cuda.Device(self.index).synchronize()


def move(x, device):
    """Put the array ``x`` on ``device``: the one place where data crosses devices.

    A no-op (``x`` itself) when ``x`` already lives there. Its backward is the same
    call in the other direction: ``move(dy, device_of_x)``.
    """
    if device.holds(x):
        return x
    return device.receive(x)


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


def _import_cupy():
    try:
        import cupy
    except ImportError as error:
        raise DeviceError(
            "--device gpu needs CuPy, which is not installed "
            f"({error}); install it with: pip install cupy-cuda12x"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken
        raise DeviceError(f"--device gpu: CuPy cannot reach a GPU ({error})") from None
    if count == 0:
        raise DeviceError("--device gpu: CuPy sees no GPU on this machine; use --device cpu")
    return cupy, count


def gpu_available():
    """True when CuPy is installed and sees at least one GPU."""
    try:
        _import_cupy()
    except DeviceError:
        return False
    return True


def tower_devices(kind, towers=2, gpu_ids=None):
    """The device of each tower, as the paper places them.

    ``kind`` is ``"cpu"``, ``"gpu"`` or ``"auto"`` (the GPU when one is usable).
    On the CPU each tower gets a device of its own (the same memory; the towers run side
    by side on the cores, see ``SideBySide``). On GPUs tower ``g`` goes to GPU
    ``gpu_ids[g]`` (``--gpus``: one id per tower, or one for all; default 0, 1, 0, 1...);
    with a single GPU all towers share it. Returns a list, one device per tower (the
    same object where towers share a device).
    """
    if gpu_ids is not None and len(gpu_ids) not in (1, towers):
        raise DeviceError(f"--gpus {','.join(map(str, gpu_ids))}: one GPU id per tower "
                          f"({towers} tower{'s' * (towers != 1)}), or one for all")
    gpu_ids = gpu_ids or (0, 1)
    if kind == "auto":
        kind = "gpu" if gpu_available() else "cpu"
    if kind == "cpu":
        return [Device() for _ in range(towers)]  # one per tower: same memory, own scratch
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
    return [devices[index] for index in ids]

