"""A bounded latency histogram: log-bucketed, at most 0.2 % relative error.

``sqlgate stress`` records three durations per request for as long as it runs,
so keeping every value (as it once did) grows memory without bound and makes
the report wait for a sort of millions of floats. A histogram keeps a count
per bucket instead: memory depends on the range of the values, never on how
many there are or how long the run lasts.

Buckets come straight from the IEEE 754 bits of a non-negative double: the
exponent and the top ``MANTISSA_BITS`` bits of the mantissa, so each power of
two is cut into ``2**MANTISSA_BITS`` (256) equal slices. A bucket spans at most
1/256 of its lower bound, and a percentile is reported as the bucket's
midpoint clamped to the exact minimum and maximum: within ``RELATIVE_ERROR``
(1/512, about 0.2 %) of a value actually recorded in that bucket. Count, sum
(so the mean), minimum and maximum are exact. Durations from 1 ns to one day
use at most 47 x 256 buckets (about 12 000), whatever the run's length.

Recording is a ``list.append`` into ``pending``; :meth:`Histogram.flush`
turns a batch into bucket counts with C-level ``array``/``map``/``Counter``
work (the owner flushes every ``FLUSH_EVERY`` values or so): about 0.7 us per
value in all on this project's machine under load. The HdrHistogram package
(``hdrhistogram``) gives the same guarantee, but its pure-Python
``record_value`` cost 3.4 us per value on the same machine when quiet (10-15
us under load), while one request of a SQLite stress run costs about 20 us:
three records per request would have cut the run's throughput by a third, so
the tool would largely measure itself.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["FLUSH_EVERY", "MANTISSA_BITS", "RELATIVE_ERROR", "Histogram"]

#: Mantissa bits kept: 2**MANTISSA_BITS slices per power of two.
MANTISSA_BITS = 8
#: Largest relative distance between a reported percentile and a recorded value.
RELATIVE_ERROR = 1 / 2 ** (MANTISSA_BITS + 1)
#: Pending values an owner lets pile up before it flushes (bounds the buffer).
FLUSH_EVERY = 256

_SHIFT = 52 - MANTISSA_BITS  # a double has 52 mantissa bits
_KEY = (_SHIFT).__rrshift__  # bits -> bits >> _SHIFT, called from C by map()
_DOUBLE = struct.Struct("=d")
_BITS = struct.Struct("=Q")


def _midpoint(key: int) -> float:
    """The middle of bucket ``key`` (a double whose bits were cut at _SHIFT)."""
    if key == 0:  # 0.0 and the subnormals below 2**-1022: all "zero"
        return 0.0
    bits = (key << _SHIFT) | (1 << (_SHIFT - 1))
    return float(_DOUBLE.unpack(_BITS.pack(bits))[0])


class Histogram:
    """Counts of non-negative float values (seconds) in log-spaced buckets.

    One writer at a time: each stress worker owns its histograms, appends to
    ``pending`` and calls :meth:`flush`; the report merges them with
    :meth:`of` once the workers are done.

    Attributes:
        pending: values recorded but not yet counted in buckets.
        count: values counted (after ``flush``).
        total: their exact sum.
        min: the smallest value counted (``inf`` when empty).
        max: the largest value counted (0.0 when empty).
    """

    __slots__ = ("_buckets", "count", "max", "min", "pending", "total")

    def __init__(self) -> None:
        # bucket key (the value's bits >> _SHIFT) -> how many values fell in it
        self._buckets: Counter[int] = Counter()
        self.pending: list[float] = []
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    @property
    def buckets(self) -> int:
        """How many buckets are in use (memory is proportional to this)."""
        return len(self._buckets)

    def record(self, value: float) -> None:
        """Count ``value`` (seconds, >= 0); flushes every ``FLUSH_EVERY``."""
        pending = self.pending
        pending.append(value)
        if len(pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Move ``pending`` into the bucket counts."""
        batch = self.pending
        if not batch:
            return
        self.count += len(batch)
        self.total += math.fsum(batch)
        self.max = max(self.max, max(batch))
        self.min = min(self.min, min(batch))
        bits = memoryview(array("d", batch)).cast("B").cast("Q")
        self._buckets.update(map(_KEY, bits))
        batch.clear()

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts (flushed first) to this histogram."""
        other.flush()
        self.flush()
        self._buckets.update(other._buckets)
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)
        self.min = min(self.min, other.min)

    @classmethod
    def of(cls, parts: Iterable[Histogram]) -> Histogram:
        """A new histogram holding the sum of ``parts``."""
        merged = cls()
        for part in parts:
            merged.merge(part)
        return merged

    def percentile(self, p: float) -> float:
        """The nearest-rank ``p``-th percentile (0 < p <= 100), in seconds.

        The smallest bucket with at least ``p`` % of the values at or below
        it, reported as its midpoint clamped to [min, max]: within
        ``RELATIVE_ERROR`` of a value recorded in that bucket. 0.0 when empty.
        """
        self.flush()
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                return min(max(_midpoint(key), self.min), self.max)
        return self.max  # unreachable: the counts add up to count

    @property
    def mean(self) -> float:
        """The exact mean of the counted values (0.0 when empty)."""
        return self.total / self.count if self.count else 0.0
