"""The generic DB-API adapter's failure rules, on real drivers (issue 14).

- An aborted PostgreSQL transaction is never reported committed (pg8000 and
  psycopg2, through the handle and through ``Pool.connection()``); the
  connection is kept.
- A dial that gets bytes it cannot decode (a port speaking another protocol)
  is a connection failure: it counts, and it opens the breaker.
- mysql-connector's DSN recipe bounds the dial by default.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
import sqlgate.db
from sqlgate.drivers import dbapi
from sqlgate.drivers._dsn import parse as parse_dsn

if TYPE_CHECKING:
    from collections.abc import Iterator

PG_DRIVERS = ("pg8000", "psycopg2")


@pytest.fixture(params=PG_DRIVERS)
def pg_url(request: pytest.FixtureRequest, pg_up: None) -> str:
    driver: str = request.param
    pytest.importorskip(driver)
    app = f"sg14r-{uuid.uuid4().hex[:10]}"
    return f"postgresql+{driver}://postgres@127.0.0.1:5432/test?application_name={app}"


@pytest.mark.postgres
def test_commit_after_a_caught_error_raises_transaction_aborted(
    pg_url: str, table: str, pg_admin: Any
) -> None:
    with sqlgate.db.open(pg_url, max_open=1) as db:
        db.exec(f"create table {table} (id int)")
        try:

            def caught_error_in_block() -> None:
                with db.begin() as tx:
                    tx.exec(f"insert into {table} values (1)")
                    with pytest.raises(Exception, match="no_such_table"):
                        tx.exec("select * from no_such_table_sg14r")

            with pytest.raises(sqlgate.TransactionAborted):
                caught_error_in_block()
            tx = db.begin()
            tx.exec(f"insert into {table} values (2)")
            with pytest.raises(Exception, match="division by zero"):
                tx.exec("select 1/0")
            with pytest.raises(sqlgate.TransactionAborted):
                tx.commit()
            assert db.query_row(f"select count(*) from {table}") == (0,)
            # A transaction whose error came and went is still committed
            # when nothing failed in it afterwards (here: nothing failed).
            with db.begin() as tx:
                tx.exec(f"insert into {table} values (3)")
            assert db.query_row(f"select count(*) from {table}") == (1,)
            s = db.stats()
            # The same healthy connection throughout: kept, not discarded.
            assert (s.dials, s.broken_closed, s.in_use) == (1, 0, 0)
        finally:
            db.exec(f"drop table {table}")


@pytest.mark.postgres
def test_pool_connection_block_after_a_caught_error_raises(
    table: str, pg_admin: Any
) -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    pg8000 = pytest.importorskip("pg8000.dbapi")
    pg_admin.execute(f"create table {table} (id int)")
    makers = [
        lambda: psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test"),
        lambda: pg8000.connect(host="127.0.0.1", user="postgres", database="test"),
    ]
    for make in makers:
        pool = sqlgate.Pool(make, max_open=1)
        try:

            def caught_error_in_block(pool: sqlgate.Pool[Any]) -> None:
                with pool.connection() as c:
                    cur = c.cursor()
                    cur.execute(f"insert into {table} values (1)")
                    with pytest.raises(Exception, match="division by zero"):
                        cur.execute("select 1/0")

            with pytest.raises(sqlgate.TransactionAborted):
                caught_error_in_block(pool)
            with pool.connection() as c:
                cur = c.cursor()
                cur.execute(f"select count(*) from {table}")
                assert tuple(cur.fetchone()) == (0,)
            s = pool.stats()
            assert (s.dials, s.broken_closed, s.in_use) == (1, 0, 0)
        finally:
            pool.close()
    pg_admin.execute(f"drop table {table}")


class _Fake:
    """A DB-API-shaped connection for a driver with no local status flag."""


def test_generic_rule_probes_after_a_failed_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A driver sqlgate knows nothing of: the probe decides.
    adapter = dbapi.DBAPIAdapter.__new__(dbapi.DBAPIAdapter)
    adapter.name = "fake"
    adapter._dead = (OSError,)
    adapter._maybe_dead = ()
    adapter._in_tx = {}
    adapter._failed = {}
    adapter._aborted_flag = None
    adapter._explicit = False
    calls: list[str] = []
    refuse = {"probe": True}

    def run(conn: Any, sql: str, params: Any) -> Any:
        calls.append(sql)
        if sql == dbapi.PROBE and refuse["probe"]:
            raise RuntimeError("current transaction is aborted")
        if sql == "bad":
            raise RuntimeError("syntax error")
        return dbapi.DBAPIResult(None, [], 0, None)

    monkeypatch.setattr(adapter, "_run", run)

    class Conn:
        def __init__(self) -> None:
            self.ended: list[str] = []

        def commit(self) -> None:
            self.ended.append("commit")

        def rollback(self) -> None:
            self.ended.append("rollback")

    conn = Conn()
    # Nothing failed: no probe, a plain commit.
    adapter.begin(conn, None, False)
    adapter.exec(conn, "good", None)
    adapter.commit(conn, False)
    assert (calls, conn.ended) == (["good"], ["commit"])
    # A failed statement and a refused probe: aborted, rolled back.
    calls.clear()
    conn.ended.clear()
    adapter.begin(conn, None, False)
    with pytest.raises(RuntimeError):
        adapter.exec(conn, "bad", None)
    with pytest.raises(sqlgate.TransactionAborted):
        adapter.commit(conn, False)
    assert (calls, conn.ended) == (["bad", dbapi.PROBE], ["rollback"])
    # A failed statement and an answered probe (MySQL keeps going): commit.
    calls.clear()
    conn.ended.clear()
    refuse["probe"] = False
    adapter.begin(conn, None, False)
    with pytest.raises(RuntimeError):
        adapter.exec(conn, "bad", None)
    adapter.commit(conn, False)
    assert (calls, conn.ended) == (["bad", dbapi.PROBE], ["commit"])
    assert (adapter._in_tx, adapter._failed) == ({}, {})


# -- a port that answers garbage ----------------------------------------------

GARBAGE = b"\xff\xfe\xfd garbage\x00" * 4


@pytest.fixture
def garbage_port() -> Iterator[int]:
    """A loopback listener that answers every connection with garbage."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(50)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                try:
                    c.sendall(GARBAGE)
                    c.shutdown(socket.SHUT_WR)
                    c.recv(4096)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()
    t.join(5)


def test_unicode_error_is_a_connection_failure() -> None:
    bad = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    assert not sqlgate._core.is_programming_error(bad)
    assert sqlgate._core.is_programming_error(ValueError("x"))


# pg8000 leaves its socket to the collector when the greeting fails to decode.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_garbage_answer_fails_the_dial_and_opens_the_breaker(
    driver: str, garbage_port: int
) -> None:
    pytest.importorskip(driver)
    url = f"postgresql+{driver}://postgres@127.0.0.1:{garbage_port}/test"
    with sqlgate.db.open(url, max_open=2) as db:
        errors = []
        for i in range(5):
            with pytest.raises(sqlgate.Error) as info:
                db.query_row("select 1")
            errors.append(type(info.value).__name__)
            assert isinstance(info.value.__cause__, UnicodeError)
            del info
            if i == 1:
                # Counted as failed dials (no probe runs while it is closed).
                s = db.stats()
                assert (s.circuit_open, s.dial_failures) == (False, 2)
        # The third failed dial opened the breaker (its probes, with backoff,
        # may have failed since: not counted here).
        assert errors == ["ConnectError"] * 2 + ["CircuitOpen"] * 3
        s = db.stats()
        assert (s.circuit_open, s.dials, s.in_use, s.idle) == (True, 0, 0, 0)
    gc.collect()  # pg8000's abandoned sockets: warned here, not in a later test


def test_garbage_answer_fails_the_dial_in_the_async_pool(garbage_port: int) -> None:
    async def dial() -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", garbage_port)
        try:
            greeting = await reader.read(len(GARBAGE))
            return greeting.decode("ascii")  # the protocol's text: fails
        finally:
            writer.close()

    async def main() -> tuple[list[str], Any]:
        pool = sqlgate.AsyncPool(dial, max_open=2)
        errors = []
        try:
            for i in range(5):
                with pytest.raises(sqlgate.Error) as info:
                    async with pool.connection():
                        pass
                errors.append(type(info.value).__name__)
                assert isinstance(info.value.__cause__, UnicodeError)
                if i == 1:
                    s = pool.stats()
                    assert (s.circuit_open, s.dial_failures) == (False, 2)
            return errors, pool.stats()
        finally:
            await pool.close()

    errors, s = asyncio.run(main())
    assert errors == ["ConnectError"] * 2 + ["CircuitOpen"] * 3
    assert (s.circuit_open, s.dials, s.in_use, s.idle) == (True, 0, 0, 0)


# -- mysql-connector's dial is bounded ------------------------------------------


def test_mysqlconnector_recipe_bounds_the_dial(monkeypatch: pytest.MonkeyPatch) -> None:
    mysql_connector = pytest.importorskip("mysql.connector")
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(mysql_connector, "connect", lambda **kw: seen.append(kw))
    for url, want in [
        ("mysql+mysqlconnector://root@127.0.0.1:3306/test", dbapi.CONNECT_TIMEOUT),
        ("mysql+mysqlconnector://root@h/test?connect_timeout=2.5", 2.5),
    ]:
        connect, _ = dbapi.for_family("mysqlconnector").connector(parse_dsn(url))
        connect()
        assert seen.pop()["connection_timeout"] == want
    assert dbapi.CONNECT_TIMEOUT == 10.0


def test_mysqlconnector_on_a_silent_port_fails_within_the_timeout() -> None:
    pytest.importorskip("mysql.connector")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)  # accepts (in the backlog) and never answers
    try:
        url = f"mysql+mysqlconnector://root@127.0.0.1:{srv.getsockname()[1]}/test"
        with sqlgate.db.open(f"{url}?connect_timeout=0.5") as db:
            with pytest.raises(sqlgate.ConnectError):
                db.query_row("select 1")
            assert db.stats().dial_failures == 1
    finally:
        srv.close()
