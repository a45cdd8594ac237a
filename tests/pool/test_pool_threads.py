"""Pool (the threading shell) with real threads over the fake driver.

Interleavings are forced with gates and events, never with sleeps; the only
waits are bounded polls for work that lands on pool-owned threads.
"""

from __future__ import annotations

import gc
import logging
import math
import re
import sqlite3
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate._handoff
import sqlgate.pool
from sqlgate import ConnectError, Pool, PoolClosed, PoolTimeout, TooManyWaiters
from tests.fakes import FakeConn, FakeDriver, Gate, settled, wait_until

if TYPE_CHECKING:
    from pathlib import Path

LeakCheck = Callable[[Pool[Any], FakeDriver], None]


def counts(pool: Pool[Any]) -> tuple[int, int, int, int, int, int]:
    """(open, dialing, idle, in_use, closing, waiting)."""
    s = pool.stats()
    return (s.open_connections, s.dialing, s.idle, s.in_use, s.closing, s.waiting)


def dial_threads(pool: Pool[Any]) -> list[threading.Thread]:
    """The pool's dial threads still running."""
    name = f"sqlgate-dial {pool.name}"
    return [t for t in threading.enumerate() if t.name == name]


class Caller:
    """A thread that acquires once and reports what it got."""

    def __init__(
        self, pool: Pool[FakeConn], timeout: float | None = None, hold: bool = True
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self.conn: FakeConn | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.let_go = threading.Event()
        self.hold = hold
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn = self.pool.acquire(self.timeout)
        except BaseException as exc:
            self.error = exc
        self.done.set()
        if self.conn is not None and self.hold:
            self.let_go.wait(10)
            self.pool.release(self.conn)

    def result(self) -> FakeConn:
        assert self.done.wait(10), "caller never returned"
        if self.error is not None:
            raise self.error
        assert self.conn is not None
        return self.conn

    def finish(self) -> None:
        self.let_go.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


# -- load ------------------------------------------------------------------------------


def test_32_threads_never_exceed_max_open(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=4, max_idle=4, acquire_timeout=30)
    leak_check(pool, driver)
    start = threading.Barrier(32)
    errors: list[BaseException] = []
    handed: set[int] = set()
    guard = threading.Lock()

    def worker() -> None:
        try:
            start.wait(10)
            for _ in range(40):
                with pool.connection() as conn:
                    with guard:
                        assert conn.number not in handed, "handed out twice"
                        handed.add(conn.number)
                    assert driver.live <= 4
                    with guard:
                        handed.discard(conn.number)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert driver.max_live <= 4
    settled(pool)
    s = pool.stats()
    assert s.acquires == 32 * 40
    assert driver.opened - driver.closed == s.open_connections == s.idle
    assert (s.in_use, s.waiting, s.dialing, s.closing) == (0, 0, 0, 0)
    pool.close()
    assert driver.opened - driver.closed == 0
    assert pool.stats().open_connections == 0


# -- Go issue 6593 and the timeout/hand-off race ---------------------------------------


def test_go6593_dial_landing_after_release_served_waiter(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=2, max_idle=2, acquire_timeout=10)
    leak_check(pool, driver)
    c1 = pool.acquire()
    gate = driver.connect_gate = Gate()
    b = Caller(pool)
    gate.wait_entered()  # B's dial is in flight, held
    assert counts(pool) == (2, 1, 0, 1, 0, 1)
    pool.release(c1)  # serves B before the dial lands
    assert b.result() is c1
    assert counts(pool) == (2, 1, 0, 1, 0, 0)
    gate.open()  # the dial lands with nobody waiting for it
    settled(pool)
    assert counts(pool) == (2, 0, 1, 1, 0, 0)
    assert (driver.opened, driver.closed) == (2, 0)
    b.finish()
    assert counts(pool) == (2, 0, 2, 0, 0, 0)


def test_go6593_dial_landing_with_idle_full_is_closed(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=3, max_idle=1, acquire_timeout=10)
    leak_check(pool, driver)
    c1, c2 = pool.acquire(), pool.acquire()
    gate = driver.connect_gate = Gate()
    b = Caller(pool)
    gate.wait_entered()
    pool.release(c1)
    assert b.result() is c1
    pool.release(c2)  # fills the idle set
    gate.open()
    settled(pool)
    assert counts(pool) == (2, 0, 1, 1, 0, 0)
    assert (driver.opened, driver.closed) == (3, 1)
    assert driver.closed_conns[0].number == 3
    assert pool.stats().max_idle_closed == 1
    b.finish()


class ScriptedLock:
    """A lock whose *timed* acquires time out exactly when the test says so.

    Installed as both the pool's lock and its waiters' gates (the pool checks
    they are of one type). Untimed acquires behave as a plain lock.
    """

    script: Gate | None = None
    raise_instead: BaseException | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        script = ScriptedLock.script
        if timeout != -1 and script is not None:
            script.hold()
            if ScriptedLock.raise_instead is not None:
                raise ScriptedLock.raise_instead
            return False  # "timed out", whatever happened meanwhile
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class Script(Gate):
    """Where the timed waits stop, once ``arm``-ed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.monkeypatch = monkeypatch

    def arm(self, raise_instead: BaseException | None = None) -> None:
        self.monkeypatch.setattr(ScriptedLock, "script", self)
        self.monkeypatch.setattr(ScriptedLock, "raise_instead", raise_instead)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    script = Script(monkeypatch)
    monkeypatch.setattr(sqlgate.pool, "_new_gate", ScriptedLock)
    monkeypatch.setattr(sqlgate._handoff, "_new_gate", ScriptedLock)
    yield script
    script.open()


def test_served_just_as_the_timeout_fires_keeps_the_connection(
    driver: FakeDriver, leak_check: LeakCheck, scripted: Script
) -> None:
    pool = Pool(driver.connect, max_open=1, acquire_timeout=10)
    pool._lock = ScriptedLock()  # type: ignore[assignment]
    leak_check(pool, driver)
    c1 = pool.acquire()
    scripted.arm()
    b = Caller(pool, timeout=5)
    scripted.wait_entered()  # B is in its timed wait
    pool.release(c1)  # the hand-off...
    scripted.open()  # ...and then the timeout fires
    assert b.result() is c1  # served wins: nothing lost, no PoolTimeout
    s = pool.stats()
    assert (s.timeouts, s.in_use, s.idle) == (0, 1, 0)
    b.finish()
    assert counts(pool) == (1, 0, 1, 0, 0, 0)


def test_interrupted_after_being_served_gives_the_connection_back(
    driver: FakeDriver,
    leak_check: LeakCheck,
    scripted: Script,
) -> None:
    pool = Pool(driver.connect, max_open=1, acquire_timeout=10)
    pool._lock = ScriptedLock()  # type: ignore[assignment]
    leak_check(pool, driver)
    c1 = pool.acquire()
    scripted.arm(raise_instead=KeyboardInterrupt())
    b = Caller(pool, timeout=5)
    c = Caller(pool, timeout=5)
    wait_until(lambda: pool.stats().waiting == 2)
    pool.release(c1)  # serves B, whose wait is then interrupted
    scripted.open()
    with pytest.raises(KeyboardInterrupt):
        b.result()
    # B's connection went on to C (interrupted as well: back to idle).
    with pytest.raises(KeyboardInterrupt):
        c.result()
    assert counts(pool) == (1, 0, 1, 0, 0, 0)
    assert (driver.opened, driver.closed) == (1, 0)


def test_timeout_then_release_loses_nothing(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=1, acquire_timeout=10, name="p")
    leak_check(pool, driver)
    c1 = pool.acquire()
    with pytest.raises(
        PoolTimeout,
        match=re.escape(
            "p: no connection after 0.01 s (max_open=1, in_use=1, waiting=0)"
        ),
    ) as info:
        pool.acquire(timeout=0.01)
    assert info.value.__cause__ is None
    pool.release(c1)
    assert counts(pool) == (1, 0, 1, 0, 0, 0)
    assert pool.stats().timeouts == 1


def test_timeout_zero_fails_at_once_unless_idle(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=1, name="p")
    leak_check(pool, driver)
    c1 = pool.acquire()
    with pytest.raises(PoolTimeout, match=re.escape("p: no connection after 0.00 s")):
        pool.acquire(timeout=0)
    pool.release(c1)
    assert pool.acquire(timeout=0) is c1
    pool.release(c1)


@pytest.mark.parametrize("bad", [-1, math.nan, -math.inf])
def test_bad_timeout_raises_and_queues_nobody(
    driver: FakeDriver, leak_check: LeakCheck, bad: float
) -> None:
    pool = Pool(driver.connect, max_open=1)
    leak_check(pool, driver)
    c1 = pool.acquire()
    before = pool.stats()
    with pytest.raises(ValueError, match=f"timeout must be .*, got {bad!r}"):
        pool.acquire(timeout=bad)
    assert pool.stats() == before  # nobody queued, nothing dialed
    pool.release(c1)
    with pytest.raises(ValueError, match=f"timeout must be .*, got {bad!r}"):
        pool.acquire(timeout=bad)  # refused even when one is idle
    assert counts(pool) == (1, 0, 1, 0, 0, 0)


def test_bad_timeout_type_raises(driver: FakeDriver, leak_check: LeakCheck) -> None:
    pool = Pool(driver.connect, max_open=1)
    leak_check(pool, driver)
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
        pool.acquire(timeout="1")  # type: ignore[arg-type]
    assert counts(pool) == (0, 0, 0, 0, 0, 0)


# -- dial failures ---------------------------------------------------------------------


def test_connect_error_chains_the_driver_exception_and_timeout_chains_it_too(
    leak_check: LeakCheck,
) -> None:
    refused = ConnectionRefusedError("db down")
    gate = Gate()
    driver = FakeDriver(fail_with=[refused], connect_gate=gate, gate_from=2)
    pool = Pool(driver.connect, max_open=2, max_connecting=1, name="p")
    leak_check(pool, driver)
    with pytest.raises(ConnectError, match="p: connect failed: ") as info:
        pool.acquire(timeout=10)
    assert info.value.__cause__ is refused
    assert counts(pool) == (0, 0, 0, 0, 0, 0)
    # The next dial hangs: the caller times out, told why dials are failing.
    with pytest.raises(
        PoolTimeout, match=re.escape("p: no connection after 0.05 s")
    ) as t:
        pool.acquire(timeout=0.05)
    assert t.value.__cause__ is refused
    gate.open()
    settled(pool)
    assert counts(pool) == (1, 0, 1, 0, 0, 0)
    assert pool.stats().dial_failures == 1


def test_failed_dial_error_is_not_kept_once_handled(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    # Memory flat over failed dials: once handled, neither the core nor a log
    # record that a handler keeps (as caplog does) holds the driver's error,
    # whose traceback keeps the connect call's frames, the dial thread's
    # frames and its Thread object alive.
    caplog.set_level(logging.WARNING, logger="sqlgate")
    driver = FakeDriver(fail_with=[ConnectionRefusedError("db down")])
    locals_seen: list[weakref.ref[object]] = []

    class Local:
        """Referenced only by the frame of the connect call."""

    def connect() -> FakeConn:
        local = Local()
        locals_seen.append(weakref.ref(local))
        return driver.connect()

    pool = Pool(connect, max_open=1, name="p")
    leak_check(pool, driver)
    with pytest.raises(ConnectError) as info:
        pool.acquire(timeout=10)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    del info
    pool.release(pool.acquire(timeout=10))  # a dial that succeeds
    wait_until(lambda: not dial_threads(pool), what="the dial threads to end")
    gc.collect()
    # The failed call's frame (reached through the error's traceback) is gone.
    assert [ref() for ref in locals_seen] == [None, None]
    assert [r.getMessage() for r in caplog.records] == [
        "p: connect failed: ConnectionRefusedError('db down')"
    ]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_base_exception_from_connect_leaks_no_count(
    leak_check: LeakCheck, exc: BaseException
) -> None:
    driver = FakeDriver(fail_with=[exc])
    pool = Pool(driver.connect, max_open=1)
    leak_check(pool, driver)
    # Raised in the dial thread, it reaches the caller chained to ConnectError.
    with pytest.raises(ConnectError) as info:
        pool.acquire(timeout=10)
    assert info.value.__cause__ is exc
    assert counts(pool) == (0, 0, 0, 0, 0, 0)
    assert pool.stats().dial_failures == 1
    c = pool.acquire(timeout=10)  # the pool still works
    pool.release(c)
    assert counts(pool) == (1, 0, 1, 0, 0, 0)


def test_connect_returning_none_is_a_programming_error(leak_check: LeakCheck) -> None:
    driver = FakeDriver(return_none=True)
    pool = Pool(driver.connect, max_open=1, name="p")
    leak_check(pool, driver)
    with pytest.raises(TypeError, match=r"^p: connect\(\) returned None$"):
        pool.acquire(timeout=10)
    assert counts(pool) == (0, 0, 0, 0, 0, 0)
    assert pool.stats().dial_failures == 0  # not an outage (issue 14)


def test_on_acquire_raising_while_tracking_leaks_keeps_nothing(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    def refuse(conn: FakeConn) -> None:
        raise RuntimeError("not usable")

    pool = Pool(driver.connect, max_open=1, leak_threshold=60.0, on_acquire=refuse)
    leak_check(pool, driver)
    with pytest.raises(RuntimeError, match="not usable"):
        pool.acquire(timeout=10)
    settled(pool)
    assert pool.stats().broken_closed == 1
    # The discarded connection is forgotten: nothing still holds it.
    assert pool._held == {}
    conn = weakref.ref(driver.conns.pop())
    driver.closed_conns.clear()
    gc.collect()
    assert conn() is None


# -- release ---------------------------------------------------------------------------


def test_release_twice_and_foreign_raise_and_change_nothing(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=2, name="p")
    leak_check(pool, driver)
    c1 = pool.acquire()
    pool.release(c1)
    before = pool.stats()
    with pytest.raises(ValueError, match=re.escape("is not in use (released twice?)")):
        pool.release(c1)
    stranger = FakeDriver().connect()
    other_driver = FakeDriver()
    with pytest.raises(ValueError, match="is not a connection of this pool"):
        pool.release(stranger)
    other = Pool(other_driver.connect, max_open=1)
    c2 = other.acquire()
    with pytest.raises(ValueError, match="is not a connection of this pool"):
        pool.release(c2)
    assert pool.stats() == before
    assert c1.rollbacks == 0
    other.release(c2)
    leak_check(other, other_driver)


def test_rollback_on_return(driver: FakeDriver, leak_check: LeakCheck) -> None:
    pool = Pool(driver.connect, max_open=1)
    leak_check(pool, driver)
    c = pool.acquire()
    pool.release(c)
    assert c.rollbacks == 0  # no transaction open: no round trip
    c = pool.acquire()
    c.in_transaction = True
    pool.release(c)
    assert c.rollbacks == 1
    assert not c.in_transaction
    assert counts(pool) == (1, 0, 1, 0, 0, 0)


def test_rollback_raising_discards_the_connection(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=1)
    leak_check(pool, driver)
    c = pool.acquire()
    c.in_transaction = True
    c.rollback_error = OSError("connection lost")
    pool.release(c)  # does not raise: the connection is discarded
    assert (c.rollbacks, c.closes) == (1, 1)
    assert counts(pool) == (0, 0, 0, 0, 0, 0)
    assert pool.stats().broken_closed == 1
    c2 = pool.acquire()
    assert c2 is not c
    pool.release(c2)


def test_reset_hook_raising_discards_the_connection(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    seen: list[FakeConn] = []

    def reset(conn: FakeConn) -> None:
        seen.append(conn)
        if len(seen) == 2:
            raise RuntimeError("reset failed")

    pool = Pool(driver.connect, max_open=1, reset=reset)
    leak_check(pool, driver)
    c = pool.acquire()
    pool.release(c)
    assert c.closes == 0
    c = pool.acquire()
    pool.release(c)
    assert c.closes == 1
    assert seen == [c, c]
    assert counts(pool) == (0, 0, 0, 0, 0, 0)


def test_release_broken_closes(driver: FakeDriver, leak_check: LeakCheck) -> None:
    pool = Pool(driver.connect, max_open=1)
    leak_check(pool, driver)
    c = pool.acquire()
    c.in_transaction = True
    pool.release(c, broken=True)
    assert (c.rollbacks, c.closes) == (0, 1)
    assert counts(pool) == (0, 0, 0, 0, 0, 0)


# -- close -----------------------------------------------------------------------------


def test_close_semantics(driver: FakeDriver, leak_check: LeakCheck) -> None:
    pool = Pool(driver.connect, max_open=2, max_idle=2, name="p")
    leak_check(pool, driver)
    c1, c2 = pool.acquire(), pool.acquire()
    pool.release(c2)
    held = pool.acquire()
    assert held is c2
    waiter = Caller(pool, timeout=10)
    wait_until(lambda: pool.stats().waiting == 1)
    pool.close()
    with pytest.raises(PoolClosed, match=r"^p was closed while waiting$"):
        waiter.result()
    assert pool.closed
    pool.close()  # idempotent
    with pytest.raises(PoolClosed, match=r"^p is closed$"):
        pool.acquire()
    assert (c1.closes, c2.closes) == (0, 0)  # in use: closed when released
    pool.release(c1)
    assert c1.closes == 1
    assert c1.rollbacks == 0
    pool.release(c2)
    assert c2.closes == 1
    assert counts(pool) == (0, 0, 0, 0, 0, 0)


def test_dial_landing_after_close_is_closed(leak_check: LeakCheck) -> None:
    gate = Gate()
    driver = FakeDriver(connect_gate=gate)
    pool = Pool(driver.connect, max_open=1)
    leak_check(pool, driver)
    waiter = Caller(pool, timeout=10)
    gate.wait_entered()
    pool.close()
    with pytest.raises(PoolClosed):
        waiter.result()
    gate.open()
    wait_until(lambda: driver.closed == 1)
    settled(pool)
    assert counts(pool) == (0, 0, 0, 0, 0, 0)


# -- order and limits ------------------------------------------------------------------


def test_fifo_with_threads(driver: FakeDriver, leak_check: LeakCheck) -> None:
    pool = Pool(driver.connect, max_open=1, acquire_timeout=10)
    leak_check(pool, driver)
    c = pool.acquire()
    order: list[int] = []
    callers = []
    for i in range(6):
        caller = Caller(pool, hold=False)
        callers.append(caller)
        wait_until(lambda i=i: pool.stats().waiting == i + 1)  # type: ignore[misc]
    for i, caller in enumerate(callers):
        pool.release(c)
        c = caller.result()
        order.append(i)
        assert [x.done.is_set() for x in callers] == [j <= i for j in range(6)]
    assert order == list(range(6))
    pool.release(c)
    for caller in callers:
        caller.finish()


def test_max_waiting(driver: FakeDriver, leak_check: LeakCheck) -> None:
    pool = Pool(driver.connect, max_open=1, max_waiting=1, name="p")
    leak_check(pool, driver)
    c = pool.acquire()
    waiter = Caller(pool, timeout=10)
    wait_until(lambda: pool.stats().waiting == 1)
    with pytest.raises(
        TooManyWaiters,
        match=re.escape(
            "p: max_waiting=1 callers already waiting (max_open=1, in_use=1)"
        ),
    ):
        pool.acquire(timeout=10)
    pool.release(c)
    assert waiter.result() is c
    waiter.finish()


def test_setters_at_runtime(driver: FakeDriver, leak_check: LeakCheck) -> None:
    pool = Pool(driver.connect, max_open=1, max_idle=3, acquire_timeout=10)
    leak_check(pool, driver)
    c1 = pool.acquire()
    waiters = [Caller(pool) for _ in range(2)]
    wait_until(lambda: pool.stats().waiting == 2)
    pool.set_max_open_conns(3)  # grow: dials for both waiters
    got = {w.result() for w in waiters}
    assert len(got | {c1}) == 3
    assert driver.max_live == 3
    pool.set_max_open_conns(1)  # shrink: surplus closed as it comes back
    for w in waiters:
        w.finish()
    assert counts(pool) == (1, 0, 0, 1, 0, 0)
    assert driver.closed == 2
    pool.release(c1)
    assert counts(pool) == (1, 0, 1, 0, 0, 0)
    pool.set_max_idle_conns(0)
    assert counts(pool) == (0, 0, 0, 0, 0, 0)
    pool.set_max_connecting(1)
    with pytest.raises(ValueError, match="max_open must be >= 0, got -1"):
        pool.set_max_open_conns(-1)
    with pytest.raises(ValueError, match="min_idle=1 exceeds the idle cap 0"):
        pool.set_min_idle_conns(1)


# -- maintenance -----------------------------------------------------------------------


def test_idle_time_expiry_by_maintenance(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=2, conn_max_idle_time=0.02)
    leak_check(pool, driver)
    c = pool.acquire()
    pool.release(c)
    wait_until(lambda: c.closes == 1, what="the idle connection to expire")
    settled(pool)
    assert counts(pool) == (0, 0, 0, 0, 0, 0)
    assert pool.stats().max_idle_time_closed == 1


def test_lifetime_expiry_by_maintenance(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=2)
    leak_check(pool, driver)
    c = pool.acquire()
    pool.release(c)
    pool.set_conn_max_lifetime(0.02)
    wait_until(lambda: c.closes == 1, what="the connection's lifetime to run out")
    settled(pool)
    assert counts(pool) == (0, 0, 0, 0, 0, 0)
    assert pool.stats().max_lifetime_closed == 1


def test_min_idle_refills(driver: FakeDriver, leak_check: LeakCheck) -> None:
    pool = Pool(driver.connect, max_open=3, max_idle=2, min_idle=2)
    leak_check(pool, driver)
    wait_until(lambda: pool.stats().idle == 2, what="min_idle to fill")
    c = pool.acquire()
    wait_until(lambda: pool.stats().idle == 2, what="min_idle to refill")
    assert driver.opened == 3
    pool.release(c)  # idle is full: the surplus one closes
    settled(pool)
    assert counts(pool) == (2, 0, 2, 0, 0, 0)
    assert driver.live == 2


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"reset": 3}, "reset must be callable or None, got 3"),
        ({"on_acquire": "x"}, "on_acquire must be callable or None, got 'x'"),
        ({"rollback_on_return": "yes"}, "rollback_on_return must be a bool, got 'yes'"),
        ({"rollback_on_return": 1}, "rollback_on_return must be a bool, got 1"),
    ],
)
def test_bad_return_path_arguments(
    driver: FakeDriver, knobs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        Pool(driver.connect, **knobs)
    assert driver.opened == 0


def test_rollback_uses_the_class_rollback_without_a_transaction_flag() -> None:
    class Plain:
        """A DB-API connection that cannot say whether a transaction is open."""

        def __init__(self) -> None:
            self.rollbacks = 0

        def rollback(self) -> None:
            self.rollbacks += 1

        def close(self) -> None:
            pass

    pool: Pool[Plain] = Pool(Plain, max_open=1)
    conn = pool.acquire()
    pool.release(conn)
    assert pool.acquire() is conn
    pool.release(conn)
    assert conn.rollbacks == 2
    assert pool.stats().broken_closed == 0
    pool.close()


# -- timeout_at_capacity_only (issue 16) -----------------------------------------------


def blocked_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is inside ``function`` now (its stack, read live)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_issue16_timeout_at_capacity_only_spares_a_caller_waiting_for_its_dial(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    driver.connect_gate = gate = Gate()
    pool = Pool(
        driver.connect, max_open=1, acquire_timeout=0, timeout_at_capacity_only=True
    )
    leak_check(pool, driver)
    caller = Caller(pool)
    gate.wait_entered()
    # Blocked on its wait, not timed out: a wait timed at 0 never blocks.
    wait_until(lambda: blocked_in(caller.thread, "_wait_settled"), what="the wait")
    assert pool.stats().waiting == 1
    # At max_open, the timeout applies: this caller fails at once.
    with pytest.raises(PoolTimeout, match=r"no connection after 0\.00 s"):
        pool.acquire()
    gate.open()
    assert caller.result().number == 1
    caller.finish()
    s = pool.stats()
    assert (s.timeouts, s.in_use, s.idle, s.waiting) == (1, 0, 1, 0)


def test_issue16_without_the_knob_the_timeout_covers_the_dial(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    driver.connect_gate = gate = Gate()
    pool = Pool(driver.connect, max_open=1, acquire_timeout=0)
    leak_check(pool, driver)
    with pytest.raises(PoolTimeout, match=r"no connection after 0\.00 s"):
        pool.acquire()
    gate.open()
    settled(pool)
    assert counts(pool) == (1, 0, 1, 0, 0, 0)


def test_issue16_timeout_at_capacity_only_must_be_a_bool(driver: FakeDriver) -> None:
    with pytest.raises(TypeError, match="timeout_at_capacity_only must be a bool"):
        Pool(driver.connect, timeout_at_capacity_only=1)  # type: ignore[arg-type]


# -- dial_in_caller: thread-bound drivers (issue 16) ----------------------------------


def test_issue16_dial_in_caller_dials_in_the_acquiring_thread(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    dialed_in: list[str] = []

    def connect() -> FakeConn:
        dialed_in.append(threading.current_thread().name)
        return driver.connect()

    pool = Pool(connect, max_open=2, name="bound", dial_in_caller=True)
    leak_check(pool, driver)
    a = pool.acquire()
    caller = Caller(pool)
    assert caller.result().number == 2
    assert dialed_in == ["MainThread", caller.thread.name]
    assert dial_threads(pool) == []
    pool.release(a)
    caller.finish()
    assert counts(pool) == (2, 0, 2, 0, 0, 0)


def test_issue16_dial_in_caller_serves_sqlite_check_same_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bound.db"
    pool = Pool(lambda: sqlite3.connect(path), dial_in_caller=True)
    conn = pool.acquire()
    assert conn.execute("select 1").fetchone() == (1,)  # made in this thread
    pool.release(conn)
    pool.close()
    plain = Pool(lambda: sqlite3.connect(path))
    conn = plain.acquire()  # made on a pool thread: refused here
    with pytest.raises(sqlite3.ProgrammingError, match="same thread"):
        conn.execute("select 1")
    plain.release(conn, broken=True)
    plain.close()


def test_issue16_interrupt_in_a_callers_dial_reaches_the_caller(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    driver.fail_with = [KeyboardInterrupt(), None]
    pool = Pool(driver.connect, max_open=1, dial_in_caller=True)
    leak_check(pool, driver)
    with pytest.raises(KeyboardInterrupt):
        pool.acquire()
    pool._core.check()
    assert counts(pool) == (0, 0, 0, 0, 0, 0)  # the ticket is settled
    conn = pool.acquire()  # and the pool still serves
    assert conn.number == 1
    pool.release(conn)


def test_issue16_dial_in_caller_must_be_a_bool(driver: FakeDriver) -> None:
    with pytest.raises(TypeError, match="dial_in_caller must be a bool, got 1"):
        Pool(driver.connect, dial_in_caller=1)  # type: ignore[arg-type]
