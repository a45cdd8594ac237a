"""Scenario 4: 16 threads, 8 connections, ``SELECT 1`` on PostgreSQL via psycopg."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks import contenders as c
from benchmarks._common import (
    PG_DSN,
    Column,
    Settings,
    Table,
    interleaved,
    median,
    percentile,
    pg_available,
)
from benchmarks._threads import timed_loop

if TYPE_CHECKING:
    from collections.abc import Callable

LIMIT = "limit (dedicated)"
#: The same in-flight cap as the pools (8 queries at once), without a pool.
CAP = "8 threads, dedicated"
#: A minimal fair pool (see scenario 2): what any FIFO hand-off costs here.
FIFO = "floor (FIFO hand-off)"
THREADS = 16
SIZE = 8


def dial() -> Any:
    """A new autocommit psycopg connection (so no pool pays for a ROLLBACK)."""
    import psycopg

    return psycopg.connect(PG_DSN, autocommit=True)


def select_one(handle: Any) -> None:
    """The work: one round trip through the DB-API cursor."""
    cur = handle.cursor()
    cur.execute("SELECT 1")
    cur.fetchone()
    cur.close()


def _factories() -> dict[str, Callable[[], c.Contender]]:
    import psycopg

    return {
        LIMIT: lambda: c.dedicated(dial, THREADS),
        CAP: lambda: c.dedicated(dial, SIZE),
        FIFO: lambda: c.floor_fifo(dial, SIZE),
        "sqlgate": lambda: c.sqlgate_pool(dial, SIZE),
        "psycopg_pool": lambda: c.psycopg_pool(dial, SIZE),
        "SQLAlchemy QueuePool": lambda: c.sqlalchemy_pool(dial, SIZE),
        "DBUtils PooledDB": lambda: c.dbutils_pool(dial, SIZE, dbapi=psycopg),
    }


def _table(settings: Settings) -> Table:
    return Table(
        scenario="pg",
        title="4. PostgreSQL: 16 threads, 8 connections, SELECT 1 (psycopg)",
        setup=(
            f"{THREADS} threads loop acquire / `SELECT 1` through a DB-API cursor / "
            f"release for {settings.seconds:g} s per run against the local "
            f"PostgreSQL; pools hold at most {SIZE} autocommit psycopg connections, "
            f"warmed before timing. The limit gives each of the {THREADS} threads "
            f"its own connection (no pool); `{CAP}` runs only {SIZE} threads, each "
            f"with its own connection: the pools' cap of {SIZE} queries in flight "
            "without a pool, so the gap between it and the limit is the cap's, "
            "and the gap between a pool and it is the pool's. The FIFO floor is the "
            "minimal fair pool of scenario 2. Every pool keeps "
            "its default return path (sqlgate and QueuePool call rollback(), "
            "which psycopg skips outside a transaction). "
            f"{settings.rounds} rounds, interleaved; medians. Ratio = throughput / "
            "the limit's in the same round (target >= 0.95)."
        ),
        columns=[
            Column("throughput", "queries/s", "{:,.0f}"),
            Column("ratio", "x limit", "{:.2f}"),
            Column("p50_us", "p50 wait µs", "{:,.0f}"),
            Column("p99_us", "p99 wait µs", "{:,.0f}"),
            Column("fairness", "max/min per thread", "{:.2f}"),
        ],
        chart=("ratio", "throughput / limit (higher is better)"),
    )


def run(settings: Settings) -> Table:
    """Skip, saying why, when PostgreSQL is absent."""
    table = _table(settings)
    why = pg_available()
    if why is not None:
        table.skipped = why
        return table
    by_name = _factories()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in by_name}
    for _, order in interleaved(list(by_name), settings.rounds, settings.seed):
        for name in order:
            contender = by_name[name]()
            try:
                if name not in {LIMIT, CAP}:
                    c.warm(contender, SIZE)
                threads = SIZE if name == CAP else THREADS
                r = timed_loop(contender, threads, settings.seconds, select_one)
            finally:
                contender.close()
            results[name].append(
                {
                    "throughput": r.throughput,
                    "p50_us": percentile(r.waits_ns, 0.50) / 1e3,
                    "p99_us": percentile(r.waits_ns, 0.99) / 1e3,
                    "fairness": r.fairness,
                }
            )
    limit = [r["throughput"] for r in results[LIMIT]]
    for name, runs in results.items():
        ratios = [r["throughput"] / b for r, b in zip(runs, limit, strict=True)]
        row: dict[str, Any] = {"contender": name, "ratio": median(ratios)}
        for key in ("throughput", "p50_us", "p99_us", "fairness"):
            row[key] = median([r[key] for r in runs])
        table.rows.append(row)
    sg = table.row("sqlgate")
    cap = table.row(CAP)
    fifo = table.row(FIFO)
    table.notes.append(
        f"sqlgate: {sg['ratio']:.2f}x the limit (target: within 5 %, >= 0.95); "
        f"{sg['throughput'] / cap['throughput']:.2f}x {SIZE} dedicated threads; "
        f"{sg['throughput'] / fifo['throughput']:.2f}x the FIFO floor."
    )
    return table
