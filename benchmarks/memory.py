"""Scenario 6: bytes of pool bookkeeping per idle connection and per waiter."""

from __future__ import annotations

import gc
import threading
import time
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
#: Waiters queued for the per-waiter figure (blocked threads).
FEW_WAITERS = 4
MANY_WAITERS = 36
#: The per-waiter floor: a minimal fair pool (its waiters queue; the
#: Lock+deque floor has no waiting at all).
FIFO = "floor (FIFO hand-off)"


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


def _settled(limit: float = 5.0) -> int:
    """Traced bytes once they stop changing (blocked threads allocate no more)."""
    last = tracemalloc.get_traced_memory()[0]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = tracemalloc.get_traced_memory()[0]
        if now == last:
            return now
        last = now
    return last


def waiter_bytes(
    make: Callable[[Callable[[], Any], int], c.Contender], waiters: int
) -> int:
    """Traced bytes held while ``waiters`` threads queue for a pool's one connection.

    The threads are made and started before tracing (their own objects are not
    the pool's) and wait on an event; traced from then: each calls
    ``acquire`` and blocks. Afterwards the held connection is released and
    every waiter takes and gives back its turn.
    """
    dial = _stock(4)
    contender = make(dial, 1)
    held = contender.acquire()
    go = threading.Event()

    def wait_turn() -> None:
        go.wait()
        contender.release(contender.acquire())

    threads = [threading.Thread(target=wait_turn, daemon=True) for _ in range(waiters)]
    for thread in threads:
        thread.start()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        go.set()
        after = _settled()
    finally:
        tracemalloc.stop()
    contender.release(held)
    for thread in threads:
        thread.join(30)
    contender.close()
    return after - before


def run(settings: Settings) -> Table:
    """Per idle connection = (bytes at LARGE - bytes at SMALL) / (LARGE - SMALL)."""
    makers = _factories()
    per_conn: dict[str, list[float]] = {name: [] for name in makers}
    fixed: dict[str, list[float]] = {name: [] for name in makers}
    waiting = {FIFO: c.floor_fifo, **{k: v for k, v in makers.items() if k != FLOOR}}
    per_waiter: dict[str, list[float]] = {name: [] for name in waiting}
    rounds = max(1, min(settings.rounds, 3))
    for _, order in interleaved(list(makers), rounds, settings.seed):
        for name in order:
            small = traced_bytes(makers[name], SMALL)
            large = traced_bytes(makers[name], LARGE)
            slope = (large - small) / (LARGE - SMALL)
            per_conn[name].append(slope)
            fixed[name].append(small - slope * SMALL)
    for _, order in interleaved(list(waiting), rounds, settings.seed):
        for name in order:
            few = waiter_bytes(waiting[name], FEW_WAITERS)
            many = waiter_bytes(waiting[name], MANY_WAITERS)
            per_waiter[name].append((many - few) / (MANY_WAITERS - FEW_WAITERS))
    table = Table(
        scenario="memory",
        title="6. Memory: pool bookkeeping per idle connection and per waiter",
        setup=(
            f"tracemalloc counts the bytes still allocated after building a pool and "
            f"making {SMALL}, then {LARGE}, connections idle (take them all, give "
            "them all back); the connection objects themselves were made before "
            "tracing. Per idle connection = the slope between the two; fixed = "
            "the rest (the pool object, its locks, its threads' Python objects). "
            f"Per waiter: the slope between {FEW_WAITERS} and {MANY_WAITERS} threads "
            "blocked in acquire on a pool of one connection that is held (threads "
            "made before tracing; bytes read once they stop changing), against a "
            "minimal fair pool (the Lock+deque floor has no waiters). "
            f"Median of {rounds} rounds."
        ),
        columns=[
            Column("bytes", "bytes / idle connection", "{:,.0f}"),
            Column("fixed", "fixed bytes", "{:,.0f}"),
            Column("ratio", "x floor", "{:.1f}"),
            Column("waiter", "bytes / waiter", "{:,.0f}"),
            Column("waiter_ratio", "x FIFO floor", "{:.1f}"),
        ],
        chart=("bytes", "bytes of bookkeeping per idle connection (lower is better)"),
    )
    floor = median(per_conn[FLOOR])
    fifo = median(per_waiter[FIFO])
    nan = float("nan")
    for name in [FIFO, *makers]:
        row: dict[str, Any] = {"contender": name}
        if name in per_conn:
            b = median(per_conn[name])
            row.update(
                bytes=b,
                fixed=median(fixed[name]),
                ratio=b / floor if floor > 0 else nan,
            )
        if name in per_waiter:
            w = median(per_waiter[name])
            row.update(waiter=w, waiter_ratio=w / fifo if fifo > 0 else nan)
        table.rows.append(row)
    return table
