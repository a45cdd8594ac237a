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

Cancel: ``cancel_safe(timeout=CANCEL_TIMEOUT)``, libpq's cancel request on a
connection of its own (non-blocking with libpq >= 17, else ``cancel()``),
which psycopg allows from another thread or task while the connection is
busy. It names the backend (its pid and secret key), not a statement: the
server stops whatever that backend runs when the request arrives, and ignores
it when the backend is idle, waiting for a command. So a late cancel is
harmless only if the caller starts no further statement before ``cancel``
returned (by then the server has signalled the backend). The statement raises
``psycopg.errors.QueryCanceled`` (SQLSTATE 57014, also the error of the
server's ``statement_timeout``), which is a SQL error, not a dead link.
Outside a transaction the connection is IDLE again once that error is read;
inside one, the transaction is aborted (INERROR) and the caller's ROLLBACK
makes it clean. A task cancelled while awaiting a statement on an
``AsyncConnection`` gets the same cancel from psycopg itself, which then
waits up to 5 s for the statement to end (else it closes the connection).

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

from sqlgate._reset import (
    commit_open_transaction,
    commit_open_transaction_async,
    needs_rollback,
)
from sqlgate.drivers._base import (
    CANCEL_TIMEOUT,
    AsyncAdapter,
    AsyncCursor,
    SyncAdapter,
    log,
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

    Args:
        dsn: a parsed ``postgresql://`` DSN.

    Returns:
        The DSN's query parameters except psycopg's own (``PSYCOPG_PARAMS``),
        plus ``host``, ``port``, ``user``, ``password`` and ``dbname`` where
        the DSN gives them (these win over a query parameter of that name).
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


_STATUS = pq.TransactionStatus
#: States a cancelled statement leaves a clean (or cleanly rolled back) link in.
_AFTER_CANCEL_OUTSIDE = frozenset({_STATUS.IDLE})
_AFTER_CANCEL_INSIDE = frozenset({_STATUS.IDLE, _STATUS.INTRANS, _STATUS.INERROR})


def _is_cancelled(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.QueryCanceled)


def _reusable_after_cancel(conn: Any, in_transaction: bool) -> bool:
    if conn.closed or conn.broken:
        return False
    status = conn.info.transaction_status
    if in_transaction:
        return status in _AFTER_CANCEL_INSIDE
    return status in _AFTER_CANCEL_OUTSIDE


class PsycopgAdapter(SyncAdapter):
    """psycopg ``Connection``."""

    name = "postgresql"
    paramstyle = psycopg.paramstyle

    def connector(
        self, dsn: DSN
    ) -> tuple[Callable[[], psycopg.Connection[Any]], Callable[[], None] | None]:
        """See ``SyncAdapter.connector``; ``psycopg.Connection.connect``, autocommit on.

        Returns:
            (a callable dialing one connection with ``connect_options``'
            arguments and setting ``prepared_max`` when given, None).

        Raises:
            ValueError: a bad ``prepare_threshold``/``prepared_max``. Other
                parameters go to libpq, which rejects unknown ones at the
                first dial.
        """
        kwargs, attrs = connect_options(dsn)

        def connect() -> psycopg.Connection[Any]:
            conn = psycopg.Connection.connect(**kwargs)
            for key, value in attrs.items():
                setattr(conn, key, value)
            return conn

        return connect, None

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """See ``SyncAdapter.prepare``; sets ``autocommit`` only if it is off."""
        if not conn.autocommit:
            conn.autocommit = True

    def is_closed(self, conn: psycopg.Connection[Any]) -> bool:
        """See ``SyncAdapter.is_closed``; psycopg's ``closed`` or ``broken`` flag.

        Args:
            conn: the psycopg connection.

        Returns:
            True when closed, or marked broken by a failed socket operation.
        """
        return conn.closed or conn.broken

    def ping(self, conn: psycopg.Connection[Any]) -> None:
        """See ``SyncAdapter.ping``; an empty query (no parse, plan or transaction).

        It takes no server connection from PgBouncer in transaction mode.

        Args:
            conn: the psycopg connection.

        Raises:
            psycopg.OperationalError: the link is gone.
        """
        conn.execute("")

    def is_dead(self, conn: psycopg.Connection[Any], exc: BaseException) -> bool:
        """See ``SyncAdapter.is_dead``; by psycopg's flags and the SQLSTATE.

        Args:
            conn: the psycopg connection.
            exc: what the call raised.

        Returns:
            True when ``conn`` is ``broken`` or ``closed``, or ``exc`` carries
            SQLSTATE 57P01 (admin_shutdown, ``pg_terminate_backend``), 57P02
            (crash_shutdown), 57P03 (cannot_connect_now) or class 08
            (connection exception); False for any other error.
        """
        return _is_dead(conn, exc)

    def cancel(self, conn: psycopg.Connection[Any]) -> bool:
        """See ``SyncAdapter.cancel``; ``cancel_safe`` (the protocol's cancel).

        Safe from another thread while ``conn`` is busy: it opens a cancel
        connection of its own and uses ``conn`` only to read the backend's
        address and key. Waits ``CANCEL_TIMEOUT`` at most.

        Args:
            conn: the psycopg connection.

        Returns:
            True when the server took the request (a closed connection has
            nothing to cancel: True too); False when it failed (logged).
        """
        try:
            conn.cancel_safe(timeout=CANCEL_TIMEOUT)
        except Exception as exc:
            log.warning("cancel request failed: %r", exc)
            return False
        return True

    def is_cancelled(self, exc: BaseException) -> bool:
        """See ``SyncAdapter.is_cancelled``; ``QueryCanceled`` (SQLSTATE 57014).

        Also what the server's ``statement_timeout`` raises.
        """
        return _is_cancelled(exc)

    def reusable_after_cancel(
        self, conn: psycopg.Connection[Any], in_transaction: bool
    ) -> bool:
        """See ``SyncAdapter.reusable_after_cancel``; by the local status.

        Args:
            conn: the psycopg connection, its statement's error read.
            in_transaction: the statement ran in a ``begin`` transaction.

        Returns:
            Outside a transaction: True when IDLE. Inside one: True when
            IDLE, INTRANS or INERROR (the caller's ROLLBACK cleans it).
            False when closed, broken, ACTIVE or UNKNOWN.
        """
        return _reusable_after_cancel(conn, in_transaction)

    def reset(self, conn: psycopg.Connection[Any]) -> None:
        """See ``SyncAdapter.reset``; no round trip when IDLE.

        Reads ``info.transaction_status`` (local): INTRANS or INERROR gets a
        ROLLBACK; autocommit is put back if it was turned off.

        Args:
            conn: the psycopg connection.

        Raises:
            ConnectionError: ACTIVE (a statement still running) or UNKNOWN
                (the link is gone): the pool discards the connection.
            psycopg.OperationalError: the ROLLBACK failed (discarded too).
        """
        if needs_rollback(conn):  # sqlgate._reset: the rule the pools use
            conn.rollback()
        if not conn.autocommit:
            conn.autocommit = True

    def begin(
        self, conn: psycopg.Connection[Any], isolation: str | None, read_only: bool
    ) -> None:
        """See ``SyncAdapter.begin``; one ``BEGIN [ISOLATION LEVEL x] [READ ONLY]``.

        Args:
            conn: the psycopg connection.
            isolation: any of the four SQL levels (PostgreSQL runs READ
                UNCOMMITTED as READ COMMITTED), or None for the server's
                default.
            read_only: start it READ ONLY.

        Raises:
            psycopg.Error: the BEGIN failed.
        """
        conn.execute("BEGIN" + sql_isolation(isolation, read_only))

    def commit(self, conn: psycopg.Connection[Any], read_only: bool) -> None:
        """See ``SyncAdapter.commit``; one COMMIT, unless the transaction failed.

        psycopg's ``commit()`` sends COMMIT even when PostgreSQL already
        aborted the transaction (an error inside it, caught or not); the
        server answers ROLLBACK and psycopg reports success. The local status
        (INERROR) is read first: the transaction is rolled back and
        ``TransactionAborted`` raised (as Go's pgx ``ErrTxCommitRollback``).

        Args:
            conn: the psycopg connection.
            read_only: unused (PostgreSQL ends a READ ONLY one the same way).

        Raises:
            TransactionAborted: nothing was committed.
            psycopg.Error: the COMMIT failed (e.g. a serialization failure).
        """
        commit_open_transaction(conn)

    def last_insert_id(self, cursor: Any) -> int | None:
        """See ``SyncAdapter.last_insert_id``; always None (use ``RETURNING``)."""
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
        """See ``AsyncAdapter.connector``; as ``PsycopgAdapter.connector``, async.

        Returns:
            (an async callable dialing one ``AsyncConnection``, None).

        Raises:
            ValueError: a bad ``prepare_threshold``/``prepared_max``.
        """
        kwargs, attrs = connect_options(dsn)

        async def connect() -> psycopg.AsyncConnection[Any]:
            conn = await psycopg.AsyncConnection.connect(**kwargs)
            for key, value in attrs.items():
                setattr(conn, key, value)
            return conn

        return connect, None

    async def prepare(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """See ``AsyncAdapter.prepare``; ``set_autocommit(True)`` only if it is off."""
        if not conn.autocommit:
            await conn.set_autocommit(True)

    def is_closed(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """See ``PsycopgAdapter.is_closed``: the ``closed`` or ``broken`` flag."""
        return conn.closed or conn.broken

    async def ping(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """See ``PsycopgAdapter.ping``: an empty query, awaited."""
        await conn.execute("")

    def is_dead(self, conn: psycopg.AsyncConnection[Any], exc: BaseException) -> bool:
        """See ``PsycopgAdapter.is_dead``: the flags, 57P01-57P03 or class 08."""
        return _is_dead(conn, exc)

    async def cancel(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """See ``PsycopgAdapter.cancel``: ``cancel_safe``, awaited.

        Args:
            conn: the psycopg connection, maybe awaited by another task.

        Returns:
            True when the server took the request; False when it failed
            (logged).

        Cancellation:
            The request may or may not have been sent; the statement ends
            either way or the caller's deadline handling discards it.
        """
        try:
            await conn.cancel_safe(timeout=CANCEL_TIMEOUT)
        except Exception as exc:
            log.warning("cancel request failed: %r", exc)
            return False
        return True

    def is_cancelled(self, exc: BaseException) -> bool:
        """See ``PsycopgAdapter.is_cancelled``: ``QueryCanceled``."""
        return _is_cancelled(exc)

    def reusable_after_cancel(
        self, conn: psycopg.AsyncConnection[Any], in_transaction: bool
    ) -> bool:
        """See ``PsycopgAdapter.reusable_after_cancel``: by the local status."""
        return _reusable_after_cancel(conn, in_transaction)

    async def reset(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """See ``PsycopgAdapter.reset``; ROLLBACK only when INTRANS or INERROR.

        Args:
            conn: the psycopg connection.

        Raises:
            ConnectionError: ACTIVE or UNKNOWN; psycopg.OperationalError:
                the ROLLBACK failed. The pool discards the connection.

        Cancellation:
            A cancel during the ROLLBACK leaves the connection's state
            unknown; the pool discards it.
        """
        if needs_rollback(conn):
            await conn.rollback()
        if not conn.autocommit:
            await conn.set_autocommit(True)

    async def begin(
        self, conn: psycopg.AsyncConnection[Any], isolation: str | None, read_only: bool
    ) -> None:
        """See ``PsycopgAdapter.begin``; one BEGIN, any of the four levels."""
        await conn.execute("BEGIN" + sql_isolation(isolation, read_only))

    async def commit(self, conn: psycopg.AsyncConnection[Any], read_only: bool) -> None:
        """See ``PsycopgAdapter.commit``: an aborted transaction raises."""
        await commit_open_transaction_async(conn)

    async def rollback(
        self, conn: psycopg.AsyncConnection[Any], read_only: bool
    ) -> None:
        """See ``AsyncAdapter.rollback``; psycopg's ``rollback()`` (one ROLLBACK)."""
        await conn.rollback()

    async def exec(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: Any
    ) -> tuple[int, int | None]:
        """See ``AsyncAdapter.exec``; on a cursor closed before returning.

        Args:
            conn: the psycopg connection.
            sql: the statement.
            params: ``%s`` / ``%(name)s`` parameters, or None.

        Returns:
            (the cursor's ``rowcount``, -1 when the command reports none;
            always None: use ``RETURNING``).

        Raises:
            psycopg.Error: the statement failed.
        """
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            return cur.rowcount, None

    async def exec_many(
        self, conn: psycopg.AsyncConnection[Any], sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        """See ``AsyncAdapter.exec_many``; psycopg's ``executemany`` (pipelined).

        Args:
            conn: the psycopg connection.
            sql: the statement.
            seq_of_params: ``%s`` / ``%(name)s`` parameter sets.

        Returns:
            (the total ``rowcount``, None).

        Raises:
            psycopg.Error: a statement failed.
        """
        async with conn.cursor() as cur:
            await cur.executemany(sql, seq_of_params)
            return cur.rowcount, None

    async def query(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: Any
    ) -> AsyncCursor:
        """See ``AsyncAdapter.query``; the whole result arrives before it returns.

        psycopg's client-side cursor buffers every row, so fetching does no
        I/O; the cursor is closed if the query fails.

        Args:
            conn: the psycopg connection.
            sql: the query.
            params: ``%s`` / ``%(name)s`` parameters, or None.

        Returns:
            The buffered result; a statement returning no rows yields none.

        Raises:
            psycopg.Error: the query failed.

        Cancellation:
            The cursor is closed; the caller discards the connection.
        """
        cur = conn.cursor()
        try:
            await cur.execute(sql, params)
        except BaseException:
            await cur.close()
            raise
        return _PsycopgAsyncCursor(cur)


SYNC = PsycopgAdapter()
ASYNC = PsycopgAsyncAdapter()
