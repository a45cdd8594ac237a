"""PostgreSQL through psycopg 3 (``Connection`` and ``AsyncConnection``).

Target: ``postgresql://user:pw@host:port/db?param=value`` (also
``postgres://``, ``postgresql+psycopg://``). Two query parameters are
psycopg's own and never reach libpq:

``prepare_threshold``
    executions of a query on one connection before psycopg prepares it on
    the server (psycopg's default 5); ``none`` (or empty) never prepares,
    ``0`` prepares at once. Behind PgBouncer in transaction pooling mode use
    ``?prepare_threshold=none`` (see docs/pgbouncer.md).
``prepared_max``
    most statements kept prepared per connection (``none``: no limit).

Every other query parameter is passed to libpq as a connection parameter
(``application_name``, ``connect_timeout``, ``sslmode``, ``options``...):
libpq validates them and rejects unknown ones at the first dial. Paramstyle:
``%s`` / ``%(name)s`` (psycopg's "pyformat").

Connections run in autocommit; ``DB.begin`` sends
``BEGIN [ISOLATION LEVEL x] [READ ONLY]`` and ``commit``/``rollback`` end it.

Reset on return: ``info.transaction_status`` is a local read. IDLE costs
nothing; INTRANS or INERROR (a transaction left open) is rolled back; ACTIVE
(a statement still running, e.g. an unread COPY) or UNKNOWN (the link is
gone) raise, so the pool discards the connection. Autocommit is put back if
the caller turned it off through ``Conn.raw``.

Ping: an empty query (``""``), which the server answers with
EmptyQueryResponse: one round trip, no parse, no plan, no transaction; it also
works through PgBouncer in transaction mode, where ``SELECT 1`` would take a
server connection.

Dead link: psycopg marks a connection ``broken`` (or ``closed``) when its
socket fails; the server's own goodbyes are SQLSTATE 57P01 (admin_shutdown:
``pg_terminate_backend``, fast shutdown), 57P02 (crash_shutdown), 57P03
(cannot_connect_now) and class 08 (connection exception). Any other error is a
SQL error and the connection is kept.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq

from sqlgate.drivers._base import (
    AsyncAdapter,
    AsyncCursor,
    SyncAdapter,
    parse_params,
    sql_isolation,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlgate.drivers._dsn import DSN

__all__ = [
    "ASYNC",
    "PSYCOPG_PARAMS",
    "SYNC",
    "PsycopgAdapter",
    "PsycopgAsyncAdapter",
    "connect_options",
    "conninfo_kwargs",
]

_DEAD_STATES = frozenset({"57P01", "57P02", "57P03"})
_IDLE = pq.TransactionStatus.IDLE
_DIRTY = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


def _optional_count(value: str) -> int | None:
    """A whole number >= 0, or None for ``none`` or an empty value."""
    if value.strip().lower() in ("", "none"):
        return None
    count = int(value)
    if count < 0:
        raise ValueError(value)
    return count


#: DSN parameters that psycopg takes itself (never sent to libpq).
PSYCOPG_PARAMS: dict[str, Callable[[str], object]] = {
    "prepare_threshold": _optional_count,
    "prepared_max": _optional_count,
}


def conninfo_kwargs(dsn: DSN) -> dict[str, Any]:
    """Libpq connection parameters for a DSN (the password among them).

    psycopg's own parameters (``PSYCOPG_PARAMS``) are left out.
    """
    given = (
        ("host", dsn.host),
        ("port", dsn.port),
        ("user", dsn.user),
        ("password", dsn.password),
        ("dbname", dsn.database or None),
    )
    kwargs: dict[str, Any] = {
        k: v for k, v in dsn.params.items() if k not in PSYCOPG_PARAMS
    }
    kwargs.update((key, value) for key, value in given if value is not None)
    return kwargs


def connect_options(dsn: DSN) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything ``connect`` needs for a DSN, psycopg's options converted.

    Returns:
        (keyword arguments for ``Connection.connect``: libpq's parameters,
        autocommit on, ``prepare_threshold`` when given; attributes to set on
        each new connection: ``prepared_max`` when given).

    Raises:
        ValueError: a psycopg option does not convert; the message names
            the parameter and the value (the password masked).
    """
    given = {k: v for k, v in dsn.params.items() if k in PSYCOPG_PARAMS}
    opts = parse_params(replace(dsn, params=given), PSYCOPG_PARAMS)
    kwargs = conninfo_kwargs(dsn)
    kwargs["autocommit"] = True
    attrs: dict[str, Any] = {}
    for key, value in opts.items():
        (kwargs if key == "prepare_threshold" else attrs)[key] = value
    return kwargs, attrs


def _is_dead(conn: Any, exc: BaseException) -> bool:
    if conn.broken or conn.closed:
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and (state in _DEAD_STATES or state.startswith("08"))


def _needs_rollback(conn: psycopg.BaseConnection[Any]) -> bool:
    """The reset's verdict from the local transaction status (no I/O).

    Returns:
        True when a transaction is open (INTRANS, INERROR); False when IDLE.

    Raises:
        psycopg.OperationalError: ACTIVE (a statement still running) or
            UNKNOWN (the link is gone): not reusable.
    """
    status = conn.info.transaction_status
    if status == _IDLE:
        return False
    if status not in _DIRTY:
        raise psycopg.OperationalError(f"connection not reusable: {status.name}")
    return True


class PsycopgAdapter(SyncAdapter):
    """psycopg ``Connection``."""

    name = "postgresql"
    paramstyle = psycopg.paramstyle

    def connector(
        self, dsn: DSN
    ) -> tuple[Callable[[], psycopg.Connection[Any]], Callable[[], None] | None]:
        """``psycopg.connect`` with the DSN's parameters, autocommit on."""
        kwargs, attrs = connect_options(dsn)

        def connect() -> psycopg.Connection[Any]:
            conn = psycopg.Connection.connect(**kwargs)
            for key, value in attrs.items():
                setattr(conn, key, value)
            return conn

        return connect, None

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Autocommit: sqlgate issues BEGIN itself."""
        if not conn.autocommit:
            conn.autocommit = True

    def is_closed(self, conn: psycopg.Connection[Any]) -> bool:
        """Psycopg's own flags: closed by us, or broken by a failed I/O."""
        return conn.closed or conn.broken

    def ping(self, conn: psycopg.Connection[Any]) -> None:
        """An empty query: one round trip, PgBouncer-safe."""
        conn.execute("")

    def is_dead(self, conn: psycopg.Connection[Any], exc: BaseException) -> bool:
        """Broken/closed connection, or a shutdown/connection SQLSTATE."""
        return _is_dead(conn, exc)

    def reset(self, conn: psycopg.Connection[Any]) -> None:
        """Roll back only when a transaction is open (a local status read).

        Raises:
            psycopg.OperationalError: a statement is still running, or the
                link is gone: the pool discards the connection.
        """
        if _needs_rollback(conn):
            conn.rollback()
        if not conn.autocommit:
            conn.autocommit = True

    def begin(
        self, conn: psycopg.Connection[Any], isolation: str | None, read_only: bool
    ) -> None:
        """``BEGIN [ISOLATION LEVEL x] [READ ONLY]``."""
        conn.execute("BEGIN" + sql_isolation(isolation, read_only))

    def last_insert_id(self, cursor: Any) -> int | None:
        """PostgreSQL has none: use ``INSERT ... RETURNING``."""
        return None


class _PsycopgAsyncCursor(AsyncCursor):
    def __init__(self, cur: psycopg.AsyncCursor[Any]) -> None:
        self._cur = cur
        desc = cur.description
        self.columns = tuple(d.name for d in desc) if desc else ()

    async def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        if self._cur.description is None:
            return []
        return await self._cur.fetchmany(n)

    async def aclose(self) -> None:
        await self._cur.close()


class PsycopgAsyncAdapter(AsyncAdapter):
    """psycopg ``AsyncConnection``: the same rules as ``PsycopgAdapter``."""

    name = "postgresql"
    paramstyle = psycopg.paramstyle

    def connector(
        self, dsn: DSN
    ) -> tuple[
        Callable[[], Awaitable[psycopg.AsyncConnection[Any]]], Callable[[], None] | None
    ]:
        """``AsyncConnection.connect`` with the DSN's parameters, autocommit on."""
        kwargs, attrs = connect_options(dsn)

        async def connect() -> psycopg.AsyncConnection[Any]:
            conn = await psycopg.AsyncConnection.connect(**kwargs)
            for key, value in attrs.items():
                setattr(conn, key, value)
            return conn

        return connect, None

    async def prepare(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Autocommit: sqlgate issues BEGIN itself."""
        if not conn.autocommit:
            await conn.set_autocommit(True)

    def is_closed(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Psycopg's own flags: closed by us, or broken by a failed I/O."""
        return conn.closed or conn.broken

    async def ping(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """An empty query: one round trip, PgBouncer-safe."""
        await conn.execute("")

    def is_dead(self, conn: psycopg.AsyncConnection[Any], exc: BaseException) -> bool:
        """Broken/closed connection, or a shutdown/connection SQLSTATE."""
        return _is_dead(conn, exc)

    async def reset(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Roll back only when a transaction is open (see ``PsycopgAdapter.reset``).

        Raises:
            psycopg.OperationalError: a statement is still running, or the
                link is gone: the pool discards the connection.

        Cancellation:
            A cancel during the ROLLBACK leaves the connection's state
            unknown; the pool discards it.
        """
        if _needs_rollback(conn):
            await conn.rollback()
        if not conn.autocommit:
            await conn.set_autocommit(True)

    async def begin(
        self, conn: psycopg.AsyncConnection[Any], isolation: str | None, read_only: bool
    ) -> None:
        """``BEGIN [ISOLATION LEVEL x] [READ ONLY]``."""
        await conn.execute("BEGIN" + sql_isolation(isolation, read_only))

    async def commit(self, conn: psycopg.AsyncConnection[Any], read_only: bool) -> None:
        """COMMIT."""
        await conn.commit()

    async def rollback(
        self, conn: psycopg.AsyncConnection[Any], read_only: bool
    ) -> None:
        """ROLLBACK."""
        await conn.rollback()

    async def exec(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: Any
    ) -> tuple[int, int | None]:
        """Run a statement; (rowcount, None)."""
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            return cur.rowcount, None

    async def query(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: Any
    ) -> AsyncCursor:
        """Run a query; its buffered result."""
        cur = conn.cursor()
        try:
            await cur.execute(sql, params)
        except BaseException:
            await cur.close()
            raise
        return _PsycopgAsyncCursor(cur)


SYNC = PsycopgAdapter()
ASYNC = PsycopgAsyncAdapter()
