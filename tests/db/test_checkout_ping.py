"""The checkout ping reads the pool's idle bookkeeping (``Pool.idle_for``).

The core stamps ``Entry.returned_at`` whenever a connection is given back
(to the idle stack or straight to a waiter) and when it is dialed, so
``acquired_at - returned_at`` is how long it sat idle before its checkout:
a ``min_idle`` connection that sat unused is pinged like any idle one, and
one handed straight from a release to a waiter (idle for 0 s) is not. Time is
a fake clock (``sqlgate.pool.monotonic`` and ``sqlgate._handoff.monotonic`` /
``sqlgate.aiopool.monotonic``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from sqlgate._core import (
    IDLE,
    IN_USE,
    Close,
    Connect,
    Entry,
    PoolConfig,
    PoolCore,
    Wake,
)
from sqlgate.drivers.aiosqlite import AiosqliteAdapter
from sqlgate.drivers.sqlite import SqliteAdapter
from tests.fakes import FakeClock, wait_until

if TYPE_CHECKING:
    import sqlite3

    import aiosqlite


# -- the core's stamps --------------------------------------------------------


def _core(**knobs: Any) -> PoolCore[object]:
    return PoolCore(PoolConfig(max_open=1, **knobs))


def _dial(core: PoolCore[object], now: float) -> Entry[object]:
    (effect,) = core.take_effects()
    assert isinstance(effect, Connect)
    return core.connected(effect.ticket, object(), now)


def test_handoff_to_a_waiter_stamps_returned_at() -> None:
    core = _core()
    first = core.acquire(10.0)
    entry = _dial(core, 10.0)
    core.take_effects()  # the Wake of the first waiter
    assert first.entry is entry  # type: ignore[union-attr]
    assert entry.acquired_at - entry.returned_at == 0.0  # fresh from the dial
    second = core.acquire(20.0)
    assert isinstance(second, type(first))
    core.release(entry, 500.0)
    (wake,) = core.take_effects()
    assert isinstance(wake, Wake)
    assert second.entry is entry  # type: ignore[union-attr]
    assert entry.state == IN_USE
    assert (entry.returned_at, entry.acquired_at) == (500.0, 500.0)
    core.check()


def test_min_idle_dial_idle_gap_counts_from_the_dial() -> None:
    core = _core(min_idle=1)
    core.expire(0.0)
    entry = _dial(core, 5.0)
    assert entry.state == IDLE
    got = core.acquire(3605.0)
    assert got is entry
    assert entry.acquired_at - entry.returned_at == 3600.0
    core.check()


def test_handoff_stamp_leaves_idle_time_expiry_alone() -> None:
    """Idle time counts only while IDLE, from when it became idle."""
    core = _core(conn_max_idle_time=60.0)
    core.acquire(0.0)
    entry = _dial(core, 0.0)
    core.take_effects()
    core.acquire(10.0)
    core.release(entry, 100.0)  # straight to the waiter
    core.take_effects()
    core.release(entry, 200.0)  # idle from 200
    assert entry.state == IDLE
    assert core.expire(259.0) == 260.0
    assert core.take_effects() == []
    core.expire(260.0)
    (close,) = core.take_effects()
    assert isinstance(close, Close)
    assert close.reason == "max_idle_time"
    core.close_done(entry, 260.0)
    core.check()


# -- DB: counted pings ----------------------------------------------------------


class _CountingPing(SqliteAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    def ping(self, conn: sqlite3.Connection) -> None:
        self.pings += 1
        super().ping(conn)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("sqlgate.pool.monotonic", fake)
    monkeypatch.setattr("sqlgate._handoff.monotonic", fake)
    return fake


def test_min_idle_connection_idle_past_ping_idle_is_pinged(clock: FakeClock) -> None:
    db = sqlgate.open("sqlite:///:memory:", ping_idle=1.0, min_idle=1)
    try:
        counting = db._adapter = _CountingPing()
        wait_until(lambda: db.stats().idle == 1, what="the min_idle dial")
        clock.advance(3600.0)
        assert db.query_row("select 1") == (1,)
        assert counting.pings == 1
        # Back at once (no time passed): not pinged again.
        assert db.query_row("select 1") == (1,)
        assert counting.pings == 1
        db.pool._core.check()
        assert (db.stats().dials, db.stats().broken_closed) == (1, 0)
    finally:
        db.close()


def test_min_idle_connection_idle_under_ping_idle_is_not_pinged(
    clock: FakeClock,
) -> None:
    db = sqlgate.open("sqlite:///:memory:", ping_idle=1.0, min_idle=1)
    try:
        counting = db._adapter = _CountingPing()
        wait_until(lambda: db.stats().idle == 1, what="the min_idle dial")
        clock.advance(0.5)
        assert db.query_row("select 1") == (1,)
        assert counting.pings == 0
        clock.advance(1.0)
        assert db.query_row("select 1") == (1,)
        assert counting.pings == 1
    finally:
        db.close()


def test_connection_handed_to_a_waiter_is_not_pinged(clock: FakeClock) -> None:
    """Even with ping_idle=0: it went from one caller to the next, never idle."""
    db = sqlgate.open("sqlite:///:memory:", ping_idle=0, max_open=1)
    try:
        counting = db._adapter = _CountingPing()
        held = db.conn()
        results: list[object] = []
        waiter = threading.Thread(
            target=lambda: results.append(db.query_row("select 2"))
        )
        waiter.start()
        wait_until(lambda: db.stats().waiting == 1, what="the waiter to queue")
        clock.advance(3600.0)
        held.close()  # straight to the waiter
        waiter.join(10)
        assert results == [(2,)]
        assert counting.pings == 0
        # Now it sat idle (for 0 s on this clock, then 2 s): pinged.
        clock.advance(2.0)
        assert db.query_row("select 3") == (3,)
        assert counting.pings == 1
        db.pool._core.check()
    finally:
        db.close()


def test_idle_for_on_a_connection_not_in_use_raises() -> None:
    db = sqlgate.open("sqlite:///:memory:")
    try:
        with pytest.raises(ValueError, match="is not a connection of this pool"):
            db.pool.idle_for(object())
    finally:
        db.close()


# -- AsyncDB ----------------------------------------------------------------


class _ACountingPing(AiosqliteAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    async def ping(self, conn: aiosqlite.Connection) -> None:
        self.pings += 1
        await super().ping(conn)


def test_async_min_idle_and_handoff_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("sqlgate.aiopool.monotonic", clock)

    async def main() -> None:
        db = sqlgate.open_async(
            "sqlite:///:memory:", ping_idle=1.0, min_idle=1, max_open=1
        )
        try:
            counting = db._adapter = _ACountingPing()
            await db.set_min_idle_conns(1)  # starts the pool's maintenance
            for _ in range(1000):
                if db.stats().idle == 1:
                    break
                await asyncio.sleep(0.001)
            assert db.stats().idle == 1
            clock.advance(3600.0)
            held = await db.conn()
            assert counting.pings == 1
            waiter = asyncio.create_task(db.query_row("select 2"))
            for _ in range(100):  # the task runs up to its wait
                if db.stats().waiting == 1:
                    break
                await asyncio.sleep(0)
            assert db.stats().waiting == 1
            clock.advance(3600.0)
            await held.close()  # straight to the waiter
            assert await waiter == (2,)
            assert counting.pings == 1
            db.pool._core.check()
        finally:
            await db.close()

    asyncio.run(main())
