"""cupy.random of the stand-in: generators that live on the device current when they were made."""
import numpy as _np

from . import _rules
from ._array import wrap as _wrap


class Generator:
    def __init__(self, seed):
        _rules.require_library("curand", "cupy.random")
        self._rng, self._device = _np.random.default_rng(seed), _rules.current()
        _rules.launch([], "default_rng")   # the generator's state is initialised on the device

    def _draw(self, name, *args, **kwargs):
        mark = _rules.launch([self._device], f"Generator.{name}")
        return _wrap(getattr(self._rng, name)(*args, **kwargs), mark=mark)

    def random(self, size=None, dtype=_np.float64, out=None):
        return self._draw("random", size, dtype=dtype)

    def standard_normal(self, size=None, dtype=_np.float64, out=None):
        return self._draw("standard_normal", size, dtype=dtype)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_np.float64):
        return self._draw("uniform", low, high, size)

    def integers(self, low, high=None, size=None, dtype=_np.int64, endpoint=False):
        return self._draw("integers", low, high, size, dtype=dtype, endpoint=endpoint)


def default_rng(seed=None):
    return Generator(seed)
