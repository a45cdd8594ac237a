"""SQLite through the standard library's ``sqlite3``.

Targets: ``sqlite:///relative.db`` (resolved against the working directory
when ``open`` is called), ``sqlite:////absolute.db``, ``sqlite:///:memory:``.
Parameters: ``timeout`` (seconds a statement waits on a locked file, default
5), ``txlock`` (``deferred``, the default, ``immediate`` or ``exclusive``: the
``BEGIN`` mode of ``DB.begin``).

``:memory:`` is one database shared by every connection of the pool: a
uniquely named ``file:sqlgate-<hex>?mode=memory&cache=shared`` URI, kept alive
by one extra connection that the DB holds (outside the pool, not counted)
until ``DB.close``. Without that, each pooled connection would silently get
an empty database of its own. Shared-cache databases lock per table, so a
writer may meet ``sqlite3.OperationalError: database table is locked`` where
a file database would wait; use a file for concurrent writers.

Connections are opened with ``check_same_thread=False`` (the pool moves them
between threads, one user at a time) and ``isolation_level=None``: autocommit,
with ``BEGIN`` issued by ``DB.begin``.

Reset on return: ``in_transaction`` is read (no I/O); only a connection left
inside a transaction is rolled back, and ``PRAGMA query_only`` (set by a
read-only transaction) is cleared. ``isolation_level`` is put back to None if
the caller changed it.

Cancel: ``sqlite3.Connection.interrupt()``, which SQLite allows from any
thread. It stops the statements running on the connection when it is called
and does nothing when none runs (a late cancel cannot stop a later
statement, provided the caller starts none before ``cancel`` returned: SQLite
also interrupts statements started while an interrupted one is still
running). The statement raises ``sqlite3.OperationalError: interrupted``
(SQLITE_INTERRUPT). The connection stays usable: outside a transaction nothing
is left behind; inside one, SQLite may have rolled the transaction back
already (an interrupted write does), and ``in_transaction`` says so.
One window remains: an interrupt that lands just as a query returns its
first row stays in effect while that query is unfinished (SQLite clears the
flag only when no statement of the connection is active), so reading on, or
another statement started before the query's cursor is closed, raises
``interrupted`` although the call itself succeeded (checked on SQLite 3.40).

Liveness: SQLite has no link to lose. There is no ping, and no error is a
dead link; a connection closed through ``Conn.raw`` is seen as closed.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any

from sqlgate._reset import needs_rollback
from sqlgate.drivers._base import SyncAdapter, log, parse_params

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate.drivers._dsn import DSN

__all__ = [
    "SQLITE_INTERRUPT",
    "SYNC",
    "SqliteAdapter",
    "interrupt",
    "is_interrupted",
    "sqlite_target",
    "validate_sqlite_isolation",
]

_TXLOCKS = ("deferred", "immediate", "exclusive")


def _txlock(value: str) -> str:
    if value.lower() not in _TXLOCKS:
        raise ValueError(value)
    return value.upper()


_PARAMS: dict[str, Callable[[str], object]] = {"timeout": float, "txlock": _txlock}

#: SQLite's result code for an interrupted statement.
SQLITE_INTERRUPT = 9


def is_interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is ``sqlite3``'s error for an interrupted statement.

    Args:
        exc: what a call raised.

    Returns:
        True for an ``OperationalError`` with SQLITE_INTERRUPT (or, where the
        code is missing, the message "interrupted").
    """
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == SQLITE_INTERRUPT
    return str(exc) == "interrupted"


def interrupt(conn: sqlite3.Connection) -> bool:
    """``conn.interrupt()`` from any thread, never raising.

    Args:
        conn: a ``sqlite3`` connection.

    Returns:
        True when called; False when the connection is closed.
    """
    try:
        conn.interrupt()
    except Exception as exc:
        log.debug("sqlite3 interrupt failed: %r", exc)
        return False
    return True


def validate_sqlite_isolation(isolation: str | None) -> None:
    """SQLite's transactions are always serializable: refuse another level.

    Args:
        isolation: a level from ``validate_isolation``, or None.

    Raises:
        ValueError: ``isolation`` is neither None nor "serializable".
    """
    if isolation not in (None, "serializable"):
        raise ValueError(
            f"isolation={isolation!r} is not supported by SQLite, whose "
            "transactions are always serializable (use None or 'serializable')"
        )


def sqlite_target(dsn: DSN) -> tuple[str, dict[str, Any], Callable[[], None] | None]:
    """What to pass to ``sqlite3.connect``/``aiosqlite.connect`` for a DSN.

    For ``:memory:`` this opens the keeper connection (see the module
    docstring) at once.

    Args:
        dsn: a parsed ``sqlite://`` DSN.

    Returns:
        (database, keyword arguments, close hook). The keyword arguments are
        ``timeout`` (default 5 s), ``isolation_level=None`` and
        ``check_same_thread=False``. For ``:memory:`` the database is a
        shared-cache URI (``uri=True``) and the hook closes the keeper;
        otherwise the database is the absolute path and the hook is None.

    Raises:
        ValueError: an unknown parameter, or a bad ``timeout``/``txlock``
            value; the message names it.
    """
    opts = parse_params(dsn, _PARAMS)
    kwargs: dict[str, Any] = {
        "timeout": opts.get("timeout", 5.0),
        "isolation_level": None,
        "check_same_thread": False,
    }
    if dsn.database == ":memory:":
        uri = f"file:sqlgate-{uuid.uuid4().hex}?mode=memory&cache=shared"
        kwargs["uri"] = True
        # Keeps the shared database alive between pool connections.
        keeper = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return uri, kwargs, keeper.close
    return os.path.abspath(dsn.database), kwargs, None


class SqliteAdapter(SyncAdapter):
    """``sqlite3`` connections."""

    name = "sqlite"
    paramstyle = sqlite3.paramstyle

    def __init__(self, txlock: str = "DEFERRED") -> None:
        self.txlock = txlock

    def connector(
        self, dsn: DSN
    ) -> tuple[Callable[[], sqlite3.Connection], Callable[[], None] | None]:
        """See ``SyncAdapter.connector``; ``sqlite3.connect`` per ``sqlite_target``.

        Args:
            dsn: a parsed ``sqlite://`` DSN.

        Returns:
            (a callable opening one autocommit ``sqlite3`` connection; for
            ``:memory:`` the keeper's close, else None).

        Raises:
            ValueError: as ``sqlite_target``.
        """
        database, kwargs, on_close = sqlite_target(dsn)

        def connect() -> sqlite3.Connection:
            conn: sqlite3.Connection = sqlite3.connect(database, **kwargs)
            return conn

        return connect, on_close

    def for_dsn(self, dsn: DSN) -> SqliteAdapter:
        """See ``SyncAdapter.for_dsn``; the DSN's ``txlock`` picks the BEGIN mode.

        Args:
            dsn: a parsed ``sqlite://`` DSN.

        Returns:
            This adapter when ``txlock`` matches (DEFERRED by default), else
            one issuing ``BEGIN IMMEDIATE`` or ``BEGIN EXCLUSIVE``.

        Raises:
            ValueError: an unknown parameter, or ``txlock`` not one of
                deferred, immediate, exclusive.
        """
        opts = parse_params(dsn, _PARAMS)
        txlock = str(opts.get("txlock", "DEFERRED"))
        return self if txlock == self.txlock else SqliteAdapter(txlock)

    def prepare(self, conn: sqlite3.Connection) -> None:
        """See ``SyncAdapter.prepare``; sets ``isolation_level = None`` (no I/O)."""
        if conn.isolation_level is not None:
            conn.isolation_level = None

    def is_closed(self, conn: sqlite3.Connection) -> bool:
        """See ``SyncAdapter.is_closed``; only a ``close()`` counts (no link).

        Args:
            conn: the ``sqlite3`` connection.

        Returns:
            True when reading ``total_changes`` raises
            ``sqlite3.ProgrammingError`` (the connection was closed).
        """
        try:
            conn.total_changes  # noqa: B018  (raises once closed)
        except sqlite3.ProgrammingError:
            return True
        return False

    def cancel(self, conn: sqlite3.Connection) -> bool:
        """See ``SyncAdapter.cancel``; ``interrupt()`` (thread-safe, no I/O).

        Args:
            conn: the ``sqlite3`` connection, maybe running a statement in
                another thread.

        Returns:
            True when the interrupt was set; False when ``conn`` is closed.
        """
        return interrupt(conn)

    def is_cancelled(self, exc: BaseException) -> bool:
        """See ``SyncAdapter.is_cancelled``; ``OperationalError: interrupted``."""
        return is_interrupted(exc)

    def reusable_after_cancel(
        self, conn: sqlite3.Connection, in_transaction: bool
    ) -> bool:
        """See ``SyncAdapter.reusable_after_cancel``; yes unless closed.

        An interrupt leaves nothing half done: outside a transaction the
        statement had no effect; inside one, SQLite either rolled it back
        already or keeps it open for the caller's rollback
        (``in_transaction`` tells which).

        Args:
            conn: the ``sqlite3`` connection.
            in_transaction: unused; both cases are clean.

        Returns:
            True unless the connection is closed.
        """
        return not self.is_closed(conn)

    def reset(self, conn: sqlite3.Connection) -> None:
        """See ``SyncAdapter.reset``; no I/O unless a transaction was left open.

        Reads ``in_transaction``; only then rolls back and clears
        ``PRAGMA query_only`` (a read-only transaction's). Puts
        ``isolation_level`` back to None if it was changed.

        Args:
            conn: the ``sqlite3`` connection.

        Raises:
            sqlite3.Error: the ROLLBACK or PRAGMA failed; the pool discards
                the connection.
        """
        if needs_rollback(conn):  # sqlgate._reset: the rule the pools use
            conn.rollback()
            conn.execute("PRAGMA query_only=0")
        if conn.isolation_level is not None:
            conn.isolation_level = None

    def begin(
        self, conn: sqlite3.Connection, isolation: str | None, read_only: bool
    ) -> None:
        """See ``SyncAdapter.begin``; ``BEGIN <txlock>``.

        Read-only is ``PRAGMA query_only=1`` (set before BEGIN, cleared again
        if BEGIN fails, and by ``commit``/``rollback``).

        Args:
            conn: the ``sqlite3`` connection.
            isolation: only None or "serializable" (SQLite's only level).
            read_only: turn ``query_only`` on for the transaction.

        Raises:
            ValueError: any other isolation level (nothing was sent).
            sqlite3.Error: the BEGIN failed (e.g. ``database is locked``).
        """
        validate_sqlite_isolation(isolation)
        if read_only:
            conn.execute("PRAGMA query_only=1")
        try:
            conn.execute(f"BEGIN {self.txlock}")
        except BaseException:
            if read_only:
                conn.execute("PRAGMA query_only=0")
            raise

    def commit(self, conn: sqlite3.Connection, read_only: bool) -> None:
        """See ``SyncAdapter.commit``; ``query_only`` is cleared even if COMMIT fails.

        Args:
            conn: the ``sqlite3`` connection.
            read_only: clear ``PRAGMA query_only`` afterwards.

        Raises:
            sqlite3.Error: the COMMIT (e.g. ``database is locked``) or the
                PRAGMA failed.
        """
        try:
            conn.commit()
        finally:
            if read_only:
                conn.execute("PRAGMA query_only=0")

    def rollback(self, conn: sqlite3.Connection, read_only: bool) -> None:
        """See ``SyncAdapter.rollback``; ``query_only`` is cleared even if it fails.

        Arguments as ``commit``.

        Raises:
            sqlite3.Error: the ROLLBACK or the PRAGMA failed.
        """
        try:
            conn.rollback()
        finally:
            if read_only:
                conn.execute("PRAGMA query_only=0")


SYNC = SqliteAdapter()
