"""Pool leaks: held past leak_threshold (logged with the acquirer's stack), or dropped
without release (reclaimed when garbage-collected); close(timeout=...).

The threaded twin of tests/aio/test_aiopool_leaks.py.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

import pytest

from sqlgate import Pool
from tests.faults.load import wait_for


class Conn:
    """A driver connection that supports weak references and counts closes."""

    closes = 0

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        Conn.closes += 1


class Driver:
    def __init__(self) -> None:
        self.opened = 0

    def connect(self) -> Conn:
        self.opened += 1
        return Conn()


def grab_and_hold(pool: Pool[Any]) -> Any:
    return pool.acquire()


def test_no_tracking_by_default_costs_nothing() -> None:
    pool: Pool[Any] = Pool(Driver().connect)
    conn = pool.acquire()
    assert "acquire" not in pool.__dict__  # the plain path
    assert pool._held == {}
    assert pool._core.lookup(conn).ref is None  # held strongly, as before
    pool.release(conn)
    pool.close()


def test_held_past_threshold_is_logged_with_the_acquirers_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlgate")
    pool: Pool[Any] = Pool(Driver().connect, leak_threshold=0.05, name="leaky")
    conn = grab_and_hold(pool)
    wait_for(
        lambda: any("possible leak" in r.getMessage() for r in caplog.records),
        5,
        "leak warning",
    )
    [record] = [r for r in caplog.records if "possible leak" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.name == "sqlgate"
    message = record.getMessage()
    assert "leaky: a connection has been in use for" in message
    assert "in grab_and_hold" in message  # the acquirer's frame
    assert "test_pool_leaks.py" in message
    pool.release(conn)
    assert pool._held == {}
    pool.close()
    s = pool.stats()
    assert (s.in_use, s.open_connections, s.leaks_reclaimed) == (0, 0, 0)


def test_dropped_connection_is_reclaimed_and_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlgate")
    driver = Driver()
    pool: Pool[Any] = Pool(driver.connect, max_open=1, leak_threshold=60.0)
    grab_and_hold(pool)  # the result is dropped at once: a leak
    gc.collect()
    # The slot comes back on the next call: max_open=1 would time out else.
    conn = pool.acquire(timeout=2)
    s = pool.stats()
    assert (s.leaks_reclaimed, s.in_use, s.open_connections) == (1, 1, 1)
    assert s.closed == 1
    assert driver.opened == 2
    [record] = [r for r in caplog.records if "garbage-collected" in r.getMessage()]
    assert "in grab_and_hold" in record.getMessage()
    pool.release(conn)
    pool.close()
    pool._core.check()
    assert pool.stats().open_connections == 0


def test_loosened_connection_releases_normally() -> None:
    pool: Pool[Any] = Pool(Driver().connect, leak_threshold=60.0)
    conn = pool.acquire()
    entry = pool._core.lookup(conn)
    assert entry.conn is None
    assert entry.ref is not None
    pool.release(conn)
    assert entry.conn is conn
    assert entry.ref is None
    with pytest.raises(ValueError, match="not in use"):
        pool.release(conn)
    pool.close()
    pool._core.check()


def test_unweakrefable_driver_is_tracked_strongly() -> None:
    import sqlite3

    pool: Pool[Any] = Pool(lambda: sqlite3.connect(":memory:"), leak_threshold=60.0)
    conn = pool.acquire()
    assert pool._core.lookup(conn).ref is None
    pool.release(conn)
    pool.close()


def test_close_waits_for_connections_to_come_back() -> None:
    pool: Pool[Any] = Pool(Driver().connect)
    conn = pool.acquire()
    closing = threading.Event()

    def give_back() -> None:
        closing.wait(5)
        pool.release(conn)

    t = threading.Thread(target=give_back)
    t.start()
    closing.set()
    assert pool.close(timeout=5) == 0
    t.join(5)
    s = pool.stats()
    assert (s.in_use, s.open_connections) == (0, 0)


def test_close_force_closes_after_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = Conn.closes
    pool: Pool[Any] = Pool(Driver().connect)
    held = [pool.acquire(), pool.acquire()]
    assert pool.close(timeout=0.05) == 2
    assert Conn.closes - before == 2
    assert "closed 2 connection(s) still in use" in caplog.text
    for conn in held:
        pool.release(conn)  # late: a no-op, not an error
    s = pool.stats()
    assert (s.in_use, s.open_connections, s.closed) == (0, 0, 2)
    pool._core.check()


def test_close_default_keeps_todays_behaviour() -> None:
    pool: Pool[Any] = Pool(Driver().connect)
    conn = pool.acquire()
    assert pool.close() == 0
    assert pool.stats().in_use == 1
    pool.release(conn)
    assert pool.stats().open_connections == 0


@pytest.mark.parametrize("bad", [-1, float("nan"), "1"])
def test_close_timeout_is_validated(bad: Any) -> None:
    pool: Pool[Any] = Pool(Driver().connect)
    with pytest.raises((ValueError, TypeError), match="timeout"):
        pool.close(timeout=bad)
    assert not pool.closed
    pool.close()
