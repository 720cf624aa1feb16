"""A device's reusable memory for the fast forms of the layers (``fast.py``): two output
buffers and a workspace.

Fresh arrays cost page faults and zeroing every step (docs/speed.md), so the fast forms of
the large layers write into memory that lives from step to step. Two kinds,
chosen so that a step holds little more than the layers' own kept arrays:

- ``output(shape, dtype)``: the next of two buffers, taken in turn. A layer's output is
  read by the next layer, which writes its own output into the other buffer; the third
  output goes back to the first. So an output is valid until two more outputs have been
  taken on the device: keep it longer, and copy it (``is_output`` tells).
- ``work(shape, dtype)``: a temporary of one layer call (an unfolded input, LRN's padded
  squares, pooling's column maxima), taken inside ``with memory.workspace():`` and given
  back when that block ends. Workspaces nest: a block inside a loop gives back each pass's
  temporaries. The workspace is one flat buffer holding them one after the other, as large
  as the most that one call has needed so far.

Where memory lasts longer (what backward needs: ReLU's output, the pooling winners) a
layer keeps arrays of its own (``fast.FastLayer.buffer``). The plain forms (``layers.py``)
use none of this: they return fresh arrays.

Everything is allocated inside the device's context (``with device:``), so that on a GPU it
lands on that GPU; CuPy's stream order keeps a kernel that reuses memory after the kernels
that read it.
"""
import contextlib

import numpy as np


def blocks(count, per_item, limit):
    """[(start, stop), ...]: ``count`` items in ranges of at most ``limit // per_item`` (at
    least one item): for work whose passes over an array are memory-bound, a block at a
    time, so that the passes meet in the cache; ``limit`` None: all at once."""
    size = count if limit is None else max(1, min(count, limit // per_item))
    return [(start, min(count, start + size)) for start in range(0, count, size)]

ALIGN = 256   # bytes: every temporary starts on a boundary that suits any dtype and GPU loads


class DeviceMemory:
    """Output buffers and workspace of one device (``device.memory``)."""

    def __init__(self, device):
        self.device = device
        self._outputs = [None, None]   # two flat uint8 buffers, grown on demand
        self._handed = [None, None]    # the array last handed out of each
        self._turn = 0                 # which buffer the next output takes
        self._arena = None             # the workspace: one flat uint8 buffer, or None
        self._used = 0                 # bytes taken by the open workspaces (may pass the arena)
        self._needed = 0               # the most bytes the open workspaces have taken
        self._depth = 0                # open workspaces

    def _flat(self, nbytes):
        with self.device:
            return self.device.xp.empty(nbytes, dtype=np.uint8)

    @staticmethod
    def _shaped(flat, start, shape, dtype):
        """``flat[start:]`` as an array of ``shape`` and ``dtype`` (a view)."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        return flat[start:start + nbytes].view(dtype).reshape(shape)

    def output(self, shape, dtype):
        """The next output buffer, as an array of ``shape``; contents undefined."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        turn, self._turn = self._turn, 1 - self._turn
        if self._outputs[turn] is None or self._outputs[turn].size < nbytes:
            self._outputs[turn] = None   # freed before its successor is allocated
            self._outputs[turn] = self._flat(nbytes)
        self._handed[turn] = self._shaped(self._outputs[turn], 0, shape, dtype)
        return self._handed[turn]

    def is_output(self, x):
        """True when ``x`` is one of the two outputs last handed out (as handed out)."""
        return any(x is handed for handed in self._handed)

    @contextlib.contextmanager
    def workspace(self):
        """A block whose ``work`` temporaries are given back when it ends."""
        start = self._used
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            self._used = start
            if self._depth == 0 and self._arena is not None and self._arena.size < self._needed:
                self._arena = None   # too small: the next workspace allocates what was needed

    def work(self, shape, dtype):
        """A temporary array of ``shape`` for the innermost open workspace; contents undefined."""
        if not self._depth:
            raise RuntimeError("DeviceMemory.work needs an open workspace (with memory.workspace():)")
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        start = -(-self._used // ALIGN) * ALIGN
        self._used = start + nbytes
        self._needed = max(self._needed, self._used)
        if self._arena is None and start == 0:
            self._arena = self._flat(self._needed)
        if self._arena is not None and self._used <= self._arena.size:
            return self._shaped(self._arena, start, shape, dtype)
        # Past the end of the workspace (the first steps, while it grows): an array of its own.
        return self._shaped(self._flat(nbytes), 0, shape, dtype)

    def nbytes(self):
        """Bytes held now: the output buffers and the workspace."""
        held = [b for b in self._outputs + [self._arena] if b is not None]
        return sum(int(b.size) for b in held)
