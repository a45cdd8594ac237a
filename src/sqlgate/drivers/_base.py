"""What every driver adapter offers, and the pure helpers they share.

An adapter is a stateless object that knows one driver: how to dial from a
parsed DSN, how to tell a dead link from a SQL error, how to ping cheaply, how
to start and end a transaction, and how to make a returned connection clean
again. The handle (``db_async.py``, and ``db.py`` generated from it) calls
nothing of a driver directly; it goes through an adapter. Both adapter kinds
have one shape, the blocking one's methods being the asyncio one's without
``await``: ``exec`` returns (rows affected, last insert id), ``query`` a
cursor with ``columns``, ``fetchmany`` and ``close`` (``aclose`` awaited).

Every adapter puts its connections in autocommit mode (Go's semantics: a
statement outside a transaction commits by itself) and starts transactions
with an explicit ``BEGIN``; the return-path reset rolls back whatever a caller
left open and puts autocommit back if the caller turned it off through
``Conn.raw``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TYPE_CHECKING, Any, Self

from sqlgate.drivers._dsn import with_quoted

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlgate.drivers._dsn import DSN

__all__ = [
    "CANCEL_TIMEOUT",
    "ISOLATION_LEVELS",
    "AsyncAdapter",
    "AsyncCursor",
    "Cursor",
    "SyncAdapter",
    "parse_params",
    "scrub",
    "validate_isolation",
]

log = logging.getLogger("sqlgate")

#: Longest an adapter's ``cancel`` waits (s): its side connection's dial and
#: answer, or the protocol cancel request's round trip.
CANCEL_TIMEOUT = 2.0

#: Isolation level names accepted by ``begin``, as SQL spells them.
ISOLATION_LEVELS = (
    "read uncommitted",
    "read committed",
    "repeatable read",
    "serializable",
)


def validate_isolation(isolation: str | None) -> str | None:
    """Normalise an isolation level name ("Repeatable_Read" -> "repeatable read").

    Args:
        isolation: a level name in any case, with spaces, underscores or
            hyphens; None means the server's default.

    Returns:
        The SQL spelling, or None.

    Raises:
        ValueError: not one of ``ISOLATION_LEVELS``; the message names it.
        TypeError: not a string or None.
    """
    if isolation is None:
        return None
    if not isinstance(isolation, str):
        raise TypeError(f"isolation must be a str or None, got {isolation!r}")
    level = " ".join(re.split(r"[\s_-]+", isolation.strip().lower()))
    if level not in ISOLATION_LEVELS:
        raise ValueError(
            f"isolation must be one of {', '.join(map(repr, ISOLATION_LEVELS))}, "
            f"got {isolation!r}"
        )
    return level


def parse_params(
    dsn: DSN, allowed: dict[str, Callable[[str], object]]
) -> dict[str, object]:
    """Convert a DSN's query parameters with ``allowed``'s converters.

    Args:
        dsn: the parsed DSN; every one of its parameters must be allowed.
        allowed: parameter name -> converter (raises ValueError on a bad value).

    Returns:
        Parameter name -> converted value, for those the DSN gives.

    Raises:
        ValueError: a parameter is unknown or its value does not convert; the
            message names the parameter, its value and the known ones.
    """
    out: dict[str, object] = {}
    for key, raw in dsn.params.items():
        convert = allowed.get(key)
        if convert is None:
            known = ", ".join(sorted(allowed)) or "none"
            raise ValueError(
                f"unknown parameter {key!r} in {dsn.redacted()} "
                f"(known for {dsn.scheme}: {known})"
            )
        try:
            out[key] = convert(raw)
        except ValueError:
            raise ValueError(
                f"bad value for parameter {key!r} in {dsn.redacted()}: {raw!r}"
            ) from None
    return out


def scrub(exc: BaseException, secrets: Sequence[str]) -> BaseException:
    """Remove every secret from an exception, its chain and its notes, in place.

    Drivers sometimes echo the connection string in their messages; a
    password must never reach a log line or a traceback. Each secret is
    masked as given and in its percent-encoded spellings (``with_quoted``).
    The exception keeps its type (callers catch driver errors by type); its
    ``args`` are rewritten.

    Args:
        exc: the exception (its ``__cause__`` and ``__context__`` too).
        secrets: the strings to mask; empty ones are ignored.

    Returns:
        ``exc`` itself, for ``raise scrub(exc, ...)``.
    """
    words = with_quoted(secrets)
    if not words:
        return exc
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.args = tuple(_mask(a, words) for a in e.args)
        notes = getattr(e, "__notes__", None)
        if isinstance(notes, list):
            e.__notes__ = [_mask(n, words) for n in notes]
        for attr in ("msg", "message", "strerror", "pgerror"):
            value = getattr(e, attr, None)
            if isinstance(value, str) and any(w in value for w in words):
                # A read-only property keeps its value; args are masked anyway.
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(e, attr, _mask(value, words))
        _scrub_attributes(e, words)
        todo += (e.__cause__, e.__context__)
    return exc


def _scrub_attributes(e: BaseException, words: Sequence[str]) -> None:
    """Mask secrets in ``e``'s own attributes; drop an object that shows one.

    psycopg keeps the failed connection on its errors (``pgconn``), whose
    repr lists every conninfo option, the password among them: such an
    attribute is set to None.
    """
    shown = [*words, *(repr(w.encode())[2:-1] for w in words)]
    for name, value in list(getattr(e, "__dict__", {}).items()):
        if isinstance(value, str | bytes):
            masked = _mask(value, words)
            if masked == value:
                continue
        else:
            try:
                text = repr(value)
            except Exception:
                continue
            if not any(w in text for w in shown):
                continue
            masked = None
        with contextlib.suppress(AttributeError, TypeError):
            setattr(e, name, masked)


def _mask(value: Any, words: Sequence[str]) -> Any:
    if isinstance(value, str):
        for w in words:
            value = value.replace(w, "***")
    elif isinstance(value, bytes):
        for w in words:
            value = value.replace(w.encode(), b"***")
    return value


class _Adapter:
    """What both adapter kinds have: a name, a paramstyle, DSN variants.

    Attributes:
        name: the driver family ("sqlite", "postgresql", "mysql").
        paramstyle: the driver's DB-API paramstyle; SQL and parameters pass
            through unchanged in it.
    """

    name = "dbapi"
    paramstyle = "qmark"

    def for_dsn(self, dsn: DSN) -> Self:
        """The adapter to use for this DSN (a variant when a parameter needs one).

        Args:
            dsn: the parsed DSN.

        Returns:
            ``self``, or a variant configured from the DSN's parameters.

        Raises:
            ValueError: a DSN parameter does not convert; the message names
                it and the value (the password masked).
        """
        return self


class SyncAdapter(_Adapter):
    """A blocking driver's adapter; subclasses override what differs."""

    def connector(
        self, dsn: DSN
    ) -> tuple[Callable[[], Any], Callable[[], None] | None]:
        """A connect callable for the pool, and what to run when the DB closes.

        Args:
            dsn: the parsed DSN.

        Returns:
            (a callable that dials one connection and raises the driver's
            error on failure; a callable to run when the DB closes, or None).

        Raises:
            ValueError: a DSN parameter does not convert (password masked).
        """
        raise NotImplementedError

    def prepare(self, conn: Any) -> None:
        """Put a new connection in autocommit mode (once, after the dial).

        Args:
            conn: the driver's connection.

        Raises:
            The driver's error; the dial fails and the connection is closed.
        """

    def is_closed(self, conn: Any) -> bool:
        """Whether the driver already knows the link is gone (no I/O).

        Args:
            conn: the driver's connection.

        Returns:
            True when the connection is closed or broken by the driver's own
            flags; False when it does not know (the base's answer).
        """
        return False

    def ping(self, conn: Any) -> None:
        """A cheap round trip (the base does nothing).

        Args:
            conn: the driver's connection.

        Raises:
            The driver's error when the link is dead.
        """

    def is_dead(self, conn: Any, exc: BaseException) -> bool:
        """Whether ``exc`` (raised by a call on ``conn``) means a dead link.

        Args:
            conn: the connection the failing call was made on.
            exc: what the call raised (an ``Exception``; interrupts are
                judged by the caller).

        Returns:
            True for a dead link (the connection is discarded); False for a
            SQL error (the base's answer), which keeps the connection.
        """
        return False

    def cancel(self, conn: Any) -> bool:
        """Ask the server to stop the statement ``conn`` is running now.

        Called from another thread (the handle's deadline timer) while the
        owner thread may be blocked in a driver call on ``conn``, or may have
        just finished it. An override uses ``conn`` only through what the
        driver allows concurrently (a protocol cancel, ``interrupt()``, a
        side connection) and waits ``CANCEL_TIMEOUT`` at most per step.

        The caller's part of the race: it starts no further statement on
        ``conn`` until ``cancel`` has returned (e.g. the owner, once its call
        is over, waits for a cancel in flight before going on). Then a late
        cancel stops nothing: every adapter's request is ignored by an idle
        connection (each says how).

        Args:
            conn: the driver's connection, owned by another thread.

        Returns:
            True when the running statement was asked to stop, or none was
            running; False when the driver offers no cancel or sending it
            failed (logged; the base's answer): the caller then discards the
            connection. Never raises.
        """
        return False

    def is_cancelled(self, exc: BaseException) -> bool:
        """Whether ``exc`` is what a statement stopped before its end raises.

        Stopped by ``cancel``, by another session's cancel or kill of the
        statement (not of the connection), or by the server's own statement
        time limit where the driver reports it with the same error: the
        caller knows whether its deadline passed.

        Args:
            exc: what a call on a connection raised.

        Returns:
            True for the driver's "cancelled / interrupted" error; False for
            anything else (the base's answer).
        """
        return False

    def reusable_after_cancel(self, conn: Any, in_transaction: bool) -> bool:
        """Whether ``conn`` is in a known clean state after a cancelled statement.

        No I/O. Asked after the cancelled call raised (its error consumed).

        Args:
            conn: the driver's connection.
            in_transaction: the statement ran inside a transaction ``begin``
                started (the caller aborts that transaction either way).

        Returns:
            True when the connection can serve the next statement; False
            (the base's answer) makes the handle discard it.
        """
        return False

    def reset(self, conn: Any) -> None:
        """Make a returned connection clean: roll back, autocommit back on.

        Args:
            conn: the driver's connection.

        Raises:
            The driver's error, or one saying the connection is not reusable:
            the pool discards it.
        """
        raise NotImplementedError

    def begin(self, conn: Any, isolation: str | None, read_only: bool) -> None:
        """Start a transaction (``isolation`` already normalised).

        Args:
            conn: the driver's connection, in autocommit with no transaction.
            isolation: a level from ``validate_isolation``, or None.
            read_only: start a READ ONLY transaction.

        Raises:
            The driver's error (the database may lack the level).
        """
        raise NotImplementedError

    def commit(self, conn: Any, read_only: bool) -> None:
        """Commit the transaction ``begin`` started.

        Args:
            conn: the driver's connection.
            read_only: the transaction was started READ ONLY.

        Raises:
            The driver's error.
        """
        conn.commit()

    def rollback(self, conn: Any, read_only: bool) -> None:
        """Roll back the transaction ``begin`` started; arguments as ``commit``.

        Raises:
            The driver's error.
        """
        conn.rollback()

    def exec(self, conn: Any, sql: str, params: Any) -> tuple[int, int | None]:
        """Run one statement.

        Args:
            conn: the driver's connection.
            sql: the statement, in the driver's dialect.
            params: its parameters in the driver's paramstyle, or None.

        Returns:
            (rows affected, or -1 when unknown; the id an INSERT generated,
            or None: ``last_insert_id``).

        Raises:
            The driver's error (also one closing the cursor afterwards).
        """
        cur = self._execute(conn, sql, params)
        try:
            return cur.rowcount, self.last_insert_id(cur)
        finally:
            cur.close()

    def exec_many(
        self, conn: Any, sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        """Run one statement once per parameter set: the cursor's ``executemany``.

        One round trip where the driver batches it (psycopg's pipeline,
        PyMySQL's multi-row INSERT), else one per set.

        Args:
            conn: the driver's connection.
            sql: the statement, in the driver's dialect.
            seq_of_params: an iterable of parameter sets, in its paramstyle.

        Returns:
            (rows affected, the driver's ``rowcount``: the total where it sums
            it, -1 when unknown; None: drivers disagree on the id an
            ``executemany`` reports).

        Raises:
            The driver's error; the cursor is closed first.
        """
        cur = conn.cursor()
        try:
            cur.executemany(sql, seq_of_params)
            return cur.rowcount, None
        finally:
            _close_quietly(cur)

    def query(self, conn: Any, sql: str, params: Any) -> Cursor:
        """Run one query.

        Args:
            conn: the driver's connection.
            sql: the query, in the driver's dialect.
            params: its parameters in the driver's paramstyle, or None.

        Returns:
            Its result, to fetch from and close.

        Raises:
            The driver's error (no cursor is left open).
        """
        return _DBAPICursor(self._execute(conn, sql, params))

    def _execute(self, conn: Any, sql: str, params: Any) -> Any:
        """Run one statement on a new DB-API cursor and return it.

        Raises:
            The driver's error; the cursor is closed first.
        """
        cur = conn.cursor()
        try:
            if params is None:
                cur.execute(sql)
            else:
                cur.execute(sql, params)
        except BaseException:
            _close_quietly(cur)
            raise
        return cur

    def last_insert_id(self, cursor: Any) -> int | None:
        """The row id an INSERT generated, where the driver reports one.

        Args:
            cursor: the DB-API cursor the statement ran on.

        Returns:
            The driver's ``lastrowid`` when a positive int, else None.
        """
        value = getattr(cursor, "lastrowid", None)
        return value if isinstance(value, int) and value > 0 else None


class Cursor:
    """What ``Rows`` read of a blocking driver's result: columns, batches, close.

    The twin of ``AsyncCursor``. ``SyncAdapter.query`` returns one over the
    DB-API cursor; an adapter may return its own (a buffered result).

    Attributes:
        columns: the column names; empty for a statement returning no rows.
    """

    __slots__ = ("columns",)

    columns: tuple[str, ...]

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        """Fetch more rows.

        Args:
            n: most rows to return.

        Returns:
            Up to ``n`` rows; an empty list at the end.

        Raises:
            The driver's error.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Free the result.

        Raises:
            The driver's error (the caller decides what it means).
        """


class _DBAPICursor(Cursor):
    """A ``Cursor`` over a DB-API cursor."""

    __slots__ = ("_cur",)

    def __init__(self, cur: Any) -> None:
        self._cur = cur
        desc = cur.description
        self.columns = tuple([d[0] for d in desc]) if desc else ()

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        """See ``Cursor.fetchmany``; the DB-API cursor's."""
        rows: list[tuple[Any, ...]] = self._cur.fetchmany(n)
        return rows

    def close(self) -> None:
        """See ``Cursor.close``; the DB-API cursor's."""
        self._cur.close()


class AsyncCursor:
    """The little an async Rows needs of a result: columns, batches, close."""

    columns: tuple[str, ...] = ()

    async def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        """As ``Cursor.fetchmany``, awaited.

        Cancellation:
            The caller closes the result and discards the connection.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Free the result.

        Raises:
            The driver's error (logged by the caller, who goes on).

        Cancellation:
            The caller discards the connection.
        """


class AsyncAdapter(_Adapter):
    """An asyncio driver's adapter: the duties of ``SyncAdapter``, awaited.

    Each method means what ``SyncAdapter``'s of the same name means (its
    arguments, result and errors are documented there, once); only what
    differs is said here.

    Cancellation:
        Of any coroutine method below unless it says otherwise: the caller
        discards the connection (its state is unknown).
    """

    def connector(
        self, dsn: DSN
    ) -> tuple[Callable[[], Any], Callable[[], None] | None]:
        """As ``SyncAdapter.connector``, but the connect callable is async.

        The close hook stays a plain callable.
        """
        raise NotImplementedError

    async def prepare(self, conn: Any) -> None:
        """As ``SyncAdapter.prepare``.

        Cancellation:
            The dial fails and the connection is closed.
        """

    def is_closed(self, conn: Any) -> bool:
        """As ``SyncAdapter.is_closed``."""
        return False

    async def ping(self, conn: Any) -> None:
        """As ``SyncAdapter.ping``."""

    def is_dead(self, conn: Any, exc: BaseException) -> bool:
        """As ``SyncAdapter.is_dead``."""
        return False

    #: True when cancelling the task awaiting a statement is how the driver
    #: cancels it on the server (asyncpg: its protocol CancelRequest), and
    #: ``cancel`` only waits for that request to be answered: the handle's
    #: deadline cancels the statement's task, then awaits ``cancel`` to judge
    #: the connection.
    cancels_by_task = False

    async def cancel(self, conn: Any) -> bool:
        """As ``SyncAdapter.cancel``, awaited.

        Awaited on the event loop that owns ``conn``, from another task than
        the one that may be awaiting a statement on it (or may have just
        finished it). An override waits ``CANCEL_TIMEOUT`` at most per step;
        the caller's part of the race and the result are as for
        ``SyncAdapter.cancel``.

        Cancelling the task that awaits a statement (``asyncio.timeout``,
        ``wait_for``) stops the statement on the server too, for every
        adapter here (psycopg and asyncpg send their cancel request, the
        aiosqlite adapter interrupts): a deadline may be either.

        Cancellation:
            Nothing was sent, or a cancel request is on its way; the caller
            treats the connection as for False.
        """
        return False

    def is_cancelled(self, exc: BaseException) -> bool:
        """As ``SyncAdapter.is_cancelled``."""
        return False

    def reusable_after_cancel(self, conn: Any, in_transaction: bool) -> bool:
        """As ``SyncAdapter.reusable_after_cancel``."""
        return False

    async def reset(self, conn: Any) -> None:
        """As ``SyncAdapter.reset``.

        Cancellation:
            The pool discards the connection.
        """
        raise NotImplementedError

    async def begin(self, conn: Any, isolation: str | None, read_only: bool) -> None:
        """As ``SyncAdapter.begin``."""
        raise NotImplementedError

    async def commit(self, conn: Any, read_only: bool) -> None:
        """As ``SyncAdapter.commit``."""
        raise NotImplementedError

    async def rollback(self, conn: Any, read_only: bool) -> None:
        """As ``SyncAdapter.rollback``."""
        raise NotImplementedError

    async def exec(self, conn: Any, sql: str, params: Any) -> tuple[int, int | None]:
        """As ``SyncAdapter.exec``."""
        raise NotImplementedError

    async def exec_many(
        self, conn: Any, sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        """As ``SyncAdapter.exec_many``."""
        raise NotImplementedError

    async def query(self, conn: Any, sql: str, params: Any) -> AsyncCursor:
        """As ``SyncAdapter.query``; the result is an ``AsyncCursor``."""
        raise NotImplementedError

    async def close(self, conn: Any) -> None:
        """Close a connection.

        Args:
            conn: the driver's connection.

        Raises:
            The driver's error.

        Cancellation:
            The connection may be left half closed; it is no longer used.
        """
        await conn.close()


def _close_quietly(cur: Any) -> None:
    # The statement's error is the one that matters.
    with contextlib.suppress(Exception):
        cur.close()


def sql_isolation(isolation: str | None, read_only: bool) -> str:
    """The ``BEGIN`` modes as SQL: " ISOLATION LEVEL x READ ONLY" (or "").

    Args:
        isolation: a level from ``validate_isolation``, or None.
        read_only: add READ ONLY.

    Returns:
        The clause to append to ``BEGIN`` (empty for neither).
    """
    out = ""
    if isolation is not None:
        out += f" ISOLATION LEVEL {isolation.upper()}"
    if read_only:
        out += " READ ONLY"
    return out
