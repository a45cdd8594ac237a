"""AsyncPool's acquire deadlines: one timer for the pool, exact to the tick.

The loop's clock is a fake one set on the running loop's instance (the pool
reads the loop's clock, and asyncio runs a timer once the loop's ``time()``
reaches it), so every deadline is hit exactly: the test moves the clock, lets
the loop run a few rounds (``spin``: no real waiting, there is always a ready
callback) and checks who timed out. A task is awaited only once it is done.
"""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

import sqlgate
from sqlgate.aiopool import AsyncPool, _loop_primitives
from tests.aio.fakes import (
    AsyncFakeConn,
    AsyncFakeDriver,
    FakeClock,
    assert_ledger,
    close_clean,
    spin,
    until,
)

Pool = AsyncPool[AsyncFakeConn]
T0 = 1000.0


def make(driver: AsyncFakeDriver, **knobs: object) -> Pool:
    return AsyncPool(driver.aconnect, name="d", **knobs)  # type: ignore[arg-type]


def loop_clock() -> FakeClock:
    """Put a fake clock on the running loop (before the pool first runs)."""
    clock = FakeClock(T0)
    asyncio.get_running_loop().time = clock  # type: ignore[method-assign]
    return clock


async def queue(pool: Pool, limit: float | None = None) -> asyncio.Task[AsyncFakeConn]:
    """Start ``pool.acquire(limit)`` and let it queue."""
    waiting = pool.stats().waiting
    task = asyncio.create_task(pool.acquire(limit))
    await until(lambda: pool.stats().waiting == waiting + 1, "the waiter to queue")
    return task


async def at(clock: FakeClock, now: float) -> None:
    """Move the loop's clock to ``now`` and let due timers and wake-ups run."""
    clock.now = now
    await spin(5)


def pending_timers() -> int:
    """Timers scheduled on the running loop and not cancelled."""
    loop = asyncio.get_running_loop()
    return sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]


async def test_a_waiter_times_out_exactly_at_its_deadline(
    driver: AsyncFakeDriver,
) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire()
    task = await queue(pool)
    await at(clock, T0 + 9.5)
    assert not task.done()
    await at(clock, T0 + 10)  # the deadline is exactly now: due
    assert task.done()
    with pytest.raises(sqlgate.PoolTimeout, match=r"^d: no connection after 10\.00 s"):
        await task
    s = pool.stats()
    assert (s.timeouts, s.waiting, s.in_use) == (1, 0, 1)
    assert pool._deadlines.timer is None  # nothing left to wait for: disarmed
    assert_ledger(pool, driver)
    await pool.release(held)
    await close_clean(pool, driver)


async def test_a_waiter_served_just_before_its_deadline_keeps_it(
    driver: AsyncFakeDriver,
) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire()
    task = await queue(pool)
    clock.now = T0 + 9.999
    await pool.release(held)  # served; it has not run yet
    clock.now = T0 + 10  # the timer is due in the same loop round
    await spin(5)
    assert task.done()
    assert await task is held
    assert pool.stats().timeouts == 0
    await pool.release(held)
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_waiters_with_the_same_deadline_time_out_together(
    driver: AsyncFakeDriver,
) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=5)
    held = await pool.acquire()
    tasks = [await queue(pool) for _ in range(3)]
    assert pending_timers() == 1
    await at(clock, T0 + 5)
    assert all(t.done() for t in tasks)
    for task in tasks:
        with pytest.raises(sqlgate.PoolTimeout):
            await task
    assert pool.stats().timeouts == 3
    await pool.release(held)
    await close_clean(pool, driver)


async def test_a_wait_arms_no_timer_of_its_own(driver: AsyncFakeDriver) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=30)
    held = await pool.acquire()
    tasks = []
    for i in range(50):
        clock.now = T0 + i * 0.01
        tasks.append(await queue(pool))
    assert pending_timers() == 1
    for task in tasks:  # each is handed the connection in turn
        await pool.release(held)
        await until(task.done, "the hand-off")
        assert await task is held
    assert pending_timers() == 1  # armed for the first deadline, still
    await at(clock, T0 + 30)  # fires, finds nobody due, stays disarmed
    assert pending_timers() == 0
    assert (len(pool._deadlines.records), len(pool._deadlines.early)) == (0, 0)
    assert pool.stats().timeouts == 0
    await pool.release(held)
    await close_clean(pool, driver)


async def test_per_call_timeouts_shorter_longer_and_infinite(
    driver: AsyncFakeDriver,
) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire()
    default = await queue(pool)  # deadline T0 + 10
    clock.now = T0 + 1
    shorter = await queue(pool, 2)  # T0 + 3, before the last one
    longer = await queue(pool, 20)  # T0 + 21
    forever = await queue(pool, math.inf)
    await at(clock, T0 + 2.999)
    assert not any(t.done() for t in (default, shorter, longer, forever))
    await at(clock, T0 + 3)
    assert shorter.done()
    with pytest.raises(sqlgate.PoolTimeout, match=r"after 2\.00 s"):
        await shorter
    assert not any(t.done() for t in (default, longer, forever))
    await at(clock, T0 + 9.999)
    assert not default.done()
    await at(clock, T0 + 10)
    with pytest.raises(sqlgate.PoolTimeout, match=r"after 10\.00 s"):
        await default
    await at(clock, T0 + 20.999)
    assert not longer.done()
    await at(clock, T0 + 21)
    with pytest.raises(sqlgate.PoolTimeout, match=r"after 20\.00 s"):
        await longer
    await at(clock, T0 + 1e9)
    assert not forever.done()
    assert pending_timers() == 0
    assert pool.stats().timeouts == 3
    await pool.release(held)
    await until(forever.done, "the hand-off")
    assert await forever is held
    await pool.release(held)
    await close_clean(pool, driver)


async def test_an_earlier_deadline_moves_a_timer_armed_for_a_served_one(
    driver: AsyncFakeDriver,
) -> None:
    # The timer is armed for a waiter that was served since; a new waiter
    # whose deadline comes before it must bring the timer forward.
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire()  # it waited for the dial: timer at T0 + 10
    await at(clock, T0 + 10)  # fires for nobody, and disarms
    assert pool._deadlines.timer is None
    first = await queue(pool, 20)  # T0 + 30: the timer
    await pool.release(held)
    await until(first.done, "the hand-off")
    held = await first
    assert (len(pool._deadlines.records), pool._deadlines.at) == (1, T0 + 30)
    clock.now = T0 + 11
    second = await queue(pool, 4)  # T0 + 15
    assert (pending_timers(), pool._deadlines.at) == (1, T0 + 15)
    await at(clock, T0 + 14.999)
    assert not second.done()
    await at(clock, T0 + 15)
    with pytest.raises(sqlgate.PoolTimeout, match=r"after 4\.00 s"):
        await second
    await pool.release(held)
    await close_clean(pool, driver)


async def test_a_waiter_timed_out_from_the_middle_of_the_queue(
    driver: AsyncFakeDriver,
) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire()
    first = await queue(pool)  # T0 + 10
    clock.now = T0 + 1
    middle = await queue(pool, 3)  # T0 + 4
    clock.now = T0 + 2
    last = await queue(pool)  # T0 + 12
    await at(clock, T0 + 4)
    with pytest.raises(sqlgate.PoolTimeout):
        await middle
    assert not first.done()
    assert not last.done()
    assert pool._deadlines.at == T0 + 10  # re-armed for the next live deadline
    await at(clock, T0 + 9.999)
    assert not first.done()
    await at(clock, T0 + 10)
    with pytest.raises(sqlgate.PoolTimeout):
        await first
    assert not last.done()
    await pool.release(held)  # the queue is still first come, first served
    await until(last.done, "the hand-off")
    assert await last is held
    await at(clock, T0 + 12)
    assert pool.stats().timeouts == 2
    await pool.release(held)
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_cancelling_the_head_waiter_leaves_the_next_deadline(
    driver: AsyncFakeDriver,
) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire()
    head = await queue(pool)  # T0 + 10: the timer
    clock.now = T0 + 5
    second = await queue(pool)  # T0 + 15
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head
    await at(clock, T0 + 10)  # the timer fires for the head, which left
    assert not second.done()
    assert pool._deadlines.at == T0 + 15
    await at(clock, T0 + 14.999)
    assert not second.done()
    await at(clock, T0 + 15)
    with pytest.raises(sqlgate.PoolTimeout):
        await second
    s = pool.stats()
    assert (s.timeouts, s.waiting) == (1, 0)
    await pool.release(held)
    await close_clean(pool, driver)


async def test_cancelling_an_early_waiter_the_timer_was_armed_for(
    driver: AsyncFakeDriver,
) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire()
    later = await queue(pool)  # T0 + 10
    early = await queue(pool, 1)  # T0 + 1, in the heap: the timer
    assert pool._deadlines.at == T0 + 1
    early.cancel()
    with pytest.raises(asyncio.CancelledError):
        await early
    await at(clock, T0 + 1)
    assert not later.done()
    assert pool._deadlines.at == T0 + 10
    await at(clock, T0 + 10)
    with pytest.raises(sqlgate.PoolTimeout):
        await later
    assert pool.stats().timeouts == 1
    await pool.release(held)
    await close_clean(pool, driver)


async def test_zero_timeout_times_out_at_once_without_a_timer(
    driver: AsyncFakeDriver,
) -> None:
    loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire(timeout=math.inf)  # waits for its dial, no deadline
    assert pending_timers() == 0
    with pytest.raises(sqlgate.PoolTimeout, match=r"after 0\.00 s"):
        await pool.acquire(timeout=0)
    assert pending_timers() == 0
    await pool.release(held)
    await close_clean(pool, driver)


async def test_records_of_settled_waiters_do_not_pile_up(
    driver: AsyncFakeDriver,
) -> None:
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=30)
    held = await pool.acquire()
    for i in range(300):  # served ones: dropped from the front in batches
        clock.now = T0 + i * 0.001
        task = await queue(pool)
        await pool.release(held)
        await until(task.done, "the hand-off")
        held = await task
        assert len(pool._deadlines) <= 2 * 1 + 64 + 1
    stuck = await queue(pool)  # heads the queue for the rest of the test
    for i in range(300):
        clock.now = T0 + 1 + i * 0.001
        task = await queue(pool, 30 + i)
        task.cancel()  # cancelled behind the head: swept once they pile up
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(pool._deadlines) <= 2 * 1 + 64 + 1
    for _ in range(300):  # shorter per-call timeouts: the heap
        task = await queue(pool, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(pool._deadlines) <= 2 * 1 + 64 + 1
    await pool.release(held)
    await until(stuck.done, "the hand-off")
    held = await stuck
    assert pool.stats().timeouts == 0
    await pool.release(held)
    await close_clean(pool, driver)


async def test_close_disarms_the_timer(driver: AsyncFakeDriver) -> None:
    loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire()
    task = await queue(pool)
    assert pending_timers() == 1
    await pool.close()
    with pytest.raises(sqlgate.PoolClosed):
        await task
    assert pending_timers() == 0
    assert (pool._deadlines.timer, len(pool._deadlines.records)) == (None, 0)
    await pool.release(held)
    await close_clean(pool, driver)


async def test_a_real_clock_deadline_still_fires(driver: AsyncFakeDriver) -> None:
    pool = make(driver, max_open=1)
    held = await pool.acquire()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(sqlgate.PoolTimeout):
        await pool.acquire(timeout=0.02)
    assert loop.time() - started >= 0.02
    await pool.release(held)
    await close_clean(pool, driver)


async def test_the_stock_loop_uses_its_clock_and_future_directly() -> None:
    loop = asyncio.get_running_loop()
    clock, new_future = _loop_primitives(loop)
    assert clock is time.monotonic
    fut = new_future()
    assert type(fut) is asyncio.Future
    assert fut.get_loop() is loop
    fake = loop_clock()
    assert _loop_primitives(loop)[0] is fake


@pytest.mark.parametrize("seed", range(25))
async def test_random_schedules_time_out_exactly_when_due(
    driver: AsyncFakeDriver, seed: int
) -> None:
    # Waiters with assorted timeouts queue, are cancelled, served in turn and
    # time out as the clock moves in uneven steps; after every step each one
    # is exactly where a plain model of the rules says it must be.
    rng = random.Random(seed)
    clock = loop_clock()
    pool = make(driver, max_open=1, acquire_timeout=10)
    held = await pool.acquire(timeout=math.inf)
    tasks: list[asyncio.Task[AsyncFakeConn]] = []
    deadlines: list[float] = []  # math.inf: waits forever
    fate: list[str] = []  # waiting, served, cancelled, timed out
    for _ in range(40):
        action = rng.choice(["queue", "queue", "tick", "tick", "cancel", "serve"])
        if action == "queue":
            limit = rng.choice([None, None, 0.5, 1.0, 5.0, 20.0, math.inf])
            tasks.append(await queue(pool, limit))
            span = 10.0 if limit is None else limit
            deadlines.append(clock.now + span)
            fate.append("waiting")
        elif action == "tick":
            clock.now += rng.choice([0.0, 0.25, 0.5, 1.0, 3.0])
            for i, deadline in enumerate(deadlines):
                if fate[i] == "waiting" and deadline <= clock.now:
                    fate[i] = "timed out"
        elif action == "cancel":
            live = [i for i, f in enumerate(fate) if f == "waiting"]
            if live:
                i = rng.choice(live)
                tasks[i].cancel()
                fate[i] = "cancelled"
        else:
            live = [i for i, f in enumerate(fate) if f == "waiting"]
            if live:
                await pool.release(held)
                fate[live[0]] = "served"  # first come, first served
        await spin(5)
        for i, task in enumerate(tasks):
            assert task.done() == (fate[i] != "waiting"), (i, fate[i], clock.now)
            if fate[i] == "cancelled":
                assert task.cancelled()
            elif fate[i] == "timed out":
                assert isinstance(task.exception(), sqlgate.PoolTimeout)
            elif fate[i] == "served":
                assert task.result() is held  # the one connection, passed on
        assert pool.stats().timeouts == fate.count("timed out")
        assert pool.stats().waiting == fate.count("waiting")
    assert_ledger(pool, driver)
    await pool.close()
    await pool.release(held)
    for i, task in enumerate(tasks):
        if fate[i] == "waiting":
            with pytest.raises(sqlgate.PoolClosed):
                await task
    await close_clean(pool, driver)
