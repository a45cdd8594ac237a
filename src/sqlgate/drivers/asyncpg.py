"""PostgreSQL for asyncio through asyncpg (``postgresql+asyncpg://``).

asyncpg is not a DB-API driver; this adapter maps it. Parameters are
positional, ``$1, $2...`` (``db.paramstyle`` is "numeric_dollar"), passed as a
sequence: ``await db.exec("insert into t values ($1, $2)", (1, "a"))``. A
statement without parameters goes through the simple query protocol (several
statements allowed); one with parameters is prepared (and cached by asyncpg).
Rows come back as tuples. ``rows_affected`` is read from the command tag
("INSERT 0 3" -> 3); ``last_insert_id`` is None (use RETURNING).

DSN parameters: ``application_name`` (sent as a server setting),
``connect_timeout`` (seconds), ``statement_cache_size``.

Connections are always in autocommit (asyncpg has no other mode); ``begin``
sends ``BEGIN [ISOLATION LEVEL x] [READ ONLY]``. Reset on return:
``is_in_transaction()`` is a local read; only a connection left in a
transaction (or with a ``Transaction`` object left started) gets
``reset()``. (asyncpg's own pool sends a reset query on every
release.)

Ping: an empty query, as for psycopg. asyncpg (up to 0.30 at least) fails to
decode the EmptyQueryResponse's missing command tag and raises
``AttributeError`` after the server's ReadyForQuery was read, with the
connection intact; that error is taken as the answer.

Dead link: ``is_closed()``, ``ConnectionDoesNotExistError``, an ``OSError``,
or SQLSTATE 57P01/57P02/57P03 or class 08.

Cancel: asyncpg cancels on the server by itself when the task awaiting a
statement is cancelled (``asyncio.timeout``, ``wait_for``, a TaskGroup): it
sends the protocol's CancelRequest with the backend key the connection
received at startup, the task gets ``CancelledError`` at once, and the
connection's next operation waits until the server has answered the
cancelled statement; if the request fails, asyncpg terminates the connection
(``is_closed()`` then says so). That request is the only cancel used here:
PgBouncer routes it to the right server connection, where
``pg_cancel_backend(pid)`` could stop another client's statement on a shared
backend, and it needs no login. So the adapter says ``cancels_by_task``: the
handle's deadline cancels the statement's task, and ``cancel`` only waits
for asyncpg's request under way to be answered (asyncpg's protocol
internals ``_is_cancelling`` and ``_wait_for_cancellation``; without them,
or with no request under way, it returns False and the connection is
discarded). It sends nothing itself. Like every CancelRequest, asyncpg's
names the backend, not a statement. The cancelled statement's task gets
``CancelledError``; the server saw ``QueryCanceledError`` (SQLSTATE 57014):
outside a transaction the connection is ready for the next statement;
inside one the transaction is aborted and the caller's ROLLBACK cleans it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from sqlgate._reset import needs_rollback, rollback_open_transaction_async
from sqlgate.drivers._base import (
    CANCEL_TIMEOUT,
    AsyncAdapter,
    AsyncCursor,
    log,
    parse_params,
    sql_isolation,
)
from sqlgate.errors import TransactionAborted

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from sqlgate.drivers._dsn import DSN

__all__ = ["ASYNC", "AsyncpgAdapter"]

_DEAD_STATES = frozenset({"57P01", "57P02", "57P03"})
_PARAMS: dict[str, Callable[[str], object]] = {
    "application_name": str,
    "connect_timeout": float,
    "statement_cache_size": int,
}


def _args(params: Any) -> Sequence[Any]:
    if params is None:
        return ()
    if isinstance(params, dict) or not isinstance(params, list | tuple):
        raise TypeError(
            "asyncpg takes positional parameters ($1, $2...) as a tuple or list, "
            f"got {type(params).__name__}"
        )
    return params


def _connect_kwargs(dsn: DSN) -> dict[str, Any]:
    """``asyncpg.connect``'s arguments for a DSN (see ``AsyncpgAdapter.connector``)."""
    opts = parse_params(dsn, _PARAMS)
    kwargs: dict[str, Any] = {
        "host": dsn.host,
        "port": dsn.port,
        "user": dsn.user,
        "password": dsn.password,
        "database": dsn.database or None,
    }
    if "application_name" in opts:
        kwargs["server_settings"] = {"application_name": opts["application_name"]}
    if "connect_timeout" in opts:
        kwargs["timeout"] = opts["connect_timeout"]
    if "statement_cache_size" in opts:
        kwargs["statement_cache_size"] = opts["statement_cache_size"]
    return kwargs


class _Records(AsyncCursor):
    def __init__(self, columns: tuple[str, ...], rows: list[Any]) -> None:
        self.columns = columns
        self._rows = rows
        self._at = 0

    async def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        chunk = self._rows[self._at : self._at + n]
        self._at += len(chunk)
        return [tuple(r) for r in chunk]

    async def aclose(self) -> None:
        self._rows = []


class AsyncpgAdapter(AsyncAdapter):
    """asyncpg ``Connection``."""

    name = "asyncpg"
    paramstyle = "numeric_dollar"

    def for_dsn(self, dsn: DSN) -> AsyncpgAdapter:
        """See ``AsyncAdapter.for_dsn``; the shared adapter (``cancel`` needs no DSN).

        Args:
            dsn: a parsed ``postgresql+asyncpg://`` DSN.

        Returns:
            This adapter.

        Raises:
            ValueError: an unknown parameter or a bad value.
        """
        _connect_kwargs(dsn)
        return self

    def connector(
        self, dsn: DSN
    ) -> tuple[Callable[[], Awaitable[asyncpg.Connection]], Callable[[], None] | None]:
        """See ``AsyncAdapter.connector``; ``asyncpg.connect`` (always autocommit).

        ``application_name`` is sent as a server setting, ``connect_timeout``
        becomes asyncpg's ``timeout``; ``statement_cache_size`` is passed as is.

        Returns:
            (an async callable dialing one asyncpg connection, None).

        Raises:
            ValueError: an unknown parameter or a bad value; the message
                names it.
        """
        kwargs = _connect_kwargs(dsn)

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(**kwargs)

        return connect, None

    def is_closed(self, conn: asyncpg.Connection) -> bool:
        """See ``AsyncAdapter.is_closed``; asyncpg's ``is_closed()``."""
        return bool(conn.is_closed())

    async def ping(self, conn: asyncpg.Connection) -> None:
        """See ``AsyncAdapter.ping``; an empty query, one round trip.

        asyncpg's failure to decode the empty reply (an ``AttributeError``
        mentioning "decode", raised after the server's ReadyForQuery) counts
        as the answer: see the module docstring.

        Args:
            conn: the asyncpg connection.

        Raises:
            asyncpg.InterfaceError: the connection was already closed.
            asyncpg.exceptions.ConnectionDoesNotExistError: the link was
                lost during the round trip.
            OSError: the socket failed.
        """
        try:
            await conn.execute("")
        except AttributeError as exc:
            if "decode" not in str(exc):
                raise

    def is_dead(self, conn: asyncpg.Connection, exc: BaseException) -> bool:
        """See ``AsyncAdapter.is_dead``; by the flag, the class and the SQLSTATE.

        Args:
            conn: the asyncpg connection.
            exc: what the call raised.

        Returns:
            True when ``conn.is_closed()``, ``exc`` is a
            ``ConnectionDoesNotExistError`` or an ``OSError``, or it carries
            SQLSTATE 57P01, 57P02, 57P03 or class 08; False otherwise.
        """
        if conn.is_closed() or isinstance(
            exc, asyncpg.exceptions.ConnectionDoesNotExistError | OSError
        ):
            return True
        state = getattr(exc, "sqlstate", None)
        return isinstance(state, str) and (
            state in _DEAD_STATES or state.startswith("08")
        )

    #: See ``AsyncAdapter.cancels_by_task``: asyncpg's own CancelRequest.
    cancels_by_task = True

    async def cancel(self, conn: asyncpg.Connection) -> bool:
        """See ``AsyncAdapter.cancel``; waits for asyncpg's own cancel request.

        asyncpg sends the protocol's CancelRequest when the task awaiting a
        statement is cancelled; this waits, ``CANCEL_TIMEOUT`` at most, until
        the server answered the cancelled statement. It sends nothing and
        opens no connection: a statement whose task runs on is not stopped
        (False: the caller cancels the task, see ``cancels_by_task``).

        Args:
            conn: the asyncpg connection.

        Returns:
            True when ``conn`` is closed (nothing runs) or asyncpg's request
            was answered with the connection open; False when no request is
            under way, the wait failed or timed out (logged), or asyncpg
            lacks the internals used.

        Cancellation:
            asyncpg's request goes on; the caller treats ``conn`` as for False.
        """
        try:
            if conn.is_closed():
                return True  # nothing runs on it
            proto = conn._protocol
            if not proto._is_cancelling():
                return False
            wait = proto._wait_for_cancellation
        except Exception as exc:  # another asyncpg, or not a connection
            log.warning("cancel: no asyncpg cancel to wait for: %r", exc)
            return False
        try:
            await wait(CANCEL_TIMEOUT)
        except Exception as exc:  # asyncpg terminated the connection
            log.warning("cancel: asyncpg's cancel request failed: %r", exc)
            return False
        return not conn.is_closed()

    def is_cancelled(self, exc: BaseException) -> bool:
        """See ``AsyncAdapter.is_cancelled``; ``QueryCanceledError`` (57014)."""
        return isinstance(exc, asyncpg.exceptions.QueryCanceledError)

    def reusable_after_cancel(
        self, conn: asyncpg.Connection, in_transaction: bool
    ) -> bool:
        """See ``AsyncAdapter.reusable_after_cancel``; by asyncpg's local state.

        Args:
            conn: the asyncpg connection, its statement's error read.
            in_transaction: the statement ran in a ``begin`` transaction.

        Returns:
            False when closed; outside a transaction, True when asyncpg is
            not in one; inside one, True (the caller's ROLLBACK cleans it).
        """
        if conn.is_closed():
            return False
        return in_transaction or not conn.is_in_transaction()

    async def reset(self, conn: asyncpg.Connection) -> None:
        """See ``AsyncAdapter.reset``; no round trip outside a transaction.

        ``is_in_transaction()`` is a local read. A connection left in a
        transaction, or with a ``Transaction`` object started through
        ``Conn.raw``, gets asyncpg's ``reset()``, as on ``AsyncPool``'s own
        return path (``sqlgate._reset``): it rolls back and forgets that
        object, which a bare ROLLBACK would leave behind (the next caller's
        ``transaction()`` would become a SAVEPOINT and fail). There is no
        autocommit mode to restore.

        Args:
            conn: the asyncpg connection.

        Raises:
            asyncpg.exceptions.ConnectionDoesNotExistError: the connection is
                closed (the pool discards it).
            asyncpg.PostgresError: the reset failed.
        """
        if conn.is_closed():
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection is closed")
        if needs_rollback(conn):  # sqlgate._reset: the rule the pools use
            await rollback_open_transaction_async(conn)

    async def begin(
        self, conn: asyncpg.Connection, isolation: str | None, read_only: bool
    ) -> None:
        """See ``AsyncAdapter.begin``; ``BEGIN [ISOLATION LEVEL x] [READ ONLY]``.

        Sent as SQL, not through asyncpg's ``transaction()`` object.

        Args:
            conn: the asyncpg connection.
            isolation: any of the four SQL levels (READ UNCOMMITTED runs as
                READ COMMITTED), or None for the server's default.
            read_only: start it READ ONLY.

        Raises:
            asyncpg.PostgresError: the BEGIN failed.
        """
        await conn.execute("BEGIN" + sql_isolation(isolation, read_only))

    async def commit(self, conn: asyncpg.Connection, read_only: bool) -> None:
        """See ``AsyncAdapter.commit``; sends ``COMMIT`` as SQL.

        PostgreSQL answers a COMMIT of an aborted transaction (an error
        inside it, caught or not) with the tag ROLLBACK: that raises.

        Args:
            conn: the asyncpg connection.
            read_only: unused.

        Raises:
            TransactionAborted: nothing was committed (the server rolled back).
            asyncpg.PostgresError: the COMMIT failed.
        """
        if await conn.execute("COMMIT") == "ROLLBACK":
            raise TransactionAborted(
                "the transaction was already aborted by an earlier error: "
                "COMMIT rolled it back, nothing was committed"
            )

    async def rollback(self, conn: asyncpg.Connection, read_only: bool) -> None:
        """See ``AsyncAdapter.rollback``; sends ``ROLLBACK`` as SQL."""
        await conn.execute("ROLLBACK")

    async def exec(
        self, conn: asyncpg.Connection, sql: str, params: Any
    ) -> tuple[int, int | None]:
        """See ``AsyncAdapter.exec``; ``conn.execute`` with positional arguments.

        Without parameters it uses the simple query protocol (several
        statements allowed); with them, a prepared statement.

        Args:
            conn: the asyncpg connection.
            sql: the statement, with ``$1, $2...`` placeholders.
            params: a tuple or list, or None.

        Returns:
            (the command tag's last number, "INSERT 0 3" -> 3, or -1 when it
            has none; always None: use ``RETURNING``).

        Raises:
            TypeError: ``params`` is a dict or not a tuple/list (nothing was
                sent).
            asyncpg.PostgresError: the statement failed.
        """
        tag = await conn.execute(sql, *_args(params))
        last = tag.rsplit(" ", 1)[-1] if isinstance(tag, str) else ""
        return (int(last) if last.isdigit() else -1), None

    async def exec_many(
        self, conn: asyncpg.Connection, sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        """See ``AsyncAdapter.exec_many``; ``conn.executemany`` (one prepare).

        Args:
            conn: the asyncpg connection.
            sql: the statement, with ``$1, $2...`` placeholders.
            seq_of_params: tuples or lists of positional parameters.

        Returns:
            (-1: asyncpg reports no count for it; None).

        Raises:
            TypeError: a parameter set is a dict or not a tuple/list (nothing
                was sent).
            asyncpg.PostgresError: a statement failed (none took effect:
                asyncpg runs them in one implicit transaction).
        """
        args = [_args(p) for p in seq_of_params]
        await conn.executemany(sql, args)
        return -1, None

    async def query(
        self, conn: asyncpg.Connection, sql: str, params: Any
    ) -> AsyncCursor:
        """See ``AsyncAdapter.query``; prepares, then fetches every row at once.

        Args:
            conn: the asyncpg connection.
            sql: the query, with ``$1, $2...`` placeholders.
            params: a tuple or list, or None.

        Returns:
            The whole result in memory (fetching does no I/O), its columns
            named from the prepared statement's attributes.

        Raises:
            TypeError: ``params`` is a dict or not a tuple/list (nothing was
                sent).
            asyncpg.PostgresError: the prepare or the query failed.
        """
        args = _args(params)
        stmt = await conn.prepare(sql)
        rows = await stmt.fetch(*args)
        columns = tuple(a.name for a in stmt.get_attributes())
        return _Records(columns, rows)


ASYNC = AsyncpgAdapter()
