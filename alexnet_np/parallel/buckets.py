"""Gradients in a few ranges of the packed gradient per device, summed across ranks while
backward runs.

Dimensions:
    E  entries of a bucket (the gradients of several layers, end to end)

Data parallelism (``distributed``) sums every gradient over the ranks after each backward.
Layer by layer that would be 2 x 7 x 2 + 2 small reductions; once, after backward, it
would all stay exposed. So, as PyTorch's DistributedDataParallel and Horovod do, the
gradients are summed in a few buckets per device, in the order backward produces them
(fc8; fc7; fc6; conv5-conv3; conv2-conv1), at most ``BUCKET_BYTES`` each (a larger
gradient gets a bucket of its own; one under ``MIN_BUCKET_BYTES`` joins the next). A
bucket is a consecutive range of its device's packed gradient (``flat.FlatParameters``,
which lays the weights out in backward's order, then the biases, which join the last
bucket): backward writes there directly, nothing is copied, and the SGD update still runs
over the whole packed arrays, a few operations a device. A bucket's sum starts,
non-blocking, as soon as backward has finished all its layers (the ``finished`` argument of
``AlexNet.backward``) and runs while backward goes on; ``wait`` finishes them all before
the SGD update and records how long that wait was: the part of the reduction that backward
did not hide.

On the CPU, MPI moves a non-blocking sum forward only inside MPI calls. So, by default
(``progress_thread``), a thread tests the requests in flight every 0.5 ms while backward
runs (this needs MPI_THREAD_MULTIPLE, which mpi4py asks for); otherwise ``finished`` tests
them at each stage boundary. Measured (``benchmarks/bench_dist.py``, docs/ranks.md): the thread hides 97% of
the reduction under backward, the stage boundaries 17-39%. On GPUs, NCCL runs on a stream
of its own (``distributed.NcclReducer``).
"""
import threading
import time

import numpy as np

BUCKET_BYTES = 32 * 2 ** 20
MIN_BUCKET_BYTES = 2 ** 20   # a bias alone is not worth a reduction of its own


def backward_order(model):
    """Layer names (as ``AlexNet.named_layers``) in the order backward finishes them."""
    return model.backward_order()


class Bucket:
    """The range [start, stop) of ``packed``'s gradient (``flat.FlatParameters``) that holds
    the gradients ``names`` end to end: ``flat`` (E,) is a view, which backward writes."""

    def __init__(self, packed, start, stop, names):
        self.device, self.names = packed.device, list(names)
        self.flat = packed.grads[start:stop]                                  # (E,) view
        self.layers = {name.rsplit(".", 1)[0] for name in names}
        self.pending, self.request, self.started = set(self.layers), None, False

    @property
    def nbytes(self):
        return int(self.flat.nbytes)


def bucket_ranges(packed, bucket_bytes):
    """[(start, stop, names)]: ``packed``'s gradient cut, in its order, at parameter
    boundaries into buckets of at most ``bucket_bytes`` (see the module docstring); the
    biases, at the end, all go to the last bucket."""
    ranges, start, offset, size, names = [], 0, 0, 0, []
    itemsize = packed.grads.dtype.itemsize
    for name, shape in packed.shapes.items():
        count = int(np.prod(shape))
        nbytes = count * itemsize
        in_biases = offset >= packed.bias_start
        if names and not in_biases and size + nbytes > bucket_bytes and size >= min(MIN_BUCKET_BYTES, bucket_bytes):
            ranges.append((start, offset, names))
            start, size, names = offset, 0, []
        names.append(name)
        size += nbytes
        offset += count
    if names:
        ranges.append((start, offset, names))
    return ranges


class GradientBuckets:
    """The model's gradients in buckets, and their sums across the ranks of ``world``.

    Usage, one training step:
        model.backward(finished=buckets.finished); buckets.wait()
    Install before the optimiser is made: a network whose parameters are not packed yet (the
    plain forms) is packed here, which gives its layers new (view) arrays.
    """

    def __init__(self, model, world, bucket_bytes=BUCKET_BYTES, progress_thread=True):
        self.world = world
        self.progress = Progress(world) if progress_thread and world.threads_ok else None
        if not model.flat:
            model.pack_parameters()   # the plain forms too: the buckets are ranges of the packed gradient
        if not all(packed.holds() for packed in model.flat):
            raise ValueError("gradient buckets need the network's packed gradients (pack_parameters)")
        self.buckets = [Bucket(packed, start, stop, names) for packed in model.flat
                        for start, stop, names in bucket_ranges(packed, bucket_bytes)]
        devices = [packed.device for packed in model.flat]
        self.reducers = {id(d): world.reducer(d) for d in devices}
        self.started = []      # [(bucket, seconds after the first start)] of the last step
        self.exposed_s = 0.0   # the last wait: reduction time not hidden under backward
        self._first_start = None

    def finished(self, names):
        """Backward has completed the layers ``names``: start the sums of the buckets now complete."""
        for bucket in self.buckets:
            bucket.pending.difference_update(names)
            if not bucket.pending and not bucket.started:
                now = time.perf_counter()
                if self._first_start is None:   # the step's first: a fresh log
                    self._first_start, self.started = now, []
                bucket.request = self.reducers[id(bucket.device)].start_sum(bucket.flat)
                bucket.started = True
                self.started.append((bucket, now - self._first_start))
        in_flight = [b.request for b in self.buckets if b.request is not None]
        if self.progress is not None:
            self.progress.watch(in_flight)
        else:
            self.world.test(in_flight)

    def wait(self):
        """Finish every sum (each rank then holds the gradients of the whole batch)."""
        started = time.perf_counter()
        missing = [b.names[0] for b in self.buckets if b.pending]
        if missing:
            raise RuntimeError(f"backward did not finish {missing}: their gradients were not summed")
        if self.progress is not None:
            self.progress.halt()
        self.world.wait([b.request for b in self.buckets])
        self.exposed_s = time.perf_counter() - started
        for bucket in self.buckets:
            bucket.pending, bucket.request, bucket.started = set(bucket.layers), None, False
        self._first_start = None

    def sum_now(self):
        """Sum every bucket at once, blocking (the reduction with nothing to hide it: for timing)."""
        self.world.wait([self.reducers[id(b.device)].start_sum(b.flat) for b in self.buckets])

    def describe(self):
        sizes = ", ".join(f"{b.nbytes / 2 ** 20:.1f}" for b in self.buckets)
        return f"{len(self.buckets)} gradient buckets (MiB: {sizes})"

    @property
    def nbytes(self):
        return sum(b.nbytes for b in self.buckets)


class Progress:
    """A thread that moves the requests in flight forward (``world.test``) every ``interval``
    seconds, between ``watch`` and ``halt``; the main thread does not test them meanwhile."""

    def __init__(self, world, interval=5e-4):
        self.world, self.interval = world, interval
        self.requests, self.lock, self.stop, self.thread = [], threading.Lock(), threading.Event(), None

    def watch(self, requests):
        with self.lock:
            self.requests = list(requests)
        if self.thread is None:
            self.stop.clear()
            self.thread = threading.Thread(target=self.run, name="mpi-progress", daemon=True)
            self.thread.start()

    def run(self):
        while not self.stop.wait(self.interval):
            with self.lock:
                requests = self.requests
            self.world.test(requests)

    def halt(self):
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
            self.thread = None


def flat_gradients(model):
    """Every gradient of ``model`` end to end on the host (for tests), float64 (P,)."""
    return np.concatenate([np.asarray(d.to_host(g), dtype=np.float64).ravel() for _, _, g, d in model.parameters()])
