"""AsyncPool: the asyncio shell's behaviour, over fake async drivers."""

from __future__ import annotations

import asyncio
import threading

import pytest

import sqlgate
from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import (
    AsyncFakeConn,
    AsyncFakeDriver,
    assert_ledger,
    close_clean,
    eventually,
    spin,
    until,
)

Pool = AsyncPool[AsyncFakeConn]


def make(driver: AsyncFakeDriver, **knobs: object) -> Pool:
    return AsyncPool(driver.aconnect, name="t", **knobs)  # type: ignore[arg-type]


async def test_acquire_release_reuses_the_idle_connection(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver, max_open=2)
    a = await pool.acquire()
    assert a.number == 1
    assert_ledger(pool, driver)
    await pool.release(a)
    s = pool.stats()
    assert (s.idle, s.in_use, s.dials, s.acquires, s.wait_count) == (1, 0, 1, 1, 1)
    b = await pool.acquire()
    assert b is a
    assert pool.stats().acquires == 2
    await pool.release(b)
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_connection_context_releases(driver: AsyncFakeDriver) -> None:
    pool = make(driver)
    async with pool.connection() as conn:
        assert pool.stats().in_use == 1
        conn.in_transaction = True
    assert conn.rollbacks == 1
    assert pool.stats().idle == 1
    with pytest.raises(KeyError):
        async with pool.connection():
            raise KeyError("body failed")
    assert pool.stats().idle == 1
    assert pool.stats().in_use == 0
    await close_clean(pool, driver)


async def test_async_with_pool_closes_it(driver: AsyncFakeDriver) -> None:
    async with make(driver) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
    assert pool.closed
    assert driver.closed == driver.opened == 1
    with pytest.raises(sqlgate.PoolClosed, match="t is closed"):
        await pool.acquire()


def test_pool_created_outside_a_running_loop(driver: AsyncFakeDriver) -> None:
    # psycopg_pool issue 219: creating the pool must not need a running loop.
    pool = make(driver, max_open=1, min_idle=1, max_idle=1)

    async def use() -> None:
        async with pool.connection() as conn:
            assert conn.number == 1
        await close_clean(pool, driver)

    asyncio.run(use())


def test_another_loop_is_refused_and_counts_stay(driver: AsyncFakeDriver) -> None:
    pool = make(driver)

    async def first() -> None:
        await pool.release(await pool.acquire())

    asyncio.run(first())
    before = pool.stats()

    async def second() -> None:
        with pytest.raises(sqlgate.Error, match="bound to a different event loop"):
            await pool.acquire()
        with pytest.raises(sqlgate.Error, match="bound to a different event loop"):
            await pool.release(driver.conns[0])
        with pytest.raises(sqlgate.Error, match="bound to a different event loop"):
            await pool.close()

    asyncio.run(second())
    assert pool.stats() == before
    pool._core.check()


async def test_another_thread_is_refused(driver: AsyncFakeDriver) -> None:
    pool = make(driver)
    conn = await pool.acquire()
    before = pool.stats()
    seen: list[BaseException] = []

    def in_thread() -> None:
        async def go() -> None:
            try:
                await pool.acquire()
            except BaseException as exc:
                seen.append(exc)
            try:
                await pool.release(conn)
            except BaseException as exc:
                seen.append(exc)

        asyncio.run(go())

    thread = threading.Thread(target=in_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert [type(e) for e in seen] == [sqlgate.Error, sqlgate.Error]
    assert "AsyncPool 't' is bound to a different event loop" in str(seen[0])
    assert pool.stats() == before
    await pool.release(conn)
    await close_clean(pool, driver)


async def test_waiters_are_served_first_come_first_served(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    order: list[int] = []

    async def client(i: int) -> None:
        conn = await pool.acquire()
        order.append(i)
        await pool.release(conn)

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(client(i)))
        await spin(2)  # each queues before the next starts
    assert pool.stats().waiting == 6
    await pool.release(held)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4, 5]
    assert driver.opened == 1
    await close_clean(pool, driver)


async def test_pool_timeout_raises_with_the_numbers(driver: AsyncFakeDriver) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    with pytest.raises(sqlgate.PoolTimeout) as info:
        await pool.acquire(timeout=0.01)
    assert str(info.value) == (
        "t: no connection after 0.01 s (max_open=1, in_use=1, waiting=0)"
    )
    assert info.value.__cause__ is None
    assert isinstance(info.value, TimeoutError)
    s = pool.stats()
    assert (s.timeouts, s.waiting, s.in_use) == (1, 0, 1)
    assert_ledger(pool, driver)
    await pool.release(held)
    await close_clean(pool, driver)


async def test_zero_timeout_fails_at_once_and_the_dial_lands_idle(
    gated_driver: AsyncFakeDriver,
) -> None:
    driver = gated_driver
    pool = make(driver)
    with pytest.raises(sqlgate.PoolTimeout, match=r"after 0\.00 s"):
        await pool.acquire(timeout=0)
    await until(lambda: len(driver.pending) == 1, "the dial to start")
    assert pool.stats().dialing == 1
    driver.pending[0].land()
    await until(lambda: pool.stats().idle == 1, "the dial to land idle")
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_pool_timeout_chains_the_last_dial_error(
    gated_driver: AsyncFakeDriver,
) -> None:
    driver = gated_driver
    pool = make(driver, max_open=1)
    first = asyncio.create_task(pool.acquire())
    await until(lambda: len(driver.pending) == 1, "the first dial")
    refused = ConnectionRefusedError("db down")
    driver.pending[0].fail(refused)
    with pytest.raises(sqlgate.ConnectError) as failed:
        await first
    assert failed.value.__cause__ is refused
    # The next caller's dial hangs; its timeout says why the pool is empty.
    with pytest.raises(sqlgate.PoolTimeout) as info:
        await pool.acquire(timeout=0.02)
    assert info.value.__cause__ is refused
    assert_ledger(pool, driver)
    driver.pending[0].land()
    await until(lambda: pool.stats().idle == 1, "the late dial to land idle")
    await close_clean(pool, driver)


async def test_dial_failure_is_a_connect_error_with_the_cause(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver)
    boom = OSError("connection refused")
    driver.fail_with = [boom]
    with pytest.raises(sqlgate.ConnectError, match="t: connect failed") as info:
        await pool.acquire()
    assert info.value.__cause__ is boom
    s = pool.stats()
    assert (s.dial_failures, s.open_connections, s.waiting) == (1, 0, 0)
    conn = await pool.acquire()  # the next dial works
    await pool.release(conn)
    await close_clean(pool, driver)


async def test_aconnect_returning_none_is_a_programming_error(
    driver: AsyncFakeDriver,
) -> None:
    async def none() -> None:
        return None

    pool: AsyncPool[None] = AsyncPool(none)
    with pytest.raises(TypeError, match=r"aconnect\(\) returned None"):
        await pool.acquire()
    assert pool.stats().dial_failures == 0  # not an outage (issue 14)
    await pool.close()
    assert pool.stats().open_connections == 0


async def test_go_6593_a_dial_landing_after_its_waiter_was_served(
    gated_driver: AsyncFakeDriver,
) -> None:
    driver = gated_driver
    pool = make(driver, max_open=3)
    first = asyncio.create_task(pool.acquire())
    await until(lambda: len(driver.pending) == 1, "dial 1")
    driver.pending[0].land()
    a = await first
    # B waits for dial 2; a release serves B before dial 2 lands.
    b_task = asyncio.create_task(pool.acquire())
    await until(lambda: len(driver.pending) == 1, "dial 2")
    await pool.release(a)
    b = await b_task
    assert b is a
    assert pool.stats().dialing == 1
    assert_ledger(pool, driver)
    # C queues behind dial 2 (no new dial: the one in flight covers it).
    c_task = asyncio.create_task(pool.acquire())
    await spin()
    assert (pool.stats().waiting, pool.stats().dialing) == (1, 1)
    driver.pending[0].land()
    c = await c_task
    assert c.number == 2
    assert driver.attempts == 2
    assert_ledger(pool, driver)
    # And with nobody waiting, a late dial lands idle instead of vanishing.
    d_task = asyncio.create_task(pool.acquire())
    await until(lambda: len(driver.pending) == 1, "dial 3")
    await pool.release(c)
    assert await d_task is c
    driver.pending[0].land()
    await until(lambda: pool.stats().idle == 1, "dial 3 to land idle")
    assert_ledger(pool, driver)
    await pool.release(b)
    await pool.release(c)
    await close_clean(pool, driver)


@pytest.mark.parametrize("how", ["wait_for", "timeout"])
async def test_asyncio_timeouts_around_acquire_leak_nothing(
    driver: AsyncFakeDriver, how: str
) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()

    async def bounded() -> None:
        if how == "wait_for":
            await asyncio.wait_for(pool.acquire(), 0.01)
        else:
            async with asyncio.timeout(0.01):
                await pool.acquire()

    with pytest.raises(TimeoutError) as info:
        await bounded()
    assert not isinstance(info.value, sqlgate.PoolTimeout)
    s = pool.stats()
    assert (s.waiting, s.in_use, s.timeouts) == (0, 1, 0)
    await pool.release(held)
    assert pool.stats().idle == 1
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_close_fails_waiters_and_later_acquires(
    gated_driver: AsyncFakeDriver,
) -> None:
    driver = gated_driver
    pool = make(driver, max_open=1)
    waiter = asyncio.create_task(pool.acquire())
    await until(lambda: len(driver.pending) == 1, "the dial")
    closing = asyncio.create_task(pool.close())
    with pytest.raises(sqlgate.PoolClosed, match="t was closed while waiting"):
        await waiter
    await spin()
    assert not closing.done()  # close() waits for the dial in flight
    driver.pending[0].land()
    await closing
    with pytest.raises(sqlgate.PoolClosed):
        await pool.acquire()
    await close_clean(pool, driver)


async def test_release_after_close_closes_the_connection(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver)
    conn = await pool.acquire()
    conn.in_transaction = True
    await pool.close()
    assert pool.stats().in_use == 1
    await pool.release(conn)
    assert conn.rollbacks == 0  # closing it anyway: no round trip
    await close_clean(pool, driver)


async def test_rollback_only_when_a_transaction_may_be_open(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver)
    conn = await pool.acquire()
    await pool.release(conn)
    assert conn.rollbacks == 0
    conn = await pool.acquire()
    conn.in_transaction = True
    await pool.release(conn)
    assert (conn.rollbacks, conn.in_transaction) == (1, False)
    assert pool.stats().idle == 1
    await close_clean(pool, driver)


async def test_no_rollback_when_switched_off(driver: AsyncFakeDriver) -> None:
    pool = make(driver, rollback_on_return=False)
    conn = await pool.acquire()
    conn.in_transaction = True
    await pool.release(conn)
    assert conn.rollbacks == 0
    await close_clean(pool, driver)


async def test_failed_rollback_discards_the_connection(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver)
    conn = await pool.acquire()
    conn.in_transaction = True
    conn.rollback_error = OSError("link lost")
    await pool.release(conn)
    await spin()
    s = pool.stats()
    assert (s.idle, s.in_use, s.broken_closed, s.closed) == (0, 0, 1, 1)
    assert conn.closes == 1
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_reset_hook_runs_and_a_failing_one_discards(
    driver: AsyncFakeDriver, kind: str
) -> None:
    seen: list[int] = []

    def sync_reset(conn: AsyncFakeConn) -> None:
        seen.append(conn.number)
        if conn.number == 2:
            raise RuntimeError("reset failed")

    async def async_reset(conn: AsyncFakeConn) -> None:
        await asyncio.sleep(0)
        sync_reset(conn)

    pool = make(driver, reset=sync_reset if kind == "sync" else async_reset)
    a = await pool.acquire()
    b = await pool.acquire()
    await pool.release(a)
    await pool.release(b)
    await spin()
    assert seen == [1, 2]
    s = pool.stats()
    assert (s.idle, s.broken_closed) == (1, 1)
    assert b.closes == 1
    await close_clean(pool, driver)


async def test_released_broken_is_closed(driver: AsyncFakeDriver) -> None:
    pool = make(driver)
    conn = await pool.acquire()
    conn.in_transaction = True
    await pool.release(conn, broken=True)
    await spin()
    assert conn.rollbacks == 0
    assert (pool.stats().broken_closed, conn.closes) == (1, 1)
    await close_clean(pool, driver)


async def test_foreign_or_double_release_is_refused(driver: AsyncFakeDriver) -> None:
    pool = make(driver)
    conn = await pool.acquire()
    await pool.release(conn)
    before = pool.stats()
    with pytest.raises(ValueError, match="not in use"):
        await pool.release(conn)
    with pytest.raises(ValueError, match="not a connection of this pool"):
        await pool.release(AsyncFakeConn(driver, 99))
    assert pool.stats() == before
    await close_clean(pool, driver)


async def test_bad_arguments_are_named(driver: AsyncFakeDriver) -> None:
    with pytest.raises(TypeError, match="aconnect must be callable"):
        AsyncPool(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_open must be >= 0, got -1"):
        make(driver, max_open=-1)
    with pytest.raises(TypeError, match="reset must be callable"):
        make(driver, reset=3)
    with pytest.raises(ValueError, match="acquire_timeout"):
        make(driver, acquire_timeout=-1)
    pool = make(driver, max_open=1)
    with pytest.raises(ValueError, match="timeout must be >= 0 seconds or None"):
        await pool.acquire(timeout=-1)
    with pytest.raises(TypeError, match="timeout must be a number"):
        await pool.acquire(timeout="5")  # type: ignore[arg-type]
    assert pool.stats().wait_count == 0  # refused before queueing
    with pytest.raises(ValueError, match="min_idle=5 exceeds the idle cap"):
        await pool.set_min_idle_conns(5)
    await close_clean(pool, driver)


async def test_too_many_waiters(driver: AsyncFakeDriver) -> None:
    pool = make(driver, max_open=1, max_waiting=1)
    held = await pool.acquire()
    queued = asyncio.create_task(pool.acquire())
    await spin()
    with pytest.raises(sqlgate.TooManyWaiters, match="max_waiting=1"):
        await pool.acquire()
    await pool.release(held)
    await pool.release(await queued)
    await close_clean(pool, driver)


async def test_setters_take_effect_at_once(driver: AsyncFakeDriver) -> None:
    pool = make(driver, max_open=3, max_idle=3)
    conns = [await pool.acquire() for _ in range(3)]
    for conn in conns:
        await pool.release(conn)
    assert pool.stats().idle == 3
    await pool.set_max_idle_conns(1)
    await spin()
    assert (pool.stats().idle, pool.stats().max_idle_closed, driver.closed) == (1, 2, 2)
    await pool.set_max_open_conns(1)
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await spin()
    assert pool.stats().waiting == 1
    await pool.set_max_open_conns(2)  # room for one more: dial for the waiter
    other = await waiter
    assert other is not held
    await pool.set_max_connecting(0)
    await pool.set_conn_max_lifetime(None)
    await pool.set_conn_max_idle_time(None)
    await pool.set_min_idle_conns(0)
    await pool.release(held)
    await pool.release(other)
    await spin()  # the surplus one's close task runs
    pool._core.check()
    assert (pool.stats().open_connections, len(driver.live)) == (1, 1)
    await close_clean(pool, driver)


async def test_min_idle_is_dialed_on_first_use(driver: AsyncFakeDriver) -> None:
    async with make(driver, min_idle=2, max_idle=2) as pool:
        await until(lambda: pool.stats().idle == 2, "the warm floor")
        assert driver.opened == 2
        conn = await pool.acquire()
        await until(lambda: pool.stats().idle == 2, "the floor refilled")
        await pool.release(conn)
        assert pool.stats().idle == 2  # idle cap 2: the third is closed
        await spin()
        assert driver.closed == 1
    assert driver.live == set()


async def test_idle_time_expiry_runs_in_the_background(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver, conn_max_idle_time=0.02)
    conn = await pool.acquire()
    await pool.release(conn)
    assert pool.stats().idle == 1
    await eventually(lambda: pool.stats().max_idle_time_closed == 1, "the sweep")
    await until(lambda: driver.closed == 1, "the close")
    assert pool._maintenance is not None
    assert not pool._maintenance.done()
    await close_clean(pool, driver)
    assert pool._maintenance.done()


async def test_no_maintenance_task_without_the_knobs(driver: AsyncFakeDriver) -> None:
    pool = make(driver)
    await pool.release(await pool.acquire())
    assert pool._maintenance is None
    await pool.set_conn_max_lifetime(10)
    assert pool._maintenance is not None
    await close_clean(pool, driver)


async def test_repr_and_stats(driver: AsyncFakeDriver) -> None:
    pool = make(driver, max_open=4)
    conn = await pool.acquire()
    assert repr(pool) == "<sqlgate.AsyncPool 't' open open=1 in_use=1 idle=0 waiting=0>"
    await pool.release(conn)
    await close_clean(pool, driver)
    assert "closed" in repr(pool)


async def test_a_driver_that_cannot_say_is_rolled_back_every_time() -> None:
    class Bare:
        def __init__(self) -> None:
            self.rollbacks = 0

        def rollback(self) -> None:  # a plain (sync) method is fine too
            self.rollbacks += 1

        def close(self) -> None:
            pass

    async def aconnect() -> Bare:
        return Bare()

    pool = AsyncPool(aconnect)
    conn = await pool.acquire()
    await pool.release(conn)
    await pool.release(await pool.acquire())
    assert conn.rollbacks == 2
    await pool.close()
    assert pool.stats().open_connections == 0


async def test_psycopg_status_decides_rollback_or_discard() -> None:
    class Info:
        transaction_status = 0

    class PsycopgLike:
        def __init__(self) -> None:
            self.info = Info()
            self.rollbacks = 0

        async def rollback(self) -> None:
            self.rollbacks += 1

        async def close(self) -> None:
            pass

    async def aconnect() -> PsycopgLike:
        return PsycopgLike()

    pool = AsyncPool(aconnect, max_idle=4)
    conn = await pool.acquire()
    for status, rollbacks, closed in [(0, 0, 0), (2, 1, 0), (3, 2, 0), (1, 2, 1)]:
        conn.info.transaction_status = status  # IDLE, INTRANS, INERROR, ACTIVE
        await pool.release(conn)
        await spin()
        assert (conn.rollbacks, pool.stats().closed) == (rollbacks, closed), status
        if not closed:
            assert await pool.acquire() is conn
    await pool.close()
    assert pool.stats().open_connections == 0


async def test_issue16_timeout_at_capacity_only_spares_a_caller_waiting_for_its_dial(
    gated_driver: AsyncFakeDriver,
) -> None:
    driver = gated_driver
    pool = make(driver, max_open=1, acquire_timeout=0, timeout_at_capacity_only=True)
    first = asyncio.create_task(pool.acquire())
    await until(lambda: len(driver.pending) == 1, "the dial to start")
    await spin()  # a timed wait of 0 would have ended by now
    assert not first.done()
    assert pool.stats().waiting == 1
    # At max_open, the timeout applies: the second caller fails at once.
    with pytest.raises(sqlgate.PoolTimeout, match=r"after 0\.00 s"):
        await pool.acquire()
    driver.pending[0].land()
    conn = await first
    s = pool.stats()
    assert (s.timeouts, s.in_use, s.waiting) == (1, 1, 0)
    assert_ledger(pool, driver)
    await pool.release(conn)
    await close_clean(pool, driver)


async def test_issue16_timeout_at_capacity_only_must_be_a_bool(
    driver: AsyncFakeDriver,
) -> None:
    with pytest.raises(TypeError, match="timeout_at_capacity_only must be a bool"):
        make(driver, timeout_at_capacity_only=1)
