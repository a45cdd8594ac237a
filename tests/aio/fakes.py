"""Async fakes for AsyncPool tests: a numbering, recording driver with gates."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

# One fake clock for both shells' tests; re-exported here for the aio tests.
from tests.fakes import FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate.aiopool import AsyncPool

__all__ = [
    "AsyncFakeConn",
    "AsyncFakeDriver",
    "AsyncGate",
    "FakeClock",
    "assert_ledger",
    "close_clean",
    "eventually",
    "spin",
    "until",
]


class AsyncGate:
    """A hold point: coroutines park in ``hold`` until the test opens it.

    ``waiting`` counts who is parked now, so a test can check that a task
    really reached the gate before it cancels it.
    """

    def __init__(self) -> None:
        self._opened = asyncio.Event()
        self.waiting = 0
        self.entered = 0

    async def hold(self) -> None:
        self.entered += 1
        self.waiting += 1
        try:
            await self._opened.wait()
        finally:
            self.waiting -= 1

    def open(self) -> None:
        self._opened.set()


class AsyncFakeConn:
    """An async-driver-shaped connection that records what was done to it."""

    def __init__(self, driver: AsyncFakeDriver, number: int) -> None:
        self.driver = driver
        self.number = number
        #: As aiosqlite's flag: True while a transaction is open.
        self.in_transaction = False
        self.rollbacks = 0
        self.closes = 0
        #: If set, ``rollback`` raises it.
        self.rollback_error: BaseException | None = None

    async def rollback(self) -> None:
        self.rollbacks += 1
        if self.driver.delay is not None:
            await self.driver.delay()
        gate = self.driver.rollback_gate
        if gate is not None:
            await gate.hold()
        if self.rollback_error is not None:
            raise self.rollback_error
        self.in_transaction = False

    async def close(self) -> None:
        if self.driver.delay is not None:
            await self.driver.delay()
        gate = self.driver.close_gate
        if gate is not None:
            await gate.hold()
        self.closes += 1
        if self.closes > 1:
            raise AssertionError(f"{self!r} closed twice")
        self.driver.closed += 1
        self.driver.live.discard(self)

    def __repr__(self) -> str:
        return f"<AsyncFakeConn #{self.number}>"


class PendingDial:
    """One gated ``aconnect`` call: the test decides how it ends."""

    def __init__(self) -> None:
        self.future: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )

    def land(self) -> None:
        self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        self.future.set_result(error)


class AsyncFakeDriver:
    """Numbers connections 1, 2, ... and records every open and close.

    With ``gated`` set, each ``aconnect`` parks as a ``PendingDial`` in
    ``pending`` until the test lands or fails it. ``fail_with`` makes
    ``aconnect`` raise (a list: its items in turn, ``None`` meaning succeed).
    """

    def __init__(self, *, gated: bool = False) -> None:
        self.gated = gated
        self.pending: list[PendingDial] = []
        self.rollback_gate: AsyncGate | None = None
        self.close_gate: AsyncGate | None = None
        self.fail_with: BaseException | list[BaseException | None] | None = None
        #: Optional hook awaited in every aconnect, rollback and close (jitter).
        self.delay: Callable[[], Any] | None = None
        self.attempts = 0
        self.opened = 0
        self.closed = 0
        self.max_live = 0
        self.live: set[AsyncFakeConn] = set()
        self.conns: list[AsyncFakeConn] = []

    async def aconnect(self) -> AsyncFakeConn:
        self.attempts += 1
        failure: BaseException | None = None
        if self.gated:
            dial = PendingDial()
            self.pending.append(dial)
            try:
                failure = await dial.future
            finally:
                self.pending.remove(dial)
        elif self.delay is not None:
            await self.delay()
        if failure is None:
            planned = self.fail_with
            if isinstance(planned, list):
                failure = planned.pop(0) if planned else None
            else:
                failure = planned
        if failure is not None:
            raise failure
        self.opened += 1
        conn = AsyncFakeConn(self, self.opened)
        self.conns.append(conn)
        self.live.add(conn)
        self.max_live = max(self.max_live, len(self.live))
        return conn


async def spin(n: int = 20) -> None:
    """Let the loop run ``n`` rounds. asyncio runs ready callbacks in FIFO order,
    so this is a fixed schedule, not a race with the clock."""
    for _ in range(n):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], what: str, rounds: int = 2000) -> None:
    """Run loop rounds until ``predicate`` holds; fail after ``rounds``."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def assert_ledger(pool: AsyncPool[Any], driver: AsyncFakeDriver) -> None:
    """The driver's ledger and the pool's counts agree, and ``check()`` passes.

    Between two loop steps: every connection the driver holds open is idle,
    in use or being closed; every dial the pool counts is pending.
    """
    pool._core.check()
    s = pool.stats()
    assert driver.opened == s.dials, (driver.opened, s)
    assert driver.closed == s.closed, (driver.closed, s)
    assert len(driver.live) == s.idle + s.in_use + s.closing, (len(driver.live), s)
    assert s.open_connections == len(driver.live) + s.dialing, s
    if s.max_open_connections:
        assert driver.max_live <= s.max_open_connections


async def close_clean(pool: AsyncPool[Any], driver: AsyncFakeDriver) -> None:
    """Close ``pool`` and require that nothing leaked (Go's ``closeDB``).

    Pre: the test released every connection it acquired and opened its gates.
    """
    await pool.close()
    s = pool.stats()
    assert (s.in_use, s.idle, s.waiting, s.dialing, s.closing) == (0, 0, 0, 0, 0), s
    assert s.open_connections == 0, s
    assert driver.opened == driver.closed, (driver.opened, driver.closed)
    assert not driver.live
    assert not pool._tasks
    pool._core.check()


async def eventually(
    predicate: Callable[[], bool], what: str, within: float = 5.0
) -> None:
    """Poll ``predicate`` until true, for work driven by the pool's own timers
    (expiry sweeps); fail after ``within`` s, a generous bound."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)
