"""cupy.lib.stride_tricks of the stand-in: views, which launch nothing and keep their device."""
import numpy as _np

from .._array import ndarray as _ndarray


def as_strided(x, shape=None, strides=None):
    if not isinstance(x, _ndarray):
        raise TypeError(f"as_strided: expected cupy.ndarray, got {type(x).__name__}")
    return x._view(_np.lib.stride_tricks.as_strided(x._a, shape, strides))
