"""The stand-in's ndarray: a NumPy array on one (pretend) GPU, with CuPy's rules.

- An array lives on the device that was current when it was made; views keep their base's.
- Every operation that launches work (ufuncs, reductions, fill, astype, copy, indexing with
  index arrays, every indexing write, matmul, concatenate...) runs on the *current* device
  and refuses operands on another one (``_rules.launch``).
- A NumPy array given to a device operation is refused (``TypeError``, as CuPy), and so is
  an implicit conversion to NumPy (``numpy.asarray(x)``): use ``x.get()`` / ``cupy.asnumpy``.
- ``copy()`` copies into the current device, from any device (a peer copy), which must be
  ordered by an event (``cuda._require_ordered_copy``).
"""

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from . import _rules


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


def check_operands(objects, what):
    """Refuse host arrays; launch on the current device with these operands."""
    for x in _flat(objects):
        refuse_host(x, what)
    _rules.launch(device_ids(objects), what)


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


def wrap(result, device=None):
    """NumPy results as stand-in arrays on ``device`` (default: the current one)."""
    device = _rules.current() if device is None else device
    if isinstance(result, np.ndarray):
        return ndarray._on(result, device)
    if isinstance(result, np.generic):   # CuPy returns 0-d arrays, never NumPy scalars
        return ndarray._on(np.asarray(result), device)
    if isinstance(result, (list, tuple)):
        return type(result)(wrap(r, device) for r in result)
    return result


def launched(func, args, kwargs, what):
    check_operands(list(args) + list(kwargs.values()), what)
    return wrap(func(*unwrap(args), **unwrap(kwargs)))


class _Memory:
    def __init__(self, array):
        self.ptr = array._a.__array_interface__["data"][0]
        self.device_id = array._device


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
            _rules.launch([self._device], "get")
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
        if not np.shares_memory(a, self._a):
            check_operands([self], "reshape (copy)")
        return self._view(a) if np.shares_memory(a, self._a) else wrap(a)

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
        check_operands([self], "ravel (copy)")
        return wrap(a)

    def __getitem__(self, index):
        refuse_host(index, "getitem")
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, (ndarray, list)) for p in parts):   # advanced indexing: a gather kernel
            check_operands([self, index], "getitem with index arrays")
            return wrap(self._a[unwrap(index)])
        return self._view(self._a[index])

    def __setitem__(self, index, value):
        refuse_host(index, "setitem")
        refuse_host(value, "setitem")
        check_operands([self, index, value], "setitem")
        self._a[unwrap(index)] = unwrap(value)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ---------------------------------------------------------------- launches
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        what = f"{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        if ufunc is np.matmul:
            _rules.require_library("cublas", "matmul")
        operands = list(inputs) + list(out or ()) + list(kwargs.values())
        check_operands(operands, what)
        if out is not None:
            kwargs["out"] = tuple(unwrap(o) for o in out)
        result = getattr(ufunc, method)(*unwrap(inputs), **unwrap(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return launched(func, args, kwargs, func.__name__)

    def fill(self, value):
        check_operands([self, value], "fill")
        self._a.fill(value)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        check_operands([self], "astype")
        return wrap(self._a.astype(dtype, order=order))

    def copy(self, order="C"):
        source = self._device
        if source != _rules.current():
            from .cuda import Device, _require_ordered_copy
            if not (self._a.flags.c_contiguous or self._a.flags.f_contiguous):
                with Device(source):   # CuPy first makes it contiguous, on the source's stream
                    _rules.launch([source], "copy (contiguous first)")
            _require_ordered_copy(source)
            _rules.launch([], "peer copy")   # queued on the current device's stream
            with _rules._lock:
                _rules.peer_copies += 1
            return wrap(np.array(self._a, order=order))
        check_operands([self], "copy")
        return wrap(np.array(self._a, order=order))

    def _reduce(name):
        def method(self, *args, **kwargs):
            check_operands([self] + list(args) + list(kwargs.values()), name)
            return wrap(getattr(self._a, name)(*unwrap(args), **unwrap(kwargs)))
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
