"""Pool hooks (on_connect/on_acquire/on_release/on_close) and the observer.

The threaded twin of tests/aio/test_aiopool_hooks.py.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from sqlgate import ConnectError, Pool, PoolTimeout
from tests.fakes import FakeConn, FakeDriver, wait_until
from tests.observe.helpers import Recorder, close_clean, settle


class HookError(Exception):
    pass


def test_hooks_run_in_life_cycle_order() -> None:
    driver = FakeDriver()
    events: list[tuple[str, int]] = []

    def rec(kind: str) -> Any:
        return lambda conn: events.append((kind, conn.number))

    pool = Pool(
        driver.connect,
        on_connect=rec("connect"),
        on_acquire=rec("acquire"),
        on_release=rec("release"),
        on_close=rec("close"),
    )
    conn = pool.acquire()
    pool.release(conn)
    conn = pool.acquire()
    pool.release(conn)
    close_clean(pool, driver)
    assert events == [
        ("connect", 1),
        ("acquire", 1),
        ("release", 1),
        ("acquire", 1),
        ("release", 1),
        ("close", 1),
    ]


def test_on_connect_runs_before_the_connection_is_offered() -> None:
    driver = FakeDriver()
    seen: list[str] = []

    def configure(conn: FakeConn) -> None:
        conn.in_transaction = False
        seen.append(threading.current_thread().name)
        conn.configured = True  # type: ignore[attr-defined]

    pool = Pool(driver.connect, on_connect=configure, name="cfg")
    conn = pool.acquire()
    assert conn.configured  # type: ignore[attr-defined]
    assert seen == ["sqlgate-dial cfg"]  # the dialing thread, not the caller
    pool.release(conn)
    close_clean(pool, driver)


def test_on_connect_raising_fails_the_dial_with_that_error() -> None:
    driver = FakeDriver()
    boom = HookError("set search_path failed")

    def configure(conn: FakeConn) -> None:
        raise boom

    pool = Pool(driver.connect, on_connect=configure, max_open=1)
    with pytest.raises(ConnectError) as info:
        pool.acquire()
    assert info.value.__cause__ is boom
    settle(pool)
    s = pool.stats()
    assert (s.dials, s.dial_failures, s.open_connections) == (0, 1, 0)
    assert (driver.opened, driver.closed) == (1, 1)  # the connection was closed
    close_clean(pool, driver)


def test_on_acquire_raising_discards_and_surfaces() -> None:
    driver = FakeDriver()
    calls = 0

    def check(conn: FakeConn) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise HookError("not usable")

    pool = Pool(driver.connect, on_acquire=check, max_open=1)
    with pytest.raises(HookError, match="not usable"):
        pool.acquire()
    settle(pool)
    s = pool.stats()
    assert (s.in_use, s.idle, s.broken_closed, s.closed) == (0, 0, 1, 1)
    conn = pool.acquire()  # the slot was freed: a new dial serves it
    assert conn.number == 2
    pool.release(conn)
    close_clean(pool, driver)


def test_on_release_raising_discards_then_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()

    def check(conn: FakeConn) -> None:
        raise HookError("dirty session")

    pool = Pool(driver.connect, on_release=check, name="rel")
    conn = pool.acquire()
    with caplog.at_level(logging.INFO, logger="sqlgate"), pytest.raises(HookError):
        pool.release(conn)
    settle(pool)
    s = pool.stats()
    assert (s.in_use, s.idle, s.broken_closed) == (0, 0, 1)
    assert conn.closes == 1
    assert conn.rollbacks == 0  # discarded, so no rollback was attempted
    msgs = [r.getMessage() for r in caplog.records if r.name == "sqlgate"]
    assert any("rel: discarding a connection: on_release raised" in m for m in msgs)
    close_clean(pool, driver)


def test_on_release_is_skipped_for_a_broken_release() -> None:
    driver = FakeDriver()
    released: list[FakeConn] = []
    pool = Pool(driver.connect, on_release=released.append)
    conn = pool.acquire()
    pool.release(conn, broken=True)
    assert released == []
    settle(pool)
    assert pool.stats().broken_closed == 1
    close_clean(pool, driver)


def test_on_close_raising_is_logged_and_the_close_goes_ahead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()

    def hook(conn: FakeConn) -> None:
        raise HookError("metrics down")

    pool = Pool(driver.connect, on_close=hook, name="cl")
    conn = pool.acquire()
    with caplog.at_level(logging.INFO, logger="sqlgate"):
        pool.release(conn, broken=True)
        settle(pool)
    assert conn.closes == 1
    assert pool.stats().closed == 1
    assert any(
        "cl: error closing a connection: HookError('metrics down')" in r.getMessage()
        for r in caplog.records
    )
    close_clean(pool, driver)


def test_foreign_release_raises_before_any_hook() -> None:
    driver = FakeDriver()
    released: list[object] = []
    pool = Pool(driver.connect, on_release=released.append)
    with pytest.raises(ValueError, match="not a connection of this pool"):
        pool.release(FakeConn(driver, 99))
    assert released == []
    close_clean(pool, driver)


@pytest.mark.parametrize("hook", ["on_connect", "on_acquire", "on_release", "on_close"])
def test_a_hook_that_is_not_callable_is_refused(hook: str) -> None:
    kwargs: dict[str, Any] = {hook: 42}
    with pytest.raises(TypeError, match=f"{hook} must be callable or None, got 42"):
        Pool(FakeDriver().connect, **kwargs)


def test_plain_path_is_picked_without_hooks_or_observer() -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect)
    assert "acquire" not in vars(pool)
    assert "release" not in vars(pool)
    obs = Recorder()
    pool.observer = obs
    assert pool.observer is obs
    assert vars(pool)["acquire"] == pool._acquire_hooked
    pool.observer = None
    assert "acquire" not in vars(pool)
    hooked = Pool(driver.connect, on_acquire=lambda c: None)
    assert "acquire" in vars(hooked)
    hooked.observer = None  # hooks keep the hooked path
    assert "acquire" in vars(hooked)
    hooked.close()
    close_clean(pool, driver)


def test_observer_gets_exact_event_counts() -> None:
    driver = FakeDriver()
    obs = Recorder()
    pool = Pool(driver.connect, max_open=1, observer=obs, rollback_on_return=False)
    conn = pool.acquire()  # queued for the first dial: one wait, one create
    assert (obs.count("created"), obs.count("waited")) == (1, 1)
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=0)
    assert (obs.count("timed_out"), obs.count("waited")) == (1, 2)

    got: list[FakeConn] = []
    t = threading.Thread(target=lambda: got.append(pool.acquire(timeout=10)))
    t.start()
    wait_until(lambda: pool.stats().waiting == 1, what="the thread to queue")
    pool.release(conn)  # handed straight to the queued thread
    t.join()
    assert got == [conn]
    pool.release(conn)
    for _ in range(3):  # the fast path: no wait is reported
        with pool.connection():
            pass
    assert obs.count("waited") == 3
    assert obs.count("used") == 5
    assert obs.count("created") == 1
    assert obs.count("timed_out") == 1
    s = pool.stats()
    assert s.wait_count == obs.count("waited")
    assert s.timeouts == obs.count("timed_out")
    assert s.dials == obs.count("created")
    assert all(sec >= 0 for _, sec in obs.events if sec is not None)
    close_clean(pool, driver)


def test_use_time_matches_the_pool_total() -> None:
    driver = FakeDriver()
    obs = Recorder()
    pool = Pool(driver.connect, observer=obs)
    for _ in range(4):
        conn = pool.acquire()
        pool.release(conn)
    used = [sec for kind, sec in obs.events if kind == "used"]
    assert len(used) == 4
    # The observer measures just before the core does: never more.
    assert sum(u for u in used if u is not None) <= pool.stats().use_duration
    close_clean(pool, driver)
