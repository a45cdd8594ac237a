"""The check for issue 11's GC class: a collection at every line of a critical section.

At every line a pool's critical section runs (``Pool``'s lock held;
``AsyncPool`` inside a core call), one forgotten connection is collected:
in the same thread (``here``) or in another thread while this one waits
(``there``). Three kinds of forgotten connection:

- ``leak``: a ``Pool`` with leak tracking; the driver connection is dropped
  without release (the tracker's weakref callback queues its slot).
- ``sqlalchemy``: ``SqlgatePool`` under ``create_engine``; a checked-out
  connection is dropped (SQLAlchemy's finalizer resets it and checks it in).
- ``sqlalchemy-async``: ``AsyncSqlgatePool`` (aiosqlite); SQLAlchemy's
  finalizer terminates the connection and detaches its record.

Afterwards nothing may be stalled (a finalizer that waits for the lock the
traced thread holds shows up as a stall, bounded at 5 s) and nothing lost:
every forgotten connection came back (exact counts), the core's ``check()``
passes and the driver's live connections equal the pool's open ones. Each
run asserts a floor on the points it covered; the figures are in
docs-free form in the closing note of issue 11.

Which defect each catches (verified by reverting the fix):
- ``sqlalchemy``/``here``: defect 6, the deadlock (``SqlgatePool`` called
  ``Pool.release`` from the finalizer, on the lock its own thread held; the
  first point stalls).
- ``sqlalchemy-async``/``there``: defect 7 (the release ran outside the loop:
  "no running event loop", the slot lost: the ledger is off by one per point).
- ``sqlalchemy-async``/``here``: the same hazard on the loop thread (a core
  call re-entered from inside another).
- ``leak``: guards the tracker's callback, which only appends and rings.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import warnings
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from sqlgate import Pool
from tests.fakes import wait_until
from tests.faults.gc_inside import (
    AtAllocations,
    Forgetter,
    Inside,
    bounded,
    in_core,
    in_pool_lock,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import FrameType

#: How many connections each run can forget (more than any run has points:
#: about 720 for a Pool, 420 for the SQLAlchemy asyncio run, which gets half;
#: each setter validates a whole PoolConfig under the lock, ~55 points).
SUPPLY = 1000
#: The fewest points each run must cover (each scenario has more): a tracer
#: that stopped seeing the critical section would fail here, not pass empty.
FLOOR = {"leak": 150, "sqlalchemy": 150, "sqlalchemy-async": 150}
#: The same for ``alloc``: the sections allocate few GC-tracked objects, so
#: the collector itself starts only a handful of collections inside them
#: (4-8 a run here); the line-by-line modes are the exhaustive ones.
FLOOR_ALLOC = 2


# -- leak tracking on a plain Pool ------------------------------------------------


class WeakConn:
    """A driver connection the leak tracker can hold weakly."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.closed = False

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True
        self.ledger.closes.append(1)


class Ledger:
    """Opens and closes, counted with appends (atomic, no lock to deadlock on)."""

    def __init__(self) -> None:
        self.opens: list[int] = []
        self.closes: list[int] = []

    @property
    def live(self) -> int:
        return len(self.opens) - len(self.closes)

    def connect(self) -> WeakConn:
        self.opens.append(1)
        return WeakConn(self)


def probe(
    mode: str, where: Callable[[FrameType | None], bool], supply: list[Any]
) -> tuple[Inside | AtAllocations, Forgetter | AtAllocations]:
    """The collection driver for ``mode``: ``here``/``there`` at every line,
    ``alloc`` at every collection the allocations themselves trigger."""
    if mode == "alloc":
        at = AtAllocations(where, supply)
        return at, at
    forgetter = Forgetter(supply)
    at_point = forgetter.here if mode == "here" else forgetter.there
    return Inside(where, at_point), forgetter


def pool_scenario(pool: Pool[Any]) -> None:
    """Every kind of critical section: idle hand-out and return, a dial, a
    close past max_idle, setters, a waiter served by a release, stats."""
    for _ in range(3):
        a = pool.acquire()
        pool.release(a)
    a, b, c = pool.acquire(), pool.acquire(), pool.acquire()  # the third dials
    pool.release(a)
    pool.release(b)
    pool.release(c)  # past max_idle=2: closed
    pool.release(pool.acquire(), broken=True)
    pool.set_max_idle_conns(1)
    pool.set_max_idle_conns(2)
    pool.set_max_open_conns(0)
    pool.stats()


def run_leak(mode: str) -> tuple[int, int]:
    ledger = Ledger()
    pool: Pool[Any] = Pool(
        ledger.connect, max_idle=2, leak_threshold=3600.0, name="gc-leak"
    )
    supply = [pool.acquire() for _ in range(SUPPLY)]
    inside, forgetter = probe(mode, in_pool_lock, supply)
    try:
        with inside:
            pool_scenario(pool)
            pool.close()
    finally:
        forgetter.stop()
    assert (forgetter.stalls, forgetter.dry) == (0, 0), vars(forgetter)
    assert forgetter.forgotten == inside.points
    left = len(supply)
    del supply[:]  # the rest are forgotten too, outside any critical section
    gc.collect()
    wait_until(lambda: not pool._leaked, what="the courier to reclaim every slot")
    wait_until(lambda: pool.stats().open_connections == 0, what="closes to settle")
    s = pool.stats()
    assert s.leaks_reclaimed == inside.points + left, s
    assert (s.in_use, s.idle, s.open_connections) == (0, 0, 0), s
    # Reclaimed connections were collected, never closed: the rest were.
    assert len(ledger.opens) == len(ledger.closes) + s.leaks_reclaimed
    pool._core.check()
    return inside.points, len(inside.sites)


# -- SqlgatePool (SQLAlchemy, threads) ----------------------------------------------


class CountedConnection(sqlite3.Connection):
    """sqlite3, counting closes in its ledger."""

    ledger: Ledger

    def close(self) -> None:
        if not getattr(self, "_closed_once", False):
            self._closed_once = True
            self.ledger.closes.append(1)
        super().close()


def sqlite_creator(ledger: Ledger) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(
            ":memory:", check_same_thread=False, factory=CountedConnection
        )
        conn.ledger = ledger
        ledger.opens.append(1)
        return conn

    return connect


def run_sqlalchemy(mode: str) -> tuple[int, int]:
    pytest.importorskip("sqlalchemy")
    from sqlalchemy import create_engine

    from sqlgate.integrations.sqlalchemy import SqlgatePool

    ledger = Ledger()
    engine = create_engine(
        "sqlite://",
        creator=sqlite_creator(ledger),
        poolclass=SqlgatePool,
        max_idle=2,
        name="gc-sa",
    )
    pool = engine.pool
    assert isinstance(pool, SqlgatePool)
    gate = pool.sqlgate_pool
    supply: list[Any] = [engine.raw_connection() for _ in range(SUPPLY)]
    inside, forgetter = probe(mode, in_pool_lock, supply)

    def scenario() -> None:
        for _ in range(3):
            engine.raw_connection().close()
        a, b, c = (engine.raw_connection() for _ in range(3))
        a.close()
        b.close()
        c.close()
        d = engine.raw_connection()
        d.invalidate()  # released broken
        d.close()
        gate.set_max_idle_conns(1)
        gate.set_max_idle_conns(2)
        pool.status()

    try:
        with inside:
            scenario()
    finally:
        forgetter.stop()
    assert (forgetter.stalls, forgetter.dry) == (0, 0), vars(forgetter)
    assert forgetter.forgotten == inside.points
    wait_until(
        lambda: not gate._returns and gate.stats().in_use == len(supply),
        what="the courier to check every forgotten connection in",
    )
    wait_until(
        lambda: gate.stats().dialing == 0 and gate.stats().closing == 0,
        what="dials and closes to settle",
    )
    s = gate.stats()
    assert ledger.live == s.open_connections == s.idle + s.in_use, (ledger.live, s)
    with gate._lock:
        gate._core.check()
    for fairy in supply:
        fairy.close()
    del supply[:]
    engine.dispose()
    wait_until(lambda: gate.stats().closing == 0, what="closes to settle")
    s = gate.stats()
    assert (s.open_connections, ledger.live) == (0, 0), s
    with gate._lock:
        gate._core.check()
    return inside.points, len(inside.sites)


# -- AsyncSqlgatePool (SQLAlchemy's asyncio engine, aiosqlite) ------------------


def run_sqlalchemy_async(mode: str, tmp_path: Path) -> tuple[int, int]:
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("aiosqlite")
    from sqlalchemy import exc
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.util import greenlet_spawn

    from sqlgate.integrations.sqlalchemy import AsyncSqlgatePool

    supply_size = SUPPLY // 2  # each is an aiosqlite connection and thread
    result: list[tuple[int, int]] = []

    async def main() -> None:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{tmp_path / 'gc.db'}",
            poolclass=AsyncSqlgatePool,
            max_idle=2,
            name="gc-sa-aio",
        )
        pool = engine.pool
        assert isinstance(pool, AsyncSqlgatePool)
        gate = pool.sqlgate_pool
        supply: list[Any] = [
            await greenlet_spawn(engine.sync_engine.raw_connection)
            for _ in range(supply_size)
        ]

        async def scenario() -> None:
            for _ in range(3):
                async with engine.connect():
                    pass
            a, b, c = [await engine.connect() for _ in range(3)]
            await a.close()
            await b.close()
            await c.close()
            await gate.set_max_idle_conns(1)
            await gate.set_max_idle_conns(2)
            pool.status()

        me = asyncio.current_task()

        def in_my_core_call(frame: FrameType | None) -> bool:
            # This task's core calls (its acquires, releases, setters), not
            # the pool's own tasks: the close of each connection collected
            # would add points of its own, without end.
            return in_core(frame) and asyncio.current_task() is me

        inside, forgetter = probe(mode, in_my_core_call, supply)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with inside:
                    await scenario()
            finally:
                forgetter.stop()
            assert (forgetter.stalls, forgetter.dry) == (0, 0), vars(forgetter)
            assert forgetter.forgotten == inside.points
            for _ in range(200):  # the loop releases what was queued
                if not gate._returns and gate.stats().in_use == len(supply):
                    break
                await asyncio.sleep(0.005)
            while gate._tasks:
                await asyncio.wait(list(gate._tasks))
        terminated = [
            w
            for w in caught
            if issubclass(w.category, exc.SAWarning)
            and "garbage collector" in str(w.message)
        ]
        # Each point's collection returned exactly one forgotten connection.
        assert len(terminated) == inside.points
        s = gate.stats()
        assert (s.in_use, s.idle + s.in_use) == (len(supply), s.open_connections), s
        assert s.broken_closed == inside.points, s
        gate._core.check()
        for fairy in supply:
            await greenlet_spawn(fairy.close)
        del supply[:]
        await engine.dispose()
        s = gate.stats()
        assert (s.open_connections, s.in_use, s.idle) == (0, 0, 0), s
        gate._core.check()
        result.append((inside.points, len(inside.sites)))

    asyncio.run(main())
    return result[0]


@pytest.mark.skipif(
    sqlgate.compiled,
    reason="the compiled build runs the core and Pool's hand-off as C: no lines "
    "to stop at (the pure build runs this check at every line of the same source)",
)
@pytest.mark.parametrize("mode", ["here", "there", "alloc"])
@pytest.mark.parametrize("kind", ["leak", "sqlalchemy", "sqlalchemy-async"])
def test_issue_11_gc_at_every_line_inside_the_critical_section(
    kind: str, mode: str, tmp_path: Path, record_property: Any
) -> None:
    figures: list[tuple[int, int]] = []
    if kind == "leak":
        bounded(lambda: figures.append(run_leak(mode)))
    elif kind == "sqlalchemy":
        bounded(lambda: figures.append(run_sqlalchemy(mode)))
    else:
        bounded(lambda: figures.append(run_sqlalchemy_async(mode, tmp_path)))
    [(points, sites)] = figures
    record_property("points", points)
    record_property("sites", sites)
    print(f"{kind}/{mode}: {points} collections at {sites} distinct lines")
    assert points >= (FLOOR_ALLOC if mode == "alloc" else FLOOR[kind]), (points, sites)
    assert threading.active_count() < 50  # helpers and aiosqlite threads ended
