"""DB over the real MariaDB (PyMySQL): CRUD, isolation, reset, the retry rule."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import TYPE_CHECKING, Any

import pymysql
import pytest

import sqlgate
import sqlgate.db
from tests.fakes import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.mysql


def _admin(admin: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with admin.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def _kill(admin: Any, ids: list[int]) -> None:
    """KILL each connection and wait until the server has dropped it."""
    for i in ids:
        _admin(admin, f"KILL CONNECTION {int(i)}")
    wait_until(
        lambda: (
            not _admin(
                admin,
                "select id from information_schema.processlist where id in %s",
                (tuple(ids),),
            )
        ),
        what="the killed connections to go",
    )


def test_crud(my_dsn: str, table: str, cleanup: Callable[..., None]) -> None:
    db = sqlgate.db.open(my_dsn, max_open=2)
    cleanup(db.close)
    assert db.paramstyle == "pyformat"
    db.exec(
        f"create table {table} (id int auto_increment primary key,"
        " name varchar(20) unique) engine=InnoDB"
    )
    cleanup(lambda: db.exec(f"drop table {table}"))
    assert db.exec(
        f"insert into {table}(name) values (%s)", ("a",)
    ) == sqlgate.db.Result(1, 1)
    r = db.exec(f"insert into {table}(name) values (%(n)s)", {"n": "b"})
    assert (r.rows_affected, r.last_insert_id) == (1, 2)
    with db.query(f"select id, name from {table} order by id") as rows:
        assert rows.columns == ("id", "name")
        assert list(rows) == [(1, "a"), (2, "b")]
    assert db.query_row("select '50%'") == ("50%",)
    with pytest.raises(pymysql.err.IntegrityError):
        db.exec(f"insert into {table}(name) values ('a')")
    s = db.stats()
    assert (s.broken_closed, s.in_use) == (0, 0)


def test_isolation_levels_behave(
    my_dsn: str, my_admin: Any, table: str, cleanup: Callable[..., None]
) -> None:
    db = sqlgate.db.open(my_dsn, max_open=2)
    cleanup(db.close)
    db.exec(f"create table {table} (a int) engine=InnoDB")
    cleanup(lambda: db.exec(f"drop table {table}"))

    def sees_concurrent_insert(level: str) -> bool:
        with db.begin(isolation=level) as tx:
            before = tx.query_row(f"select count(*) from {table}")
            _admin(my_admin, f"insert into {table} values (1)")
            after = tx.query_row(f"select count(*) from {table}")
        return bool(before != after)

    assert not sees_concurrent_insert("repeatable read")
    assert sees_concurrent_insert("read committed")


def test_read_only_and_rollback_on_exception(
    my_dsn: str, table: str, cleanup: Callable[..., None]
) -> None:
    db = sqlgate.db.open(my_dsn, max_open=1)
    cleanup(db.close)
    db.exec(f"create table {table} (a int) engine=InnoDB")
    cleanup(lambda: db.exec(f"drop table {table}"))
    with db.begin(read_only=True) as tx:
        with pytest.raises(pymysql.err.OperationalError, match="READ ONLY"):
            tx.exec(f"insert into {table} values (1)")
        tx.rollback()

    def failing() -> None:
        with db.begin() as tx2:
            tx2.exec(f"insert into {table} values (1)")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        failing()
    assert db.query_row(f"select count(*) from {table}") == (0,)
    s = db.stats()
    assert (s.dials, s.broken_closed) == (1, 0)


def test_reset_uses_server_status(my_dsn: str) -> None:
    with sqlgate.db.open(my_dsn, max_open=1) as db:
        with db.conn() as c:
            c.raw.autocommit(False)
            c.exec("select 1")
            c.raw.begin()
            assert c.raw.server_status & 1  # SERVER_STATUS_IN_TRANS
        with db.conn() as c:
            assert not c.raw.server_status & 1
            assert c.raw.get_autocommit()
        s = db.stats()
        assert (s.dials, s.broken_closed) == (1, 0)


def _ids(db: sqlgate.db.DB, n: int) -> list[int]:
    conns = [db.conn() for _ in range(n)]
    ids = []
    for c in conns:
        row = c.query_row("select connection_id()")
        assert row is not None
        ids.append(int(row[0]))
    for c in conns:
        c.close()
    return ids


def test_killed_idle_connections_are_retried(my_dsn: str, my_admin: Any) -> None:
    with sqlgate.db.open(my_dsn, ping_idle=0) as db:
        ids = _ids(db, 2)
        _kill(my_admin, ids)
        row = db.query_row("select connection_id()")
        assert row is not None
        assert row[0] not in ids
        s = db.stats()
        assert (s.broken_closed, s.dials, s.idle, s.in_use) == (2, 3, 1, 0)


def test_dead_link_after_sending_is_not_retried(my_dsn: str, my_admin: Any) -> None:
    with sqlgate.db.open(my_dsn, ping_idle=3600) as db:
        _kill(my_admin, _ids(db, 1))
        with pytest.raises(pymysql.err.OperationalError) as info:
            db.exec("select 1")
        assert info.value.args[0] in (2006, 2013, 4031)
        s = db.stats()
        assert (s.broken_closed, s.dials) == (1, 1)
        assert db.query_row("select 1") == (1,)


def test_killed_during_statement_runs_it_once(
    my_dsn: str, my_admin: Any, table: str
) -> None:
    seq = f"{table}_seq"
    _admin(my_admin, f"create sequence {seq} nocache")
    try:
        with sqlgate.db.open(my_dsn, ping_idle=0) as db:
            (conn_id,) = _ids(db, 1)
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    db.query_row(f"select nextval({seq}), sleep(5)")
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=run)
            t.start()
            wait_until(
                lambda: bool(
                    _admin(
                        my_admin,
                        "select id from information_schema.processlist"
                        " where id = %s and info like %s",
                        (conn_id, "%sleep(5)%"),
                    )
                ),
                what="the statement to run",
            )
            _kill(my_admin, [conn_id])
            t.join(10)
            assert not t.is_alive()
            assert len(errors) == 1
            assert isinstance(errors[0], pymysql.err.OperationalError)
            assert errors[0].args[0] == 2013
            s = db.stats()
            assert (s.broken_closed, s.dials, s.in_use) == (1, 1, 0)
        # One nextval: the sequence's next value is 2, not 3.
        assert _admin(my_admin, f"select next_not_cached_value from {seq}") == [(2,)]
    finally:
        _admin(my_admin, f"drop sequence {seq}")


def test_kill_query_is_a_sql_error(my_dsn: str, my_admin: Any) -> None:
    with sqlgate.db.open(my_dsn) as db:
        (conn_id,) = _ids(db, 1)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                db.query_row("select sleep(5)")
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=run)
        t.start()
        wait_until(
            lambda: bool(
                _admin(
                    my_admin,
                    "select id from information_schema.processlist"
                    " where id = %s and info like %s",
                    (conn_id, "%sleep(5)%"),
                )
            ),
            what="the statement to run",
        )
        _admin(my_admin, f"KILL QUERY {conn_id}")
        t.join(10)
        # MariaDB's SLEEP returns 1 when interrupted, or the query errors 1317.
        if errors:
            assert errors[0].args[0] == 1317
        s = db.stats()
        assert (s.broken_closed, s.dials) == (0, 1)


def test_wrong_password_is_scrubbed(
    my_up: None, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "".join(["Mq4", "pw", "Zz"])
    caplog.set_level(logging.DEBUG, logger="sqlgate")
    db = sqlgate.db.open(f"mysql://root:{secret}@127.0.0.1:3306/test")
    assert secret not in repr(db)
    with pytest.raises(sqlgate.ConnectError) as info:
        db.exec("select 1")
    assert isinstance(info.value.__cause__, pymysql.err.OperationalError)
    assert info.value.__cause__.args[0] == 1045
    text = "".join(traceback.format_exception(info.value))
    assert secret not in text
    assert secret not in caplog.text
    db.close()
