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

Liveness: SQLite has no link to lose. There is no ping, and no error is a
dead link; a connection closed through ``Conn.raw`` is seen as closed.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any

from sqlgate.drivers._base import SyncAdapter, parse_params

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate.drivers._dsn import DSN

__all__ = ["SYNC", "SqliteAdapter", "check_sqlite_isolation", "sqlite_target"]

_TXLOCKS = ("deferred", "immediate", "exclusive")


def _txlock(value: str) -> str:
    if value.lower() not in _TXLOCKS:
        raise ValueError(value)
    return value.upper()


_PARAMS: dict[str, Callable[[str], object]] = {"timeout": float, "txlock": _txlock}


def check_sqlite_isolation(isolation: str | None) -> None:
    """SQLite's transactions are always serializable: refuse another level.

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

    Returns:
        (database, keyword arguments, close hook). For ``:memory:`` the
        database is a shared-cache URI and the hook closes the connection
        that keeps it alive; otherwise the hook is None.
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
        """A connect callable and, for ``:memory:``, the keeper's close."""
        database, kwargs, on_close = sqlite_target(dsn)

        def connect() -> sqlite3.Connection:
            conn: sqlite3.Connection = sqlite3.connect(database, **kwargs)
            return conn

        return connect, on_close

    def for_dsn(self, dsn: DSN) -> SqliteAdapter:
        """This adapter, or a variant with the DSN's ``txlock``."""
        opts = parse_params(dsn, _PARAMS)
        txlock = str(opts.get("txlock", "DEFERRED"))
        return self if txlock == self.txlock else SqliteAdapter(txlock)

    def prepare(self, conn: sqlite3.Connection) -> None:
        """Autocommit: sqlgate issues BEGIN itself."""
        if conn.isolation_level is not None:
            conn.isolation_level = None

    def is_closed(self, conn: sqlite3.Connection) -> bool:
        """Whether the connection was closed (a C attribute read)."""
        try:
            conn.total_changes  # noqa: B018  (raises once closed)
        except sqlite3.ProgrammingError:
            return True
        return False

    def reset(self, conn: sqlite3.Connection) -> None:
        """Roll back a transaction left open; autocommit back on."""
        if conn.in_transaction:
            conn.rollback()
            conn.execute("PRAGMA query_only=0")
        if conn.isolation_level is not None:
            conn.isolation_level = None

    def begin(
        self, conn: sqlite3.Connection, isolation: str | None, read_only: bool
    ) -> None:
        """``BEGIN <txlock>``; read-only through ``PRAGMA query_only``."""
        check_sqlite_isolation(isolation)
        if read_only:
            conn.execute("PRAGMA query_only=1")
        try:
            conn.execute(f"BEGIN {self.txlock}")
        except BaseException:
            if read_only:
                conn.execute("PRAGMA query_only=0")
            raise

    def commit(self, conn: sqlite3.Connection, read_only: bool) -> None:
        """COMMIT, then clear ``query_only``."""
        try:
            conn.commit()
        finally:
            if read_only:
                conn.execute("PRAGMA query_only=0")

    def rollback(self, conn: sqlite3.Connection, read_only: bool) -> None:
        """ROLLBACK, then clear ``query_only``."""
        try:
            conn.rollback()
        finally:
            if read_only:
                conn.execute("PRAGMA query_only=0")


SYNC = SqliteAdapter()
