"""Deadlines against the rest of the world: a cancel in flight, a failing timer.

Each test forces its interleaving with the fake driver's gates (no timing
luck): a deadline's cancel still on its way when the caller's task is
cancelled from outside, a cancel thread that cannot be started. Checked after
each: the call's outcome, the cancel's, and the pool's exact figures.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import sqlgate
from tests.db.deadline_fakes import (
    AFakeAdapter,
    FakeAdapter,
    FakeConn,
    afake_db,
    fake_db,
    figures,
)

T = 0.5  # passes while a fake statement waits (never before it started: load)


class _SlowCancel(AFakeAdapter):
    """A cancel that waits for the test's gate; ``"ends"`` ends as it starts."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.finished = 0

    async def cancel(self, conn: Any) -> bool:
        self.started.set()
        await self.gate.wait()
        self.finished += 1
        return self._cancel(conn)

    async def _run(self, conn: FakeConn, sql: str) -> None:
        if sql == "ends":  # ends on its own just as its deadline passed
            conn.statements.append(sql)
            await self.started.wait()
            return
        await super()._run(conn, sql)


async def _cancelled_while_its_cancel_is_in_flight(sql: str) -> None:
    adapter = _SlowCancel()
    db, _ = afake_db(adapter)
    task = asyncio.create_task(db.exec(sql, timeout=T))
    await asyncio.wait_for(adapter.started.wait(), 5)
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    # The call waits for the cancel request it started: until it returned,
    # the connection must serve no other statement.
    assert not task.done()
    assert figures(db) == (1, 0, 0, 0)
    adapter.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert adapter.finished >= 1
    in_use, idle, broken, waiting = figures(db)
    assert (in_use, waiting) == (0, 0)
    assert idle + broken == 1
    await db.close()


@pytest.mark.parametrize("sql", ["ends", "sleep"])
def test_outside_cancel_waits_for_the_deadlines_cancel(sql: str) -> None:
    """An outside cancel during the deadline's cancel is neither lost nor early.

    "ends": the statement ended by itself as the deadline passed (its result
    was on the way back); "sleep": it waits for the cancel.
    """
    asyncio.run(_cancelled_while_its_cancel_is_in_flight(sql))


def test_cancel_thread_that_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread for the cancel (the process is out of them): the call ends.

    The statement runs to its end (here: its own error), the call raises
    DeadlineExceeded and the connection, never cancelled, is discarded.
    """
    start = threading.Thread.start
    refused = threading.Event()

    def refuse(self: threading.Thread) -> None:
        if self.name == "sqlgate-cancel":
            refused.set()
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    adapter = FakeAdapter()
    db, conns = fake_db(adapter)
    done: list[BaseException] = []

    def call() -> None:
        try:
            db.exec("fail", timeout=T)
        except BaseException as exc:
            done.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    # No cancel can come: end the statement once its deadline has passed.
    assert refused.wait(5)
    conns[0].woken.set()
    caller.join(5)
    assert not caller.is_alive(), "the call never returned"
    assert len(done) == 1
    assert isinstance(done[0], sqlgate.DeadlineExceeded)
    assert "could not cancel" in str(done[0])
    assert adapter.cancels == 0
    assert figures(db) == (0, 0, 1, 0)
    db.close()


async def _begin_cancelled_while_queued(path: Any, read_only: bool) -> None:
    db = sqlgate.open_async(f"sqlite:///{path}", max_open=1)
    await db.exec("CREATE TABLE t (x INTEGER)")
    async with db.conn() as c:
        raw = c.raw
    # aiosqlite runs every call on its own thread, in order: hold that thread
    # (as a busy machine would) so that the BEGIN below is still queued when
    # its task is cancelled. A cancelled call still runs once its turn comes.
    gate = threading.Event()
    inside = threading.Event()

    def hold() -> None:
        inside.set()
        gate.wait(5)

    held = asyncio.ensure_future(raw._execute(hold))
    await asyncio.sleep(0)
    assert inside.wait(5)

    async def begin_tx() -> Any:
        return await db.begin(read_only=read_only)

    queued = asyncio.Event()
    execute = raw._execute

    async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        queued.set()  # BEGIN (or PRAGMA query_only): queued behind the held call
        return await execute(fn, *args, **kwargs)

    raw._execute = spy
    begin = asyncio.ensure_future(begin_tx())
    await asyncio.wait_for(queued.wait(), 5)
    raw._execute = execute
    begin.cancel()
    for _ in range(50):  # its cancellation handled before the thread is free
        if begin.done():
            break
        await asyncio.sleep(0)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await begin
    await held
    in_use, idle, _, waiting = figures(db)
    assert (in_use, waiting) == (0, 0)
    if idle:
        # Kept: then clean. The queued BEGIN has run by now (or never will):
        # the connection must not wait in the pool inside a transaction.
        for _ in range(3):
            await raw._execute(lambda: None)
        assert not raw.in_transaction
    # The next caller's write is committed, not swallowed by a transaction
    # it did not begin (and rolled back at its release).
    await db.exec("INSERT INTO t VALUES (1)")
    other = sqlgate.open_async(f"sqlite:///{path}")
    assert await other.query_row("SELECT count(*) FROM t") == (1,)
    await other.close()
    await db.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_aiosqlite_begin_cancelled_while_queued(tmp_path: Any, read_only: bool) -> None:
    """A cancel that lands while aiosqlite's thread has yet to run the BEGIN.

    Read-only: its first statement, ``PRAGMA query_only=1``, which the next
    caller must not inherit (its write would fail).
    """
    asyncio.run(_begin_cancelled_while_queued(tmp_path / "q.db", read_only))


class _CtrlC(FakeAdapter):
    """``"ctrl-c"``: the user's interrupt arrives just as the cancel does."""

    def _run(self, conn: FakeConn, sql: str) -> None:
        if sql == "ctrl-c":
            conn.statements.append(sql)
            assert conn.woken.wait(5), "never cancelled"
            raise KeyboardInterrupt
        super()._run(conn, sql)


class _ACtrlC(AFakeAdapter):
    async def _run(self, conn: FakeConn, sql: str) -> None:
        if sql == "ctrl-c":
            conn.statements.append(sql)
            conn.awoken = asyncio.Event()
            await asyncio.wait_for(conn.awoken.wait(), 5)
            raise KeyboardInterrupt
        await super()._run(conn, sql)


def test_interrupt_after_the_deadline_stays_an_interrupt() -> None:
    """Ctrl-C during a statement whose deadline passed is not a deadline miss.

    An ``except Exception`` (``DeadlineExceeded``'s) must not swallow it.
    """
    adapter = _CtrlC()
    db, conns = fake_db(adapter)
    with pytest.raises(KeyboardInterrupt):
        db.exec("ctrl-c", timeout=T)
    assert adapter.cancels == 1
    assert figures(db) == (0, 0, 1, 0)  # its state unknown: discarded
    assert conns[0].closed
    db.close()


def test_interrupt_after_the_deadline_stays_an_interrupt_async() -> None:
    adapter = _ACtrlC()
    db, _ = afake_db(adapter)

    async def main() -> Exception | None:
        try:
            await db.exec("ctrl-c", timeout=T)
        except Exception as exc:
            return exc
        return None

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert adapter.cancels == 1


class _CtrlCInRollback(FakeAdapter):
    """Ctrl-C arrives during the rollback that ends a transaction past its deadline."""

    def rollback(self, conn: Any, read_only: bool) -> None:
        super().rollback(conn, read_only)
        raise KeyboardInterrupt


class _SlowRollback(AFakeAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.rolling = asyncio.Event()

    async def rollback(self, conn: Any, read_only: bool) -> None:
        await super().rollback(conn, read_only)
        self.rolling.set()
        await asyncio.sleep(5)


def test_interrupt_during_the_deadlines_rollback() -> None:
    """The transaction ends (its connection discarded) and Ctrl-C is raised."""
    adapter = _CtrlCInRollback()
    db, conns = fake_db(adapter)
    tx = db.begin()
    with pytest.raises(KeyboardInterrupt):
        tx.exec("sleep", timeout=T)
    with pytest.raises(sqlgate.Error, match="rolled back"):
        tx.exec("select 1")
    assert figures(db) == (0, 0, 1, 0)
    assert conns[0].closed
    db.close()


def test_cancel_during_the_deadlines_rollback() -> None:
    """asyncio: a cancel from outside during that rollback is not swallowed."""
    adapter = _SlowRollback()
    db, _ = afake_db(adapter)

    async def main() -> None:
        tx = await db.begin()
        call = asyncio.ensure_future(tx.exec("sleep", timeout=T))
        await asyncio.wait_for(adapter.rolling.wait(), 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        with pytest.raises(sqlgate.Error, match="rolled back"):
            await tx.exec("select 1")
        assert figures(db) == (0, 0, 1, 0)
        await db.close()

    asyncio.run(main())
