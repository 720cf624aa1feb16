"""A stand-in for CuPy that needs no GPU: NumPy underneath, CuPy's device rules on top.

Installed as the ``cupy`` module (``PYTHONPATH=tests/standin``), it lets the project's real
GPU code run unchanged on a machine without a GPU, and refuses what CuPy on real GPUs would
refuse or silently get wrong:

- a per-thread current device (0 until ``cuda.Device(i)`` says otherwise), exactly as
  CuPy's ``Device`` (its ``__exit__`` sets the previous device again, creating its context);
- arrays made on the current device; work launched on the current device only, refusing
  operands of another one; NumPy arrays refused in device operations, implicit conversions
  to NumPy refused (``_array``);
- streams and events owned by the device current when they were made, work on one stream
  that touches what another wrote refused without an event between them, peer copies
  ordered by events (``cuda``); NCCL's communicators and their checks (``cuda.nccl``);
- host synchronisations counted (``_rules.syncs``) and launches counted as CuPy makes them;
  NumPy functions CuPy has no function of the same name for refused (``_array``, ``_names``);
- which devices got a CUDA context, per process, and every rule broken, by the place in our
  code (``_rules``; written to ``CUPY_STANDIN_LOG`` at exit).

It exposes only names real CuPy has (``tests/test_standin.py`` checks them against CuPy
where CuPy is installed). Arithmetic is NumPy's, so results equal the CPU path's bitwise
where the same operations run in the same order.
"""
import builtins as _builtins

import numpy as _np

from . import _rules, cuda, lib, random  # noqa: F401  (submodules, as CuPy's)
from ._array import check_operands as _check, launched as _launched, ndarray, refuse_host as _refuse_host
from ._array import unwrap as _unwrap, wrap as _wrap

__version__ = "14.2.0+standin"

# dtypes and constants, as CuPy re-exports NumPy's
(bool_, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64,
 complex64, complex128, intp, dtype, pi, e, inf, nan, newaxis) = (
    _np.bool_, _np.int8, _np.int16, _np.int32, _np.int64, _np.uint8, _np.uint16, _np.uint32,
    _np.uint64, _np.float16, _np.float32, _np.float64, _np.complex64, _np.complex128, _np.intp,
    _np.dtype, _np.pi, _np.e, _np.inf, _np.nan, _np.newaxis)


# --------------------------------------------------------------------------- creation (current device)

def _create(name):
    make = getattr(_np, name)

    def create(*args, **kwargs):
        for a in args:
            _refuse_host(a, name)
        # On the current device; a *_like reads only its argument's shape and dtype.
        mark = _rules.launch([], name, kernel=name not in ("empty", "empty_like"))
        return _wrap(make(*_unwrap(args), **kwargs), mark=mark)
    create.__name__ = name
    return create


empty, zeros, ones, full, arange, empty_like, zeros_like, ones_like, full_like, eye, linspace = (
    _create(n) for n in ("empty", "zeros", "ones", "full", "arange", "empty_like", "zeros_like",
                         "ones_like", "full_like", "eye", "linspace"))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    """Host data -> the current device; another device's array -> copied here (as CuPy)."""
    if isinstance(obj, ndarray):
        if obj._device != _rules.current():
            obj = obj.copy()
            copy = False
        if not copy and (dtype is None or _np.dtype(dtype) == obj.dtype):
            return obj
        return obj.astype(dtype or obj.dtype, order=order if order != "K" else "C")
    mark = _rules.launch([], "host to device", kernel=True)
    return _wrap(_np.array(obj, dtype=dtype, order=order, ndmin=ndmin), mark=mark)


def asarray(a, dtype=None, order=None):
    return array(a, dtype=dtype, copy=False, order=order or "K")


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError(f"ascontiguousarray: Argument 'a' has incorrect type (expected cupy.ndarray, "
                        f"got {type(a).__name__})")
    if (dtype is None or _np.dtype(dtype) == a.dtype) and a.flags.c_contiguous:
        return a
    mark = _check([a], "ascontiguousarray")
    return _wrap(_np.ascontiguousarray(a._a, dtype=dtype), mark=mark)


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    import sys
    return sys.modules[__name__] if _builtins.any(isinstance(a, ndarray) for a in args) else _np


# --------------------------------------------------------------------------- ufuncs and routines

class ufunc:
    """A NumPy ufunc that launches on the current device (CuPy's ``cupy.ufunc``)."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout = np_ufunc.nin, np_ufunc.nout

    def __call__(self, *args, **kwargs):
        return self._run(self._u, args, kwargs)

    def reduce(self, *args, **kwargs):
        return self._run(self._u.reduce, args, kwargs)

    def _run(self, func, args, kwargs):
        if self._u is _np.matmul:
            _rules.require_library("cublas", "matmul")
        out = kwargs.get("out")
        outs = out if isinstance(out, tuple) else (out,)
        mark = _check(list(args) + list(kwargs.values()), self.__name__,
                      writes=[o for o in outs if isinstance(o, ndarray)])
        if isinstance(out, tuple):
            out = out[0] if len(out) == 1 else out
        result = func(*_unwrap(args), **_unwrap(kwargs))
        return out if out is not None else _wrap(result, mark=mark)


_UFUNCS = ("add subtract multiply divide true_divide floor_divide negative power remainder mod "
           "maximum minimum fmax fmin exp exp2 log log2 log10 log1p expm1 sqrt cbrt square abs absolute "
           "sign tanh sinh cosh sin cos tan arctan arctanh floor ceil rint trunc isfinite isnan isinf "
           "greater greater_equal less less_equal equal not_equal logical_and logical_or logical_not "
           "logical_xor bitwise_and bitwise_or bitwise_xor invert left_shift right_shift "
           "reciprocal matmul").split()
for _name in _UFUNCS:
    globals()[_name] = ufunc(getattr(_np, _name))


def _routine(name):
    func = getattr(_np, name)

    def routine(*args, **kwargs):
        if name in _VIEWS:   # a view where NumPy makes one, as CuPy: nothing launched
            result = func(*_unwrap(args), **_unwrap(kwargs))
            source = args[0]
            if isinstance(source, ndarray) and _builtins.all(   # (``all`` here is cupy.all)
                    isinstance(r, _np.ndarray) and _np.shares_memory(r, source._a)
                    for r in (result if isinstance(result, list) else [result])):
                return _wrap(result, device=source._device)
        if name in _HOST_READS or (name == "where" and len(args) == 1):
            _rules.host_sync(f"{name} (the size of its result)")
        return _launched(func, args, kwargs, name, kernels=_kernels(name, args))
    routine.__name__ = name
    return routine


def _kernels(name, args):
    """CuPy's launches for one call (cupy/_core/_routines_manipulation.pyx): concatenate,
    stack, vstack and hstack copy each of up to 8 arrays (more, small ones: one kernel and
    the pointers' copy)."""
    if name in ("concatenate", "stack", "vstack", "hstack"):
        n = len(args[0])
        return n if n <= 8 else 2
    return 1


_VIEWS = {"split", "transpose", "reshape", "broadcast_to", "expand_dims", "squeeze", "ravel", "flip"}
_HOST_READS = {"nonzero", "unique"}
_ROUTINES = ("concatenate stack split where sum mean max amax min amin argmax argmin all any "
             "cumsum dot einsum clip take repeat sort argsort nonzero count_nonzero transpose "
             "reshape broadcast_to expand_dims squeeze ravel flip tile pad diag tensordot "
             "outer inner vstack hstack isclose allclose array_equal unique bincount searchsorted").split()
for _name in _ROUTINES:
    if hasattr(_np, _name):
        globals()[_name] = _routine(_name)
del _name


def copyto(dst, src, casting="same_kind", where=True):
    _check([dst, src, where], "copyto", writes=[dst])
    _np.copyto(dst._a, _unwrap(src), casting=casting, where=_unwrap(where))


# --------------------------------------------------------------------------- compiled kernels

class ElementwiseKernel:
    """CuPy's user-defined elementwise kernel, for the one-line operations the project's
    checks compile (``y = x * 2 + 1``: a C expression that is also Python). It needs NVRTC."""

    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        _rules.require_library("nvrtc", "ElementwiseKernel")
        self.inputs = [p.split()[-1] for p in in_params.split(",") if p.strip()]
        self.outputs = [p.split()[-1] for p in out_params.split(",") if p.strip()]
        target, _, expression = operation.strip().rstrip(";").partition("=")
        self.target, self.code = target.strip(), compile(expression.strip(), name, "eval")

    def __call__(self, *args):
        mark = _check(list(args), "ElementwiseKernel")
        values = dict(zip(self.inputs, (_unwrap(a) for a in args)))
        result = eval(self.code, {"__builtins__": {}}, values)   # the kernel body, in NumPy
        return _wrap(_np.asarray(result), mark=mark)


# --------------------------------------------------------------------------- memory pool, configuration

class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass

    def set_limit(self, size=None, fraction=None):
        pass


_pool = _MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pool


def show_config(*, _full=False):
    print(f"CuPy Version          : {__version__}\n"
          f"CUDA Runtime Version  : {_rules.CUDA_VERSION}\n"
          f"Device count          : {_rules.GPUS} (stand-in: NumPy underneath)\n"
          f"Missing libraries     : {', '.join(sorted(_rules.MISSING)) or 'none'}")


def is_available():
    return _rules.GPUS > 0
