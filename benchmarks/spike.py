"""Scenario 3: 64 requests at once onto an empty pool with a slow dial."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks import contenders as c
from benchmarks._common import Column, Settings, Table, interleaved, median, percentile
from benchmarks._threads import burst
from benchmarks.fakes import fake_dial
from sqlgate.pool import DEFAULT_MAX_CONNECTING

if TYPE_CHECKING:
    from collections.abc import Callable

REQUESTS = 64
SIZE = 16
DIAL = 0.020
HOLD = 0.001


def _factories() -> dict[str, Callable[[], c.Contender]]:
    dial = fake_dial(DIAL)
    return {
        "sqlgate": lambda: c.sqlgate_pool(dial, SIZE),
        "sqlgate (max_connecting=4)": lambda: c.sqlgate_pool(
            dial, SIZE, max_connecting=4, name="sqlgate (max_connecting=4)"
        ),
        "sqlgate (max_connecting=0)": lambda: c.sqlgate_pool(
            dial, SIZE, max_connecting=0, name="sqlgate (max_connecting=0)"
        ),
        "psycopg_pool": lambda: c.psycopg_pool(dial, SIZE, prefill=False),
        "SQLAlchemy QueuePool": lambda: c.sqlalchemy_pool(dial, SIZE),
        "DBUtils PooledDB": lambda: c.dbutils_pool(dial, SIZE),
    }


def run(settings: Settings) -> Table:
    """Each round builds every pool empty and fires one burst at it."""
    by_name = _factories()
    rounds = settings.rounds * 2  # a burst is short: buy stability cheaply
    results: dict[str, list[dict[str, float]]] = {name: [] for name in by_name}
    for _, order in interleaved(list(by_name), rounds, settings.seed):
        for name in order:
            contender = by_name[name]()
            try:
                r = burst(contender, REQUESTS, HOLD)
            finally:
                contender.close()
            results[name].append(
                {
                    "p50_ms": percentile(r.latencies, 0.50) * 1e3,
                    "p99_ms": percentile(r.latencies, 0.99) * 1e3,
                    "total_ms": r.total * 1e3,
                }
            )
    table = Table(
        scenario="spike",
        title="3. Spike: 64 requests at once onto an empty pool, 20 ms dial",
        setup=(
            f"{REQUESTS} threads ask at the same instant for a connection from an "
            f"empty pool of at most {SIZE}; a dial takes {DIAL * 1e3:.0f} ms "
            f"(`time.sleep`), each request holds its connection "
            f"{HOLD * 1e3:.0f} ms. Latency = time to acquire. `sqlgate` runs with "
            f"its default max_connecting={DEFAULT_MAX_CONNECTING}; psycopg_pool "
            "with min_size=0. Each round builds every pool afresh; "
            f"{rounds} rounds, interleaved; medians over rounds. "
            "Ratio = p99 / sqlgate's p99 in the same round (lower is better)."
        ),
        columns=[
            Column("p50_ms", "p50 ms", "{:.1f}"),
            Column("p99_ms", "p99 ms", "{:.1f}"),
            Column("total_ms", "total ms", "{:.1f}"),
            Column("ratio", "p99 / sqlgate", "{:.2f}"),
        ],
        chart=("ratio", "p99 acquire latency / sqlgate's (lower is better)"),
    )
    base = [r["p99_ms"] for r in results["sqlgate"]]
    for name, runs in results.items():
        ratios = [r["p99_ms"] / b for r, b in zip(runs, base, strict=True)]
        row: dict[str, Any] = {"contender": name, "ratio": median(ratios)}
        for key in ("p50_ms", "p99_ms", "total_ms"):
            row[key] = median([r[key] for r in runs])
        table.rows.append(row)
    return table
