"""SQLite for asyncio through aiosqlite (``sqlgate.open_async``).

Targets, parameters and the shared ``:memory:`` database are those of
``sqlgate.drivers.sqlite`` (the keeper is a plain ``sqlite3`` connection: the
shared cache is per process). Paramstyle: ``?`` / ``:name`` ("qmark").

Connections run in autocommit (``isolation_level=None``); ``begin`` sends
``BEGIN <txlock>``. Reset on return: ``in_transaction`` (no I/O); only a
connection left in a transaction is rolled back, and ``PRAGMA query_only`` is
cleared; ``isolation_level`` is put back to None. No ping and no dead links:
SQLite has no link to lose.

Cancel: the ``sqlite3`` connection's ``interrupt()`` (``await
conn.interrupt()`` calls it at once, from the event loop's thread, while
aiosqlite's worker thread may be running the statement), with the same race
rule, error and clean state as ``sqlgate.drivers.sqlite``. A task cancelled
while awaiting ``exec``, ``exec_many``, ``query`` or a ``fetchmany`` also
interrupts the statement: aiosqlite alone would let it run on in its thread,
and every later call on the connection (its close included) would wait for it.
A call whose task was cancelled still runs when its turn on that thread comes
(a BEGIN not yet started, say), so ``cancel`` returns only once what was
queued before it has run: the connection's state is then the one the next
statement meets.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from sqlgate._reset import needs_rollback
from sqlgate.drivers._base import (
    CANCEL_TIMEOUT,
    AsyncAdapter,
    AsyncCursor,
    log,
    parse_params,
)
from sqlgate.drivers.sqlite import (
    _PARAMS,
    interrupt,
    is_interrupted,
    sqlite_target,
    validate_sqlite_isolation,
)
from sqlgate.drivers.sqlite import SYNC as SYNC_SQLITE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlgate.drivers._dsn import DSN

__all__ = ["ASYNC", "AiosqliteAdapter"]

_T = TypeVar("_T")


def _interrupt(conn: aiosqlite.Connection) -> bool:
    """Interrupt what ``conn``'s worker thread runs; False when closed."""
    try:
        raw = conn._conn  # aiosqlite's property: raises once closed
    except Exception:
        return False
    return interrupt(raw)


def _nothing() -> None:
    """Run on aiosqlite's thread: everything queued before it has run."""


async def _interruptible(conn: aiosqlite.Connection, call: Awaitable[_T]) -> _T:
    """Await ``call``; if this task is cancelled meanwhile, interrupt ``conn``.

    aiosqlite's worker thread would otherwise run the statement to its end.
    """
    try:
        return await call
    except asyncio.CancelledError:
        _interrupt(conn)
        raise


class _Cursor(AsyncCursor):
    def __init__(self, conn: aiosqlite.Connection, cur: aiosqlite.Cursor) -> None:
        self._conn = conn
        self._cur = cur
        desc = cur.description
        self.columns = tuple(d[0] for d in desc) if desc else ()

    async def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        rows = await _interruptible(self._conn, self._cur.fetchmany(n))
        return [tuple(r) for r in rows]

    async def aclose(self) -> None:
        await self._cur.close()


class AiosqliteAdapter(AsyncAdapter):
    """aiosqlite connections."""

    name = "sqlite"
    paramstyle = "qmark"

    def __init__(self, txlock: str = "DEFERRED") -> None:
        self.txlock = txlock

    def for_dsn(self, dsn: DSN) -> AiosqliteAdapter:
        """See ``AsyncAdapter.for_dsn``; as ``SqliteAdapter.for_dsn`` (``txlock``)."""
        txlock = str(parse_params(dsn, _PARAMS).get("txlock", "DEFERRED"))
        return self if txlock == self.txlock else AiosqliteAdapter(txlock)

    def connector(
        self, dsn: DSN
    ) -> tuple[
        Callable[[], Awaitable[aiosqlite.Connection]], Callable[[], None] | None
    ]:
        """See ``AsyncAdapter.connector``; ``aiosqlite.connect`` per ``sqlite_target``.

        Connections open in autocommit (``isolation_level=None``), so no
        ``prepare`` step is needed.

        Args:
            dsn: a parsed ``sqlite://`` DSN.

        Returns:
            (an async callable opening one aiosqlite connection; for
            ``:memory:`` the keeper's close, else None).

        Raises:
            ValueError: as ``sqlite_target``.
        """
        database, kwargs, on_close = sqlite_target(dsn)

        async def connect() -> aiosqlite.Connection:
            return await aiosqlite.connect(database, **kwargs)

        return connect, on_close

    async def prepare(self, conn: aiosqlite.Connection) -> None:
        """See ``AsyncAdapter.prepare``; ``isolation_level = None`` if it is not.

        Connections from ``connector`` already are; one from a connect
        callable is put in autocommit here, as ``SqliteAdapter.prepare`` does.

        Args:
            conn: the aiosqlite connection.

        Raises:
            sqlite3.Error: the setting failed; the dial fails.

        Cancellation:
            The dial fails and the connection is closed.
        """
        await _autocommit(conn)

    async def cancel(self, conn: aiosqlite.Connection) -> bool:
        """See ``AsyncAdapter.cancel``; the ``sqlite3`` connection's ``interrupt()``.

        Called at once, not queued behind the running statement on
        aiosqlite's thread; no I/O. Then waits (``CANCEL_TIMEOUT`` at most)
        until that thread has run what was queued before: a call whose task
        was cancelled before its turn still runs whole (see the module).

        Args:
            conn: the aiosqlite connection.

        Returns:
            True when the interrupt was set and the queue ran out; False when
            ``conn`` is closed or the queue did not run out in time (logged).

        Cancellation:
            The interrupt is set; what was queued may still be running.
        """
        if not _interrupt(conn):
            return False
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await conn._execute(_nothing)  # type: ignore[no-untyped-call]
        except Exception as exc:
            _interrupt(conn)  # a statement queued behind the first interrupt
            log.warning("cancel: aiosqlite's thread is still busy: %r", exc)
            return False
        return True

    def is_cancelled(self, exc: BaseException) -> bool:
        """See ``AsyncAdapter.is_cancelled``; ``OperationalError: interrupted``."""
        return is_interrupted(exc)

    def reusable_after_cancel(
        self, conn: aiosqlite.Connection, in_transaction: bool
    ) -> bool:
        """See ``SqliteAdapter.reusable_after_cancel``: yes unless closed.

        Args:
            conn: the aiosqlite connection.
            in_transaction: unused; both cases are clean.

        Returns:
            True while aiosqlite's connection is open.
        """
        try:
            raw = conn._conn
        except Exception:
            return False
        return not SYNC_SQLITE.is_closed(raw)

    async def reset(self, conn: aiosqlite.Connection) -> None:
        """See ``AsyncAdapter.reset``; no I/O unless a transaction was left open.

        Reads ``in_transaction``; only then sends ROLLBACK and clears
        ``PRAGMA query_only``. Puts ``isolation_level`` back to None if a
        caller changed it through ``Conn.raw`` (as ``SqliteAdapter.reset``):
        otherwise the next caller's statements would open transactions that
        the next reset rolls back.

        Args:
            conn: the aiosqlite connection.

        Raises:
            As ``SqliteAdapter.reset``.
        """
        if needs_rollback(conn):  # sqlgate._reset: the rule the pools use
            await conn.rollback()
            await conn.execute("PRAGMA query_only=0")
        await _autocommit(conn)

    async def begin(
        self, conn: aiosqlite.Connection, isolation: str | None, read_only: bool
    ) -> None:
        """See ``AsyncAdapter.begin``; as ``SqliteAdapter.begin``, awaited."""
        validate_sqlite_isolation(isolation)
        try:
            if read_only:  # a cancelled PRAGMA still runs: undone below
                await conn.execute("PRAGMA query_only=1")
            await conn.execute(f"BEGIN {self.txlock}")
        except BaseException:
            if read_only:
                await conn.execute("PRAGMA query_only=0")
            raise

    async def commit(self, conn: aiosqlite.Connection, read_only: bool) -> None:
        """See ``AsyncAdapter.commit``; ``query_only`` cleared even if COMMIT fails.

        Args:
            conn: the aiosqlite connection.
            read_only: clear ``PRAGMA query_only`` afterwards.

        Raises:
            sqlite3.Error: the COMMIT or the PRAGMA failed.
        """
        try:
            await conn.commit()
        finally:
            if read_only:
                await conn.execute("PRAGMA query_only=0")

    async def rollback(self, conn: aiosqlite.Connection, read_only: bool) -> None:
        """See ``AsyncAdapter.rollback``; ``query_only`` cleared even if it fails.

        Arguments as ``commit``.

        Raises:
            As ``SqliteAdapter.rollback``.
        """
        try:
            await conn.rollback()
        finally:
            if read_only:
                await conn.execute("PRAGMA query_only=0")

    async def exec(
        self, conn: aiosqlite.Connection, sql: str, params: Any
    ) -> tuple[int, int | None]:
        """See ``AsyncAdapter.exec``; the cursor is closed before returning.

        Args:
            conn: the aiosqlite connection.
            sql: one SQLite statement.
            params: ``?`` / ``:name`` parameters, or None.

        Returns:
            (the cursor's ``rowcount``, -1 for statements SQLite does not
            count; ``lastrowid``, None when it is 0 or None).

        Raises:
            sqlite3.Error: the statement failed.

        Cancellation:
            The statement is interrupted (aiosqlite's thread is free again once
            it stopped); ``reusable_after_cancel`` says whether to keep the
            connection.
        """
        cur = await _interruptible(conn, conn.execute(sql, params))
        async with cur:
            last = cur.lastrowid
            return cur.rowcount, last if last else None

    async def exec_many(
        self, conn: aiosqlite.Connection, sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        """See ``AsyncAdapter.exec_many``; sqlite3's ``executemany``.

        Args:
            conn: the aiosqlite connection.
            sql: one SQLite statement.
            seq_of_params: ``?`` / ``:name`` parameter sets.

        Returns:
            (the total ``rowcount``, None).

        Raises:
            sqlite3.Error: a statement failed.

        Cancellation:
            As ``exec``.
        """
        cur = await _interruptible(conn, conn.executemany(sql, seq_of_params))
        async with cur:
            return cur.rowcount, None

    async def query(
        self, conn: aiosqlite.Connection, sql: str, params: Any
    ) -> AsyncCursor:
        """See ``AsyncAdapter.query``; rows are fetched lazily from the cursor.

        Args:
            conn: the aiosqlite connection.
            sql: one SQLite query.
            params: ``?`` / ``:name`` parameters, or None.

        Returns:
            The open cursor: each ``fetchmany`` runs on aiosqlite's thread
            and yields rows as tuples.

        Raises:
            sqlite3.Error: the query failed.

        Cancellation:
            The query is interrupted (aiosqlite's thread is free again once
            it stopped); ``reusable_after_cancel`` says whether to keep the
            connection.
        """
        return _Cursor(conn, await _interruptible(conn, conn.execute(sql, params)))


async def _autocommit(conn: aiosqlite.Connection) -> None:
    """Set ``isolation_level = None`` on aiosqlite's own thread (if it is not).

    aiosqlite's property setter runs on the caller's thread, which sqlite3
    refuses for a connection opened without ``check_same_thread=False`` (one
    from a connect callable); its worker thread is always allowed.
    """
    if conn.isolation_level is not None:
        await conn._execute(setattr, conn._conn, "isolation_level", None)  # type: ignore[no-untyped-call]


ASYNC = AiosqliteAdapter()
