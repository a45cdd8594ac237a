"""Each adapter's server-side cancel, on the real servers (issue 15, driver layer).

The scenario per driver: a long statement runs on a raw adapter connection in
one thread (or task); 0.3 s later another thread (task) calls the adapter's
``cancel``. The statement must raise within 0.5 s an error ``is_cancelled``
recognises (and ``is_dead`` does not take for a dead link); the server must
show no session still running it within 1.5 s (``pg_stat_activity``,
``information_schema.PROCESSLIST``); and, as ``reusable_after_cancel`` says
yes, the connection answers ``SELECT 1`` next. A cancel when nothing runs
must leave the next statement alone, and one inside a transaction must leave
a connection the caller's rollback cleans. The asyncio drivers are also
cancelled through task cancellation (``asyncio.wait_for``), as the handle's
deadlines on them are.

That the statement runs when the cancel is sent is checked, not assumed: the
server lists it as running (SQLite: the statement's thread has not returned).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate.drivers._dsn import parse
from tests.servers import MY_URL, PG_URL

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

#: Seconds the long statements would run uncancelled.
LONG = 7
#: The scenario's wait before the cancel (s).
AFTER = 0.3
#: Limits of the proof (s): the statement's raise after the cancel; the
#: server's view clear after the raise.
RAISE_WITHIN = 0.5
CLEAR_WITHIN = 1.5

#: A query SQLite and duckdb never finish on their own.
ENDLESS_CTE = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
    "SELECT count(*) FROM c"
)


def _rows(adapter: Any, conn: Any, sql: str) -> list[tuple[Any, ...]]:
    cur = adapter.query(conn, sql, None)
    try:
        return [tuple(r) for r in cur.fetchmany(10)]
    finally:
        cur.close()


async def _arows(adapter: Any, conn: Any, sql: str) -> list[tuple[Any, ...]]:
    cur = await adapter.query(conn, sql, None)
    try:
        return [tuple(r) for r in await cur.fetchmany(10)]
    finally:
        await cur.aclose()


def _poll(predicate: Callable[[], bool], limit: float) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``limit``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            return None
        time.sleep(0.02)


@dataclass
class Outcome:
    """What the owner thread's statement did."""

    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    rows: Any = None
    ended_at: float = 0.0


def _run_in_thread(call: Callable[[], Any]) -> tuple[Outcome, threading.Thread]:
    out = Outcome()

    def owner() -> None:
        out.started.set()
        try:
            out.rows = call()
        except BaseException as exc:
            out.error = exc
        finally:
            out.ended_at = time.monotonic()
            out.done.set()

    thread = threading.Thread(target=owner, daemon=True)
    thread.start()
    assert out.started.wait(5)
    return out, thread


def cancel_running(
    adapter: Any,
    conn: Any,
    sql: str,
    running: Callable[[], bool],
    *,
    in_transaction: bool = False,
) -> tuple[BaseException, float]:
    """The sync scenario: ``sql`` in a thread, ``cancel`` from this one.

    Returns:
        (the statement's error, seconds from the cancel to the raise).
    """
    out, thread = _run_in_thread(lambda: _rows(adapter, conn, sql))
    assert not out.done.wait(AFTER), f"{sql!r} ended early: {out.error!r}"
    assert running(), f"{sql!r} is not running when cancelled"
    sent_at = time.monotonic()
    assert adapter.cancel(conn) is True
    assert out.done.wait(5), "the statement did not stop"
    thread.join()
    took = out.ended_at - sent_at
    assert out.error is not None, f"the statement returned {out.rows!r}"
    assert adapter.is_cancelled(out.error), repr(out.error)
    assert not adapter.is_dead(conn, out.error)
    assert took < RAISE_WITHIN, f"raised {took:.3f} s after the cancel"
    assert adapter.reusable_after_cancel(conn, in_transaction) is True
    return out.error, took


# -- SQLite -------------------------------------------------------------------


@pytest.fixture
def sqlite_conn(tmp_path: Any) -> Iterator[tuple[Any, Any]]:
    from sqlgate.drivers.sqlite import SYNC

    dsn = parse(f"sqlite:///{tmp_path / 'c.db'}")
    adapter = SYNC.for_dsn(dsn)
    connect, _ = adapter.connector(dsn)
    conn = connect()
    adapter.prepare(conn)
    yield adapter, conn
    conn.close()


def test_sqlite_cancel_stops_a_running_query(sqlite_conn: tuple[Any, Any]) -> None:
    adapter, conn = sqlite_conn
    cancel_running(adapter, conn, ENDLESS_CTE, lambda: True)
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]


def test_sqlite_idle_cancel_leaves_the_next_statement(
    sqlite_conn: tuple[Any, Any],
) -> None:
    adapter, conn = sqlite_conn
    assert adapter.cancel(conn) is True
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]
    limited = ENDLESS_CTE.replace("FROM c)", "FROM c WHERE x < 100000)")
    assert _rows(adapter, conn, limited) == [(100000,)]


@pytest.mark.parametrize("write", [False, True])
def test_sqlite_cancel_inside_a_transaction(
    sqlite_conn: tuple[Any, Any], write: bool
) -> None:
    adapter, conn = sqlite_conn
    adapter.exec(conn, "CREATE TABLE t (x INTEGER)", None)
    adapter.begin(conn, None, False)
    adapter.exec(conn, "INSERT INTO t VALUES (1)", None)
    sql = ENDLESS_CTE
    if write:
        sql = ENDLESS_CTE.replace(
            "SELECT count(*) FROM c", "INSERT INTO t SELECT x FROM c"
        )
    cancel_running(adapter, conn, sql, lambda: True, in_transaction=True)
    adapter.rollback(conn, False)
    assert not conn.in_transaction
    assert _rows(adapter, conn, "SELECT count(*) FROM t") == [(0,)]


def test_sqlite_cancel_on_a_closed_connection(sqlite_conn: tuple[Any, Any]) -> None:
    adapter, conn = sqlite_conn
    conn.close()
    assert adapter.cancel(conn) is False
    assert adapter.reusable_after_cancel(conn, False) is False


# -- PostgreSQL (psycopg) -----------------------------------------------------


def _pg_running(admin: Any, pid: int) -> bool:
    row = admin.execute(
        "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    return row is not None and row[0] == "active"


@pytest.fixture
def pg_conn(pg_up: None) -> Iterator[tuple[Any, Any]]:
    from sqlgate.drivers.postgres import SYNC

    dsn = parse(PG_URL)
    adapter = SYNC.for_dsn(dsn)
    connect, _ = adapter.connector(dsn)
    conn = connect()
    adapter.prepare(conn)
    yield adapter, conn
    conn.close()


def test_psycopg_cancel_stops_pg_sleep(pg_conn: tuple[Any, Any], pg_admin: Any) -> None:
    import psycopg

    adapter, conn = pg_conn
    pid = conn.info.backend_pid
    exc, _ = cancel_running(
        adapter, conn, f"select pg_sleep({LONG})", lambda: _pg_running(pg_admin, pid)
    )
    assert isinstance(exc, psycopg.errors.QueryCanceled)
    assert _poll(lambda: not _pg_running(pg_admin, pid), CLEAR_WITHIN) is not None
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]


def test_psycopg_idle_cancel_leaves_the_next_statement(
    pg_conn: tuple[Any, Any],
) -> None:
    adapter, conn = pg_conn
    assert adapter.cancel(conn) is True
    # A cancel an idle backend had latched would stop this sleep.
    assert _rows(adapter, conn, "select 1 from pg_sleep(0.2)") == [(1,)]
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]


def test_psycopg_cancel_inside_a_transaction(
    pg_conn: tuple[Any, Any], pg_admin: Any
) -> None:
    from psycopg import pq

    adapter, conn = pg_conn
    pid = conn.info.backend_pid
    adapter.begin(conn, None, False)
    cancel_running(
        adapter,
        conn,
        f"select pg_sleep({LONG})",
        lambda: _pg_running(pg_admin, pid),
        in_transaction=True,
    )
    assert conn.info.transaction_status == pq.TransactionStatus.INERROR
    # Outside a transaction an aborted one would not be clean.
    assert adapter.reusable_after_cancel(conn, False) is False
    adapter.rollback(conn, False)
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]


# -- MariaDB (PyMySQL) --------------------------------------------------------


def _my_running(admin: Any, thread_id: int) -> bool:
    with admin.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE ID = %s AND COMMAND = 'Query'",
            (thread_id,),
        )
        (n,) = cur.fetchone()
    return bool(n)


@pytest.fixture
def my_conn(my_up: None) -> Iterator[tuple[Any, Any]]:
    from sqlgate.drivers.mysql import SYNC

    dsn = parse(MY_URL)
    adapter = SYNC.for_dsn(dsn)
    connect, _ = adapter.connector(dsn)
    conn = connect()
    adapter.prepare(conn)
    yield adapter, conn
    conn.close()


def test_pymysql_cancel_stops_sleep(my_conn: tuple[Any, Any], my_admin: Any) -> None:
    adapter, conn = my_conn
    tid = conn.thread_id()
    exc, _ = cancel_running(
        adapter, conn, f"SELECT SLEEP({LONG})", lambda: _my_running(my_admin, tid)
    )
    assert exc.args[0] == 1317
    assert _poll(lambda: not _my_running(my_admin, tid), CLEAR_WITHIN) is not None
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]


def test_pymysql_idle_cancel_leaves_the_next_statement(
    my_conn: tuple[Any, Any],
) -> None:
    adapter, conn = my_conn
    assert adapter.cancel(conn) is True
    assert _rows(adapter, conn, "SELECT SLEEP(0.2), 1") == [(0, 1)]
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]


def test_pymysql_cancel_kills_only_the_statement_it_found(
    my_conn: tuple[Any, Any], my_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement that ended before the kill is gone: a later one survives.

    The race is forced: the look-up finds statement A, then (before the
    kill) A is made to end (another session kills it, so no timing decides
    when) and B to start; the kill names A's query id.
    """
    import sqlgate.drivers.mysql as my

    adapter, conn = my_conn
    tid = conn.thread_id()
    real = my._kill_running
    b_out: list[Outcome] = []

    def racing_lookup(side: Any, thread_id: int, mariadb: bool) -> None:
        assert mariadb, "KILL QUERY ID is MariaDB's"
        cursor = side.cursor

        class Cur:
            def __init__(self) -> None:
                self.cur = cursor()

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                self.cur.close()

            def execute(self, sql: str, args: Any = None) -> Any:
                if sql.startswith("KILL QUERY ID"):
                    # A was found; end it, then start B before the kill.
                    with my_admin.cursor() as admin:
                        admin.execute(sql)
                    a_thread.join(5)
                    out, _ = _run_in_thread(
                        lambda: _rows(adapter, conn, "SELECT SLEEP(1), 2")
                    )
                    b_out.append(out)
                    assert _poll(lambda: _my_running(my_admin, tid), 1.0) is not None
                return self.cur.execute(sql, args)

            def fetchone(self) -> Any:
                return self.cur.fetchone()

        side.cursor = Cur
        real(side, thread_id, mariadb)

    a_out, a_thread = _run_in_thread(
        lambda: _rows(adapter, conn, f"SELECT SLEEP({LONG}), 1")
    )
    assert _poll(lambda: _my_running(my_admin, tid), 1.0) is not None
    monkeypatch.setattr(my, "_kill_running", racing_lookup)
    assert adapter.cancel(conn) is True
    assert a_out.error is not None
    assert a_out.error.args[0] == 1317  # the other session's kill
    (b,) = b_out
    assert b.done.wait(5)
    assert b.error is None, repr(b.error)
    assert b.rows == [(0, 2)]


def test_pymysql_cancel_inside_a_transaction(
    my_conn: tuple[Any, Any], my_admin: Any
) -> None:
    from pymysql.constants import SERVER_STATUS

    adapter, conn = my_conn
    tid = conn.thread_id()
    adapter.begin(conn, None, False)
    cancel_running(
        adapter,
        conn,
        f"SELECT SLEEP({LONG})",
        lambda: _my_running(my_admin, tid),
        in_transaction=True,
    )
    assert conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS
    adapter.rollback(conn, False)
    assert not conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]


def test_pymysql_cancel_without_a_server_says_so(my_conn: tuple[Any, Any]) -> None:
    adapter, conn = my_conn
    real_port = conn.port
    conn.port = 1  # the side connection's dial is refused
    try:
        started = time.monotonic()
        assert adapter.cancel(conn) is False
        assert time.monotonic() - started < 2.5
    finally:
        conn.port = real_port
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]


# -- generic DB-API: duckdb, psycopg2 -----------------------------------------


def test_duckdb_interrupt_stops_a_running_query() -> None:
    duckdb = pytest.importorskip("duckdb")
    from sqlgate.drivers.dbapi import for_connection

    conn = duckdb.connect()
    try:
        adapter = for_connection(conn)
        adapter.prepare(conn)
        cancel_running(adapter, conn, ENDLESS_CTE, lambda: True)
        assert _rows(adapter, conn, "SELECT 1") == [(1,)]
        assert adapter.cancel(conn) is True  # idle: the next one runs
        assert _rows(adapter, conn, "SELECT 42") == [(42,)]
    finally:
        conn.close()


def test_duckdb_interrupt_inside_a_transaction() -> None:
    duckdb = pytest.importorskip("duckdb")
    from sqlgate.drivers.dbapi import for_connection

    conn = duckdb.connect()
    try:
        adapter = for_connection(conn)
        adapter.prepare(conn)
        adapter.exec(conn, "CREATE TABLE t (x INTEGER)", None)
        adapter.begin(conn, None, False)
        adapter.exec(conn, "INSERT INTO t VALUES (1)", None)
        cancel_running(adapter, conn, ENDLESS_CTE, lambda: True, in_transaction=True)
        adapter.rollback(conn, False)  # the aborted transaction's
        assert _rows(adapter, conn, "SELECT count(*) FROM t") == [(0,)]
    finally:
        conn.close()


def test_psycopg2_cancel_stops_pg_sleep(pg_up: None, pg_admin: Any) -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    from sqlgate.drivers.dbapi import for_connection

    conn = psycopg2.connect(PG_URL)
    try:
        adapter = for_connection(conn)
        adapter.prepare(conn)
        pid = conn.info.backend_pid
        cancel_running(
            adapter,
            conn,
            f"select pg_sleep({LONG})",
            lambda: _pg_running(pg_admin, pid),
        )
        assert _poll(lambda: not _pg_running(pg_admin, pid), CLEAR_WITHIN) is not None
        assert _rows(adapter, conn, "SELECT 1") == [(1,)]
        assert adapter.cancel(conn) is True  # idle: the next one runs
        assert _rows(adapter, conn, "select 1 from pg_sleep(0.2)") == [(1,)]
    finally:
        conn.close()


def test_pg8000_offers_no_cancel(pg_up: None) -> None:
    pg8000 = pytest.importorskip("pg8000.dbapi")
    from sqlgate.drivers.dbapi import for_connection

    conn = pg8000.connect(user="postgres", host="127.0.0.1", database="test")
    try:
        adapter = for_connection(conn)
        assert adapter.cancel(conn) is False
        assert adapter.reusable_after_cancel(conn, False) is False
    finally:
        conn.close()


# -- asyncio: psycopg async, asyncpg, aiosqlite -------------------------------


async def acancel_running(
    adapter: Any,
    conn: Any,
    sql: str,
    running: Callable[[], Awaitable[bool]],
) -> tuple[BaseException, float]:
    """The async scenario: ``sql`` in a task, ``cancel`` from this one."""
    task = asyncio.ensure_future(_arows(adapter, conn, sql))
    done, _ = await asyncio.wait([task], timeout=AFTER)
    assert not done, f"{sql!r} ended early"
    assert await running(), f"{sql!r} is not running when cancelled"
    sent_at = time.monotonic()
    assert await adapter.cancel(conn) is True
    try:
        rows = await asyncio.wait_for(task, 5)
    except Exception as caught:
        exc = caught
    else:
        pytest.fail(f"the statement returned {rows!r}")
    took = time.monotonic() - sent_at
    assert adapter.is_cancelled(exc), repr(exc)
    assert not adapter.is_dead(conn, exc)
    assert took < RAISE_WITHIN, f"raised {took:.3f} s after the cancel"
    assert adapter.reusable_after_cancel(conn, False) is True
    return exc, took


async def atimeout_running(adapter: Any, conn: Any, sql: str) -> float:
    """``asyncio.wait_for`` around the statement: seconds from the timeout."""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_arows(adapter, conn, sql), AFTER)
    took = time.monotonic() - started - AFTER
    assert took < RAISE_WITHIN, f"raised {took:.3f} s after the timeout"
    return took


def _pg_admin_running(pid: int) -> Callable[[], Awaitable[bool]]:
    import psycopg

    from tests.servers import PG_CONNINFO

    async def running() -> bool:
        async with await psycopg.AsyncConnection.connect(
            PG_CONNINFO, autocommit=True
        ) as admin:
            cur = await admin.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
            )
            row = await cur.fetchone()
        return row is not None and row[0] == "active"

    return running


async def _aclear(running: Callable[[], Awaitable[bool]]) -> float:
    start = time.monotonic()
    while await running():
        assert time.monotonic() - start < CLEAR_WITHIN, "still running"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _psycopg_async() -> tuple[Any, Any]:
    from sqlgate.drivers.postgres import ASYNC

    dsn = parse(PG_URL)
    adapter = ASYNC.for_dsn(dsn)
    connect, _ = adapter.connector(dsn)
    conn = await connect()
    await adapter.prepare(conn)
    return adapter, conn


def test_psycopg_async_cancel_stops_pg_sleep(pg_up: None) -> None:
    async def main() -> None:
        adapter, conn = await _psycopg_async()
        try:
            running = _pg_admin_running(conn.info.backend_pid)
            await acancel_running(adapter, conn, f"select pg_sleep({LONG})", running)
            await _aclear(running)
            assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
            assert await adapter.cancel(conn) is True  # idle
            assert await _arows(adapter, conn, "select 1 from pg_sleep(0.2)") == [(1,)]
        finally:
            await conn.close()

    asyncio.run(main())


def test_psycopg_async_wait_for_cancels_on_the_server(pg_up: None) -> None:
    async def main() -> None:
        adapter, conn = await _psycopg_async()
        try:
            running = _pg_admin_running(conn.info.backend_pid)
            await atimeout_running(adapter, conn, f"select pg_sleep({LONG})")
            await _aclear(running)
            assert adapter.reusable_after_cancel(conn, False) is True
            assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
        finally:
            await conn.close()

    asyncio.run(main())


async def _asyncpg(with_dsn: bool = True) -> tuple[Any, Any]:
    from sqlgate.drivers.asyncpg import ASYNC

    dsn = parse(PG_URL.replace("postgresql://", "postgresql+asyncpg://"))
    adapter = ASYNC.for_dsn(dsn) if with_dsn else ASYNC
    connect, _ = adapter.connector(dsn)
    conn = await connect()
    await adapter.prepare(conn)
    return adapter, conn


def test_asyncpg_cancel_waits_for_the_task_cancel(pg_up: None) -> None:
    """asyncpg cancels with the task: ``cancel`` sends nothing, it waits.

    While the statement's task runs on, ``cancel`` returns False and the
    statement goes on (no ``pg_cancel_backend`` on a side connection); once
    the task is cancelled, ``cancel`` returns True after the server answered
    asyncpg's CancelRequest, and the statement is gone.
    """
    pytest.importorskip("asyncpg")

    async def main() -> None:
        adapter, conn = await _asyncpg()
        try:
            assert adapter.cancels_by_task is True
            running = _pg_admin_running(conn.get_server_pid())
            task = asyncio.ensure_future(
                _arows(adapter, conn, f"select pg_sleep({LONG})")
            )
            done, _ = await asyncio.wait([task], timeout=AFTER)
            assert not done
            assert await adapter.cancel(conn) is False  # sent nothing
            assert await running()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            sent_at = time.monotonic()
            assert await adapter.cancel(conn) is True
            assert time.monotonic() - sent_at < RAISE_WITHIN
            assert not await running()
            assert adapter.reusable_after_cancel(conn, False) is True
            assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
            assert await adapter.cancel(conn) is False  # idle: nothing under way
            assert await _arows(adapter, conn, "select 1 from pg_sleep(0.2)") == [(1,)]
        finally:
            await conn.close()

    asyncio.run(main())


def test_asyncpg_wait_for_cancels_on_the_server(pg_up: None) -> None:
    pytest.importorskip("asyncpg")

    async def main() -> None:
        adapter, conn = await _asyncpg()
        try:
            running = _pg_admin_running(conn.get_server_pid())
            await atimeout_running(adapter, conn, f"select pg_sleep({LONG})")
            await _aclear(running)
            assert adapter.reusable_after_cancel(conn, False) is True
            assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
        finally:
            await conn.close()

    asyncio.run(main())


def test_asyncpg_cancel_opens_no_connection(pg_up: None) -> None:
    """No side connection: the number of client backends stays the same."""
    pytest.importorskip("asyncpg")
    count = (
        "select count(*) from pg_stat_activity where backend_type = 'client backend'"
    )

    async def main() -> None:
        adapter, conn = await _asyncpg(with_dsn=False)
        try:
            before = await conn.fetchval(count)
            task = asyncio.ensure_future(conn.fetchval(f"select pg_sleep({LONG})"))
            await asyncio.sleep(AFTER)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await adapter.cancel(conn) is True
            assert await conn.fetchval(count) == before
            assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
        finally:
            await conn.close()

    asyncio.run(main())


async def _aiosqlite(path: Any) -> tuple[Any, Any]:
    from sqlgate.drivers.aiosqlite import ASYNC

    dsn = parse(f"sqlite:///{path}")
    adapter = ASYNC.for_dsn(dsn)
    connect, _ = adapter.connector(dsn)
    conn = await connect()
    await adapter.prepare(conn)
    return adapter, conn


async def _always() -> bool:
    return True


def test_aiosqlite_cancel_stops_a_running_query(tmp_path: Any) -> None:
    async def main() -> None:
        adapter, conn = await _aiosqlite(tmp_path / "c.db")
        try:
            await acancel_running(adapter, conn, ENDLESS_CTE, _always)
            assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
            assert await adapter.cancel(conn) is True  # idle
            assert await _arows(adapter, conn, "SELECT 2") == [(2,)]
        finally:
            await conn.close()
        assert await adapter.cancel(conn) is False
        assert adapter.reusable_after_cancel(conn, False) is False

    asyncio.run(main())


def test_aiosqlite_wait_for_interrupts_the_query(tmp_path: Any) -> None:
    async def main() -> None:
        adapter, conn = await _aiosqlite(tmp_path / "c.db")
        try:
            await atimeout_running(adapter, conn, ENDLESS_CTE)
            # Without the interrupt this would queue behind the endless query.
            started = time.monotonic()
            assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
            assert time.monotonic() - started < RAISE_WITHIN
        finally:
            await conn.close()

    asyncio.run(main())


# -- without a server: the errors each adapter calls cancelled ------------------


class _NoProbe:
    """A connection that records (and refuses) everything sent on it."""

    closed = False

    def __init__(self) -> None:
        self.calls: list[str] = []

    def cursor(self) -> Any:
        self.calls.append("cursor")
        raise AssertionError("is_dead probed the connection")

    def rollback(self) -> None:
        self.calls.append("rollback")
        raise AssertionError("is_dead probed the connection")


def test_sqlite_classifies_interrupted() -> None:
    import sqlite3

    from sqlgate.drivers.sqlite import SYNC

    assert SYNC.is_cancelled(sqlite3.OperationalError("interrupted"))
    assert not SYNC.is_cancelled(sqlite3.OperationalError("database is locked"))
    assert not SYNC.is_cancelled(sqlite3.ProgrammingError("interrupted"))


def test_psycopg_classifies_query_canceled() -> None:
    import types

    import psycopg

    from sqlgate.drivers.postgres import ASYNC, SYNC

    live: Any = types.SimpleNamespace(broken=False, closed=False)
    for adapter in (SYNC, ASYNC):
        assert adapter.is_cancelled(psycopg.errors.QueryCanceled())
        assert not adapter.is_cancelled(psycopg.errors.UniqueViolation())
        assert not adapter.is_cancelled(psycopg.errors.AdminShutdown())
        assert not adapter.is_dead(live, psycopg.errors.QueryCanceled())


def test_pymysql_classifies_interrupted() -> None:
    import types

    import pymysql

    from sqlgate.drivers.mysql import SYNC

    live: Any = types.SimpleNamespace(open=True)
    for errno in (1317, 1969, 3024):
        exc = pymysql.err.OperationalError(errno, "stopped")
        assert SYNC.is_cancelled(exc)
        assert not SYNC.is_dead(live, exc)
    assert not SYNC.is_cancelled(pymysql.err.OperationalError(2013, "lost"))
    assert not SYNC.is_cancelled(pymysql.err.IntegrityError(1062, "duplicate"))


def test_asyncpg_classifies_query_canceled() -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from sqlgate.drivers.asyncpg import ASYNC

    assert ASYNC.is_cancelled(asyncpg.exceptions.QueryCanceledError("stopped"))
    assert not ASYNC.is_cancelled(asyncpg.exceptions.UniqueViolationError("dup"))


def test_generic_classifies_and_never_probes_a_cancelled_statement() -> None:
    pytest.importorskip("mysql.connector")
    pytest.importorskip("pg8000")
    import mysql.connector.errors as my_errors
    import pg8000.dbapi

    from sqlgate.drivers.dbapi import for_family

    adapter = for_family("mysqlconnector")
    stopped = my_errors.OperationalError(msg="interrupted", errno=1317)
    assert adapter.is_cancelled(stopped)
    conn = _NoProbe()
    assert adapter.is_dead(conn, stopped) is False
    assert conn.calls == []  # a cancelled statement is no reason to probe
    assert not adapter.is_cancelled(my_errors.OperationalError(msg="x", errno=2013))
    pg = for_family("pg8000")
    assert pg.is_cancelled(pg8000.dbapi.DatabaseError({"C": "57014", "M": "x"}))
    assert not pg.is_cancelled(pg8000.dbapi.DatabaseError({"C": "23505", "M": "x"}))
    assert pg.cancel(_NoProbe()) is False


def test_cancel_never_raises() -> None:
    """A connection the driver cannot cancel on: False, never an exception."""
    nothing: Any = object()
    from sqlgate.drivers import mysql as my
    from sqlgate.drivers import postgres, sqlite

    for adapter in (sqlite.SYNC, postgres.SYNC, my.SYNC):
        assert adapter.cancel(nothing) is False

    async def main() -> None:
        from sqlgate.drivers import aiosqlite

        assert await postgres.ASYNC.cancel(nothing) is False
        assert await aiosqlite.ASYNC.cancel(nothing) is False
        if importlib.util.find_spec("asyncpg") is not None:
            from sqlgate.drivers import asyncpg as apg

            side = apg.ASYNC.for_dsn(parse("postgresql+asyncpg://u@127.0.0.1:1/x"))
            assert await side.cancel(nothing) is False

    asyncio.run(main())


# -- exec_many: a cancelled batch leaves nothing behind -------------------------


def _cancel_exec_many(adapter: Any, conn: Any, sql: str, seq: Any) -> None:
    out, thread = _run_in_thread(lambda: adapter.exec_many(conn, sql, seq))
    assert not out.done.wait(AFTER), f"the batch ended early: {out.error!r}"
    sent_at = time.monotonic()
    assert adapter.cancel(conn) is True
    assert out.done.wait(5)
    thread.join()
    assert out.error is not None, f"the batch returned {out.rows!r}"
    assert adapter.is_cancelled(out.error), repr(out.error)
    assert out.ended_at - sent_at < RAISE_WITHIN
    assert adapter.reusable_after_cancel(conn, False) is True


def test_psycopg_cancelled_exec_many_is_all_or_nothing(
    pg_conn: tuple[Any, Any],
) -> None:
    from psycopg import pq

    adapter, conn = pg_conn
    adapter.exec(conn, "create temp table t (x int)", None)
    sql = "insert into t select %s from pg_sleep(2)"
    _cancel_exec_many(adapter, conn, sql, [(1,), (2,), (3,)])
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert _rows(adapter, conn, "select count(*) from t") == [(0,)]


def test_pymysql_cancelled_exec_many_is_all_or_nothing(
    my_conn: tuple[Any, Any],
) -> None:
    from pymysql.constants import SERVER_STATUS

    adapter, conn = my_conn
    adapter.exec(conn, "create temporary table t (x int)", None)
    sql = "insert into t select %s from (select sleep(2)) s"
    _cancel_exec_many(adapter, conn, sql, [(1,), (2,), (3,)])
    assert not conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS
    assert _rows(adapter, conn, "select count(*) from t") == [(0,)]


def test_sqlite_cancelled_exec_many_is_all_or_nothing(
    sqlite_conn: tuple[Any, Any],
) -> None:
    adapter, conn = sqlite_conn
    adapter.exec(conn, "CREATE TABLE t (x INTEGER)", None)
    sql = "INSERT INTO t " + ENDLESS_CTE.replace("count(*)", "x + ?")
    _cancel_exec_many(adapter, conn, sql, [(1,), (2,)])
    assert not conn.in_transaction
    assert _rows(adapter, conn, "SELECT count(*) FROM t") == [(0,)]


# -- generic DB-API: mysql-connector --------------------------------------------


@pytest.fixture
def myc_conn(my_up: None) -> Iterator[tuple[Any, Any]]:
    pytest.importorskip("mysql.connector")
    from sqlgate.drivers.dbapi import for_family

    dsn = parse(MY_URL.replace("mysql://", "mysql+mysqlconnector://"))
    adapter = for_family("mysqlconnector").for_dsn(dsn)
    connect, _ = adapter.connector(dsn)
    conn = connect()
    adapter.prepare(conn)
    yield adapter, conn
    conn.close()


def test_mysqlconnector_cancel_stops_sleep(
    myc_conn: tuple[Any, Any], my_admin: Any
) -> None:
    adapter, conn = myc_conn
    tid = conn.connection_id
    exc, _ = cancel_running(
        adapter, conn, f"SELECT SLEEP({LONG})", lambda: _my_running(my_admin, tid)
    )
    assert getattr(exc, "errno", None) == 1317
    assert _poll(lambda: not _my_running(my_admin, tid), CLEAR_WITHIN) is not None
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]
    assert adapter.cancel(conn) is True  # idle: nothing is sent
    assert _rows(adapter, conn, "SELECT SLEEP(0.2), 1") == [(0, 1)]


def test_mysqlconnector_without_a_dsn_offers_no_cancel(my_up: None) -> None:
    mysql_connector = pytest.importorskip("mysql.connector")
    from sqlgate.drivers.dbapi import for_connection

    conn = mysql_connector.connect(
        host="127.0.0.1", user="root", password="", database="test"
    )
    try:
        adapter = for_connection(conn)
        assert adapter.cancel(conn) is False
        assert adapter.reusable_after_cancel(conn, False) is False
    finally:
        conn.close()


# -- many cancels at arbitrary moments: only the statement running is stopped ----


def _hammer(adapter: Any, conn: Any, sql: str, rounds: int = 60) -> tuple[int, int]:
    """Statements back to back in one thread, cancels at arbitrary moments in another.

    The caller's part of the race is played as the handle plays it: a lock
    held by the canceller across ``cancel`` and by the owner between two
    statements, so no statement starts while a cancel is in flight. The
    canceller notes which statement (or none) was running when it sent each
    cancel; every fourth gap between statements also gets one for certain
    (the owner asks and waits for it). Every statement that failed must be
    one of those noted: a cancel sent between statements stops nothing.

    Returns:
        (statements cancelled, cancels sent while none ran).
    """
    lock = threading.Lock()
    running: list[int | None] = [None]
    targeted: set[int] = set()
    idle_cancels = [0]
    failed: dict[int, BaseException] = {}
    stop = threading.Event()
    gap_asked = threading.Event()
    gap_served = threading.Event()

    def cancel_now() -> None:
        with lock:
            at = running[0]
            if at is None:
                idle_cancels[0] += 1
            else:
                targeted.add(at)
            assert adapter.cancel(conn) is True

    def canceller() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            # Spread the cancels over the statements and the gaps (0-6 ms).
            if gap_asked.wait((n * 7919 % 13) / 2000):
                gap_asked.clear()
                cancel_now()
                gap_served.set()
            else:
                cancel_now()

    thread = threading.Thread(target=canceller, daemon=True)
    thread.start()
    try:
        for i in range(rounds):
            if i % 4 == 0:
                gap_served.clear()
                gap_asked.set()
                assert gap_served.wait(5)
            with lock:
                running[0] = i
            try:
                _rows(adapter, conn, sql)
            except Exception as exc:
                failed[i] = exc
            with lock:
                running[0] = None
            if i in failed:
                assert adapter.is_cancelled(failed[i]), repr(failed[i])
                assert adapter.reusable_after_cancel(conn, False)
    finally:
        stop.set()
        thread.join(10)
    assert set(failed) <= targeted, (
        f"stopped without a cancel: {set(failed) - targeted}"
    )
    assert _rows(adapter, conn, "SELECT 1") == [(1,)]
    print(f"{len(failed)} of {rounds} cancelled, {idle_cancels[0]} idle cancels")
    return len(failed), idle_cancels[0]


def test_psycopg_cancels_at_arbitrary_moments(pg_conn: tuple[Any, Any]) -> None:
    adapter, conn = pg_conn
    cancelled, idle = _hammer(adapter, conn, "select 1 from pg_sleep(0.004)")
    assert cancelled > 0
    assert idle >= 15


def test_pymysql_cancels_at_arbitrary_moments(my_conn: tuple[Any, Any]) -> None:
    adapter, conn = my_conn
    cancelled, idle = _hammer(adapter, conn, "SELECT SLEEP(0.004)")
    assert cancelled > 0
    assert idle >= 15


def test_sqlite_cancels_at_arbitrary_moments(sqlite_conn: tuple[Any, Any]) -> None:
    adapter, conn = sqlite_conn
    limited = ENDLESS_CTE.replace("FROM c)", "FROM c WHERE x < 3000)")
    cancelled, idle = _hammer(adapter, conn, limited)
    assert cancelled > 0
    assert idle >= 15


async def _ahammer(
    adapter: Any, conn: Any, sql: str, rounds: int = 40
) -> tuple[int, int]:
    """``_hammer`` for the asyncio adapters: a canceller task, an asyncio lock."""
    lock = asyncio.Lock()
    running: list[int | None] = [None]
    targeted: set[int] = set()
    idle_cancels = [0]
    failed: dict[int, BaseException] = {}
    gap_asked = asyncio.Event()
    gap_served = asyncio.Event()

    async def cancel_now() -> None:
        async with lock:
            at = running[0]
            if at is None:
                idle_cancels[0] += 1
            else:
                targeted.add(at)
            assert await adapter.cancel(conn) is True

    async def canceller() -> None:
        n = 0
        while True:
            n += 1
            try:
                async with asyncio.timeout((n * 7919 % 13) / 2000):
                    await gap_asked.wait()
            except TimeoutError:
                await cancel_now()
            else:
                gap_asked.clear()
                await cancel_now()
                gap_served.set()

    task = asyncio.ensure_future(canceller())
    try:
        for i in range(rounds):
            if i % 4 == 0:
                gap_served.clear()
                gap_asked.set()
                await asyncio.wait_for(gap_served.wait(), 5)
            async with lock:
                running[0] = i
            try:
                await _arows(adapter, conn, sql)
            except Exception as exc:
                failed[i] = exc
            async with lock:
                running[0] = None
            if i in failed:
                assert adapter.is_cancelled(failed[i]), repr(failed[i])
                assert adapter.reusable_after_cancel(conn, False)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert set(failed) <= targeted, (
        f"stopped without a cancel: {set(failed) - targeted}"
    )
    assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
    print(f"{len(failed)} of {rounds} cancelled, {idle_cancels[0]} idle cancels")
    return len(failed), idle_cancels[0]


def test_psycopg_async_cancels_at_arbitrary_moments(pg_up: None) -> None:
    async def main() -> None:
        adapter, conn = await _psycopg_async()
        try:
            sql = "select 1 from pg_sleep(0.004)"
            cancelled, idle = await _ahammer(adapter, conn, sql)
        finally:
            await conn.close()
        assert cancelled > 0
        assert idle >= 10

    asyncio.run(main())


def test_asyncpg_cancels_at_arbitrary_moments(pg_up: None) -> None:
    """The task cancelled at spread moments, then ``cancel`` awaited (as the
    handle does): the connection always serves the next statement."""
    pytest.importorskip("asyncpg")

    async def main() -> None:
        adapter, conn = await _asyncpg()
        cancelled = 0
        try:
            for n in range(24):
                task = asyncio.ensure_future(
                    _arows(adapter, conn, "select 1 from pg_sleep(0.03)")
                )
                await asyncio.sleep((n * 7919 % 13) / 200)
                if task.done():
                    assert task.result() == [(1,)]
                else:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    if task.cancelled():
                        cancelled += 1
                        sent = await adapter.cancel(conn)
                        assert sent or not conn.is_closed()
                assert await _arows(adapter, conn, "SELECT 1") == [(1,)]
        finally:
            await conn.close()
        assert cancelled > 0

    asyncio.run(main())


def test_aiosqlite_cancels_at_arbitrary_moments(tmp_path: Any) -> None:
    async def main() -> None:
        adapter, conn = await _aiosqlite(tmp_path / "c.db")
        try:
            sql = ENDLESS_CTE.replace("FROM c)", "FROM c WHERE x < 3000)")
            cancelled, idle = await _ahammer(adapter, conn, sql)
        finally:
            await conn.close()
        assert cancelled > 0
        assert idle >= 10

    asyncio.run(main())
