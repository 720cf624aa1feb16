"""cupy.cuda of the stand-in: ``Device`` exactly as CuPy's (cupy/cuda/device.pyx), and
streams and events with CUDA's rules of ownership and order.

Ownership (cupy/cuda/stream.pyx, CUDA's runtime). A stream and an event belong to the device
that was current when they were made. Recording an event on a stream of another device is
``cudaErrorInvalidResourceHandle``; so is the elapsed time of two devices' events, or of an
event made with ``disable_timing=True``; entering or using a stream while another device is
current is CuPy's ``RuntimeError``. Waiting on another device's event is allowed (it is how
two GPUs order their work).

Order. Every launch goes to a stream: the one entered on its device, else the thread's
default stream there (as under CuPy's per-thread default streams, the strictest case: work
queued by a loader thread is not ordered before the main thread's). ``Event.record()``
remembers how many launches its stream had; ``stream.wait_event(event)`` lets that stream's
later work see them. A launch that touches memory last written by another stream, with no
such wait in between, is refused (``_array``): a peer copy, too, must come after an event
recorded on the source device after the array was written.

Host synchronisations (``Device.synchronize``, ``Stream.synchronize``,
``Event.synchronize``) are counted (``_rules.syncs``), as are reads to the host (``_array``).
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


_waits = {}   # stream key -> {stream key: launches there this stream has waited for}
_by_pointer = {}   # Stream.ptr -> the stream (NCCL's calls take the pointer)


def _stream_of(pointer):
    """The stream whose ``ptr`` is ``pointer`` (0: the current device's default stream)."""
    return Stream.null if pointer == 0 else _by_pointer[pointer]


def _forget_waits():
    _waits.clear()


_rules.on_reset.append(_forget_waits)   # launch counts restart: so do the waits that cover them


def _invalid_handle(what):
    return RuntimeError(f"cudaErrorInvalidResourceHandle: invalid resource handle ({what})")


class Stream:
    """A stream on the device current when it was made. ``Stream.null``: the default stream
    of whichever device is current (device_id -1, as CuPy's)."""

    null = None   # set below

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.device_id = -1 if (null or ptds) else _rules.current()
        self.ptr = 0 if null else id(self)
        if self.device_id != -1:
            _rules.launch([], "stream", kernel=False)   # made in the current device's context
            _by_pointer[self.ptr] = self

    def _device(self):
        return _rules.current() if self.device_id == -1 else self.device_id

    def _key(self):
        """The stream key its launches are counted under (see ``_rules.stream_key``)."""
        if self.device_id == -1:
            return _rules.default_stream_key(_rules.current())
        return (self.device_id, f"stream {self.ptr:x}")

    def _check_device(self):
        if self.device_id not in (-1, _rules.current()):
            _rules.breaks("stream off its device", RuntimeError(
                f"The device that the stream is created on ({self.device_id}) does not match with the "
                f"current device ({_rules.current()})"))

    def __enter__(self):
        self._check_device()
        _current_streams().setdefault(self._device(), []).append(self)
        return self

    def __exit__(self, *args):
        _current_streams()[self._device()].pop()

    def use(self):
        self._check_device()
        _current_streams()[self._device()] = [self]
        return self

    def wait_event(self, event):
        """Later work on this stream waits for ``event`` (of any device), and so for all that
        its stream had waited for when it was recorded (stream order is transitive)."""
        waited = _waits.setdefault(self._key(), {})
        for key, count in event.covers.items():
            waited[key] = max(waited.get(key, -1), count)

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def synchronize(self):
        _rules.host_sync("Stream.synchronize")

    @property
    def done(self):
        return True

    def __repr__(self):
        return f"<Stream {self.ptr:#x} (device: {self.device_id})>"


def _current_streams():
    streams = getattr(_rules._thread, "streams", None)
    if streams is None:
        streams = _rules._thread.streams = {}
    return streams


def get_current_stream(device_id=None):
    device = _rules.current() if device_id is None else device_id
    stack = _current_streams().get(device)
    return stack[-1] if stack else Stream.null


def _stream_key(device):
    stack = _current_streams().get(device)
    if stack:
        return stack[-1]._key() if stack[-1].device_id != -1 else _rules.default_stream_key(device)
    return _rules.default_stream_key(device)


Stream.null = Stream(null=True)
_rules.stream_key = _stream_key


class Event:
    """An event of the device current when it was made."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        if interprocess and not disable_timing:
            raise ValueError("Timing must be disabled for interprocess events")
        self.device_id, self.timing = _rules.current(), not disable_timing
        self.key, self.count, self.time = None, -1, None
        self.covers = {}   # stream key -> launches there that the recorded point comes after
        self.ptr = id(self)
        _rules.launch([], "event", kernel=False)   # made in the current device's context

    def record(self, stream=None):
        """On ``stream`` (default: the current device's current stream), which must be a
        stream of this event's device."""
        stream = get_current_stream() if stream is None else stream
        device = stream._device()
        if device != self.device_id:
            _rules.breaks("event recorded on another device's stream", _invalid_handle(
                f"an event of device {self.device_id} recorded on a stream of device {device}"))
        self.key = stream._key()
        self.count = _rules.launches[self.key]
        self.covers = dict(_waits.get(self.key, {}))
        self.covers[self.key] = self.count
        self.time = _time.perf_counter()

    def synchronize(self):
        _rules.host_sync("Event.synchronize")

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events of one device, both made with timing."""
    if start_event.device_id != end_event.device_id:
        _rules.breaks("elapsed time of two devices' events", _invalid_handle(
            f"elapsed time between events of devices {start_event.device_id} and {end_event.device_id}"))
    if not (start_event.timing and end_event.timing):
        _rules.breaks("elapsed time of an event without timing", _invalid_handle(
            "elapsed time of an event made with disable_timing=True"))
    return (end_event.time - start_event.time) * 1e3


def _waited(key, count, mine=None):
    """True when stream ``mine`` (default: the current one) has waited for launch ``count``
    of stream ``key``."""
    mine = _rules.stream_key(_rules.current()) if mine is None else mine
    return key == mine or _waits.get(mine, {}).get(key, -1) >= count


from . import nccl  # noqa: E402,F401  (a submodule, as CuPy's)
