"""cupy.cuda.nccl of the stand-in: NCCL's communicators, with what NCCL checks, summing for
real across the ranks of an ``mpiexec`` job through MPI on the host underneath.

What it checks, as NCCL does or as a real job would show (hang or error):
- a communicator is made on the device current at the time (``ncclCommInitRank``), by every
  rank of the job with the same unique id, each with its own rank;
- a collective is called with the communicator's device current, on a stream of that device;
- every rank calls the same collectives, in the same order, with the same counts, types and
  operation (else a real job hangs or sums garbage: here it is a broken rule);
- the buffers are read and written in order on the given stream: the stream must have waited
  for the work that wrote them (``_array.check_order``), and whoever reads the sum afterwards
  must wait for the collective's stream.
What it does not show: NCCL's own transport (NVLink, PCIe, InfiniBand), its speed, its
overlap with computation, or errors of a real network. The sum runs when it is called, in
float64 or float32 as the buffer is, through ``MPI_Allreduce`` (the order of the additions may
differ from NCCL's ring).
"""
import os as _os

import numpy as _np

from .. import _rules

available = True

NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
(NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_UINT32, NCCL_INT64, NCCL_UINT64, NCCL_FLOAT16,
 NCCL_FLOAT32, NCCL_FLOAT64) = range(9)
NCCL_CHAR, NCCL_INT, NCCL_HALF, NCCL_FLOAT, NCCL_DOUBLE = 0, 2, 6, 7, 8
_DTYPES = {NCCL_INT8: _np.int8, NCCL_UINT8: _np.uint8, NCCL_INT32: _np.int32, NCCL_UINT32: _np.uint32,
           NCCL_INT64: _np.int64, NCCL_UINT64: _np.uint64, NCCL_FLOAT16: _np.float16,
           NCCL_FLOAT32: _np.float32, NCCL_FLOAT64: _np.float64}


class NcclError(RuntimeError):
    pass


def get_version():
    return 22703


def get_unique_id():
    """128 bytes that name one communicator (ranks share it, e.g. by an MPI broadcast)."""
    return tuple(int(b) - 128 for b in _os.urandom(128))


def _world():
    """mpi4py's COMM_WORLD when mpi4py is importable (``mpiexec`` or one process), else None."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


class NcclCommunicator:
    """A communicator of ``ndev`` ranks on the current device (ncclCommInitRank)."""

    def __init__(self, ndev, commId, rank):
        self._device, self._size, self._rank = _rules.current(), int(ndev), int(rank)
        _rules.launch([], "ncclCommInitRank", kernel=False)
        self._calls = 0
        world = _world()
        size = 1 if world is None else world.Get_size()
        if self._size != size:
            raise NcclError(f"ncclCommInitRank: the stand-in's communicators span every rank of the job "
                            f"({size}), not {self._size}")
        self._comm = None if size == 1 else world.Dup()   # its own channel, apart from the job's messages
        if self._comm is not None:
            every = self._comm.allgather((tuple(commId), self._rank))
            if len({uid for uid, _ in every}) != 1 or sorted(r for _, r in every) != list(range(size)):
                _rules.breaks("nccl init", NcclError(
                    "ncclCommInitRank: the ranks gave different unique ids or the same rank twice"))

    def device_id(self):
        return self._device

    def rank_id(self):
        return self._rank

    def size(self):
        return self._size

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        """ncclAllReduce: queued on ``stream``; here done at once, across the ranks by MPI."""
        from . import _stream_of
        from .._array import by_pointer, check_order, note_write
        what = "ncclAllReduce"
        if _rules.current() != self._device:
            _rules.breaks("nccl device", NcclError(
                f"{what}: the communicator's device ({self._device}) is not the current device "
                f"({_rules.current()})"))
        queue = _stream_of(stream)
        if queue._device() != self._device:
            _rules.breaks("nccl stream", NcclError(
                f"{what}: a stream of device {queue._device()} given to the communicator of device "
                f"{self._device}"))
        self._calls += 1
        signature = (self._calls, "allReduce", int(count), int(datatype), int(op))
        if self._comm is not None:
            every = self._comm.allgather(signature)
            if len(set(every)) != 1:
                _rules.breaks("nccl mismatch", NcclError(
                    f"{what}: the ranks called different collectives (call, name, count, type, op by "
                    f"rank: {every}): a real job would hang or sum garbage"))
        arrays = []
        for pointer in (sendbuf, recvbuf):
            ref = by_pointer.get(pointer)
            array = ref() if ref is not None else None
            if array is None or array.size < count or array.dtype != _DTYPES[datatype] or \
                    not array.flags.c_contiguous:
                raise NcclError(f"{what}: no contiguous {_np.dtype(_DTYPES[datatype]).name} device array of "
                                f"{count} entries at {pointer:#x} (take the pointer from ndarray.data.ptr)")
            if array._device != self._device:
                _rules.breaks("nccl buffer", NcclError(
                    f"{what}: a buffer of device {array._device} given to the communicator of device "
                    f"{self._device}"))
            arrays.append(array)
        key = queue._key()
        check_order(arrays, what, stream=key)
        with _rules._lock:
            _rules.launches[key] += 1
            _rules.nccl_calls += 1
            mark = (key, _rules.launches[key])
        send = arrays[0]._a.reshape(-1)[:count]
        total = _np.array(send)
        if self._comm is not None:
            from mpi4py import MPI
            ops = {NCCL_SUM: MPI.SUM, NCCL_PROD: MPI.PROD, NCCL_MAX: MPI.MAX, NCCL_MIN: MPI.MIN}
            self._comm.Allreduce(MPI.IN_PLACE, total, op=ops[op])
        arrays[1]._a.reshape(-1)[:count] = total
        note_write(arrays[1], mark)

    def destroy(self):
        if self._comm is not None:
            self._comm.Free()
            self._comm = None

    def abort(self):
        self.destroy()


def groupStart():
    pass


def groupEnd():
    pass
