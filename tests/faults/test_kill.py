"""Backends killed mid-load under the DB handle: every caller gets its answer or
a clear error, the pool recovers, and every ledger agrees with the server's.

32 threads run ``query_row`` through ``sqlgate.db.open(dsn)`` while the server
ends every one of our sessions (``pg_terminate_backend`` on our
``application_name``; MariaDB ``KILL`` on the thread ids our dials reported),
twice. Each dead connection can cost at most one caller an error: the first
error on it discards it (a dead link found before anything is sent is retried
silently, Go's rule), so errors are bounded by the sessions killed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate import Error
from sqlgate.db import DB
from sqlgate.db import open as db_open
from tests.faults.conftest import (
    MY_PORT,
    PG_PORT,
    my_kill_all,
    my_server_count,
    pg_kill_all,
    pg_server_count,
)
from tests.faults.load import SETTLE, CallLoad, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

ACQUIRE_TIMEOUT = 5.0
KILL_ROUNDS = 2


@dataclass
class Opened:
    """Server ids of the connections our dials made (an ``on_connect`` hook)."""

    ids: set[int] = field(default_factory=set)
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, server_id: Callable[[Any], int]) -> Callable[[Any], None]:
        def on_connect(conn: Any) -> None:
            with self.lock:
                self.count += 1
                self.ids.add(server_id(conn))

        return on_connect

    def snapshot(self) -> set[int]:
        with self.lock:
            return set(self.ids)


def _killed_mid_load(
    db: DB,
    opened: Opened,
    expected: tuple[type[BaseException], ...],
    kill: Callable[[], int],
    server_count: Callable[[], int],
) -> None:
    pool = db.pool
    load = CallLoad(call=lambda n: _echo(db, n), expected=expected, threads=32).start()
    rounds: list[int] = []
    try:
        wait_for(lambda: load.outcomes()["ok"] >= 300, 15, "warm-up")
        for _ in range(KILL_ROUNDS):
            rounds.append(kill())
            # Taken once every killed session has exited: the calls counted
            # below ran on connections dialed (and recorded) after the kill,
            # or on survivors, so the next round finds live sessions to kill.
            t_kill = time.monotonic()
            # The pool recovers: calls made after the kill succeed again.
            wait_for(
                lambda t=t_kill: load.outcomes(since=t)["ok"] >= 200,  # type: ignore[misc]
                15,
                "service after the kill",
            )
    except BaseException:
        load.stop.set()
        raise
    finally:
        load.finish(bound=ACQUIRE_TIMEOUT + 10)
    every = load.outcomes()
    killed = sum(rounds)
    errors = Counter(
        f"{type(c.error).__module__}.{type(c.error).__name__}"
        for c in load.calls
        if c.error is not None
    )
    print(
        f"\n{db.pool.name}: {sum(every.values())} calls, sessions killed per "
        f"round {rounds}, errors by kind: {dict(errors)}"
    )
    assert len(rounds) == KILL_ROUNDS, rounds
    assert all(rounds), rounds
    # Nobody was stuck: every worker stopped within its bound in finish()
    # above, and (below) no acquire waited out its timeout. A single call has
    # no tighter wall-clock bound: the DB handle may check out several times
    # (two pooled tries, then fresh ones), each with its own acquire timeout.
    # Each killed session cost at most one caller an error.
    assert sum(errors.values()) <= killed, (errors, killed)
    # The pool never waited out its timeout and never tripped its breaker.
    assert every["PoolTimeout"] == 0, every
    # Ledgers, once the last dials and closes have landed.
    wait_for(
        lambda: pool.stats().dialing == 0 and pool.stats().closing == 0,
        SETTLE,
        "settle",
    )
    with pool._lock:
        pool._core.check()
        s = pool._core.stats()
    assert opened.count == s.dials, (opened.count, s)
    assert s.dials - s.closed == s.open_connections, s
    assert s.broken_closed >= 1, s
    wait_for(
        lambda: server_count() == pool.stats().open_connections,
        SETTLE,
        "server's count of our connections to match the pool's",
    )
    db.close()
    with pool._lock:
        pool._core.check()
    assert pool.stats().open_connections == 0
    wait_for(lambda: server_count() == 0, SETTLE, "server to drop our connections")


def _echo(db: DB, n: int) -> object:
    row = db.query_row("select %s", (n,))
    assert row is not None
    return int(row[0])


@pytest.mark.postgres
def test_postgres_backends_killed_mid_load(pg_up: None, app_name: str) -> None:
    import psycopg

    opened = Opened()
    db = db_open(
        f"postgresql://postgres@127.0.0.1:{PG_PORT}/test"
        f"?application_name={app_name}&connect_timeout=2",
        max_open=8,
        max_idle=8,
        acquire_timeout=ACQUIRE_TIMEOUT,
        name="pg-kill",
        on_connect=opened.hook(lambda conn: int(conn.info.backend_pid)),
    )
    try:
        _killed_mid_load(
            db,
            opened,
            (psycopg.OperationalError, psycopg.InterfaceError, Error),
            lambda: pg_kill_all(app_name),
            lambda: pg_server_count(app_name),
        )
    finally:
        db.close()


@pytest.mark.mysql
def test_mysql_connections_killed_mid_load(my_up: None) -> None:
    import pymysql

    opened = Opened()
    db = db_open(
        f"mysql://root@127.0.0.1:{MY_PORT}/test?connect_timeout=2&read_timeout=5",
        max_open=8,
        max_idle=8,
        acquire_timeout=ACQUIRE_TIMEOUT,
        name="my-kill",
        on_connect=opened.hook(lambda conn: int(conn.thread_id())),
    )
    try:
        _killed_mid_load(
            db,
            opened,
            (pymysql.err.OperationalError, pymysql.err.InterfaceError, Error),
            lambda: my_kill_all(opened.snapshot()),
            lambda: my_server_count(opened.snapshot()),
        )
    finally:
        db.close()
