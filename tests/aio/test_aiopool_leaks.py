"""AsyncPool leaks: held past leak_threshold (logged with the acquirer's stack),
dropped without release (reclaimed when garbage-collected); close(timeout=...).

The threshold is checked against a fake clock (``sqlgate.aiopool.monotonic``
patched), and the maintenance task is woken by hand: no sleeping.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from sqlgate import PoolClosed
from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import FakeClock, spin, until


class Conn:
    """An async connection that supports weak references and counts closes.

    The driver keeps no reference to it, so a dropped one can be collected.
    """

    closes = 0
    in_transaction = False

    async def rollback(self) -> None:
        pass

    async def close(self) -> None:
        Conn.closes += 1


class Driver:
    def __init__(self) -> None:
        self.opened = 0

    async def aconnect(self) -> Conn:
        self.opened += 1
        return Conn()


def make(**knobs: Any) -> AsyncPool[Any]:
    return AsyncPool(Driver().aconnect, name="leaky", **knobs)


async def grab_and_hold(pool: AsyncPool[Any]) -> Any:
    return await pool.acquire()


def leak_records(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_no_tracking_by_default_costs_nothing() -> None:
    pool = make()
    conn = await pool.acquire()
    assert "acquire" not in pool.__dict__  # the plain path
    assert pool._held == {}
    assert pool._core.lookup(conn).ref is None  # held strongly, as before
    assert pool._maintenance is None
    await pool.release(conn)
    await pool.close()


async def test_held_past_threshold_is_logged_once_with_the_acquirers_stack(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlgate")
    pool = make(leak_threshold=30.0)
    conn = await grab_and_hold(pool)
    clock.now += 29.9
    pool._wake_maintenance()
    await spin()
    assert leak_records(caplog, "possible leak") == []
    clock.now += 0.2
    pool._wake_maintenance()
    await until(lambda: bool(leak_records(caplog, "possible leak")), "the warning")
    clock.now += 100
    pool._wake_maintenance()
    await spin()
    [message] = leak_records(caplog, "possible leak")  # once only
    assert "leaky: a connection has been in use for 30.1 s" in message
    assert "leak_threshold=30.0 s" in message
    assert "in grab_and_hold" in message  # the acquirer's frame
    assert "test_aiopool_leaks.py" in message
    assert message.rstrip().splitlines()[-1].strip() == "return await pool.acquire()"
    await pool.release(conn)
    assert pool._held == {}
    await pool.close()
    s = pool.stats()
    assert (s.in_use, s.open_connections, s.leaks_reclaimed) == (0, 0, 0)
    assert pool._maintenance is not None
    assert pool._maintenance.done()


async def test_dropped_connection_is_reclaimed_and_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlgate")
    driver = Driver()
    pool: AsyncPool[Any] = AsyncPool(driver.aconnect, max_open=1, leak_threshold=60.0)
    await grab_and_hold(pool)  # the result is dropped at once: a leak
    gc.collect()
    assert len(pool._leaked) == 1
    # The slot comes back on the next call: max_open=1 would time out else.
    conn = await pool.acquire(timeout=2)
    s = pool.stats()
    assert (s.leaks_reclaimed, s.in_use, s.open_connections) == (1, 1, 1)
    assert s.closed == 1
    assert driver.opened == 2
    [message] = leak_records(caplog, "garbage-collected")
    assert "in grab_and_hold" in message
    await pool.release(conn)
    await pool.close()
    pool._core.check()
    assert pool.stats().open_connections == 0


async def test_dropped_connection_is_reclaimed_by_maintenance_without_a_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlgate")
    pool = make(max_open=1, leak_threshold=60.0)
    await grab_and_hold(pool)
    gc.collect()
    pool._wake_maintenance()
    await until(lambda: pool.stats().leaks_reclaimed == 1, "maintenance to reclaim")
    assert pool.stats().open_connections == 0
    assert len(leak_records(caplog, "garbage-collected")) == 1
    await pool.close()
    pool._core.check()


async def test_loosened_connection_releases_normally() -> None:
    pool = make(leak_threshold=60.0)
    conn = await pool.acquire()
    entry = pool._core.lookup(conn)
    assert entry.conn is None
    assert entry.ref is not None
    await pool.release(conn)
    assert entry.conn is conn
    assert entry.ref is None
    with pytest.raises(ValueError, match="not in use"):
        await pool.release(conn)
    await pool.close()
    pool._core.check()


async def test_aiosqlite_connections_are_tracked_weakly() -> None:
    aiosqlite = pytest.importorskip("aiosqlite")
    pool: AsyncPool[Any] = AsyncPool(
        lambda: aiosqlite.connect(":memory:"), leak_threshold=60.0
    )
    conn = await pool.acquire()
    entry = pool._core.lookup(conn)
    assert entry.ref is not None
    assert entry.ref() is conn
    await pool.release(conn)
    assert entry.conn is conn
    await pool.close()
    assert pool.stats().open_connections == 0


async def test_close_waits_for_connections_to_come_back() -> None:
    pool = make()
    conn = await pool.acquire()
    closing = asyncio.create_task(pool.close(timeout=5))
    await spin()
    assert pool.closed
    assert not closing.done()  # waiting for conn
    with pytest.raises(PoolClosed):
        await pool.acquire()  # no new acquires meanwhile
    await pool.release(conn)
    assert await closing == 0
    s = pool.stats()
    assert (s.in_use, s.open_connections, s.closed) == (0, 0, 1)


async def test_close_with_none_waits_however_long(clock: FakeClock) -> None:
    pool = make()
    conn = await pool.acquire()
    closing = asyncio.create_task(pool.close(timeout=None))
    await spin()
    clock.now += 1e6
    await spin()
    assert not closing.done()
    await pool.release(conn)
    assert await closing == 0


async def test_close_force_closes_after_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = Conn.closes
    pool = make(leak_threshold=60.0)
    held = [await pool.acquire(), await pool.acquire()]
    assert await pool.close(timeout=0.01) == 2
    assert Conn.closes - before == 2
    assert "leaky: closed 2 connection(s) still in use after 0.01 s" in caplog.text
    for conn in held:
        await pool.release(conn)  # late: a no-op, not an error
    s = pool.stats()
    assert (s.in_use, s.open_connections, s.closed) == (0, 0, 2)
    assert not pool._tasks
    pool._core.check()
    with pytest.raises(ValueError, match="not a connection of this pool"):
        await pool.release(Conn())  # anything else is still refused


async def test_force_close_during_a_rollback_leaves_the_release_a_no_op() -> None:
    gate = asyncio.Event()

    class SlowRollback(Conn):
        in_transaction = True

        async def rollback(self) -> None:
            await gate.wait()

    async def aconnect() -> Conn:
        return SlowRollback()

    pool: AsyncPool[Any] = AsyncPool(aconnect)
    conn = await pool.acquire()
    releasing = asyncio.create_task(pool.release(conn))
    await spin()
    assert await pool.close(timeout=0.01) == 1
    gate.set()
    await releasing  # came back after the pool took it: nothing to do
    s = pool.stats()
    assert (s.in_use, s.open_connections, s.closed) == (0, 0, 1)
    pool._core.check()


async def test_close_default_keeps_todays_behaviour() -> None:
    pool = make()
    conn = await pool.acquire()
    assert await pool.close() == 0
    assert pool.stats().in_use == 1
    await pool.release(conn)
    await pool.close()
    assert pool.stats().open_connections == 0


async def test_cancelled_close_leaves_the_pool_closed_and_counts_right() -> None:
    pool = make()
    conn = await pool.acquire()
    closing = asyncio.create_task(pool.close(timeout=10))
    await spin()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert pool.closed
    assert pool.stats().in_use == 1
    await pool.release(conn)
    assert await pool.close() == 0
    assert pool.stats().open_connections == 0
    pool._core.check()


@pytest.mark.parametrize("bad", [-1, float("nan"), "1"])
async def test_close_timeout_is_validated(bad: Any) -> None:
    pool = make()
    with pytest.raises((ValueError, TypeError), match="timeout"):
        await pool.close(timeout=bad)
    assert not pool.closed
    await pool.close()


@pytest.mark.parametrize("bad", [0, -5, float("nan")])
def test_leak_threshold_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="leak_threshold"):
        make(leak_threshold=bad)
