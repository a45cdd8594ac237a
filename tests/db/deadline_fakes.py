"""A fake driver whose statements run until cancelled, for the deadline tests.

``"sleep"`` blocks until the adapter's ``cancel`` wakes it (then raises
``Cancelled``), bounded by 5 s so that a broken test fails instead of hanging;
``"race"`` waits for the cancel too but then succeeds (a statement that
finished before the cancel took effect); ``"fail"`` waits for the cancel and
raises ``Boom`` (an error of its own); anything else returns at once. The
adapter's answers (``cancel``'s result or error, ``reusable_after_cancel``)
are set per test, and every call is recorded.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from sqlgate.db import DB
from sqlgate.db_async import AsyncDB
from sqlgate.drivers._base import AsyncAdapter, AsyncCursor, Cursor, SyncAdapter

if TYPE_CHECKING:
    import sqlgate

__all__ = [
    "AFakeAdapter",
    "Boom",
    "Cancelled",
    "FakeAdapter",
    "FakeConn",
    "afake_db",
    "fake_db",
    "figures",
]

#: How long a fake statement waits for a cancel before the test fails.
BOUND = 5.0


class Cancelled(Exception):
    """The fake driver's "statement cancelled"."""


class Boom(Exception):
    """An error of the statement's own."""


class FakeConn:
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False
        self.statements: list[str] = []
        self.woken = threading.Event()
        self.awoken: asyncio.Event | None = None
        self.rollbacks = 0

    def close(self) -> None:
        self.closed = True


class _Cursor(Cursor):
    columns = ("x",)

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        return [(1,)]

    def close(self) -> None:
        pass


class _ACursor(AsyncCursor):
    columns = ("x",)

    async def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        return [(1,)]

    async def aclose(self) -> None:
        pass


class _Recorder:
    """What both fake adapters record and answer."""

    def __init__(self) -> None:
        #: What ``cancel`` returns (or raises, when an exception).
        self.cancel_result: bool | BaseException = True
        #: What ``reusable_after_cancel`` answers.
        self.reusable = True
        self.cancels = 0
        self.cancelled = threading.Event()
        #: The ``in_transaction`` of each ``reusable_after_cancel`` question.
        self.asked: list[bool] = []

    def is_cancelled(self, exc: BaseException) -> bool:
        return isinstance(exc, Cancelled)

    def reusable_after_cancel(self, conn: Any, in_transaction: bool) -> bool:
        self.asked.append(in_transaction)
        return self.reusable

    def _cancel(self, conn: FakeConn) -> bool:
        self.cancels += 1
        self.cancelled.set()
        result = self.cancel_result
        if isinstance(result, BaseException):
            raise result
        if result:
            conn.woken.set()
            if conn.awoken is not None:
                conn.awoken.set()
        return result


class FakeAdapter(_Recorder, SyncAdapter):
    name = "fake"

    def __init__(self) -> None:
        _Recorder.__init__(self)

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def ping(self, conn: Any) -> None:
        self._run(conn, "ping")

    def reset(self, conn: Any) -> None:
        pass

    def begin(self, conn: Any, isolation: str | None, read_only: bool) -> None:
        conn.statements.append("BEGIN")

    def commit(self, conn: Any, read_only: bool) -> None:
        conn.statements.append("COMMIT")

    def rollback(self, conn: Any, read_only: bool) -> None:
        conn.statements.append("ROLLBACK")
        conn.rollbacks += 1

    def exec(self, conn: Any, sql: str, params: Any) -> tuple[int, int | None]:
        self._run(conn, sql)
        return 1, None

    def exec_many(
        self, conn: Any, sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        self._run(conn, sql)
        return len(list(seq_of_params)), None

    def query(self, conn: Any, sql: str, params: Any) -> Cursor:
        self._run(conn, sql)
        return _Cursor()

    def cancel(self, conn: Any) -> bool:
        return self._cancel(conn)

    def _run(self, conn: FakeConn, sql: str) -> None:
        conn.statements.append(sql)
        if sql in ("sleep", "race", "fail"):
            if not conn.woken.wait(BOUND) and sql == "sleep":
                raise AssertionError("the statement was never cancelled")
            if sql == "sleep":
                conn.woken.clear()
                raise Cancelled("canceling statement due to user request")
            if sql == "fail":
                raise Boom("the statement's own error")
            if sql == "race":
                self.cancelled.wait(BOUND)
                conn.woken.clear()


class AFakeAdapter(_Recorder, AsyncAdapter):
    name = "fake"

    def __init__(self) -> None:
        _Recorder.__init__(self)

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    async def ping(self, conn: Any) -> None:
        await self._run(conn, "ping")

    async def reset(self, conn: Any) -> None:
        pass

    async def begin(self, conn: Any, isolation: str | None, read_only: bool) -> None:
        conn.statements.append("BEGIN")

    async def commit(self, conn: Any, read_only: bool) -> None:
        conn.statements.append("COMMIT")

    async def rollback(self, conn: Any, read_only: bool) -> None:
        conn.statements.append("ROLLBACK")
        conn.rollbacks += 1

    async def exec(self, conn: Any, sql: str, params: Any) -> tuple[int, int | None]:
        await self._run(conn, sql)
        return 1, None

    async def exec_many(
        self, conn: Any, sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        await self._run(conn, sql)
        return len(list(seq_of_params)), None

    async def query(self, conn: Any, sql: str, params: Any) -> AsyncCursor:
        await self._run(conn, sql)
        return _ACursor()

    async def cancel(self, conn: Any) -> bool:
        return self._cancel(conn)

    async def _run(self, conn: FakeConn, sql: str) -> None:
        conn.statements.append(sql)
        if sql in ("sleep", "race", "fail", "hang"):
            if conn.awoken is None:
                conn.awoken = asyncio.Event()
            if sql == "hang":  # never answers a cancel: only a task cancel ends it
                await asyncio.sleep(BOUND)
                raise AssertionError("the hanging statement was never cut")
            try:
                await asyncio.wait_for(conn.awoken.wait(), BOUND)
            except TimeoutError:
                if sql == "sleep":
                    raise AssertionError("the statement was never cancelled") from None
            conn.awoken.clear()
            if sql == "sleep":
                raise Cancelled("canceling statement due to user request")
            if sql == "fail":
                raise Boom("the statement's own error")


def fake_db(adapter: FakeAdapter, **knobs: Any) -> tuple[DB, list[FakeConn]]:
    """A DB over ``adapter`` (no ping at checkout); the connections it dialed."""
    conns: list[FakeConn] = []

    def connect() -> FakeConn:
        conn = FakeConn(len(conns) + 1)
        conns.append(conn)
        return conn

    knobs.setdefault("max_open", 1)
    statement_timeout = knobs.pop("statement_timeout", None)
    knobs["statement_timeout"] = statement_timeout
    db = DB(connect, adapter, None, None, None, "fake", knobs)
    return db, conns


def afake_db(adapter: AFakeAdapter, **knobs: Any) -> tuple[AsyncDB, list[FakeConn]]:
    """An AsyncDB over ``adapter`` (no ping at checkout); its connections."""
    conns: list[FakeConn] = []

    async def connect() -> FakeConn:
        conn = FakeConn(len(conns) + 1)
        conns.append(conn)
        return conn

    knobs.setdefault("max_open", 1)
    db = AsyncDB(connect, adapter, None, None, None, "fake", knobs)
    return db, conns


def figures(db: DB | AsyncDB) -> tuple[int, int, int, int]:
    """(in use, idle, broken closed, waiting), after ``check()`` passed."""
    db.pool._core.check()
    s: sqlgate.Stats = db.pool.stats()
    return s.in_use, s.idle, s.broken_closed, s.waiting
