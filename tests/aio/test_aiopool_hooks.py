"""AsyncPool hooks (on_connect/on_acquire/on_release/on_close) and the observer.

Each hook may be a plain function or a coroutine function; a cancel while an
awaited hook runs counts as the hook failing: the connection is discarded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate import ConnectError, PoolTimeout
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
from tests.observe.helpers import Recorder

if TYPE_CHECKING:
    from collections.abc import Callable

Pool = AsyncPool[AsyncFakeConn]


class HookError(Exception):
    pass


def make(driver: AsyncFakeDriver, **knobs: Any) -> Pool:
    return AsyncPool(driver.aconnect, name="h", **knobs)


def recording(events: list[tuple[str, int]], kind: str, *, is_async: bool) -> Any:
    if is_async:

        async def ahook(conn: AsyncFakeConn) -> None:
            await asyncio.sleep(0)
            events.append((kind, conn.number))

        return ahook
    return lambda conn: events.append((kind, conn.number))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_hooks_run_in_life_cycle_order(is_async: bool) -> None:
    driver = AsyncFakeDriver()
    events: list[tuple[str, int]] = []
    pool = make(
        driver,
        on_connect=recording(events, "connect", is_async=is_async),
        on_acquire=recording(events, "acquire", is_async=is_async),
        on_release=recording(events, "release", is_async=is_async),
        on_close=recording(events, "close", is_async=is_async),
    )
    for _ in range(2):
        async with pool.connection():
            pass
    await close_clean(pool, driver)
    assert events == [
        ("connect", 1),
        ("acquire", 1),
        ("release", 1),
        ("acquire", 1),
        ("release", 1),
        ("close", 1),
    ]


async def test_on_connect_runs_in_the_dial_task_before_anyone_gets_it() -> None:
    driver = AsyncFakeDriver()
    tasks: list[asyncio.Task[Any] | None] = []

    async def configure(conn: AsyncFakeConn) -> None:
        tasks.append(asyncio.current_task())
        conn.configured = True  # type: ignore[attr-defined]

    pool = make(driver, on_connect=configure)
    conn = await pool.acquire()
    assert conn.configured  # type: ignore[attr-defined]
    assert tasks[0] is not asyncio.current_task()  # a pool task, not the caller
    await pool.release(conn)
    await close_clean(pool, driver)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_on_connect_raising_fails_the_dial_with_that_error(
    is_async: bool,
) -> None:
    driver = AsyncFakeDriver()
    boom = HookError("set search_path failed")

    def configure(conn: AsyncFakeConn) -> None:
        raise boom

    async def aconfigure(conn: AsyncFakeConn) -> None:
        raise boom

    pool = make(driver, on_connect=aconfigure if is_async else configure, max_open=1)
    with pytest.raises(ConnectError) as info:
        await pool.acquire()
    assert info.value.__cause__ is boom
    s = pool.stats()
    assert (s.dials, s.dial_failures, s.open_connections) == (0, 1, 0)
    assert (driver.opened, driver.closed) == (1, 1)  # the connection was closed
    await close_clean(pool, driver)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_on_acquire_raising_discards_and_surfaces(is_async: bool) -> None:
    driver = AsyncFakeDriver()
    calls = 0

    def check(conn: AsyncFakeConn) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise HookError("not usable")

    async def acheck(conn: AsyncFakeConn) -> None:
        check(conn)

    pool = make(driver, on_acquire=acheck if is_async else check, max_open=1)
    with pytest.raises(HookError, match="not usable"):
        await pool.acquire()
    await spin()
    s = pool.stats()
    assert (s.in_use, s.idle, s.broken_closed, s.closed) == (0, 0, 1, 1)
    conn = await pool.acquire()  # the slot was freed: a new dial serves it
    assert conn.number == 2
    await pool.release(conn)
    await close_clean(pool, driver)


async def test_cancel_during_async_on_acquire_discards_the_connection() -> None:
    driver = AsyncFakeDriver()
    gate = AsyncGate()
    pool = make(driver, on_acquire=lambda conn: gate.hold(), max_open=1)
    task = asyncio.create_task(pool.acquire())
    await until(lambda: gate.waiting == 1, "the hook to run")
    assert pool.stats().in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await spin()
    s = pool.stats()
    assert (s.in_use, s.idle, s.broken_closed, s.closed) == (0, 0, 1, 1)
    assert driver.conns[0].closes == 1
    assert_ledger(pool, driver)
    gate.open()
    conn = await pool.acquire()
    assert conn.number == 2
    await pool.release(conn)
    await close_clean(pool, driver)


async def test_cancel_during_async_on_connect_fails_the_dial_only() -> None:
    driver = AsyncFakeDriver()
    gate = AsyncGate()
    pool = make(driver, on_connect=lambda conn: gate.hold(), max_open=1)
    waiter = asyncio.create_task(pool.acquire())
    await until(lambda: gate.waiting == 1, "the hook to run")
    [dial] = pool._tasks
    dial.cancel()  # as at loop shutdown
    with pytest.raises(ConnectError, match="dial interrupted") as info:
        await waiter
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    await spin()
    s = pool.stats()
    assert (s.open_connections, s.dialing, s.dial_failures) == (0, 0, 1)
    assert (driver.opened, driver.closed) == (1, 1)
    gate.open()
    await close_clean(pool, driver)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_on_release_raising_discards_then_raises(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    driver = AsyncFakeDriver()

    def check(conn: AsyncFakeConn) -> None:
        raise HookError("dirty session")

    async def acheck(conn: AsyncFakeConn) -> None:
        raise HookError("dirty session")

    pool = make(driver, on_release=acheck if is_async else check)
    conn = await pool.acquire()
    conn.in_transaction = True
    caplog.set_level(logging.INFO, logger="sqlgate")
    with pytest.raises(HookError):
        await pool.release(conn)
    await spin()
    s = pool.stats()
    assert (s.in_use, s.idle, s.broken_closed) == (0, 0, 1)
    assert conn.closes == 1
    assert conn.rollbacks == 0  # discarded, so no rollback was attempted
    msgs = [r.getMessage() for r in caplog.records if r.name == "sqlgate"]
    assert any("h: discarding a connection: on_release raised" in m for m in msgs)
    await close_clean(pool, driver)


async def test_cancel_during_async_on_release_discards_the_connection() -> None:
    driver = AsyncFakeDriver()
    gate = AsyncGate()
    obs = Recorder()
    pool = make(driver, on_release=lambda conn: gate.hold(), observer=obs)
    conn = await pool.acquire()
    task = asyncio.create_task(pool.release(conn))
    await until(lambda: gate.waiting == 1, "the hook to run")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await spin()
    s = pool.stats()
    assert (s.in_use, s.idle, s.broken_closed, s.closed) == (0, 0, 1, 1)
    assert conn.closes == 1
    assert obs.count("used") == 1
    with pytest.raises(ValueError, match="not a connection of this pool"):
        await pool.release(conn)  # settled: a second release is refused
    gate.open()
    await close_clean(pool, driver)


async def test_on_release_is_skipped_for_a_broken_release() -> None:
    driver = AsyncFakeDriver()
    released: list[AsyncFakeConn] = []
    pool = make(driver, on_release=released.append)
    conn = await pool.acquire()
    await pool.release(conn, broken=True)
    assert released == []
    await spin()
    assert pool.stats().broken_closed == 1
    await close_clean(pool, driver)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_on_close_raising_is_logged_and_the_close_goes_ahead(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    driver = AsyncFakeDriver()

    def hook(conn: AsyncFakeConn) -> None:
        raise HookError("metrics down")

    async def ahook(conn: AsyncFakeConn) -> None:
        raise HookError("metrics down")

    pool = make(driver, on_close=ahook if is_async else hook)
    conn = await pool.acquire()
    caplog.set_level(logging.INFO, logger="sqlgate")
    await pool.release(conn, broken=True)
    await spin()
    assert conn.closes == 1
    assert pool.stats().closed == 1
    assert any(
        "h: error closing a connection: HookError('metrics down')" in r.getMessage()
        for r in caplog.records
    )
    await close_clean(pool, driver)


async def test_foreign_release_raises_before_any_hook() -> None:
    driver = AsyncFakeDriver()
    released: list[object] = []
    pool = make(driver, on_release=released.append)
    with pytest.raises(ValueError, match="not a connection of this pool"):
        await pool.release(AsyncFakeConn(driver, 99))
    assert released == []
    await close_clean(pool, driver)


@pytest.mark.parametrize("hook", ["on_connect", "on_acquire", "on_release", "on_close"])
def test_a_hook_that_is_not_callable_is_refused(hook: str) -> None:
    kwargs: dict[str, Any] = {hook: 42}
    with pytest.raises(TypeError, match=f"{hook} must be callable or None, got 42"):
        make(AsyncFakeDriver(), **kwargs)


async def test_plain_path_is_picked_without_hooks_observer_or_leak_tracking() -> None:
    driver = AsyncFakeDriver()
    pool = make(driver)
    assert "acquire" not in vars(pool)
    assert "release" not in vars(pool)
    obs = Recorder()
    pool.observer = obs
    assert pool.observer is obs
    assert vars(pool)["acquire"] == pool._acquire_hooked
    assert vars(pool)["release"] == pool._release_hooked
    pool.observer = None
    assert "acquire" not in vars(pool)
    on: list[Callable[..., Any]] = []
    for knobs in ({"on_acquire": on.append}, {"leak_threshold": 60.0}):
        hooked = make(driver, **knobs)
        assert "acquire" in vars(hooked)
        hooked.observer = None  # hooks or tracking keep the hooked path
        assert "acquire" in vars(hooked)
        await hooked.close()
    await close_clean(pool, driver)


async def test_observer_gets_exact_event_counts() -> None:
    driver = AsyncFakeDriver()
    obs = Recorder()
    pool = make(driver, max_open=1, observer=obs)
    conn = await pool.acquire()  # queued for the first dial: one wait, one create
    assert (obs.count("created"), obs.count("waited")) == (1, 1)
    with pytest.raises(PoolTimeout):
        await pool.acquire(timeout=0)
    assert (obs.count("timed_out"), obs.count("waited")) == (1, 2)
    with pytest.raises(PoolTimeout):
        await pool.acquire(timeout=0.001)
    assert (obs.count("timed_out"), obs.count("waited")) == (2, 3)

    queued = asyncio.create_task(pool.acquire(timeout=10))
    cancelled = asyncio.create_task(pool.acquire(timeout=10))
    await until(lambda: pool.stats().waiting == 2, "two waiters")
    cancelled.cancel()  # a cancelled wait is reported too, not as a timeout
    await pool.release(conn)  # handed straight to the queued task
    assert await queued is conn
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await pool.release(conn)
    for _ in range(3):  # the fast path: no wait is reported
        async with pool.connection():
            pass
    assert obs.count("waited") == 5
    assert obs.count("used") == 5
    assert obs.count("created") == 1
    assert obs.count("timed_out") == 2
    s = pool.stats()
    assert s.wait_count == obs.count("waited")
    assert s.timeouts == obs.count("timed_out")
    assert s.dials == obs.count("created")
    assert all(sec >= 0 for _, sec in obs.events if sec is not None)
    used = sum(sec for kind, sec in obs.events if kind == "used" and sec is not None)
    assert used <= s.use_duration  # measured just before the core does
    await close_clean(pool, driver)


async def test_close_from_inside_a_hook() -> None:
    driver = AsyncFakeDriver()
    holder: list[Pool] = []

    async def close_pool(conn: AsyncFakeConn) -> None:
        await holder[0].close()

    pool = make(driver, on_release=close_pool)
    holder.append(pool)
    conn = await pool.acquire()
    await pool.release(conn)
    assert pool.closed
    await close_clean(pool, driver)
