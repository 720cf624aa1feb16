"""cupy.cuda.runtime of the stand-in: device count, current device, versions, properties."""
from .. import _rules


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount():
    return _rules.GPUS                     # creates no context, as cudaGetDeviceCount


def getDevice():
    return _rules.current()


def setDevice(device):
    _rules.set_device(int(device))


def deviceCanAccessPeer(device, peer):
    return int(_rules.PEER and device != peer)


def deviceSynchronize():
    _rules.contexts.add(_rules.current())
    _rules.host_sync("deviceSynchronize")


def runtimeGetVersion():
    return _rules.CUDA_VERSION


def driverGetVersion():
    return max(_rules.CUDA_VERSION, 13000)


def memGetInfo():
    return 140 * 2 ** 30, 141 * 2 ** 30    # (free, total) bytes


def getDeviceProperties(device):
    if not 0 <= device < _rules.GPUS:
        raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device}")
    return {"name": b"CuPy stand-in GPU (NumPy)", "totalGlobalMem": 141 * 2 ** 30,
            "multiProcessorCount": 132, "major": 9, "minor": 0}
