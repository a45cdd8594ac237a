"""The stress tool's latency histogram: bounded, and within its stated error."""

from __future__ import annotations

import math
import random

import pytest

from sqlgate.cli._histogram import FLUSH_EVERY, RELATIVE_ERROR, Histogram


def _exact(ordered: list[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_within_relative_error(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(-9, 2) for _ in range(20_000)] + [0.0] * 10
    hist = Histogram()
    for v in values:
        hist.record(v)
    ordered = sorted(values)
    for p in (0.01, 1, 10, 50, 90, 99, 99.9, 100):
        exact, got = _exact(ordered, p), hist.percentile(p)
        if exact == 0.0:
            assert got == 0.0
        else:
            assert abs(got - exact) <= RELATIVE_ERROR * exact, (p, exact, got)
    # Count, sum, min and max are exact.
    assert hist.count == len(values)
    assert hist.total == pytest.approx(math.fsum(values), rel=1e-12)
    assert hist.min == 0.0
    assert hist.max == ordered[-1]
    assert RELATIVE_ERROR == 1 / 512


def test_memory_is_bounded_by_range_not_count() -> None:
    """300 000 values from 1 us to 10 s use the same buckets as ten thousand."""
    rng = random.Random(1)
    hist = Histogram()
    for _ in range(300_000):
        hist.record(10 ** rng.uniform(-6, 1))
    # log2(10**7) ~ 23.3 octaves x 256 slices, at most.
    assert hist.buckets <= 24 * 256
    assert len(hist.pending) < FLUSH_EVERY
    assert hist.count + len(hist.pending) == 300_000


def test_merge_equals_one_histogram() -> None:
    rng = random.Random(2)
    values = [rng.expovariate(1000) for _ in range(5000)]
    whole, parts = Histogram(), [Histogram() for _ in range(4)]
    for i, v in enumerate(values):
        whole.record(v)
        parts[i % 4].record(v)
    merged = Histogram.of(parts)
    for p in (50, 90, 99, 100):
        assert merged.percentile(p) == whole.percentile(p)
    assert merged.count == whole.count == 5000
    assert merged.max == whole.max


def test_empty_and_single() -> None:
    hist = Histogram()
    assert hist.percentile(50) == 0.0
    assert hist.mean == 0.0
    hist.record(0.25)
    assert hist.percentile(1) == hist.percentile(100) == 0.25  # clamped to min/max
    assert hist.mean == 0.25
