"""Fault-test fixtures: the fault proxy, real-server connectors, ledgers.

Servers skip when absent, but fail under CI=true (``pg_up``/``my_up``: the
root conftest, ``tests.servers``).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from tests.faults.proxy import FaultProxy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PG_PORT = 5432
MY_PORT = 3306
#: How long a killed session may take to exit on a loaded machine (ms).
KILL_WAIT_MS = 15_000


@pytest.fixture
def app_name() -> str:
    """An application_name unique to this test."""
    return f"sqlgate-faults-{uuid.uuid4().hex[:12]}"


def _proxy(upstream_port: int) -> Iterator[FaultProxy]:
    """A started proxy; at teardown its thread, loop and listener must be gone."""
    with FaultProxy(upstream_port, max_life=120) as proxy:
        yield proxy
    assert not proxy._thread.is_alive(), "fault proxy thread outlived stop()"
    assert proxy._loop.is_closed(), "fault proxy loop left open"
    assert proxy._listener is None, f"fault proxy port {proxy.port} left bound"
    assert not proxy.open_pipes, f"{proxy.open_pipes} proxied connections left"


@pytest.fixture
def pg_proxy(pg_up: None) -> Iterator[FaultProxy]:
    yield from _proxy(PG_PORT)


@pytest.fixture
def my_proxy(my_up: None) -> Iterator[FaultProxy]:
    yield from _proxy(MY_PORT)


@dataclass
class Ledger:
    """What a connect callable did: dials tried, succeeded, server ids seen.

    ``dials`` keeps every dial as (started, ended, outcome), monotonic
    seconds, outcome "ok" or the error's repr: the timeline a failing test
    prints.
    """

    attempts: int = 0
    opened: int = 0
    ids: set[int] = field(default_factory=set)
    dials: list[tuple[float, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def dial(self, connect: Callable[[], Any], server_id: Callable[[Any], int]) -> Any:
        """Run ``connect`` once, recording it."""
        started = time.monotonic()
        with self.lock:
            self.attempts += 1
        try:
            conn = connect()
        except BaseException as exc:
            with self.lock:
                self.dials.append((started, time.monotonic(), repr(exc)[:120]))
            raise
        with self.lock:
            self.opened += 1
            self.ids.add(server_id(conn))
            self.dials.append((started, time.monotonic(), "ok"))
        return conn

    def timeline(self, since: float = 0.0, limit: int = 60) -> str:
        """The last ``limit`` dials started after ``since``, one a line."""
        with self.lock:
            rows = [d for d in self.dials if d[0] >= since][-limit:]
        return "\n".join(f"{a:.3f}..{b:.3f} {what}" for a, b, what in rows)


def pg_connector(
    port: int, app_name: str, ledger: Ledger | None = None, timeout: int = 2
) -> Callable[[], Any]:
    """A psycopg connect callable (autocommit) through ``port``."""
    import psycopg

    def dial() -> Any:
        return psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="test",
            application_name=app_name,
            connect_timeout=timeout,
            autocommit=True,
        )

    def connect() -> Any:
        if ledger is None:
            return dial()
        return ledger.dial(dial, lambda conn: int(conn.info.backend_pid))

    return connect


def my_connector(
    port: int, ledger: Ledger | None = None, timeout: float = 1.0
) -> Callable[[], Any]:
    """A PyMySQL connect callable (autocommit) through ``port``."""
    import pymysql

    def dial() -> Any:
        return pymysql.connect(
            host="127.0.0.1",
            port=port,
            user="root",
            password="",
            database="test",
            connect_timeout=timeout,
            # Also bounds the handshake: a silent server fails the dial here.
            read_timeout=timeout,
            write_timeout=timeout,
            autocommit=True,
        )

    def connect() -> Any:
        if ledger is None:
            return dial()
        return ledger.dial(dial, lambda conn: int(conn.thread_id()))

    return connect


def pg_admin() -> Any:
    """A direct (not proxied) autocommit connection to PostgreSQL."""
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=PG_PORT, user="postgres", dbname="test", autocommit=True
    )


def my_admin() -> Any:
    """A direct (not proxied) autocommit connection to MariaDB."""
    import pymysql

    return pymysql.connect(
        host="127.0.0.1",
        port=MY_PORT,
        user="root",
        password="",
        database="test",
        autocommit=True,
    )


def pg_server_count(app_name: str) -> int:
    """Backends the server holds for ``app_name``."""
    with pg_admin() as admin:
        row = admin.execute(
            "select count(*) from pg_stat_activity where application_name = %s",
            (app_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def pg_kill_all(app_name: str) -> int:
    """End every backend of ``app_name``; how many, once they have all exited.

    ``pg_terminate_backend`` with a timeout waits for the backend to exit, so
    no statement sent after this returns runs on a killed session.
    """
    with pg_admin() as admin:
        rows = admin.execute(
            "select pg_terminate_backend(pid, %s) from pg_stat_activity "
            "where application_name = %s",
            (KILL_WAIT_MS, app_name),
        ).fetchall()
    assert all(gone for (gone,) in rows), f"backends still running: {rows}"
    return len(rows)


def my_server_count(ids: set[int]) -> int:
    """Of the thread ids ``ids``, how many the server still has."""
    if not ids:
        return 0
    admin = my_admin()
    try:
        cur = admin.cursor()
        marks = ",".join(["%s"] * len(ids))
        cur.execute(
            "select count(*) from information_schema.processlist "
            f"where id in ({marks})",
            tuple(ids),
        )
        row = cur.fetchone()
    finally:
        admin.close()
    assert row is not None
    return int(row[0])


def my_kill_all(ids: set[int]) -> int:
    """KILL every server thread in ``ids`` that still exists; how many."""
    import pymysql

    admin = my_admin()
    killed: list[int] = []
    try:
        cur = admin.cursor()
        for thread_id in sorted(ids):
            try:
                cur.execute(f"KILL CONNECTION {int(thread_id)}")
                killed.append(int(thread_id))
            except pymysql.err.OperationalError:
                pass  # already gone
        # KILL only flags the thread: return once the server has dropped it,
        # so no statement sent after this returns runs on a killed session.
        marks = ",".join(["%s"] * len(killed))
        deadline = time.monotonic() + KILL_WAIT_MS / 1000
        while killed:
            cur.execute(
                f"select id from information_schema.processlist where id in ({marks})",
                tuple(killed),
            )
            left = cur.fetchall()
            if not left:
                break
            assert time.monotonic() < deadline, f"threads still running: {left}"
            time.sleep(0.01)  # polling the server's list; nothing to wait on
    finally:
        admin.close()
    return len(killed)
