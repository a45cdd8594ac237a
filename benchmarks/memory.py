"""Scenario 6: bytes of pool bookkeeping per idle connection (tracemalloc)."""

from __future__ import annotations

import gc
import tracemalloc
from typing import TYPE_CHECKING, Any

from benchmarks import contenders as c
from benchmarks._common import Column, Settings, Table, interleaved, median
from benchmarks.fakes import FakeConnection

if TYPE_CHECKING:
    from collections.abc import Callable

FLOOR = "floor (Lock+deque)"
SMALL = 8
LARGE = 72


def _factories() -> dict[str, Callable[[Callable[[], Any], int], c.Contender]]:
    return {
        FLOOR: c.floor_lock_deque,
        "sqlgate": c.sqlgate_pool,
        "psycopg_pool": c.psycopg_pool,
        "SQLAlchemy QueuePool": c.sqlalchemy_pool,
        "DBUtils PooledDB": c.dbutils_pool,
    }


def _stock(n: int) -> Callable[[], FakeConnection]:
    """A dial handing out connections made before tracing started."""
    conns = [FakeConnection() for _ in range(n)]
    for conn in conns:
        # Give each its instance dict now, so attributes a pool tags it with
        # count as the pool's (they grow the dict) but the dict itself does not.
        conn.__dict__["_warm"] = None
        del conn.__dict__["_warm"]
    return conns.pop


def traced_bytes(make: Callable[[Callable[[], Any], int], c.Contender], n: int) -> int:
    """Traced bytes held after building a pool and making ``n`` connections idle."""
    dial = _stock(n + 4)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        contender = make(dial, n)
        c.warm(contender, n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    contender.close()
    return after - before


def run(settings: Settings) -> Table:
    """Per idle connection = (bytes at LARGE - bytes at SMALL) / (LARGE - SMALL)."""
    makers = _factories()
    per_conn: dict[str, list[float]] = {name: [] for name in makers}
    fixed: dict[str, list[float]] = {name: [] for name in makers}
    rounds = max(1, min(settings.rounds, 3))
    for _, order in interleaved(list(makers), rounds, settings.seed):
        for name in order:
            small = traced_bytes(makers[name], SMALL)
            large = traced_bytes(makers[name], LARGE)
            slope = (large - small) / (LARGE - SMALL)
            per_conn[name].append(slope)
            fixed[name].append(small - slope * SMALL)
    table = Table(
        scenario="memory",
        title="6. Memory: pool bookkeeping per idle connection",
        setup=(
            f"tracemalloc counts the bytes still allocated after building a pool and "
            f"making {SMALL}, then {LARGE}, connections idle (take them all, give "
            "them all back); the connection objects themselves were made before "
            "tracing. Per idle connection = the slope between the two; fixed = "
            "the rest (the pool object, its locks, its threads' Python objects). "
            f"Median of {rounds} rounds."
        ),
        columns=[
            Column("bytes", "bytes / idle connection", "{:,.0f}"),
            Column("fixed", "fixed bytes", "{:,.0f}"),
            Column("ratio", "x floor", "{:.1f}"),
        ],
        chart=("bytes", "bytes of bookkeeping per idle connection (lower is better)"),
    )
    floor = median(per_conn[FLOOR])
    for name in makers:
        b = median(per_conn[name])
        table.rows.append(
            {
                "contender": name,
                "bytes": b,
                "fixed": median(fixed[name]),
                "ratio": b / floor if floor > 0 else float("nan"),
            }
        )
    return table
