"""Races and interrupts in ``Pool``, forced one by one (issue 11, defects 1-4).

Each test forces its interleaving (a lock that parks a thread at a chosen point,
gates in the fake driver, a fake clock) and checks the ledger afterwards: the
core's ``check()``, driver live == pool open, and that the pool still serves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import sqlgate._handoff
import sqlgate.pool
from sqlgate import Pool
from tests.fakes import (
    FakeClock,
    FakeConn,
    FakeDriver,
    Gate,
    assert_ledger,
    settled,
)

LeakCheck = Callable[[Pool[Any], FakeDriver], None]


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


def serves(pool: Pool[FakeConn], n: int) -> None:
    """All ``n`` (= max_open) connections can be taken at once, then given back."""
    conns = [pool.acquire(timeout=5) for _ in range(n)]
    assert len({id(c) for c in conns}) == n
    for conn in conns:
        pool.release(conn)


class ParkingLock:
    """The pool's lock; ``park``-ed threads stop just after releasing it.

    Used to hold a thread between the end of its critical section and what it
    does next, while another thread runs a whole call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.parked = threading.Event()
        self.go = threading.Event()
        self.victim: threading.Thread | None = None

    def park(self, thread: threading.Thread) -> None:
        self.victim = thread

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()
        if threading.current_thread() is self.victim:
            self.victim = None
            self.parked.set()
            assert self.go.wait(10), "never let go"

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- defect 1: effects carried out twice ---------------------------------------------


def test_issue11_defect1_release_with_nothing_to_do_runs_no_one_elses_effects(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    """A's release has no effects; B's Close lands in the outbox meanwhile.

    Before the fix A kept the outbox list itself as "its" effects, and B took
    that same list: both closed B's connection, and one of them raised
    ``ValueError: ... is not being closed``.
    """
    pool = Pool(driver.connect, max_open=2, max_idle=2)
    leak_check(pool, driver)
    c1, c2 = pool.acquire(), pool.acquire()
    settled(pool)
    lock = ParkingLock()
    pool._lock = lock  # type: ignore[assignment]
    errors: list[BaseException] = []

    def a() -> None:
        try:
            pool.release(c1)  # to the idle stack: no effects
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=a)
    lock.park(thread)
    thread.start()
    assert lock.parked.wait(10)  # A is past its critical section
    lock.victim = None  # park nobody else
    pool.release(c2, broken=True)  # B: a Close, taken and carried out by B
    lock.go.set()
    thread.join(10)
    assert errors == []
    assert (c1.closes, c2.closes) == (0, 1)
    assert_ledger(pool, driver)
    s = pool.stats()
    assert (s.open_connections, s.idle, s.in_use) == (1, 1, 0)


def test_issue11_defect1_waiting_acquire_runs_only_its_own_effects(
    driver: FakeDriver, leak_check: LeakCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queues with no dial to make (max_open reached); B's Close lands meanwhile."""
    pool = Pool(driver.connect, max_open=2, max_idle=2, acquire_timeout=10)
    leak_check(pool, driver)
    c1, c2 = pool.acquire(), pool.acquire()
    settled(pool)
    lock = ParkingLock()
    pool._lock = lock  # type: ignore[assignment]
    monkeypatch.setattr(sqlgate.pool, "_new_gate", ParkingLock)  # one lock type
    monkeypatch.setattr(sqlgate._handoff, "_new_gate", ParkingLock)
    got: list[FakeConn] = []
    errors: list[BaseException] = []

    def a() -> None:
        try:
            got.append(pool.acquire())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=a)
    lock.park(thread)
    thread.start()
    assert lock.parked.wait(10)  # A is queued, outside the lock, not yet waiting
    lock.victim = None
    pool.release(c2, broken=True)  # closes c2; its room dials for A
    lock.go.set()
    thread.join(10)
    assert errors == []
    assert [c.number for c in got] == [3]
    assert c2.closes == 1
    pool.release(got[0])
    pool.release(c1)
    assert_ledger(pool, driver)


# -- defect 2: an interrupt in the return path ---------------------------------------


@pytest.mark.parametrize("where", ["rollback", "reset", "on_release"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_issue11_defect2_interrupt_in_return_path_discards_the_connection(
    driver: FakeDriver,
    leak_check: LeakCheck,
    where: str,
    exc: type[BaseException],
) -> None:
    calls: list[FakeConn] = []

    def interrupt(conn: FakeConn) -> None:
        calls.append(conn)
        if len(calls) == 1:
            raise exc()

    pool = Pool(
        driver.connect,
        max_open=1,
        reset=interrupt if where == "reset" else None,
        on_release=interrupt if where == "on_release" else None,
    )
    leak_check(pool, driver)
    conn = pool.acquire()
    if where == "rollback":
        conn.in_transaction = True
        conn.rollback_error = exc()
    with pytest.raises(exc):
        pool.release(conn)
    assert_ledger(pool, driver)
    s = pool.stats()
    assert (s.open_connections, s.in_use, s.max_idle_closed) == (0, 0, 0)
    assert conn.closes == 1  # discarded as broken, not leaked
    with pytest.raises(ValueError, match="not a connection of this pool"):
        pool.release(conn)  # it is no longer the caller's
    serves(pool, 1)  # at max_open=1: the slot came back
    assert_ledger(pool, driver)


# -- defect 3: an interrupt part-way through a call's effects ------------------------


def test_issue11_defect3_setter_interrupted_by_on_close_closes_the_rest(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    calls: list[FakeConn] = []

    def on_close(conn: FakeConn) -> None:
        calls.append(conn)
        if len(calls) == 1:
            raise KeyboardInterrupt

    pool = Pool(driver.connect, max_open=3, max_idle=3, on_close=on_close)
    leak_check(pool, driver)
    conns = [pool.acquire() for _ in range(3)]
    for conn in conns:
        pool.release(conn)
    with pytest.raises(KeyboardInterrupt):
        pool.set_max_idle_conns(0)  # three Close effects; the first is interrupted
    # Every Close was carried out (before: the second and third stayed CLOSING).
    assert [c.closes for c in conns] == [1, 1, 1]
    assert_ledger(pool, driver)
    assert pool.stats().open_connections == 0
    pool.set_max_idle_conns(3)
    serves(pool, 3)
    assert_ledger(pool, driver)


def test_issue11_defect3_acquire_interrupted_while_closing_expired_ones(
    driver: FakeDriver, leak_check: LeakCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acquire closes two expired idle ones, queues and dials; the first close is cut.

    Before: the second Close and the Connect were dropped, and the queued
    waiter, which nobody waited on any more, swallowed the next connection.
    """
    clock = FakeClock()
    monkeypatch.setattr(sqlgate.pool, "monotonic", clock)
    monkeypatch.setattr(sqlgate._handoff, "monotonic", clock)
    calls: list[FakeConn] = []

    def on_close(conn: FakeConn) -> None:
        calls.append(conn)
        if len(calls) == 1:
            raise KeyboardInterrupt

    pool = Pool(
        driver.connect, max_open=2, max_idle=2, conn_max_idle_time=60, on_close=on_close
    )
    leak_check(pool, driver)
    c1, c2 = pool.acquire(), pool.acquire()
    pool.release(c1)
    pool.release(c2)
    clock.advance(61)  # both idle ones expired
    with pytest.raises(KeyboardInterrupt):
        pool.acquire()
    assert (c1.closes, c2.closes) == (1, 1)
    assert_ledger(pool, driver)
    s = pool.stats()
    assert (s.waiting, s.in_use) == (0, 0)
    serves(pool, 2)  # the dial made for the interrupted caller went idle
    assert_ledger(pool, driver)


def test_issue11_defect3_driver_close_interrupted_still_settles(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, max_open=2, max_idle=0)
    leak_check(pool, driver)
    c1, c2 = pool.acquire(), pool.acquire()
    c1.close_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        pool.release(c1)  # max_idle=0: closed at once; close() raises after closing
    pool.release(c2)
    assert (c1.closes, c2.closes) == (1, 1)
    assert_ledger(pool, driver)
    assert pool.stats().open_connections == 0
    serves(pool, 2)


# -- defect 4: close(timeout) takes a connection while it is being reset -------------


def test_issue11_defect4_release_mid_reset_after_close_took_it_is_a_no_op(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    resetting = Gate()

    def reset(conn: FakeConn) -> None:
        resetting.hold()

    pool = Pool(driver.connect, max_open=1, reset=reset)
    leak_check(pool, driver)
    conn = pool.acquire()
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            pool.release(conn)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=holder)
    thread.start()
    resetting.wait_entered()
    assert pool.close(timeout=0.001) == 1  # took it from the holder, closed it
    resetting.open()
    thread.join(10)
    assert errors == []  # the documented no-op, not ValueError
    assert conn.closes == 1
    assert_ledger(pool, driver)
