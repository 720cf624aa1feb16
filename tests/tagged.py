"""A test backend that needs no GPU: NumPy arrays tagged with the device they live on.

Any operation that mixes arrays of two devices (or a device array with a non-scalar host
array) raises ``DeviceMixError``, as a forgotten copy between GPUs would silently turn into
a slow remote read on real hardware. ``TaggedDevice.arrivals`` counts the arrays that
arrived from *another tagged device* (tower crossings), as opposed to from the host.
"""
import numpy as np

from alexnet_np.backend import Device


class DeviceMixError(AssertionError):
    pass


class TaggedArray(np.ndarray):
    def __array_finalize__(self, obj):
        self.tag = getattr(obj, "tag", None)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        tag = common_tag(inputs + (out or ()), f"{ufunc.__name__}.{method}")
        if out is not None:
            kwargs["out"] = tuple(unwrap(o) for o in out)
        result = getattr(ufunc, method)(*(unwrap(i) for i in inputs), **kwargs)
        return wrap(result, tag)

    def __array_function__(self, func, types, args, kwargs):
        tag = common_tag(list(args) + list(kwargs.values()), func.__name__)
        result = func(*unwrap(args), **unwrap(kwargs))
        return wrap(result, tag)

    def __getitem__(self, index):
        common_tag([self, index], "getitem")
        return super().__getitem__(unwrap(index))

    def __setitem__(self, index, value):
        common_tag([self, index, value], "setitem")
        super().__setitem__(unwrap(index), unwrap(value))


def arrays_in(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from arrays_in(item)


def common_tag(operands, what):
    tags = set()
    for a in arrays_in(operands):
        if isinstance(a, TaggedArray):
            tags.add(a.tag)
        elif a.ndim > 0:
            tags.add("host")
    if len(tags) > 1:
        raise DeviceMixError(f"{what} mixes arrays of devices {sorted(map(str, tags))}")
    return tags.pop() if tags else None


def unwrap(obj):
    if isinstance(obj, TaggedArray):
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: unwrap(v) for k, v in obj.items()}
    return obj


def wrap(result, tag):
    if tag is None or tag == "host":
        return result
    if isinstance(result, np.ndarray) and not isinstance(result, TaggedArray):
        result = result.view(TaggedArray)
        result.tag = tag
        return result
    if isinstance(result, TaggedArray):
        result.tag = tag
        return result
    if isinstance(result, (list, tuple)):
        return type(result)(wrap(r, tag) for r in result)
    return result


class TaggedStrideTricks:
    @staticmethod
    def as_strided(x, shape=None, strides=None):
        return np.lib.stride_tricks.as_strided(x, shape, strides, subok=True)   # keeps the tag


class TaggedLib:
    stride_tricks = TaggedStrideTricks


class TaggedNumpy:
    """The array module of a tagged device: NumPy, with array creation tagged."""
    lib = TaggedLib
    CREATE = {"zeros", "empty", "ones", "full", "arange"}

    def __init__(self, tag):
        self.tag = tag

    CONVERT = {"ascontiguousarray", "asarray", "array"}   # NumPy does not dispatch these

    def __getattr__(self, name):
        attr = getattr(np, name)
        if name in self.CREATE:
            return lambda *a, **k: wrap(attr(*a, **k), self.tag)
        if name in self.CONVERT:
            return self._converter(attr, name)
        return attr

    def _converter(self, attr, name):
        def convert(a, *args, **kwargs):
            if common_tag([a], name) != self.tag:
                raise DeviceMixError(f"{name} on device {self.tag} of an array of device {getattr(a, 'tag', 'host')}")
            return wrap(attr(unwrap(a), *args, **kwargs), self.tag)
        return convert


class TaggedGenerator:
    def __init__(self, seed, tag):
        self.rng, self.tag = np.random.default_rng(seed), tag

    def random(self, *args, **kwargs):
        return wrap(self.rng.random(*args, **kwargs), self.tag)


class TaggedDevice(Device):
    def __init__(self, tag):
        super().__init__()
        self.tag, self.name = tag, f"tagged:{tag}"
        self.xp = TaggedNumpy(tag)
        self.arrivals = 0   # arrays received from another tagged device

    def holds(self, x):
        return isinstance(x, TaggedArray) and x.tag == self.tag

    def receive(self, x):
        if isinstance(x, TaggedArray):
            self.arrivals += 1
        return wrap(np.array(unwrap(x)), self.tag)

    def to_host(self, x):
        return np.array(unwrap(x))

    def generator(self, seed):
        return TaggedGenerator(seed, self.tag)
