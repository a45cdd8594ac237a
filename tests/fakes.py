"""Fakes for pool tests: a numbering, recording driver and a hand-driven clock."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate import Pool

__all__ = [
    "FakeClock",
    "FakeConn",
    "FakeDriver",
    "Gate",
    "LockedCore",
    "assert_ledger",
    "settled",
    "wait_until",
]


class Gate:
    """A one-shot hold point: the code under test blocks in ``hold`` until opened.

    ``entered`` is set when a thread arrives, so a test can wait for it to be
    parked there before deciding what happens next.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self, timeout: float = 10.0) -> None:
        self.entered.set()
        if not self.opened.wait(timeout):
            raise AssertionError("gate was never opened")

    def wait_entered(self, timeout: float = 10.0) -> None:
        if not self.entered.wait(timeout):
            raise AssertionError("nobody reached the gate")

    def open(self) -> None:
        self.opened.set()


class FakeConn:
    """A DB-API-shaped connection that records what was done to it."""

    #: As sqlite3's flag: True while a transaction is open. Declared on the
    #: class, as drivers do, so the pool sees that the driver reports it.
    in_transaction: bool = False

    def __init__(self, driver: FakeDriver, number: int) -> None:
        self.driver = driver
        self.number = number
        self.in_transaction = False
        self.rollbacks = 0
        self.closes = 0
        #: If set, ``rollback`` raises it.
        self.rollback_error: BaseException | None = None
        #: If set, ``close`` raises it (after recording the close).
        self.close_error: BaseException | None = None

    def rollback(self) -> None:
        self.rollbacks += 1
        if self.rollback_error is not None:
            raise self.rollback_error
        self.in_transaction = False

    def close(self) -> None:
        gate = self.driver.close_gate
        if gate is not None:
            gate.hold()
        self.closes += 1
        self.driver._record_close(self)
        if self.close_error is not None:
            raise self.close_error

    def __repr__(self) -> str:
        return f"<FakeConn #{self.number}>"


@dataclass
class FakeDriver:
    """Numbers connections 1, 2, ... and records every open and close.

    Thread-safe. ``connect_gate`` / ``close_gate`` hold a connect (from attempt
    ``gate_from`` on) or a close until the test opens them; ``fail_with``
    makes ``connect`` raise (or, if it is a list, raise its items in turn,
    ``None`` meaning succeed once).
    """

    connect_gate: Gate | None = None
    #: The first attempt (1-based) that ``connect_gate`` holds.
    gate_from: int = 1
    close_gate: Gate | None = None
    fail_with: BaseException | list[BaseException | None] | None = None
    return_none: bool = False
    opened: int = 0
    closed: int = 0
    attempts: int = 0
    max_live: int = 0
    conns: list[FakeConn] = field(default_factory=list)
    closed_conns: list[FakeConn] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def live(self) -> int:
        """Connections opened and not yet closed."""
        with self._lock:
            return self.opened - self.closed

    def connect(self) -> FakeConn:
        with self._lock:
            self.attempts += 1
            gate = self.connect_gate if self.attempts >= self.gate_from else None
        if gate is not None:
            gate.hold()
        with self._lock:
            failure = self.fail_with
            if isinstance(failure, list):
                failure = failure.pop(0) if failure else None
            if failure is not None:
                raise failure
            if self.return_none:
                return None  # type: ignore[return-value]  # a misbehaving driver
            self.opened += 1
            conn = FakeConn(self, self.opened)
            self.conns.append(conn)
            self.max_live = max(self.max_live, self.opened - self.closed)
            return conn

    def _record_close(self, conn: FakeConn) -> None:
        with self._lock:
            if conn.closes > 1:
                raise AssertionError(f"{conn!r} closed twice")
            self.closed += 1
            self.closed_conns.append(conn)


class FakeClock:
    """A monotonic clock that moves only when told to (``now``: float seconds).

    Patched in for a shell's ``monotonic``; the test moves it with
    ``advance`` or by setting ``now``.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock does not go back: {seconds!r}")
        self.now += seconds
        return self.now


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` s (a generous bound).

    For effects that land on pool-owned threads (a dial finishing, a sweep),
    where there is no event to wait on. Never used to force an interleaving.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def settled(pool: Pool[Any]) -> None:
    """Wait for dials and closes on pool-owned threads to land."""
    wait_until(lambda: pool.stats().dialing == 0 and pool.stats().closing == 0)


def assert_ledger(pool: Pool[Any], driver: FakeDriver) -> None:
    """The accounting invariant: check() passes and driver live == pool open."""
    settled(pool)
    with pool._lock:
        pool._core.check()
        assert driver.live == pool._core.num_open
    assert all(c.closes <= 1 for c in driver.conns), "a connection closed twice"


class LockedCore:
    """A pool's core seen through a proxy that records core calls made without its lock.

    ``LockedCore.install(pool)`` puts it in place of ``pool._core``. Every
    public method call checks that the pool's lock is held and otherwise
    records ``(method, thread name)`` in ``unlocked``; a test asserts that
    list is empty. ``lookup`` is exempt: a single dict read that the core
    documents as safe without the lock (``release`` checks again under it).
    Exact in a single thread; with several, another thread holding the lock
    can hide a call (never invent one).
    """

    LOCK_FREE = frozenset({"lookup"})

    def __init__(self, core: Any, lock: Any) -> None:
        object.__setattr__(self, "_inner", core)
        object.__setattr__(self, "_lock", lock)
        object.__setattr__(self, "unlocked", [])

    @classmethod
    def install(cls, pool: Pool[Any]) -> LockedCore:
        guard = cls(pool._core, pool._lock)
        pool._core = guard  # type: ignore[assignment]
        return guard

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name.startswith("_") or name in self.LOCK_FREE or not callable(value):
            return value
        lock, unlocked = self._lock, self.unlocked

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not lock.locked():
                unlocked.append((name, threading.current_thread().name))
            return value(*args, **kwargs)

        return guarded

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)
