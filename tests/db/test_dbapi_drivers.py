"""The generic PEP 249 adapter on real drivers sqlgate has no adapter for.

Issue 14's proof, against the real servers: pg8000 and psycopg2 on
PostgreSQL, mysql-connector-python on MariaDB (``test_dbapi_duckdb.py`` has the
embedded one). For each driver: CRUD in its own paramstyle; commit and
rollback through ``begin``; a SQL error that keeps the connection
(``broken_closed`` stays 0); backends killed between calls, replaced without
the caller noticing; a backend killed during a statement, whose error reaches
the caller once (the statement is never run twice); and the server's own
count of our connections equal to the pool's, then 0 after ``close``.

Our connections are told apart from every other session on the server by a
unique ``application_name`` (PostgreSQL) or a unique database (MariaDB).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
import sqlgate.db
from sqlgate.drivers.dbapi import DBAPIAdapter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PG_DRIVERS = ("pg8000", "psycopg2")
DRIVERS = (*PG_DRIVERS, "mysqlconnector")


def _wait_for(predicate: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@dataclass
class Server:
    """One driver on its server, and the admin's view of our sessions."""

    driver: str
    dsn: str
    paramstyle: str
    #: The server's count of our connections.
    count: Callable[[], int]
    #: Kill every one of our connections, wait until gone; how many.
    kill: Callable[[], int]
    #: Whether one of our sessions is running a statement containing the text.
    running: Callable[[str], bool]
    #: A table name for this test.
    table: str
    #: DDL for a table (id auto-numbered, name unique).
    create: str
    #: A statement that bumps the sequence once, then sleeps 5 s; the
    #: sequence's value as the admin sees it afterwards.
    slow: str
    bumps: Callable[[], int]
    #: The driver's module (for its exception classes).
    module: Any


def _pg(driver: str, admin: Any, table: str) -> Iterator[Server]:
    app = f"sg14-{driver}-{uuid.uuid4().hex[:10]}"
    seq = f"{table}_seq"
    admin.execute(f"create sequence {seq}")

    def scalar(sql: str, *params: Any) -> Any:
        return admin.execute(sql, params).fetchone()[0]

    def kill() -> int:
        rows = admin.execute(
            "select pg_terminate_backend(pid, 5000) from pg_stat_activity "
            "where application_name = %s",
            (app,),
        ).fetchall()
        assert all(r[0] for r in rows)
        return len(rows)

    module = __import__("pg8000.dbapi" if driver == "pg8000" else driver)
    yield Server(
        driver=driver,
        dsn=f"postgresql+{driver}://postgres@127.0.0.1:5432/test?application_name={app}",
        paramstyle="format" if driver == "pg8000" else "pyformat",
        count=lambda: int(
            scalar(
                "select count(*) from pg_stat_activity where application_name = %s",
                app,
            )
        ),
        kill=kill,
        running=lambda text: bool(
            scalar(
                "select count(*) from pg_stat_activity where application_name = %s"
                " and state = 'active' and query like %s",
                app,
                f"%{text}%",
            )
        ),
        table=table,
        create=f"create table {table} (id serial primary key, name text unique)",
        slow=f"select nextval('{seq}'), pg_sleep(5)",
        bumps=lambda: int(scalar(f"select last_value from {seq}")),
        module=getattr(module, "dbapi", module),
    )
    admin.execute(f"drop table if exists {table}")
    admin.execute(f"drop sequence {seq}")


def _my(admin: Any, table: str) -> Iterator[Server]:
    database = f"sg14_{uuid.uuid4().hex[:10]}"

    def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with admin.cursor() as cur:
            cur.execute(sql, params or None)
            return list(cur.fetchall())

    rows(f"create database {database}")
    rows(f"create sequence {database}.s nocache")

    def ids() -> list[int]:
        return [
            r[0]
            for r in rows(
                "select id from information_schema.processlist where db = %s",
                database,
            )
        ]

    def kill() -> int:
        ours = ids()
        for i in ours:
            rows(f"KILL CONNECTION {int(i)}")
        _wait_for(
            lambda: (
                not rows(
                    "select id from information_schema.processlist where id in %s",
                    tuple(ours) or (0,),
                )
            ),
            "the killed connections to go",
        )
        return len(ours)

    import mysql.connector

    yield Server(
        driver="mysqlconnector",
        dsn=f"mysql+mysqlconnector://root@127.0.0.1:3306/{database}",
        paramstyle="pyformat",
        count=lambda: len(ids()),
        kill=kill,
        running=lambda text: bool(
            rows(
                "select id from information_schema.processlist"
                " where db = %s and info like %s",
                database,
                f"%{text}%",
            )
        ),
        table=table,
        create=(
            f"create table {table} (id int auto_increment primary key,"
            " name varchar(20) unique) engine=InnoDB"
        ),
        slow="select nextval(s), sleep(5)",
        bumps=lambda: (
            int(rows(f"select next_not_cached_value from {database}.s")[0][0]) - 1
        ),
        module=mysql.connector,
    )
    rows(f"drop database {database}")


@pytest.fixture(
    params=[pytest.param(d, marks=pytest.mark.postgres) for d in PG_DRIVERS]
    + [pytest.param("mysqlconnector", marks=pytest.mark.mysql)]
)
def server(request: pytest.FixtureRequest, table: str) -> Iterator[Server]:
    driver: str = request.param
    if driver in PG_DRIVERS:
        pytest.importorskip(driver)
        yield from _pg(driver, request.getfixturevalue("pg_admin"), table)
    else:
        pytest.importorskip("mysql.connector")
        yield from _my(request.getfixturevalue("my_admin"), table)


def _ph(server: Server, name: str) -> str:
    """A placeholder in the driver's paramstyle (format/pyformat: %s)."""
    return "%s" if server.paramstyle == "format" else f"%({name})s"


def _args(server: Server, **values: Any) -> Any:
    return tuple(values.values()) if server.paramstyle == "format" else values


def test_crud_in_the_drivers_paramstyle(server: Server) -> None:
    t = server.table
    with sqlgate.db.open(server.dsn, max_open=2) as db:
        assert db.paramstyle == server.paramstyle
        assert isinstance(db._drv, DBAPIAdapter)
        db.exec(server.create)
        r = db.exec(
            f"insert into {t}(name) values ({_ph(server, 'n')})", _args(server, n="a")
        )
        assert r.rows_affected == 1
        if server.driver == "mysqlconnector":
            assert r.last_insert_id == 1
        db.exec(f"insert into {t}(name) values (%s), (%s)", ("b", "c"))
        with db.query(f"select id, name from {t} order by id") as rows:
            assert rows.columns == ("id", "name")
            assert list(rows) == [(1, "a"), (2, "b"), (3, "c")]
        assert (
            db.exec(
                f"update {t} set name = upper(name) where id > {_ph(server, 'i')}",
                _args(server, i=1),
            ).rows_affected
            == 2
        )
        assert db.query_row(f"select name from {t} where id = %s", (3,)) == ("C",)
        assert db.exec(f"delete from {t} where name = %s", ("a",)).rows_affected == 1
        assert db.query_row(f"select count(*) from {t}") == (2,)
        assert db.query_row(f"select name from {t} where id = %s", (99,)) is None
        s = db.stats()
        assert (s.broken_closed, s.in_use) == (0, 0)


def test_commit_and_rollback_through_begin(server: Server) -> None:
    t = server.table
    with sqlgate.db.open(server.dsn, max_open=2) as db:
        db.exec(server.create)
        with db.begin() as tx:
            tx.exec(f"insert into {t}(name) values (%s)", ("kept",))
            # Not committed yet: another connection does not see it.
            assert db.query_row(f"select count(*) from {t}") == (0,)
        assert db.query_row(f"select name from {t}") == ("kept",)
        tx = db.begin()
        tx.exec(f"insert into {t}(name) values (%s)", ("gone",))
        assert tx.query_row(f"select count(*) from {t}") == (2,)
        tx.rollback()
        assert db.query_row(f"select count(*) from {t}") == (1,)

        def fail_in_tx() -> None:
            with db.begin() as tx:
                tx.exec(f"insert into {t}(name) values (%s)", ("raised",))
                raise RuntimeError

        with pytest.raises(RuntimeError):
            fail_in_tx()
        assert db.query_row(f"select count(*) from {t}") == (1,)
        # Isolation and read-only through SET TRANSACTION.
        with db.begin(isolation="serializable", read_only=True) as tx:
            if server.driver in PG_DRIVERS:
                assert tx.query_row("show transaction_isolation") == ("serializable",)
                assert tx.query_row("show transaction_read_only") == ("on",)
            with pytest.raises(server.module.Error):
                tx.exec(f"insert into {t}(name) values (%s)", ("ro",))
            tx.rollback()  # PostgreSQL refuses COMMIT after an error
        with db.begin(isolation="read committed") as tx:
            tx.query_row(f"select count(*) from {t}")
            if server.driver in PG_DRIVERS:
                level = tx.query_row("show transaction_isolation")
            else:
                level = tx.query_row(
                    "select trx_isolation_level from information_schema.innodb_trx"
                    " where trx_mysql_thread_id = connection_id()"
                )
            assert level is not None
            assert level[0].lower() == "read committed"
        s = db.stats()
        assert (s.broken_closed, s.in_use) == (0, 0)


def test_sql_error_keeps_the_connection(server: Server) -> None:
    t = server.table
    with sqlgate.db.open(server.dsn, max_open=1) as db:
        db.exec(server.create)
        db.exec(f"insert into {t}(name) values (%s)", ("a",))
        with pytest.raises(server.module.Error):
            db.exec("selec 1")
        with pytest.raises(server.module.DatabaseError):
            db.exec(f"insert into {t}(name) values (%s)", ("a",))
        # The failed statements left no transaction open behind them.
        assert db.query_row(f"select count(*) from {t}") == (1,)
        with db.begin() as tx:
            with pytest.raises(server.module.Error):
                tx.exec("selec 2")
            tx.rollback()
        # A statement timeout (an OperationalError on some drivers) is told
        # from a dead link by the probe: the connection is kept.
        with db.conn() as c:
            if server.driver in PG_DRIVERS:
                c.exec("set statement_timeout = 50")
                with pytest.raises(server.module.Error):
                    c.exec("select pg_sleep(2)")
                c.exec("set statement_timeout = 0")
            else:
                c.exec("set max_statement_time = 0.05")
                with pytest.raises(server.module.Error):
                    c.query_row(
                        "select count(*) from information_schema.columns a,"
                        " information_schema.columns b, information_schema.columns c"
                    )
                c.exec("set max_statement_time = 0")
            assert c.query_row("select 1") == (1,)
        s = db.stats()
        assert (s.broken_closed, s.dials, s.in_use) == (0, 1, 0)
        assert server.count() == 1


def test_backends_killed_between_calls_are_replaced(server: Server) -> None:
    with sqlgate.db.open(server.dsn, ping_idle=0) as db:
        c1, c2 = db.conn(), db.conn()
        c1.close()
        c2.close()
        assert (db.stats().idle, server.count()) == (2, 2)
        assert server.kill() == 2
        assert db.query_row("select 1") == (1,)
        s = db.stats()
        # Two pooled tries met dead links (the checkout ping); a fresh dial.
        assert (s.broken_closed, s.dials, s.idle, s.in_use) == (2, 3, 1, 0)
        assert server.count() == 1


def test_backend_killed_during_a_statement_fails_once(server: Server) -> None:
    with sqlgate.db.open(server.dsn, ping_idle=0) as db:
        db.ping()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                db.query_row(server.slow)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        _wait_for(lambda: server.running("sleep("), "the statement to run")
        assert server.kill() == 1
        thread.join(10)
        assert not thread.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], server.module.Error)
        s = db.stats()
        assert (s.broken_closed, s.dials, s.in_use) == (1, 1, 0)
    # The sequence moved once: the statement was never run again.
    assert server.bumps() == 1


def test_server_count_equals_the_pools(server: Server) -> None:
    db = sqlgate.db.open(server.dsn, max_open=3)
    try:
        conns = [db.conn() for _ in range(3)]
        assert server.count() == db.stats().open_connections == 3
        for c in conns:
            c.close()
        db.set_max_idle_conns(1)
        _wait_for(lambda: server.count() == 1, "surplus idle to close")
        assert db.stats().open_connections == 1
    finally:
        db.close()
    assert db.stats().open_connections == 0
    _wait_for(lambda: server.count() == 0, "the server to see every close")
