"""DB over the real PostgreSQL: CRUD, transactions, reset, and the retry rule."""

from __future__ import annotations

import gc
import logging
import threading
import traceback
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

import sqlgate
import sqlgate.db
from tests.db.helpers import terminate
from tests.fakes import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.postgres


def test_crud(pg_dsn: str, table: str, cleanup: Callable[..., None]) -> None:
    db = sqlgate.db.open(pg_dsn, max_open=2)
    cleanup(db.close)
    assert db.paramstyle == "pyformat"
    db.exec(f"create table {table} (id serial primary key, name text unique)")
    cleanup(lambda: db.exec(f"drop table {table}"))
    r = db.exec(f"insert into {table}(name) values (%s), (%s)", ("a", "b"))
    assert (r.rows_affected, r.last_insert_id) == (2, None)
    assert db.query_row(
        f"insert into {table}(name) values (%(n)s) returning id", {"n": "c"}
    ) == (3,)
    assert db.exec(f"update {table} set name = upper(name)").rows_affected == 3
    with db.query(f"select id, name from {table} order by id") as rows:
        assert rows.columns == ("id", "name")
        assert list(rows) == [(1, "A"), (2, "B"), (3, "C")]
    # A literal % passes unchanged when there are no parameters.
    assert db.query_row("select 'a%b'") == ("a%b",)
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.exec(f"insert into {table}(name) values ('A')")
    s = db.stats()
    assert (s.broken_closed, s.in_use) == (0, 0)


def _read_only_block_with_caught_error(db: sqlgate.DB) -> None:
    with db.begin(isolation="repeatable_read", read_only=True) as tx:
        assert tx.query_row("show transaction_isolation") == ("repeatable read",)
        assert tx.query_row("show transaction_read_only") == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            tx.exec("create temp table nope(a int)")


def test_isolation_and_read_only(pg_dsn: str) -> None:
    with sqlgate.db.open(pg_dsn, max_open=1) as db:
        # The block catches the error, so the context manager commits: the
        # transaction PostgreSQL aborted raises instead (issue 13, item 2).
        with pytest.raises(sqlgate.TransactionAborted):
            _read_only_block_with_caught_error(db)
        # Rolled back; the same connection is back to the server's defaults.
        assert db.query_row("show transaction_isolation") == ("read committed",)
        with db.begin(isolation="serializable") as tx:
            assert tx.query_row("show transaction_isolation") == ("serializable",)
        s = db.stats()
        assert (s.dials, s.broken_closed) == (1, 0)


def test_rollback_on_exception_and_sql_error_in_tx(
    pg_dsn: str, table: str, cleanup: Callable[..., None]
) -> None:
    db = sqlgate.db.open(pg_dsn, max_open=1)
    cleanup(db.close)
    db.exec(f"create table {table} (a int primary key)")
    cleanup(lambda: db.exec(f"drop table {table}"))

    def failing() -> None:
        with db.begin() as tx:
            tx.exec(f"insert into {table} values (1)")
            tx.exec(f"insert into {table} values (1)")

    with pytest.raises(psycopg.errors.UniqueViolation):
        failing()
    assert db.query_row(f"select count(*) from {table}") == (0,)
    s = db.stats()
    assert (s.dials, s.broken_closed, s.in_use) == (1, 0, 0)


def test_reset_on_return(pg_dsn: str, pg_admin: Any, app_name: str) -> None:
    with sqlgate.db.open(pg_dsn, max_open=1) as db:
        with db.conn() as c:
            c.raw.autocommit = False
            c.raw.execute("select 1")  # opens a transaction
            assert c.raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with db.conn() as c:
            assert c.raw.autocommit
            assert c.raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        tx = db.begin()
        tx.exec("select 1")
        del tx
        gc.collect()
        with pytest.warns(ResourceWarning, match="a Tx was garbage-collected"):
            assert db.query_row("select 2") == (2,)
        state = pg_admin.execute(
            "select state from pg_stat_activity where application_name = %s",
            (app_name,),
        ).fetchall()
        assert state == [("idle",)]
        s = db.stats()
        assert (s.dials, s.broken_closed) == (1, 0)


def test_ping_is_an_empty_query(pg_dsn: str, pg_admin: Any, app_name: str) -> None:
    with sqlgate.db.open(pg_dsn) as db:
        db.ping()
        assert pg_admin.execute(
            "select query from pg_stat_activity where application_name = %s",
            (app_name,),
        ).fetchall() == [("",)]


def test_rows_dropped_give_the_connection_back(pg_dsn: str) -> None:
    with sqlgate.db.open(pg_dsn, max_open=1, acquire_timeout=5) as db:
        rows = db.query("select generate_series(1, 3)")
        assert next(rows) == (1,)
        assert db.stats().in_use == 1
        del rows
        gc.collect()
        with pytest.warns(ResourceWarning, match="a Rows was garbage-collected"):
            assert db.query_row("select 7") == (7,)
        assert db.stats().in_use == 0


def test_killed_idle_connections_are_retried(
    pg_dsn: str, pg_admin: Any, app_name: str
) -> None:
    """Dead between calls, found by the checkout ping: replaced, call succeeds."""
    with sqlgate.db.open(pg_dsn, ping_idle=0) as db:
        c1, c2 = db.conn(), db.conn()
        c1.close()
        c2.close()
        assert db.stats().idle == 2
        assert terminate(pg_admin, app_name) == 2
        assert db.query_row("select 1") == (1,)
        s = db.stats()
        # Two pooled tries met dead links; the fresh one was a new dial.
        assert (s.broken_closed, s.dials, s.idle, s.in_use) == (2, 3, 1, 0)


def test_three_dead_idle_connections_all_discarded(
    pg_dsn: str, pg_admin: Any, app_name: str
) -> None:
    with sqlgate.db.open(pg_dsn, ping_idle=0, max_idle=3) as db:
        conns = [db.conn() for _ in range(3)]
        for c in conns:
            c.close()
        assert terminate(pg_admin, app_name) == 3
        assert db.exec("select 1").rows_affected == 1
        s = db.stats()
        assert (s.broken_closed, s.dials, s.idle) == (3, 4, 1)


def test_retry_false_gives_the_dead_link_to_the_caller(
    pg_dsn: str, pg_admin: Any, app_name: str
) -> None:
    with sqlgate.db.open(pg_dsn, ping_idle=0) as db:
        db.ping()
        assert terminate(pg_admin, app_name) == 1
        with pytest.raises(psycopg.OperationalError):
            db.query_row("select 1", retry=False)
        s = db.stats()
        assert (s.broken_closed, s.dials) == (1, 1)
        assert db.query_row("select 1", retry=False) == (1,)


def test_dead_link_after_sending_is_not_retried(
    pg_dsn: str, pg_admin: Any, app_name: str
) -> None:
    """Idle less than ping_idle: not pinged; the statement meets the dead link."""
    with sqlgate.db.open(pg_dsn, ping_idle=3600) as db:
        db.ping()
        assert terminate(pg_admin, app_name) == 1
        with pytest.raises(psycopg.errors.AdminShutdown):
            db.exec("select 1")
        s = db.stats()
        assert (s.broken_closed, s.dials, s.in_use) == (1, 1, 0)
        assert db.query_row("select 1") == (1,)


def test_killed_during_statement_runs_it_once(
    pg_dsn: str, pg_admin: Any, app_name: str, table: str
) -> None:
    seq = f"{table}_seq"
    pg_admin.execute(f"create sequence {seq}")
    try:
        with sqlgate.db.open(pg_dsn, ping_idle=0) as db:
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    db.query_row(f"select nextval('{seq}'), pg_sleep(5)")
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=run)
            t.start()
            wait_until(
                lambda: (
                    pg_admin.execute(
                        "select count(*) from pg_stat_activity"
                        " where application_name = %s"
                        " and state = 'active' and query like %s",
                        (app_name, "%pg_sleep%"),
                    ).fetchone()[0]
                    == 1
                ),
                what="the statement to run",
            )
            assert terminate(pg_admin, app_name) == 1
            t.join(10)
            assert not t.is_alive()
            assert len(errors) == 1
            assert isinstance(errors[0], psycopg.OperationalError)
            s = db.stats()
            assert (s.broken_closed, s.dials, s.in_use) == (1, 1, 0)
        # nextval is not transactional: a second execution would show 2.
        assert pg_admin.execute(f"select last_value from {seq}").fetchone() == (1,)
    finally:
        pg_admin.execute(f"drop sequence {seq}")


def test_dead_link_inside_tx_is_never_retried(
    pg_dsn: str, pg_admin: Any, app_name: str
) -> None:
    with sqlgate.db.open(pg_dsn, ping_idle=0) as db:
        tx = db.begin()
        tx.exec("select 1")
        assert terminate(pg_admin, app_name) == 1
        with pytest.raises(psycopg.OperationalError):
            tx.exec("select 2")
        with pytest.raises(sqlgate.Error, match="its connection was lost"):
            tx.commit()
        s = db.stats()
        assert (s.broken_closed, s.dials, s.in_use) == (1, 1, 0)


def test_password_never_shown(pg_up: None, caplog: pytest.LogCaptureFixture) -> None:
    secret = "".join(["Hx7", "pw", "Qz"])
    target = f"postgresql://postgres:{secret}@127.0.0.1:1/test?connect_timeout=2"
    caplog.set_level(logging.DEBUG, logger="sqlgate")
    db = sqlgate.db.open(target, acquire_timeout=5)
    assert secret not in repr(db)
    assert repr(db) == "<sqlgate.DB '127.0.0.1:1/test' open>"
    with pytest.raises(sqlgate.ConnectError) as info:
        db.exec("select 1")
    text = "".join(traceback.format_exception(info.value))
    assert "Connection refused" in text or "connection" in text.lower()
    assert secret not in text
    assert secret not in caplog.text
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    db.close()


def test_driver_error_echoing_the_password_is_scrubbed(
    pg_up: None, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg rejects an unknown parameter, quoting the conninfo it built."""
    secret = "".join(["Hx7", "pw", "Qz"])
    caplog.set_level(logging.DEBUG, logger="sqlgate")
    db = sqlgate.db.open(f"postgresql://postgres:{secret}@127.0.0.1/test?nonsense=1")
    with pytest.raises(sqlgate.ConnectError) as info:
        db.exec("select 1")
    text = "".join(traceback.format_exception(info.value))
    assert "nonsense" in text
    assert secret not in text
    assert secret not in caplog.text
    db.close()


def test_threads_share_the_db(
    pg_dsn: str, table: str, cleanup: Callable[..., None]
) -> None:
    db = sqlgate.db.open(pg_dsn, max_open=3, ping_idle=0)
    cleanup(db.close)
    db.exec(f"create table {table} (a int)")
    cleanup(lambda: db.exec(f"drop table {table}"))
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(25):
                if i % 5 == 0:
                    with db.begin() as tx:
                        tx.exec(f"insert into {table} values (%s)", (k,))
                else:
                    db.exec(f"insert into {table} values (%s)", (k,))
                assert db.query_row(f"select count(*) from {table}") is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.query_row(f"select count(*) from {table}") == (200,)
    s = db.stats()
    assert (s.in_use, s.broken_closed) == (0, 0)
    assert s.open_connections <= 3
