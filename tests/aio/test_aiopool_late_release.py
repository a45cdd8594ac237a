"""Late releases: the closes a closed AsyncPool owes its caller (issue 11,
defect 8), and connections handed back from a finalizer or another thread
(defect 7)."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import AsyncFakeDriver, AsyncGate, assert_ledger, spin, until


async def test_issue_11_defect_8_release_on_a_closed_pool_closes_before_returning(
    driver: AsyncFakeDriver,
) -> None:
    async def one_step() -> None:
        await asyncio.sleep(0)

    driver.delay = one_step  # a close that suspends, as a real driver's does
    pool = AsyncPool(driver.aconnect, max_open=2)
    conn = await pool.acquire()
    await pool.close()
    assert len(driver.live) == 1  # in use: left to its release
    await pool.release(conn)
    # Closed by now, not by a task a loop that ends here would cut short.
    assert (conn.closes, len(driver.live)) == (1, 0)
    s = pool.stats()
    assert (s.open_connections, s.closing, s.closed) == (0, 0, 1), s
    assert not pool._tasks
    assert_ledger(pool, driver)


async def test_issue_11_defect_8_cancelled_release_leaves_the_close_to_close(
    driver: AsyncFakeDriver,
) -> None:
    driver.close_gate = gate = AsyncGate()
    pool = AsyncPool(driver.aconnect, max_open=2)
    conn = await pool.acquire()
    await pool.close()
    release = asyncio.create_task(pool.release(conn))
    await until(lambda: gate.waiting == 1, "the close to start")
    release.cancel()
    with pytest.raises(asyncio.CancelledError):
        await release
    assert (conn.closes, pool.stats().closing) == (0, 1)  # the close runs on
    closing = asyncio.create_task(pool.close())
    await spin()
    assert not closing.done()  # close() waits for it
    gate.open()
    await closing
    assert (conn.closes, len(driver.live), pool.stats().open_connections) == (1, 0, 0)
    assert_ledger(pool, driver)


async def test_issue_11_defect_8_hooked_release_on_a_closed_pool_closes_first(
    driver: AsyncFakeDriver,
) -> None:
    released: list[object] = []
    pool = AsyncPool(driver.aconnect, on_release=released.append)
    conn = await pool.acquire()
    await pool.close()
    await pool.release(conn)
    assert (released, conn.closes, len(driver.live)) == ([conn], 1, 0)
    assert_ledger(pool, driver)


async def test_release_soon_from_another_thread_is_released_by_the_loop(
    driver: AsyncFakeDriver,
) -> None:
    pool = AsyncPool(driver.aconnect, max_open=1)
    conn = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire(timeout=10))
    await until(lambda: pool.stats().waiting == 1, "the waiter to queue")
    # From a worker thread (as a finalizer there would): no loop running in
    # it, and the pool's core must not be called from it.
    await asyncio.to_thread(pool._release_soon, conn)
    assert await asyncio.wait_for(waiter, 10) is conn  # handed over, FIFO
    assert not pool._returns
    await pool.release(conn)
    assert_ledger(pool, driver)
    await pool.close()
    assert (len(driver.live), pool.stats().open_connections) == (0, 0)


async def test_release_soon_inside_a_core_call_waits_for_the_loop(
    driver: AsyncFakeDriver,
) -> None:
    pool = AsyncPool(driver.aconnect, max_open=2)
    a = await pool.acquire()
    b = await pool.acquire()
    real = pool._core.stats

    def stats_interrupted() -> Any:
        # A collection inside a core call, whose finalizer gives ``b`` back.
        pool._release_soon(b)
        return real()

    pool._core.stats = stats_interrupted  # type: ignore[method-assign]
    s = pool.stats()
    pool._core.stats = real  # type: ignore[method-assign]
    assert (s.in_use, len(pool._returns)) == (2, 1)  # not re-entered: queued
    await until(lambda: pool.stats().in_use == 1, "the loop to release it")
    await pool.release(a)
    assert_ledger(pool, driver)
    await pool.close()
    assert not driver.live


async def test_close_settles_connections_queued_for_release(
    driver: AsyncFakeDriver,
) -> None:
    pool = AsyncPool(driver.aconnect)
    conn = await pool.acquire()
    pool._returns.append((conn, False))  # queued, its loop turn not come yet
    await pool.close()
    assert (conn.closes, len(driver.live), pool.stats().open_connections) == (1, 0, 0)
    assert not pool._returns
    assert_ledger(pool, driver)


def test_release_soon_after_the_loop_closed_settles_at_once() -> None:
    driver = AsyncFakeDriver()
    pool = AsyncPool(driver.aconnect)
    held: list[Any] = []

    async def main() -> None:
        held.append(await pool.acquire())

    asyncio.run(main())
    [conn] = held
    pool._release_soon(conn)  # no loop any more: discarded at once
    s = pool.stats()
    assert (s.in_use, s.open_connections, s.broken_closed, s.closed) == (0, 0, 1, 1)
    # The driver's close is a coroutine: with no loop it cannot run, and the
    # pool says so in its log; the count is settled all the same.
    assert conn.closes == 0
    assert not pool._returns
    pool._core.check()


async def test_issue_11_leak_collected_in_a_worker_thread_reaches_the_waiter(
    driver: AsyncFakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_maintenance(self: AsyncPool[Any], wakeup: asyncio.Event) -> None:
        return None

    # Only the tracker's callback can get the slot to the waiter in time.
    monkeypatch.setattr(AsyncPool, "_maintain", no_maintenance)
    pool = AsyncPool(driver.aconnect, max_open=1, leak_threshold=3600.0)
    holder: list[Any] = [[await pool.acquire()]]
    holder[0].append(holder[0])
    waiter = asyncio.create_task(pool.acquire(timeout=10))
    await until(lambda: pool.stats().waiting == 1, "the waiter to queue")
    driver.conns.clear()  # the fake keeps its connections: let this one go
    driver.live.clear()

    def collect() -> None:
        assert threading.current_thread() is not threading.main_thread()
        holder.clear()
        gc.collect()

    await asyncio.to_thread(collect)
    conn = await asyncio.wait_for(waiter, 10)
    s = pool.stats()
    assert (s.leaks_reclaimed, s.in_use, s.dials) == (1, 1, 2), s
    await pool.release(conn)
    await pool.close()
    pool._core.check()
