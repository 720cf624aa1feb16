"""cupy.cuda of the stand-in: ``Device`` exactly as CuPy's (cupy/cuda/device.pyx), streams and
events that keep the one ordering rule a tower crossing needs.

Ordering. Each thread counts the launches it queued on each device (as if every thread had
its own stream there: CuPy's per-thread default streams). ``Event.record()`` remembers how
many this thread had queued on the event's device; ``stream.wait_event(event)`` lets that
stream's later work see them.
A copy that reads another device's array (``ndarray.copy()`` into the current device) is
refused unless the current stream has waited on an event of the source device that covers
every launch queued there so far: without it, on a real GPU with per-thread default streams
or any compute stream, the copy may read the array before it is written.
"""
import threading as _threading
import time as _time

from .. import _rules
from . import runtime


def get_device_id():
    return _rules.current()


class Device:
    """A CUDA device, as CuPy's: a context manager that makes it current and, on exit, sets
    the device that was current before again (creating its context if it had none)."""

    def __init__(self, device=None):
        self.id = _rules.current() if device is None else int(device)

    def __int__(self):
        return self.id

    def __index__(self):
        return self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    def __enter__(self):
        previous = runtime.getDevice()
        _stack().append(previous)
        if self.id != previous:
            runtime.setDevice(self.id)
        return self

    def __exit__(self, *args):
        runtime.setDevice(_stack().pop())

    def use(self):
        runtime.setDevice(self.id)
        return self

    def synchronize(self):
        previous = runtime.getDevice()
        try:
            runtime.setDevice(self.id)
            runtime.deviceSynchronize()
        finally:
            runtime.setDevice(previous)

    @property
    def compute_capability(self):
        return "90"

    @property
    def mem_info(self):
        return runtime.memGetInfo()


def _stack():
    stack = getattr(_rules._thread, "device_stack", None)
    if stack is None:
        stack = _rules._thread.device_stack = []
    return stack


class Stream:
    """A stream on the device current when it was made. ``Stream.null``: the legacy default
    stream of whichever device is current."""

    null = None   # set below

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.device_id = None if null else _rules.current()
        self.waited = {}   # (device, thread) -> launches there that this stream has waited for
        self.ptr = 0 if null else id(self)

    def _resolve(self):
        return _null_stream(_rules.current()) if self.device_id is None else self

    def __enter__(self):
        streams = _current_streams()
        device = _rules.current() if self.device_id is None else self.device_id
        streams.setdefault(device, []).append(self._resolve())
        return self

    def __exit__(self, *args):
        device = _rules.current() if self.device_id is None else self.device_id
        _current_streams()[device].pop()

    def use(self):
        device = _rules.current() if self.device_id is None else self.device_id
        _current_streams()[device] = [self._resolve()]
        return self

    def wait_event(self, event):
        stream = self._resolve()
        if event.device_id is not None:
            key = (event.device_id, event.thread)
            stream.waited[key] = max(stream.waited.get(key, -1), event.count)

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


_nulls = {}


def _null_stream(device):
    if device not in _nulls:
        stream = Stream()
        stream.device_id, stream.ptr = device, 0
        _nulls[device] = stream
    return _nulls[device]


def _current_streams():
    streams = getattr(_rules._thread, "streams", None)
    if streams is None:
        streams = _rules._thread.streams = {}
    return streams


def get_current_stream(device_id=None):
    device = _rules.current() if device_id is None else device_id
    stack = _current_streams().get(device)
    return stack[-1] if stack else _null_stream(device)


Stream.null = Stream(null=True)
_rules.on_reset.append(_nulls.clear)   # launch counts restart: so do the waits that cover them


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.device_id, self.thread, self.count, self.time = None, None, -1, None
        self.ptr = id(self)

    def record(self, stream=None):
        stream = get_current_stream() if stream is None else stream._resolve()
        self.device_id, self.thread = stream.device_id, _threading.get_ident()
        self.count = _rules.launches[(self.device_id, self.thread)]
        self.time = _time.perf_counter()

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events."""
    return (end_event.time - start_event.time) * 1e3


def _require_ordered_copy(source):
    """The rule of a cross-device copy into the current device (see the module docstring)."""
    key = (source, _threading.get_ident())
    if get_current_stream().waited.get(key, -1) < _rules.launches[key]:
        _rules.breaks("unordered copy", RuntimeError(
            f"a copy from device {source} to device {_rules.current()} that no event orders after "
            f"the {_rules.launches[key]} kernels queued on device {source}: record an event there "
            "and make this stream wait on it"))
