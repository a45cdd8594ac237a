"""SQLite for asyncio through aiosqlite (``sqlgate.open_async``).

Targets, parameters and the shared ``:memory:`` database are those of
``sqlgate.drivers.sqlite`` (the keeper is a plain ``sqlite3`` connection: the
shared cache is per process). Paramstyle: ``?`` / ``:name`` ("qmark").

Connections run in autocommit (``isolation_level=None``); ``begin`` sends
``BEGIN <txlock>``. Reset on return: ``in_transaction`` (no I/O); only a
connection left in a transaction is rolled back, and ``PRAGMA query_only`` is
cleared. No ping and no dead links: SQLite has no link to lose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiosqlite

from sqlgate.drivers._base import AsyncAdapter, AsyncCursor, parse_params
from sqlgate.drivers.sqlite import _PARAMS, check_sqlite_isolation, sqlite_target

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlgate.drivers._dsn import DSN

__all__ = ["ASYNC", "AiosqliteAdapter"]


class _Cursor(AsyncCursor):
    def __init__(self, cur: aiosqlite.Cursor) -> None:
        self._cur = cur
        desc = cur.description
        self.columns = tuple(d[0] for d in desc) if desc else ()

    async def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._cur.fetchmany(n)]

    async def aclose(self) -> None:
        await self._cur.close()


class AiosqliteAdapter(AsyncAdapter):
    """aiosqlite connections."""

    name = "sqlite"
    paramstyle = "qmark"

    def __init__(self, txlock: str = "DEFERRED") -> None:
        self.txlock = txlock

    def for_dsn(self, dsn: DSN) -> AiosqliteAdapter:
        """This adapter, or a variant with the DSN's ``txlock``."""
        txlock = str(parse_params(dsn, _PARAMS).get("txlock", "DEFERRED"))
        return self if txlock == self.txlock else AiosqliteAdapter(txlock)

    def connector(
        self, dsn: DSN
    ) -> tuple[
        Callable[[], Awaitable[aiosqlite.Connection]], Callable[[], None] | None
    ]:
        """An async connect callable and, for ``:memory:``, the keeper's close."""
        database, kwargs, on_close = sqlite_target(dsn)

        async def connect() -> aiosqlite.Connection:
            return await aiosqlite.connect(database, **kwargs)

        return connect, on_close

    async def reset(self, conn: aiosqlite.Connection) -> None:
        """Roll back a transaction left open."""
        if conn.in_transaction:
            await conn.rollback()
            await conn.execute("PRAGMA query_only=0")

    async def begin(
        self, conn: aiosqlite.Connection, isolation: str | None, read_only: bool
    ) -> None:
        """``BEGIN <txlock>``; read-only through ``PRAGMA query_only``."""
        check_sqlite_isolation(isolation)
        if read_only:
            await conn.execute("PRAGMA query_only=1")
        try:
            await conn.execute(f"BEGIN {self.txlock}")
        except BaseException:
            if read_only:
                await conn.execute("PRAGMA query_only=0")
            raise

    async def commit(self, conn: aiosqlite.Connection, read_only: bool) -> None:
        """COMMIT, then clear ``query_only``."""
        try:
            await conn.commit()
        finally:
            if read_only:
                await conn.execute("PRAGMA query_only=0")

    async def rollback(self, conn: aiosqlite.Connection, read_only: bool) -> None:
        """ROLLBACK, then clear ``query_only``."""
        try:
            await conn.rollback()
        finally:
            if read_only:
                await conn.execute("PRAGMA query_only=0")

    async def exec(
        self, conn: aiosqlite.Connection, sql: str, params: Any
    ) -> tuple[int, int | None]:
        """Run a statement; (rowcount, lastrowid)."""
        async with conn.execute(sql, params) as cur:
            last = cur.lastrowid
            return cur.rowcount, last if last else None

    async def query(
        self, conn: aiosqlite.Connection, sql: str, params: Any
    ) -> AsyncCursor:
        """Run a query; its cursor."""
        return _Cursor(await conn.execute(sql, params))


ASYNC = AiosqliteAdapter()
