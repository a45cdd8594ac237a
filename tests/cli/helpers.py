"""Connect callables for the stress tests (used through ``--connect``).

Each leaky one keeps what it leaks in ``LEAKED`` so the test can close it
afterwards (no connection is left to the garbage collector).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from tests.servers import MY_URL, PG_URL

PG_DSN = PG_URL
MYSQL_DSN = MY_URL

#: Real connections the leaky callables kept open; closed by ``close_leaked``.
LEAKED: list[Any] = []
_lock = threading.Lock()


class NoCloseConn:
    """A connection whose ``close()`` does nothing: a driver that leaks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        with _lock:
            LEAKED.append(inner)

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def sqlite_no_close() -> NoCloseConn:
    """SQLite in memory; every connection leaks at close."""
    return NoCloseConn(sqlite3.connect(":memory:", check_same_thread=False))


def sqlite_fine() -> sqlite3.Connection:
    """SQLite in memory; nothing leaks."""
    return sqlite3.connect(":memory:", check_same_thread=False)


def pg_extra() -> Any:
    """Opens two PostgreSQL connections, returns one and hides the other."""
    import psycopg

    hidden = psycopg.connect(PG_DSN, autocommit=True)
    with _lock:
        LEAKED.append(hidden)
    return psycopg.connect(PG_DSN, autocommit=True)


def mysql_no_close() -> NoCloseConn:
    """MariaDB connections whose close leaks."""
    import pymysql

    return NoCloseConn(
        pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    )


def not_callable_attr() -> None:
    """Placeholder so the module has a non-connection callable."""


NOT_CALLABLE = 42


def close_leaked() -> int:
    """Close everything the leaky callables kept; return how many."""
    with _lock:
        leaked = list(LEAKED)
        LEAKED.clear()
    for conn in leaked:
        conn.close()
    return len(leaked)
