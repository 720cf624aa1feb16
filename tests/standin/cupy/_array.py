"""The stand-in's ndarray: a NumPy array on one (pretend) GPU, with CuPy's rules.

- An array lives on the device that was current when it was made; views keep their base's.
- Every operation that launches work (ufuncs, reductions, fill, astype, copy, indexing with
  index arrays, every indexing write, matmul, concatenate...) runs on the *current* device
  and refuses operands on another one (``_rules.launch``).
- A NumPy array given to a device operation is refused (``TypeError``, as CuPy), and so is
  an implicit conversion to NumPy (``numpy.asarray(x)``): use ``x.get()`` / ``cupy.asnumpy``.
- ``copy()`` copies into the current device, from any device (a peer copy), which must be
  ordered by an event after the work that wrote the array (``check_order``).
- Every launch notes which byte ranges it wrote, on which stream; a launch on another stream
  that touches them must come after a wait on an event recorded after that write
  (``note_write``, ``check_order``: the loader's hand-off to the main thread, NCCL's
  stream, the towers' copies).
- Reads to the host (``get``, ``asnumpy``, ``float()``, ``int()``, ``bool()``, ``item()``,
  a boolean mask's gather, ``nonzero``) are host synchronisations, counted.
- Launches are counted as CuPy makes them: a view (transpose, reshape without a copy,
  ``split``) launches nothing; ``concatenate`` of n arrays is n copies; a read with n index
  arrays is n + 2 kernels (one with one index array: ``take``, one kernel).
- A NumPy function CuPy has no function of the same name for is refused (``_names``).
"""
import weakref

import numpy as np
from numpy.lib.array_utils import byte_bounds
from numpy.lib.mixins import NDArrayOperatorsMixin

from . import _names, _rules


def refuse_host(x, what):
    if isinstance(x, np.ndarray):
        raise TypeError(f"{what}: Unsupported type {type(x)} (a NumPy array in a device operation: "
                        "move it with cupy.asarray first)")


def device_ids(objects):
    """The devices of the stand-in arrays among ``objects`` (nested lists/tuples/dicts)."""
    found = []
    for x in objects:
        if isinstance(x, ndarray):
            found.append(x._device)
        elif isinstance(x, (list, tuple)):
            found.extend(device_ids(x))
        elif isinstance(x, dict):
            found.extend(device_ids(x.values()))
    return found


def check_operands(objects, what, writes=(), kernels=1):
    """Refuse host arrays; check the order of the stand-in arrays among ``objects``; launch
    ``kernels`` kernels on the current device with them; note what ``writes`` (arrays) were
    written. Returns the last launch's mark (stream key, number), for ``wrap``."""
    arrays = []
    for x in _flat(objects):
        refuse_host(x, what)
        if isinstance(x, ndarray):
            arrays.append(x)
    check_order(arrays, what)
    mark = None
    for _ in range(kernels):
        mark = _rules.launch(device_ids(objects), what)
    for x in writes:
        note_write(x, mark)
    return mark


# --------------------------------------------------------------------------- order of streams

_written = {}   # id(root buffer) -> (weakref to it, [(low, high byte, stream key, launch number)])
_rules.on_reset.append(_written.clear)   # launch numbers restart: what they marked is forgotten


def _root(a):
    """The NumPy array that owns ``a``'s memory (through views and as_strided's wrappers)."""
    owner = a
    while getattr(owner, "base", None) is not None:
        owner = owner.base
        if isinstance(owner, np.ndarray):
            a = owner
    return a


def _entries(a, make=False):
    root = _root(a)
    found = _written.get(id(root))
    if found is not None and found[0]() is root:
        return found[1]
    if not make:
        return None
    if len(_written) > 20000:   # forget buffers that are gone
        for key in [k for k, (ref, _) in _written.items() if ref() is None]:
            del _written[key]
    entries = []
    _written[id(root)] = (weakref.ref(root), entries)
    return entries


def note_write(x, mark):
    """The launch ``mark`` wrote the memory of stand-in array ``x``."""
    if mark is None or x._a.size == 0:
        return
    low, high = byte_bounds(x._a)
    entries = _entries(x._a, make=True)
    with _rules._lock:
        entries[:] = [e for e in entries if not (low <= e[0] and e[1] <= high)] + [(low, high, *mark)]


def check_order(arrays, what, stream=None, peer=False):
    """Refuse a launch touching memory another stream wrote with no wait in between
    (``stream``: the key of the stream it runs on; default the current one). Arrays of
    another device are the wrong-device rule's (``_rules.launch``), except in a peer copy."""
    from .cuda import _waited
    for x in arrays:
        if not peer and x._device != _rules.current():
            continue
        entries = _entries(x._a)
        if not entries or x._a.size == 0:
            continue
        low, high = byte_bounds(x._a)
        for e_low, e_high, key, count in list(entries):
            if e_low < high and low < e_high and not _waited(key, count, stream):
                _rules.breaks("unordered access", RuntimeError(
                    f"{what}: an array written by launch {count} of stream {key} is used on stream "
                    f"{stream or _rules.stream_key(_rules.current())} with no event between them: record an event "
                    "after the write and make this stream wait on it"))
                return


def _flat(objects):
    for x in objects:
        if isinstance(x, (list, tuple)):
            yield from _flat(x)
        elif isinstance(x, dict):
            yield from _flat(x.values())
        else:
            yield x


def unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, list):
        return [unwrap(v) for v in x]
    if isinstance(x, tuple):
        return tuple(unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: unwrap(v) for k, v in x.items()}
    return x


def wrap(result, device=None, mark=None):
    """NumPy results as stand-in arrays on ``device`` (default: the current one), written by
    the launch ``mark``."""
    device = _rules.current() if device is None else device
    if isinstance(result, np.ndarray):
        x = ndarray._on(result, device)
        note_write(x, mark)
        return x
    if isinstance(result, np.generic):   # CuPy returns 0-d arrays, never NumPy scalars
        x = ndarray._on(np.asarray(result), device)
        note_write(x, mark)
        return x
    if isinstance(result, (list, tuple)):
        return type(result)(wrap(r, device, mark) for r in result)
    return result


def launched(func, args, kwargs, what, kernels=1):
    out = kwargs.get("out")
    writes = [out] if isinstance(out, ndarray) else []
    mark = check_operands(list(args) + list(kwargs.values()), what, writes, kernels)
    return wrap(func(*unwrap(args), **unwrap(kwargs)), mark=mark)


class _Memory:
    """``ndarray.data``: its pointer, which NCCL's calls take (``cuda.nccl`` finds the array
    again by it)."""

    def __init__(self, array):
        self.ptr = array._a.__array_interface__["data"][0]
        self.device_id = array._device
        by_pointer[self.ptr] = weakref.ref(array)


by_pointer = {}   # pointer -> weakref to the stand-in array whose ``data`` gave it


class ndarray(NDArrayOperatorsMixin):
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = np.empty(shape, dtype=dtype, order=order)
        self._device = _rules.current()
        _rules.launch([], "ndarray", kernel=False)   # an allocation: the device gets a context

    @classmethod
    def _on(cls, a, device):
        x = cls.__new__(cls)
        x._a, x._device = a, device
        return x

    def _view(self, a):
        return ndarray._on(a, self._device)

    # ---------------------------------------------------------------- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: self._view(self._a.T))
    data = property(lambda self: _Memory(self))

    @property
    def device(self):
        from .cuda import Device
        return Device(self._device)

    def __repr__(self):
        return f"array({self._a!r}, device={self._device})"

    def __len__(self):
        return len(self._a)

    # ---------------------------------------------------------------- conversions
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None, blocking=True):
        from .cuda import Device
        with Device(self._device):   # as CuPy: the copy runs on the array's device
            check_operands([self], "get")
            _rules.host_sync("get")
            host = np.array(self._a, order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def item(self):
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __bool__(self):
        return bool(self.get())

    def __index__(self):
        return self.get().__index__()

    # ---------------------------------------------------------------- views (no launch)
    def reshape(self, *shape, order="C"):
        a = self._a.reshape(*shape, order=order)
        if np.shares_memory(a, self._a):
            return self._view(a)
        return wrap(a, mark=check_operands([self], "reshape (copy)"))

    def transpose(self, *axes):
        return self._view(self._a.transpose(*axes))

    def swapaxes(self, a, b):
        return self._view(self._a.swapaxes(a, b))

    def squeeze(self, axis=None):
        return self._view(self._a.squeeze(axis))

    def view(self, dtype=None):
        return self._view(self._a.view() if dtype is None else self._a.view(dtype))

    def ravel(self, order="C"):
        a = self._a.ravel(order)
        if np.shares_memory(a, self._a):
            return self._view(a)
        return wrap(a, mark=check_operands([self], "ravel (copy)"))

    def __getitem__(self, index):
        refuse_host(index, "getitem")
        parts = index if isinstance(index, tuple) else (index,)
        kernels = _index_kernels(parts)
        if kernels:   # advanced indexing: CuPy's gather (take), after preparing the indices
            if any(isinstance(p, ndarray) and p.dtype == bool for p in parts):
                _rules.host_sync("getitem with a boolean mask (its count)")
            mark = check_operands([self, index], "getitem with index arrays", kernels=kernels)
            return wrap(self._a[unwrap(index)], mark=mark)
        return self._view(self._a[index])

    def __setitem__(self, index, value):
        refuse_host(index, "setitem")
        refuse_host(value, "setitem")
        parts = index if isinstance(index, tuple) else (index,)
        check_operands([self, index, value], "setitem", writes=[self],
                       kernels=max(1, _index_kernels(parts)))
        self._a[unwrap(index)] = unwrap(value)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ---------------------------------------------------------------- launches
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        what = f"{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        if ufunc is np.matmul:
            _rules.require_library("cublas", "matmul")
        operands = list(inputs) + list(out or ()) + list(kwargs.values())
        mark = check_operands(operands, what, writes=[o for o in out or () if isinstance(o, ndarray)])
        if out is not None:
            kwargs["out"] = tuple(unwrap(o) for o in out)
        result = getattr(ufunc, method)(*unwrap(inputs), **unwrap(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return wrap(result, mark=mark)

    def __array_function__(self, func, types, args, kwargs):
        if not _names.has(func.__module__, func.__name__):
            return NotImplemented   # NumPy then raises its TypeError, as with CuPy
        import sys
        cupy = sys.modules[__name__.rsplit(".", 1)[0]]
        mine = getattr(cupy, func.__name__, None)
        if mine is not None and func.__module__ == "numpy":
            return mine(*args, **kwargs)   # the stand-in's own (its launch count)
        return launched(func, args, kwargs, func.__name__)

    def fill(self, value):
        check_operands([self, value], "fill", writes=[self])
        self._a.fill(value)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        mark = check_operands([self], "astype")
        return wrap(self._a.astype(dtype, order=order), mark=mark)

    def copy(self, order="C"):
        source = self._device
        if source != _rules.current():
            from .cuda import Device
            if not (self._a.flags.c_contiguous or self._a.flags.f_contiguous):
                with Device(source):   # CuPy first makes it contiguous, on the source's stream
                    _rules.launch([source], "copy (contiguous first)")
            check_order([self], f"a copy from device {source} to device {_rules.current()}", peer=True)
            mark = _rules.launch([], "peer copy")   # queued on the current device's stream
            with _rules._lock:
                _rules.peer_copies += 1
            return wrap(np.array(self._a, order=order), mark=mark)
        mark = check_operands([self], "copy")
        return wrap(np.array(self._a, order=order), mark=mark)

    def _reduce(name):
        def method(self, *args, **kwargs):
            out = kwargs.get("out")
            mark = check_operands([self] + list(args) + list(kwargs.values()), name,
                                  writes=[out] if isinstance(out, ndarray) else [])
            return wrap(getattr(self._a, name)(*unwrap(args), **unwrap(kwargs)), mark=mark)
        method.__name__ = name
        return method

    sum = _reduce("sum")
    max = _reduce("max")
    min = _reduce("min")
    mean = _reduce("mean")
    all = _reduce("all")
    any = _reduce("any")
    argmax = _reduce("argmax")
    argmin = _reduce("argmin")
    argsort = _reduce("argsort")
    cumsum = _reduce("cumsum")
    dot = _reduce("dot")
    clip = _reduce("clip")
    prod = _reduce("prod")
    var = _reduce("var")
    std = _reduce("std")
    take = _reduce("take")
    repeat = _reduce("repeat")
    flatten = _reduce("flatten")
    del _reduce


def _index_kernels(parts):
    """Kernels of CuPy's advanced indexing with these index parts (0: a view, basic indexing).
    One integer index array: a ``take`` (1); n of them: the flat index made in n + 1 kernels
    (a fill and one per array), then the gather (n + 2); a list is copied to the device first;
    a boolean mask: a scan, the count read by the host, a gather (3)."""
    arrays = [p for p in parts if isinstance(p, (ndarray, list))]
    if not arrays:
        return 0
    lists = sum(isinstance(p, list) for p in arrays)
    if any(isinstance(p, ndarray) and p.dtype == bool for p in arrays):
        return 3 + lists
    return (1 if len(arrays) == 1 else len(arrays) + 2) + lists
