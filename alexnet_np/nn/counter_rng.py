"""Random numbers as a pure function of a key and a position: the same bits on every device.

Dropout (§4.2) needs a mask per step, layer and tower that is the same whatever holds the
tower (NumPy, CuPy on any GPU model), however the batch is split over ranks, and after a
resume. A generator with state cannot give that cheaply: CuPy's draws depend on the GPU's
number of multiprocessors, and every mask would need a generator built for it. Here element
``i`` of a stream of ``key`` is

    z_i = mix64(key + (i + 1) * GOLDEN)        (mod 2^64)

SplitMix64 (Steele, Lea, Flood 2014; the seeding generator of Java's SplittableRandom and
of xoshiro): an additive counter through a bijective 64-bit finaliser, written as integer
array operations on uint64, which wrap identically in NumPy and CuPy. ``key`` itself is
the finaliser applied to the parts that name the stream (seed, step, layer, tower), so
two streams are the same sequence shifted by a pseudo-random 64-bit offset: they overlap
within 2^18 elements (a mask) with probability about 2^-45.
"""
import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15     # 2^64 / golden ratio, odd: the counter's increment
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def mix64_int(z):
    """SplitMix64's finaliser on one Python int (host side, exact)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stream_key(*parts):
    """The 64-bit key of the stream named by non-negative ints ``parts`` (seed, step, ...)."""
    key = 0
    for part in parts:
        key = mix64_int(key ^ mix64_int(int(part) + GOLDEN))
    return key


def bits64(xp, key, start, count):
    """z_start .. z_{start+count-1} of stream ``key``: (count,) uint64 on ``xp``'s device.

    Eleven array operations (the counter, then ten in place), whatever ``count`` is."""
    z = xp.arange(start + 1, start + count + 1, dtype=xp.uint64)   # (count,) i + 1
    z *= np.uint64(GOLDEN)
    z += np.uint64(key)
    z ^= z >> np.uint64(30)
    z *= np.uint64(MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(MIX2)
    z ^= z >> np.uint64(31)
    return z


def below_threshold(p):
    """The uint64 t with P(z < t) = p for uniform 64-bit z (to 2^-64), for 0 <= p < 1."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"a probability in [0, 1) is needed, not {p}")
    return np.uint64(min(int(round(p * 2.0 ** 64)), MASK64))
