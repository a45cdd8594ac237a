"""Settings, result tables and small statistics shared by every scenario."""

from __future__ import annotations

import math
import os
import random
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: Where the PostgreSQL scenarios connect (libpq conninfo). Trust auth locally.
PG_DSN = os.environ.get(
    "SQLGATE_BENCH_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)


@dataclass(frozen=True)
class Settings:
    """How long and how often each scenario runs.

    Attributes:
        quick: the CI form: few rounds, short runs; figures are not meaningful.
        rounds: repetitions of every contender; medians are taken over them.
        cycles: acquire+release cycles per contender per round (scenario 1).
        seconds: length of one timed run of a threaded or async workload.
        seed: seed of the shuffles that interleave contenders.
    """

    quick: bool = False
    rounds: int = 7
    cycles: int = 20_000
    seconds: float = 0.5
    seed: int = 2024

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(quick=True, rounds=2, cycles=2_000, seconds=0.1)
        return cls()


@dataclass(frozen=True)
class Column:
    """One column of a result table: the row key, its header, its format."""

    key: str
    header: str
    fmt: str = "{:.0f}"


@dataclass
class Table:
    """The result of one scenario, as rows of named figures per contender.

    Attributes:
        scenario: short name (``--only`` uses it).
        title: heading in docs/benchmarks.md.
        setup: one paragraph on what was measured and how.
        columns: the figures shown, in order.
        rows: one dict per contender; ``contender`` is its name.
        chart: the key charted in docs/benchmarks.png, and its axis label.
        notes: findings and caveats worth a line each.
    """

    scenario: str
    title: str
    setup: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    chart: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def row(self, contender: str) -> dict[str, Any]:
        for r in self.rows:
            if r["contender"] == contender:
                return r
        raise KeyError(contender)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "setup": self.setup,
            "columns": [c.key for c in self.columns],
            "rows": self.rows,
            "notes": self.notes,
            "skipped": self.skipped,
        }


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank, or NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    # Nearest rank: the smallest value with at least q of the values at or below it.
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) - 1e-9) - 1))
    return ordered[rank]


def interleaved(
    names: Sequence[str], rounds: int, seed: int
) -> list[tuple[int, list[str]]]:
    """Each round's running order: every contender once, shuffled per round."""
    rng = random.Random(seed)
    order = []
    for r in range(rounds):
        names_r = list(names)
        rng.shuffle(names_r)
        order.append((r, names_r))
    return order


def pg_available() -> str | None:
    """None if PostgreSQL answers at PG_DSN, else why not."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a bench extra
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_DSN!r} is not reachable: {exc}".strip()
    return None


def per_round_ratio(
    samples: dict[str, list[float]], base: str, better: Callable[[float, float], float]
) -> dict[str, float]:
    """Median over rounds of ``better(sample, base sample)`` from the same round."""
    out = {}
    for name, values in samples.items():
        ratios = [better(v, b) for v, b in zip(values, samples[base], strict=True)]
        out[name] = median(ratios)
    return out
