"""Ranks: R cooperating processes that train one model on slices of each batch.

Dimensions:
    R  ranks (processes)    r  this process's rank    B  the global batch (--batch-size)
    L  ranks on this node   l  this process's rank on its node

Data parallelism. Each rank holds a whole replica (both towers) and computes B/R images of
every batch of B; the gradients are summed across ranks, so every rank applies the update
of one process with batch B (``buckets.GradientBuckets`` does the sums). Everything else
that must agree (the loss, the top-k counts, a stop request, evaluation results) goes
through the few methods below.

Two worlds with one interface:
- ``World``: one process, every method a no-op (``python train.py``): mpi4py is never
  imported.
- ``MpiWorld``: launched by ``mpiexec -n R`` (detected from the variables the launcher
  sets, ``MPI_LAUNCH_VARIABLES``), on MPI through mpi4py. Arrays on the host are summed
  in place by ``Iallreduce``; arrays on a GPU by NCCL (``NcclReducer``, cupy.cuda.nccl,
  its unique id broadcast over MPI), or, where NCCL is missing, by MPI over host copies
  (``HostReducer``, said once).

Waiting. MPI libraries may poll in a busy loop inside blocking calls, which starves the
other ranks when there are more ranks than cores (tests run 3 ranks on 2 cores). Every
wait here goes through ``MpiWorld.wait``: ``Testall`` in a loop that naps 0.2 ms after a
few polls, and blocking object collectives are preceded by such a polled barrier (against
MPICH 5.0.2's blocking calls no difference was measured: docs/ranks.md).

Faults. ``fail`` and ``crash`` (train.py, evaluate.py) end the whole job with one line
naming the rank: ``MPI_Abort`` makes the launcher kill every rank. A rank that dies
(SIGKILL) is detected by the launcher, which ends the job at once.
"""
import os
import sys
import time

import numpy as np

from ..nn.backend import cuda_major, one_line

MPI_LAUNCH_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


class SharedError(ValueError):
    """An error every rank meets alike, at the same point (a batch that does not divide
    among the ranks): rank 0 says it, and all ranks stop cleanly."""


def launched_under_mpi(environ=None):
    """True when an MPI launcher (MPICH/Hydra, Open MPI, MVAPICH, PMIx) started this process."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in MPI_LAUNCH_VARIABLES)


def rank_gpus(local_rank, local_size, count, towers=2):
    """The GPU of each tower of node-local rank ``l``: GPUs ``towers*l ..`` when the node has
    enough, otherwise GPU ``l`` for all towers. Raises ValueError with fewer GPUs than ranks."""
    if count >= towers * local_size:
        return tuple(towers * local_rank + g for g in range(towers))
    if count >= local_size:
        return (local_rank,) * towers
    raise ValueError(f"{local_size} ranks on this node but only {count} GPU(s): at most one rank per GPU "
                     "(start fewer ranks per node, or give --gpus)")


class World:
    """One process: rank 0 of 1. The interface every world has; here nothing to talk to."""

    rank, size, local_rank, local_size = 0, 1, 0, 1
    threads_ok = False   # may a second thread call the communication library

    @property
    def is_root(self):
        """Rank 0: the one that prints, logs, checkpoints and draws."""
        return self.rank == 0

    def describe(self):
        return "1 process"

    def rows(self, total):
        """The rows of a global batch of ``total`` this rank computes: a slice."""
        if total % self.size:
            raise SharedError(f"--batch-size {total} does not divide among {self.size} ranks: "
                             f"give a multiple of {self.size}")
        n = total // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    def start_sum(self, array):
        """Begin summing the host array ``array`` in place across ranks; returns a request."""
        return None

    def wait(self, requests):
        """Wait until the requests of ``start_sum`` are done."""

    def test(self, requests):
        """Move the requests forward without waiting (MPI progresses only inside its calls)."""

    def sum_values(self, values):
        """[float] summed across ranks (a few numbers: the loss, counts, a stop flag)."""
        return [float(v) for v in values]

    def allgather(self, obj):
        """[obj of rank 0, ..., obj of rank R-1] on every rank (pickled; small objects)."""
        return [obj]

    def bcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        return obj

    def barrier(self):
        pass

    def reducer(self, device):
        """What sums ``device``'s arrays across ranks (``start_sum(array)`` -> request)."""
        return self

    def fail(self, message, code=2, agreed=False):
        """An error that may have met every rank alike (bad option, data, a loss that is not
        finite): one line ``error: ...``; returns the exit status. ``agreed``: it certainly
        met every rank at the same point (they then stop together, without an abort)."""
        print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
        return code

    def crash(self, error):
        """An unexpected exception: re-raised in one process (the traceback helps)."""
        raise error


class MpiWorld(World):
    """The processes ``mpiexec`` started, over mpi4py's ``COMM_WORLD``."""

    POLLS_BEFORE_NAP, NAP_S = 50, 2e-4

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError as error:
            found = ", ".join(f"{v}={os.environ[v]}" for v in MPI_LAUNCH_VARIABLES if v in os.environ)
            raise RuntimeError(f"started by an MPI launcher ({found}) but mpi4py cannot be imported "
                               f"({error}): pip install -r requirements-mpi.txt") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.host = MPI.Get_processor_name()
        self.threads_ok = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self._reducers = {}
        self.said = set()

    def describe(self):
        nodes = len(set(self.allgather(self.host)))
        pids = " ".join(str(pid) for pid in self.allgather(os.getpid()))
        library = " ".join(self.MPI.Get_library_version().split()[:3])
        return f"{self.size} ranks over MPI ({library}) on {nodes} node(s); pids by rank: {pids}"

    def start_sum(self, array):
        return self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def wait(self, requests):
        requests = [r for r in requests if r is not None]
        mpi = [r for r in requests if isinstance(r, self.MPI.Request)]
        polls = 0
        while mpi and not self.MPI.Request.Testall(mpi):
            polls += 1
            if polls > self.POLLS_BEFORE_NAP:
                time.sleep(self.NAP_S)   # let the other ranks have the core
        for r in requests:
            if not isinstance(r, self.MPI.Request):
                r.wait()

    def test(self, requests):
        mpi = [r for r in requests if isinstance(r, self.MPI.Request)]
        if mpi:
            self.MPI.Request.Testall(mpi)

    def sum_values(self, values):
        array = np.array(values, dtype=np.float64)  # (V,)
        self.wait([self.start_sum(array)])
        return array.tolist()

    def barrier(self):
        self.wait([self.comm.Ibarrier()])

    def allgather(self, obj):
        self.barrier()   # everyone is there: the blocking call that follows is short
        return self.comm.allgather(obj)

    def bcast(self, obj):
        self.barrier()
        return self.comm.bcast(obj, root=0)

    def reducer(self, device):
        """MPI for host arrays; NCCL for a GPU's when every rank has it, else MPI over host
        copies (said once). Collective: every rank asks for its devices in the same order."""
        if not hasattr(device.xp, "cuda"):
            return self
        if device.name not in self._reducers:
            missing = [why for why in self.allgather(nccl_missing()) if why]
            if not missing:
                self._reducers[device.name] = NcclReducer(self, device)
            else:
                if "nccl" not in self.said and self.is_root:
                    print(f"note: NCCL cannot be used ({missing[0]}): GPU gradients are summed by MPI "
                          f"over host copies (slower); {nccl_install_hint(device.xp)}", file=sys.stderr, flush=True)
                self.said.add("nccl")
                self._reducers[device.name] = HostReducer(self, device)
        return self._reducers[device.name]

    def fail(self, message, code=2, agreed=False):
        if self.is_root:
            print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
        if agreed:
            return code
        if not self.is_root:
            # Most such errors meet every rank alike: let rank 0 say it (its abort ends us
            # here); a rank that alone has it speaks after this pause.
            time.sleep(2.0)
            print(f"error: rank {self.rank} of {self.size}: {one_line(message)}", file=sys.stderr, flush=True)
        self.abort(code)
        return code

    def crash(self, error):
        reason = str(error).splitlines()[0] if str(error) else ""
        print(f"error: rank {self.rank} of {self.size} failed: {type(error).__name__}"
              f"{': ' + reason if reason else ''}", file=sys.stderr, flush=True)
        self.abort(1)

    def abort(self, code):
        """End every rank (the launcher kills them). A pause first: the launcher forwards a
        rank's output asynchronously, and an abort right after the line was written could
        lose it (seen with MPICH's Hydra, about one run in ten)."""
        time.sleep(0.5)
        self.comm.Abort(code)


def nccl_missing():
    """Why CuPy's NCCL cannot be used here, or None when it can."""
    try:
        from cupy.cuda import nccl
    except ImportError as error:
        return f"cupy.cuda.nccl: {error}"
    return None if getattr(nccl, "available", False) else "cupy.cuda.nccl.available is False"


def nccl_install_hint(cupy):
    """The NCCL package for the CUDA major version CuPy runs on (nvidia-nccl-cu12, -cu13...)."""
    try:
        major = cuda_major(cupy)
    except Exception:   # no runtime to ask: name both
        return "pip install nvidia-nccl-cu13 (CUDA 13) or nvidia-nccl-cu12 (CUDA 12)"
    return f"pip install nvidia-nccl-cu{major}"


class HostReducer:
    """Sums a GPU's arrays across ranks by MPI over host copies (where NCCL is missing)."""

    def __init__(self, world, device):
        self.world, self.device = world, device

    def start_sum(self, array):
        host = self.device.to_host(array)                  # synchronous copy to the host
        return _CopyBack(self.world.start_sum(host), self.world, host, array, self.device)


class _CopyBack:
    def __init__(self, request, world, host, array, device):
        self.request, self.world, self.host, self.array, self.device = request, world, host, array, device

    def wait(self):
        self.world.wait([self.request])
        with self.device:
            self.array[...] = self.device.receive(self.host)


class NcclReducer:
    """Sums one GPU's arrays across ranks with NCCL: one communicator per tower GPU (the
    ranks' tower-g GPUs), its unique id broadcast over MPI. The reduction runs on a stream
    of its own after the work queued so far; waiting makes the compute stream wait for it
    (no host synchronisation). Never run yet: no GPU was available when it was written."""

    def __init__(self, world, device):
        from cupy.cuda import nccl
        self.nccl, self.device, self.xp = nccl, device, device.xp
        uid = world.bcast(nccl.get_unique_id() if world.is_root else None)
        with device:
            self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)
            self.stream = self.xp.cuda.Stream(non_blocking=True)
        self.types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}

    def start_sum(self, array):
        cuda = self.xp.cuda
        with self.device:
            queued = cuda.Event()
            queued.record()                                   # on the compute stream
            self.stream.wait_event(queued)
            self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self.types[array.dtype.name],
                                self.nccl.NCCL_SUM, self.stream.ptr)
            done = cuda.Event()
            done.record(self.stream)
        return _StreamWait(self.device, done)


class _StreamWait:
    def __init__(self, device, event):
        self.device, self.event = device, event

    def wait(self):
        with self.device:
            self.device.xp.cuda.get_current_stream().wait_event(self.event)


def world():
    """``MpiWorld`` when launched by an MPI launcher, else the one-process ``World``."""
    return MpiWorld() if launched_under_mpi() else World()


def run_on_ranks(run, args, agreed=(), errors=(), interrupted="interrupted"):
    """``run(args, world)`` on this process's rank, with the job's rules (train.py, evaluate.py).

    - One voice: rank 0 alone prints; the other ranks' stdout goes nowhere (errors still
      reach stderr).
    - ``agreed``: errors every rank meets at the same point (a bad configuration, a batch
      that does not divide): said once, and every rank stops without an abort.
    - ``errors``: errors of this rank (a file, a device): one line naming the rank; under MPI
      the job ends.
    - Ctrl-C: exit status 130, with the line ``interrupted``.
    - Anything else is a bug or a fault: its traceback in one process; under MPI one line
      naming the rank, and the job ends.
    Returns the exit status.
    """
    try:
        current = world()   # one process, unless started by mpiexec
    except RuntimeError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    quiet = None
    if not current.is_root:
        quiet, sys.stdout = sys.stdout, open(os.devnull, "w")
    try:
        return run(args, current)
    except agreed as error:
        return current.fail(error, agreed=True)
    except errors as error:
        return current.fail(error)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130 if current.size == 1 else current.fail(interrupted, 130)
    except Exception as error:
        if current.size == 1:
            raise
        return current.crash(error)
    finally:
        if quiet is not None:
            sys.stdout.close()
            sys.stdout = quiet
