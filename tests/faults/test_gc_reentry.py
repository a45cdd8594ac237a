"""Issue 11, defects 6 and 7: connections returned from a garbage collection.

A finalizer runs in whatever thread collects, at whatever allocation; it must
never take a pool's lock or call its core there. Each test forces the
collection at the worst place (this thread holding ``Pool``'s lock; a thread
that is not the event loop's) with a caller waiting for the connection, and
bounds every wait, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate import Pool
from sqlgate._courier import in_collection
from tests.faults.test_gc_critical import Ledger, sqlite_creator

if TYPE_CHECKING:
    from pathlib import Path

    from sqlgate.integrations.sqlalchemy import SqlgatePool


def join(thread: threading.Thread, what: str, seconds: float = 10.0) -> None:
    thread.join(seconds)
    assert not thread.is_alive(), f"{what}: still blocked after {seconds:.0f} s"


def forget(obj: object) -> list[Any]:
    """Put ``obj`` in a reference cycle; the caller drops the cycle's last name."""
    cycle: list[Any] = [obj]
    cycle.append(cycle)
    return cycle


def test_in_collection_is_true_only_inside_a_collection() -> None:
    seen: list[bool] = []

    class Probe:
        def __del__(self) -> None:
            seen.append(in_collection())

    cycle = forget(Probe())
    del cycle
    gc.collect()
    assert seen == [True]
    assert not in_collection()


# -- Pool ------------------------------------------------------------------------


def test_release_soon_under_the_lock_returns_at_once_and_the_courier_releases() -> None:
    ledger = Ledger()
    pool: Pool[Any] = Pool(ledger.connect, max_open=1, leak_threshold=3600.0)
    conn = pool.acquire()
    waiter_got: list[Any] = []
    waiter = threading.Thread(target=lambda: waiter_got.append(pool.acquire(10)))
    waiter.start()
    wait_for_waiting(pool, 1)
    with pool._lock:  # as if a finalizer ran inside this thread's critical section
        pool._release_soon(conn)
    join(waiter, "the waiter")  # the courier released it: the waiter has it
    assert waiter_got == [conn]
    pool.release(conn)
    pool.close()
    pool._core.check()
    assert (ledger.live, pool.stats().open_connections) == (0, 0)


def test_issue_11_leak_collected_in_another_thread_reaches_the_waiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No maintenance thread: only the tracker's callback can get the slot to
    # the waiter (before, it sat queued until the next acquire or tick).
    monkeypatch.setattr("sqlgate.pool._maintain", lambda pool, wakeup: None)
    ledger = Ledger()
    pool: Pool[Any] = Pool(ledger.connect, max_open=1, leak_threshold=3600.0)
    holder = [forget(pool.acquire())]
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(10)))
    waiter.start()
    wait_for_waiting(pool, 1)

    def collect_holding_the_lock() -> None:
        with pool._lock:
            holder.clear()
            gc.collect()

    collector = threading.Thread(target=collect_holding_the_lock, daemon=True)
    collector.start()
    join(collector, "the collection")
    join(waiter, "the waiter")
    s = pool.stats()
    assert (s.leaks_reclaimed, s.in_use, s.open_connections) == (1, 1, 1), s
    pool.release(got[0])
    pool.close()
    pool._core.check()
    assert len(ledger.opens) == len(ledger.closes) + 1  # one collected, never closed


def wait_for_waiting(pool: Pool[Any], n: int) -> None:
    from tests.fakes import wait_until

    wait_until(lambda: pool._core.stats().waiting == n, what=f"{n} waiting")


# -- SqlgatePool (defect 6) --------------------------------------------------------


def test_issue_11_defect_6_sqlgatepool_collected_while_its_thread_holds_the_lock() -> (
    None
):
    pytest.importorskip("sqlalchemy")
    from sqlalchemy import create_engine

    from sqlgate.integrations.sqlalchemy import SqlgatePool

    ledger = Ledger()
    engine = create_engine(
        "sqlite://",
        creator=sqlite_creator(ledger),
        poolclass=SqlgatePool,
        max_open=1,
        pool_timeout=10,
    )
    pool: SqlgatePool = engine.pool  # type: ignore[assignment]
    gate = pool.sqlgate_pool
    holder = [forget(engine.raw_connection())]  # checked out, then forgotten
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(engine.raw_connection()))
    waiter.start()
    wait_for_waiting(gate, 1)

    def collect_holding_the_lock() -> None:
        # The collector runs at an allocation inside the critical section:
        # SQLAlchemy's finalizer checks the connection in from right here.
        with gate._lock:
            holder.clear()
            gc.collect()

    collector = threading.Thread(target=collect_holding_the_lock, daemon=True)
    collector.start()
    join(collector, "the collection (deadlocked on the pool's own lock?)")
    join(waiter, "the waiter")
    s = gate.stats()
    assert (s.in_use, s.open_connections, s.dials) == (1, 1, 1), s
    got[0].close()
    engine.dispose()
    with gate._lock:
        gate._core.check()
    assert (ledger.live, gate.stats().open_connections) == (0, 0)


# -- AsyncSqlgatePool (defect 7) ----------------------------------------------------


def sa_async() -> Any:
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("aiosqlite")
    from sqlalchemy import exc

    return exc


def test_issue_11_defect_7_collected_in_a_worker_thread_reaches_the_waiter(
    tmp_path: Path,
) -> None:
    exc = sa_async()
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.util import greenlet_spawn

    from sqlgate.integrations.sqlalchemy import AsyncSqlgatePool

    async def main() -> None:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{tmp_path / 'd7.db'}",
            poolclass=AsyncSqlgatePool,
            max_open=1,
            pool_timeout=10,
        )
        pool = engine.pool
        assert isinstance(pool, AsyncSqlgatePool)
        gate = pool.sqlgate_pool
        fairy = await greenlet_spawn(engine.sync_engine.raw_connection)
        holder = [forget(fairy)]
        del fairy

        async def use() -> int:
            async with engine.connect() as conn:
                result = await conn.exec_driver_sql("select 7")
                return int(result.scalar_one())

        waiter = asyncio.create_task(use())
        for _ in range(1000):
            if gate.stats().waiting == 1:
                break
            await asyncio.sleep(0.001)
        assert gate.stats().waiting == 1

        def collect() -> None:  # an executor thread, not the loop's
            holder.clear()
            gc.collect()

        with pytest.warns(exc.SAWarning, match="garbage collector"):
            await asyncio.to_thread(collect)
        assert await asyncio.wait_for(waiter, 10) == 7
        s = gate.stats()
        assert (s.broken_closed, s.in_use, s.dials) == (1, 0, 2), s
        await engine.dispose()
        s = gate.stats()
        assert (s.open_connections, s.in_use) == (0, 0), s
        gate._core.check()

    asyncio.run(main())


def test_issue_11_defect_7_collected_after_the_loop_closed_is_still_counted(
    tmp_path: Path,
) -> None:
    exc = sa_async()
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.util import greenlet_spawn

    from sqlgate.integrations.sqlalchemy import AsyncSqlgatePool

    holder: list[Any] = []
    pools: list[AsyncSqlgatePool] = []

    async def main() -> None:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{tmp_path / 'd7c.db'}",
            poolclass=AsyncSqlgatePool,
        )
        pool = engine.pool
        assert isinstance(pool, AsyncSqlgatePool)
        pools.append(pool)
        holder.append(forget(await greenlet_spawn(engine.sync_engine.raw_connection)))
        # The loop ends with the connection still checked out.

    asyncio.run(main())
    gate = pools[0].sqlgate_pool
    assert gate.stats().in_use == 1
    holder.clear()
    with pytest.warns(exc.SAWarning, match="garbage collector"):
        gc.collect()
    # No loop to run on: settled at once, as broken, and counted closed.
    s = gate.stats()
    assert (s.in_use, s.open_connections, s.broken_closed, s.closed) == (0, 0, 1, 1)
    assert not gate._returns
    gate._core.check()
