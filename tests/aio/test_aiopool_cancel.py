"""The cancellation matrix: a cancel at every await point of AsyncPool.

Each case drives a task to one await point (a gate, a gated dial, a queue),
checks the ledger there, interrupts it, checks that the interruption came out
as it should, then checks the ledger again and that ``close()`` leaves nothing.

Interruptions come three ways: ``task.cancel()``; an ``asyncio.timeout`` whose
deadline is moved to now (deterministic: no clock involved); and a cancel of a
task awaiting ``asyncio.wait_for``, which cancels the inner task it runs.
The "not resumed" cases cancel a task after its wait was settled (served,
failed, closed, timed out) but before it ran again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

import sqlgate
from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import (
    AsyncFakeConn,
    AsyncFakeDriver,
    AsyncGate,
    assert_ledger,
    close_clean,
    spin,
    until,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

Pool = AsyncPool[AsyncFakeConn]
KINDS = ["cancel", "timeout", "wait_for"]


def make(driver: AsyncFakeDriver, **knobs: object) -> Pool:
    return AsyncPool(driver.aconnect, name="m", **knobs)  # type: ignore[arg-type]


async def interrupt(
    kind: str,
    op: Callable[[], Awaitable[object]],
    reached: Callable[[], bool],
    at_point: Callable[[], None],
) -> None:
    """Run ``op`` in a task until ``reached``, check, interrupt it by ``kind``."""
    scopes: list[asyncio.Timeout] = []

    async def wrapped() -> None:
        if kind == "timeout":
            async with asyncio.timeout(None) as scope:
                scopes.append(scope)
                await op()
        elif kind == "wait_for":
            await asyncio.wait_for(op(), 3600)
        else:
            await op()

    task = asyncio.create_task(wrapped())
    await until(reached, "the await point")
    at_point()
    if kind == "timeout":
        scopes[0].reschedule(asyncio.get_running_loop().time())
        with pytest.raises(TimeoutError):
            await task
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- blocking await points, each interrupted three ways ----------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_acquire_queued_behind_a_held_connection(
    driver: AsyncFakeDriver, kind: str
) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    await interrupt(
        kind,
        pool.acquire,
        lambda: pool.stats().waiting == 1,
        lambda: assert_ledger(pool, driver),
    )
    s = pool.stats()
    assert (s.waiting, s.in_use, s.timeouts) == (0, 1, 0)
    await pool.release(held)
    assert pool.stats().idle == 1
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", KINDS)
async def test_acquire_waiting_on_its_dial_leaves_it_counted(
    gated_driver: AsyncFakeDriver, kind: str
) -> None:
    driver = gated_driver
    pool = make(driver, max_open=1)
    await interrupt(
        kind,
        pool.acquire,
        lambda: len(driver.pending) == 1,
        lambda: assert_ledger(pool, driver),
    )
    s = pool.stats()
    assert (s.waiting, s.dialing, s.open_connections) == (0, 1, 1)
    driver.pending[0].land()  # the dial was the pool's, not the caller's
    await until(lambda: pool.stats().idle == 1, "the dial to land idle")
    assert_ledger(pool, driver)
    conn = await pool.acquire(timeout=0)
    assert conn.number == 1
    await pool.release(conn)
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", KINDS)
async def test_acquire_through_connection_queued(
    driver: AsyncFakeDriver, kind: str
) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()

    async def op() -> None:
        async with pool.connection():
            raise AssertionError("never served")

    await interrupt(
        kind, op, lambda: pool.stats().waiting == 1, lambda: assert_ledger(pool, driver)
    )
    assert (pool.stats().waiting, pool.stats().in_use) == (0, 1)
    await pool.release(held)
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", KINDS)
async def test_release_interrupted_in_rollback_discards(
    driver: AsyncFakeDriver, kind: str
) -> None:
    pool = make(driver)
    conn = await pool.acquire()
    conn.in_transaction = True
    gate = driver.rollback_gate = AsyncGate()
    await interrupt(
        kind,
        lambda: pool.release(conn),
        lambda: gate.waiting == 1,
        lambda: assert_ledger(pool, driver),
    )
    # Never left in use: its state is unknown, so the pool closes it.
    s = pool.stats()
    assert (s.in_use, s.idle, s.broken_closed) == (0, 0, 1)
    await until(lambda: conn.closes == 1, "the discard")
    assert_ledger(pool, driver)
    with pytest.raises(ValueError, match="not a connection of this pool"):
        await pool.release(conn)
    gate.open()
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", KINDS)
async def test_release_interrupted_in_the_reset_hook_discards(
    driver: AsyncFakeDriver, kind: str
) -> None:
    gate = AsyncGate()

    async def reset(conn: AsyncFakeConn) -> None:
        await gate.hold()

    pool = make(driver, reset=reset)
    conn = await pool.acquire()
    await interrupt(
        kind,
        lambda: pool.release(conn),
        lambda: gate.waiting == 1,
        lambda: assert_ledger(pool, driver),
    )
    assert (pool.stats().in_use, pool.stats().broken_closed) == (0, 1)
    await until(lambda: conn.closes == 1, "the discard")
    gate.open()
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", KINDS)
async def test_connection_body_interrupted_gives_the_connection_back(
    driver: AsyncFakeDriver, kind: str
) -> None:
    pool = make(driver)
    body = AsyncGate()
    used: list[AsyncFakeConn] = []

    async def op() -> None:
        async with pool.connection() as conn:
            used.append(conn)
            conn.in_transaction = True
            await body.hold()

    await interrupt(
        kind, op, lambda: body.waiting == 1, lambda: assert_ledger(pool, driver)
    )
    (conn,) = used
    assert (conn.rollbacks, conn.in_transaction) == (1, False)
    s = pool.stats()
    assert (s.in_use, s.idle) == (0, 1)
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", KINDS)
async def test_connection_exit_interrupted_in_rollback_discards(
    driver: AsyncFakeDriver, kind: str
) -> None:
    pool = make(driver)
    gate = driver.rollback_gate = AsyncGate()

    async def op() -> None:
        async with pool.connection() as conn:
            conn.in_transaction = True

    await interrupt(
        kind, op, lambda: gate.waiting == 1, lambda: assert_ledger(pool, driver)
    )
    assert (pool.stats().in_use, pool.stats().broken_closed) == (0, 1)
    await until(lambda: driver.closed == 1, "the discard")
    gate.open()
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", KINDS)
async def test_close_interrupted_waiting_for_a_close(
    driver: AsyncFakeDriver, kind: str
) -> None:
    pool = make(driver)
    await pool.release(await pool.acquire())
    gate = driver.close_gate = AsyncGate()
    await interrupt(
        kind, pool.close, lambda: gate.waiting == 1, lambda: assert_ledger(pool, driver)
    )
    # The pool is closed and its close task runs on: nothing is skipped.
    s = pool.stats()
    assert pool.closed
    assert (s.idle, s.closing, s.open_connections) == (0, 1, 1)
    gate.open()
    await until(lambda: pool.stats().open_connections == 0, "the close to finish")
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


@pytest.mark.parametrize("kind", KINDS)
async def test_close_interrupted_waiting_for_a_dial(
    gated_driver: AsyncFakeDriver, kind: str
) -> None:
    driver = gated_driver
    pool = make(driver)
    waiter = asyncio.create_task(pool.acquire())
    await until(lambda: len(driver.pending) == 1, "the dial")
    await interrupt(
        kind,
        pool.close,
        lambda: pool.closed and waiter.done(),
        lambda: assert_ledger(pool, driver),
    )
    with pytest.raises(sqlgate.PoolClosed):
        await waiter
    assert pool.stats().dialing == 1
    driver.pending[0].land()  # lands into a closed pool: closed at once
    await until(lambda: driver.closed == 1, "the late dial to be closed")
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


# -- settled, but cancelled before it resumed ----------------------------------


async def queued(pool: Pool, n: int) -> list[asyncio.Task[AsyncFakeConn]]:
    """Start ``n`` acquires, each queued before the next."""
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(pool.acquire()))
        await spin(2)
    assert pool.stats().waiting == n
    return tasks


@pytest.mark.parametrize("behind", [0, 1])
async def test_served_by_a_release_but_cancelled_before_it_resumed(
    driver: AsyncFakeDriver, behind: int
) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    first, *rest = await queued(pool, 1 + behind)
    await pool.release(held)  # no await inside: hands it to ``first``
    s = pool.stats()
    assert (s.waiting, s.in_use, s.acquires) == (behind, 1, 2)  # served...
    assert not first.done()
    first.cancel()  # ...but cancelled before it ran again
    with pytest.raises(asyncio.CancelledError):
        await first
    assert_ledger(pool, driver)
    if behind:
        # The connection went on to the next in line (FIFO holds).
        assert await rest[0] is held
        await pool.release(held)
    s = pool.stats()
    assert (s.in_use, s.idle, s.waiting) == (0, 1, 0)
    assert driver.opened == 1
    await close_clean(pool, driver)


async def test_served_by_a_landing_dial_but_cancelled_before_it_resumed(
    gated_driver: AsyncFakeDriver,
) -> None:
    driver = gated_driver
    pool = make(driver)
    (task,) = await queued(pool, 1)
    await until(lambda: len(driver.pending) == 1, "the dial")
    driver.pending[0].land()
    # The dial task runs, hands the connection to the waiter; stop right there.
    await until(lambda: pool.stats().in_use == 1, "the hand-off")
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (pool.stats().in_use, pool.stats().idle) == (0, 1)
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_failed_dial_but_cancelled_before_it_resumed(
    gated_driver: AsyncFakeDriver,
) -> None:
    driver = gated_driver
    pool = make(driver)
    (task,) = await queued(pool, 1)
    await until(lambda: len(driver.pending) == 1, "the dial")
    driver.pending[0].fail(OSError("refused"))
    await until(lambda: pool.stats().waiting == 0, "the failure to reach it")
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = pool.stats()
    assert (s.dial_failures, s.open_connections, s.dialing) == (1, 0, 0)
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_pool_closed_but_cancelled_before_it_resumed(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    (task,) = await queued(pool, 1)
    closing = asyncio.create_task(pool.close())
    await until(lambda: pool.closed, "close() to start")
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await closing
    await pool.release(held)
    await close_clean(pool, driver)


async def test_timed_out_but_cancelled_before_it_resumed(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    (task,) = await queued(pool, 1)
    pool._time_out(pool._core._waiters[0])  # the pool's timer fires
    assert pool.stats().timeouts == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await pool.release(held)
    assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_served_then_the_timer_fires_before_it_resumed(
    driver: AsyncFakeDriver,
) -> None:
    # A hand-off and the pool's own timeout in the same loop round: the
    # hand-off came first, so it stands (no PoolTimeout, nothing lost).
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    (task,) = await queued(pool, 1)
    waiter = pool._core._waiters[0]
    await pool.release(held)
    pool._time_out(waiter)
    assert await task is held
    assert pool.stats().timeouts == 0
    await pool.release(held)
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_acquire_timeout_fires_while_served_by_nobody(
    driver: AsyncFakeDriver,
) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    (task,) = await queued(pool, 1)
    pool._time_out(pool._core._waiters[0])
    with pytest.raises(sqlgate.PoolTimeout):
        await task
    await pool.release(held)
    await close_clean(pool, driver)
