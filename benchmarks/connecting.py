"""Scenario 7: choosing ``max_connecting`` by a spike on the real PostgreSQL."""

from __future__ import annotations

from typing import Any

from benchmarks import contenders as c
from benchmarks._common import (
    Column,
    Settings,
    Table,
    interleaved,
    median,
    percentile,
    pg_available,
)
from benchmarks._threads import burst
from benchmarks.pg import dial

REQUESTS = 64
SIZE = 16
HOLD = 0.001
VARIANTS = (1, 2, 4, 8, 0)


def _name(k: int) -> str:
    from sqlgate.pool import DEFAULT_MAX_CONNECTING

    name = f"max_connecting={k}"
    if k == 0:
        name += " (unlimited)"
    if k == DEFAULT_MAX_CONNECTING:
        name += " (default)"
    return name


def run(settings: Settings) -> Table:
    """Fire one burst per variant per round, each at a fresh empty pool."""
    rounds = settings.rounds * 3  # a burst is short: buy stability cheaply
    table = Table(
        scenario="connecting",
        title="7. max_connecting: a spike on the real PostgreSQL",
        setup=(
            f"{REQUESTS} threads ask at once for a psycopg connection from an empty "
            f"sqlgate.Pool(max_open={SIZE}, max_idle={SIZE}, max_connecting=k); each "
            f"holds it {HOLD * 1e3:.0f} ms (`time.sleep`). Real dials to the local "
            "PostgreSQL (trust auth, loopback TCP). Each round builds every pool "
            f"afresh; {rounds} rounds, variants interleaved; medians. "
            "dial ms = sqlgate's own mean dial time (Stats.dial_duration / dials)."
        ),
        columns=[
            Column("p50_ms", "p50 acquire ms", "{:.1f}"),
            Column("p99_ms", "p99 acquire ms", "{:.1f}"),
            Column("total_ms", "total ms", "{:.1f}"),
            Column("dials", "dials", "{:.0f}"),
            Column("dial_ms", "dial ms", "{:.1f}"),
        ],
        chart=("p99_ms", "p99 acquire latency, ms (lower is better)"),
    )
    why = pg_available()
    if why is not None:
        table.skipped = why
        return table
    names = {_name(k): k for k in VARIANTS}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _, order in interleaved(list(names), rounds, settings.seed):
        for name in order:
            contender, stats = _pool(names[name])
            try:
                r = burst(contender, REQUESTS, HOLD)
                s = stats()
            finally:
                contender.close()
            results[name].append(
                {
                    "p50_ms": percentile(r.latencies, 0.50) * 1e3,
                    "p99_ms": percentile(r.latencies, 0.99) * 1e3,
                    "total_ms": r.total * 1e3,
                    "dials": s.dials,
                    "dial_ms": s.dial_duration / s.dials * 1e3 if s.dials else 0.0,
                }
            )
    for name, runs in results.items():
        row: dict[str, Any] = {"contender": name, "max_connecting": names[name]}
        for key in ("p50_ms", "p99_ms", "total_ms", "dials", "dial_ms"):
            row[key] = median([r[key] for r in runs])
        table.rows.append(row)
    best = min(table.rows, key=lambda r: r["p99_ms"])
    table.notes.append(
        f"Lowest p99 here: {best['contender']} ({best['p99_ms']:.1f} ms)."
    )
    return table


def _pool(k: int) -> tuple[c.Contender, Any]:
    from sqlgate import Pool

    pool: Pool[Any] = Pool(
        dial, max_open=SIZE, max_idle=SIZE, max_connecting=k, acquire_timeout=30.0
    )
    return c.Contender(_name(k), pool.acquire, pool.release, pool.close), pool.stats
