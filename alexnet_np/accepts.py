"""What a setting accepts: a range of numbers, a set of choices, a flag, a list of numbers.

One record per kind says it three ways from one description: ``describe()`` for the help
and the error message, ``allows(value)`` for a value given in code or read from a
checkpoint's JSON, and ``parse(text)`` for the command line, where the record itself is
the argparse ``type=`` function:

    PROBABILITY.describe()           -> "a probability in [0, 1)"
    PROBABILITY.allows(1.5)          -> False
    PROBABILITY("1.5")               -> argparse.ArgumentTypeError("1.5: a probability in [0, 1)")
    Several(POSITIVE_INT, 5)("96,256,384,384,256")  -> (96, 256, 384, 384, 256)

Real numbers must be finite (NaN and infinity are refused everywhere); whole numbers are
ints, never bools or floats. Nothing here knows which setting it checks: the caller names
the option (``config.Config``, ``cli``).
"""
import argparse
import math
import numbers


class Accepts:
    """The common part: text -> value for argparse, refusing with ``VALUE: what is allowed``."""

    def describe(self):
        raise NotImplementedError

    def allows(self, value):
        raise NotImplementedError

    def parse(self, text):
        raise NotImplementedError

    def metavar(self):
        """How the help shows the value: ``N``, ``X``, ``{a,b}``, ``N,N``."""
        raise NotImplementedError

    def __call__(self, text):
        """argparse's ``type=``: the value of ``text``, or ArgumentTypeError naming what is allowed."""
        try:
            value = self.parse(text.strip())
        except ValueError:
            value = None
        if value is None or not self.allows(value):
            raise argparse.ArgumentTypeError(f"{text if text.strip() else repr(text)}: {self.describe()}")
        return value


class Number(Accepts):
    """A whole (``int``) or real (``float``) number between ``low`` and ``high``.

    Either end may be None (unbounded), open (``low_open``: > low) or closed (>= low).
    ``name`` replaces "a whole number" / "a (finite) number" in the description ("a
    probability"); ``odd`` asks for an odd whole number.
    """

    def __init__(self, kind, low=None, high=None, low_open=False, high_open=False, name=None, odd=False):
        assert kind in (int, float) and (kind is int or not odd)
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open, self.odd = low_open, high_open, odd
        self.name = name or ("an odd whole number" if odd else "a whole number" if kind is int
                             else "a number" if low is not None and high is not None else "a finite number")

    def describe(self):
        low, high = self.low, self.high
        if low is not None and high is not None:
            return (f"{self.name} in {'(' if self.low_open else '['}{low}, "
                    f"{high}{')' if self.high_open else ']'}")
        if low is not None:
            return f"{self.name} {'>' if self.low_open else '>='} {low}"
        if high is not None:
            return f"{self.name} {'<' if self.high_open else '<='} {high}"
        return self.name

    def allows(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value) or (self.odd and value % 2 == 0):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def parse(self, text):
        return self.kind(text)    # int("1.5") and float("x") raise ValueError

    def metavar(self):
        return "N" if self.kind is int else "X"


class Choice(Accepts):
    """One of a few strings."""

    def __init__(self, *options):
        self.options = options

    def describe(self):
        return "one of " + ", ".join(self.options)

    def allows(self, value):
        return isinstance(value, str) and value in self.options

    def parse(self, text):
        return text

    def metavar(self):
        return "{" + ",".join(self.options) + "}"


class Flag(Accepts):
    """True or False (on the command line ``--x`` / ``--no-x``, never a value)."""

    def describe(self):
        return "true or false"

    def allows(self, value):
        return isinstance(value, bool)

    def parse(self, text):
        raise ValueError(text)

    def metavar(self):
        return None


class Several(Accepts):
    """``count`` values (any number from ``at_least`` when ``count`` is None) each ``each``
    allows; comma-separated on the command line, a tuple in code."""

    def __init__(self, each, count=None, at_least=1):
        self.each, self.count, self.at_least = each, count, at_least

    def describe(self):
        many = str(self.count) if self.count is not None else f"{self.at_least} or more"
        return f"{many} values separated by commas, each {self.each.describe()}"

    def allows(self, value):
        if not isinstance(value, (tuple, list)):
            return False
        if len(value) != self.count if self.count is not None else len(value) < self.at_least:
            return False
        return all(self.each.allows(v) for v in value)

    def parse(self, text):
        return tuple(self.each.parse(v.strip()) for v in text.split(","))

    def metavar(self):
        one = self.each.metavar()
        return ",".join([one] * self.count) if self.count is not None else f"{one},{one},..."


def show(value):
    """A value as it would be typed on the command line: ``96,256,384``, ``true``, ``0.5``."""
    if isinstance(value, (tuple, list)):
        return ",".join(show(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# The kinds most settings use.
POSITIVE_INT = Number(int, low=1)                   # counts, sizes, steps
NON_NEGATIVE_INT = Number(int, low=0)               # where 0 means "none" or "automatic"
POSITIVE = Number(float, low=0, low_open=True)      # rates, scales
NON_NEGATIVE = Number(float, low=0)                 # where 0 switches a term off
FLAG = Flag()
WORKERS = Number(int, low=1, high=256)              # processes, all started at once: more is a typo
PROBABILITY = Number(float, low=0, high=1, high_open=True, name="a probability")
