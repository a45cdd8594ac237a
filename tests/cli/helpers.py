"""Connect callables for the stress tests (used through ``--connect``).

Each leaky one keeps what it leaks in ``LEAKED`` so the test can close it
afterwards (no connection is left to the garbage collector).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.servers import MY_URL, PG_URL

ROOT = Path(__file__).resolve().parents[2]
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


async def asyncpg_connect() -> Any:
    """An asyncpg connection with no application_name (a user's own callable)."""
    import asyncpg

    return await asyncpg.connect(PG_URL)


def cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sqlgate ARGS`` in a subprocess; fail if it overruns."""
    return subprocess.run(
        [sys.executable, "-m", "sqlgate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The message of a bad-input exit: code 2, one stderr line, nothing else."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sqlgate: error: ")
    return proc.stderr[len("sqlgate: error: ") : -1]


class SilentServer:
    """A loopback TCP listener that accepts connections and never answers.

    ``accepted`` is set once a client connected (the CLI is then connecting).
    """

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = threading.Event()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self._conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        for conn in self._conns:
            conn.close()
