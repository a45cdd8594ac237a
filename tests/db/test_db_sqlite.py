"""DB over SQLite files and the shared in-memory database."""

from __future__ import annotations

import gc
import sqlite3
import threading
from typing import TYPE_CHECKING

import pytest

import sqlgate
import sqlgate.db
from sqlgate.db import DB, Conn, Result, Rows, Tx

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DB]:
    handle = sqlgate.db.open(f"sqlite:///{tmp_path}/app.db", max_open=4)
    handle.exec("create table item(id integer primary key, name text unique)")
    yield handle
    handle.close()
    s = handle.stats()
    assert (s.in_use, s.open_connections) == (0, 0)


def test_absolute_path_has_four_slashes(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    with sqlgate.db.open(f"sqlite:///{path}") as db:  # "sqlite:///" + "/tmp/..."
        db.exec("create table t(a)")
    assert path.exists()


def test_crud(db: DB) -> None:
    assert db.paramstyle == "qmark"
    assert db.exec("insert into item(name) values (?)", ("a",)) == Result(1, 1)
    assert db.exec("insert into item(name) values (?)", ("b",)) == Result(1, 2)
    assert db.query_row("select name from item where id = ?", (2,)) == ("b",)
    assert db.exec("update item set name = name || '!'") == Result(2, 2)
    with db.query("select id, name from item order by id") as rows:
        assert isinstance(rows, Rows)
        assert rows.columns == ("id", "name")
        assert list(rows) == [(1, "a!"), (2, "b!")]
    assert db.exec("delete from item where id = ?", (1,)).rows_affected == 1
    assert db.query_row("select name from item where id = 1") is None
    assert db.query("select id from item").all() == [(2,)]


def test_named_params_pass_unchanged(db: DB) -> None:
    db.exec("insert into item(name) values (:n)", {"n": "x"})
    assert db.query_row("select count(*) from item where name = :n", {"n": "x"}) == (1,)


def test_sql_error_keeps_the_connection(db: DB) -> None:
    db.exec("insert into item(name) values ('a')")
    with pytest.raises(sqlite3.IntegrityError):
        db.exec("insert into item(name) values ('a')")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        db.query("select * from nowhere")
    s = db.stats()
    assert (s.broken_closed, s.dials, s.in_use, s.idle) == (0, 1, 0, 1)


def test_many_rows_in_batches(db: DB) -> None:
    with db.begin() as tx:
        for i in range(250):
            tx.exec("insert into item(name) values (?)", (f"n{i}",))
    assert [r[0] for r in db.query("select id from item order by id")] == list(
        range(1, 251)
    )


def test_tx_commit_and_rollback_on_exception(db: DB) -> None:
    with db.begin() as tx:
        assert isinstance(tx, Tx)
        tx.exec("insert into item(name) values ('kept')")
        assert tx.query_row("select count(*) from item") == (1,)
    assert tx.done

    def fail_inside() -> None:
        with db.begin() as tx2:
            tx2.exec("insert into item(name) values ('lost')")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_inside()
    assert db.query("select name from item").all() == [("kept",)]
    assert db.stats().in_use == 0


def test_finished_tx_raises(db: DB) -> None:
    tx = db.begin()
    tx.commit()
    for call in (
        lambda: tx.exec("select 1"),
        lambda: tx.query("select 1"),
        lambda: tx.query_row("select 1"),
        tx.commit,
        tx.rollback,
    ):
        with pytest.raises(sqlgate.Error, match="transaction already committed"):
            call()
    tx = db.begin()
    tx.rollback()
    with pytest.raises(sqlgate.Error, match="transaction already rolled back"):
        tx.exec("select 1")


def test_isolation_on_sqlite(db: DB) -> None:
    with db.begin(isolation="serializable") as tx:
        tx.exec("insert into item(name) values ('s')")
    with pytest.raises(ValueError, match="isolation='read committed' is not supported"):
        db.begin(isolation="read committed")
    with pytest.raises(ValueError, match="isolation must be one of"):
        db.begin(isolation="bogus")
    with pytest.raises(TypeError, match="read_only must be a bool, got 1"):
        db.begin(read_only=1)  # type: ignore[arg-type]
    assert db.stats().in_use == 0


def test_read_only_tx(db: DB) -> None:
    with db.begin(read_only=True) as tx:
        assert tx.query_row("select count(*) from item") == (0,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            tx.exec("insert into item(name) values ('no')")
    # query_only was cleared: the same connection writes again.
    db.exec("insert into item(name) values ('yes')")
    assert db.stats().dials == 1


def test_txlock_immediate(tmp_path: Path) -> None:
    with sqlgate.db.open(f"sqlite:///{tmp_path}/l.db?txlock=immediate") as db:
        db.exec("create table t(a)")
        tx = db.begin()
        c = db.conn()
        # BEGIN IMMEDIATE took the write lock already; timeout=5 by default,
        # so ask this connection to give up at once.
        c.raw.execute("pragma busy_timeout=0")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            c.exec("begin immediate")
        c.close()
        tx.rollback()


def test_rows_release_when_exhausted_closed_or_dropped(db: DB) -> None:
    db.exec("insert into item(name) values ('a')")
    rows = db.query("select name from item")
    assert db.stats().in_use == 1
    assert list(rows) == [("a",)]
    assert rows.closed
    assert db.stats().in_use == 0

    rows = db.query("select name from item")
    rows.close()
    rows.close()  # idempotent
    assert db.stats().in_use == 0
    assert list(rows) == []

    rows = db.query("select name from item")
    assert db.stats().in_use == 1
    del rows
    gc.collect()
    with pytest.warns(ResourceWarning, match="a Rows was garbage-collected"):
        s = db.stats()
    assert (s.in_use, s.idle, s.broken_closed) == (0, 1, 0)


def test_dropped_rows_in_a_cycle_from_another_thread(db: DB) -> None:
    """The finalizer runs inside gc on whatever thread; it takes no lock."""
    db.exec("insert into item(name) values ('a')")

    class Holder:
        pass

    h = Holder()
    h.rows = db.query("select name from item")  # type: ignore[attr-defined]
    h.me = h  # type: ignore[attr-defined]
    del h
    t = threading.Thread(target=gc.collect)
    t.start()
    t.join()
    with pytest.warns(ResourceWarning):
        assert db.query_row("select count(*) from item") == (1,)
    assert db.stats().in_use == 0


def test_dropped_tx_and_conn_are_returned_rolled_back(db: DB) -> None:
    tx = db.begin()
    tx.exec("insert into item(name) values ('ghost')")
    c = db.conn()
    del tx, c
    gc.collect()
    with pytest.warns(ResourceWarning) as record:
        s = db.stats()
    assert sorted(str(w.message).split(" was ")[0][-4:] for w in record) == [
        "Conn",
        "a Tx",
    ]
    assert s.in_use == 0
    assert db.query_row("select count(*) from item") == (0,)


def test_conn_pins_one_session(db: DB) -> None:
    with db.conn() as c:
        assert isinstance(c, Conn)
        assert isinstance(c.raw, sqlite3.Connection)
        c.exec("create temp table scratch(a)")
        c.exec("insert into scratch values (1)")
        assert c.query_row("select count(*) from scratch") == (1,)
        with c.begin() as tx:
            tx.exec("insert into scratch values (2)")
        assert c.query("select a from scratch order by a").all() == [(1,), (2,)]
        c.ping()
        assert db.stats().in_use == 1
    assert c.closed
    assert db.stats().in_use == 0
    with pytest.raises(sqlgate.Error, match="connection already closed"):
        c.exec("select 1")
    with pytest.raises(sqlgate.Error, match="connection already closed"):
        _ = c.raw


def test_reset_rolls_back_what_raw_left_open(db: DB) -> None:
    with db.conn() as c:
        c.raw.execute("begin")
        c.raw.execute("insert into item(name) values ('dangling')")
        c.raw.isolation_level = "DEFERRED"
    # Rolled back on return, autocommit restored, same connection kept.
    assert db.query_row("select count(*) from item") == (0,)
    db.exec("insert into item(name) values ('auto')")
    with db.conn() as c:
        assert c.raw.isolation_level is None
        assert not c.raw.in_transaction
    s = db.stats()
    assert (s.dials, s.broken_closed) == (1, 0)


def test_closed_raw_connection_is_replaced_at_checkout(db: DB) -> None:
    with db.conn() as c:
        c.raw.close()
    # reset failed on the closed connection: the pool discarded it.
    s = db.stats()
    assert (s.idle, s.closed) == (0, 1)
    assert db.query_row("select 1") == (1,)


def test_memory_is_one_shared_database() -> None:
    db = sqlgate.db.open("sqlite:///:memory:", max_open=3)
    c1, c2, c3 = db.conn(), db.conn(), db.conn()
    c1.exec("create table shared(a)")
    c2.exec("insert into shared values (42)")
    assert c3.query_row("select a from shared") == (42,)
    for c in (c1, c2, c3):
        c.close()
    # Every pooled connection gone: the keeper holds the database.
    db.set_max_idle_conns(0)
    assert db.stats().open_connections == 0
    assert db.query_row("select a from shared") == (42,)
    db.close()
    other = sqlgate.db.open("sqlite:///:memory:")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        other.query_row("select a from shared")
    other.close()


def test_callable_target_is_detected_and_put_in_autocommit(tmp_path: Path) -> None:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "c.db", check_same_thread=False)

    db = sqlgate.db.open(connect)
    assert db.paramstyle == "qmark"
    db.exec("create table t(a)")
    db.exec("insert into t values (1)")
    # Committed by itself: visible from an unrelated connection.
    assert sqlite3.connect(tmp_path / "c.db").execute("select a from t").fetchall() == [
        (1,)
    ]
    db.close()


def test_issue14_callable_returning_no_dbapi_connection_is_a_type_error() -> None:
    """Not a connection: the caller sees the TypeError; no circuit, no probe."""
    made: list[object] = []

    class Weird:
        def __init__(self) -> None:
            made.append(self)
            self.closed = 0

        def close(self) -> None:
            self.closed += 1

    db = sqlgate.db.open(Weird, circuit_after=2)
    for n in range(1, 6):
        with pytest.raises(TypeError, match=r"not a DB-API 2\.0 connection") as info:
            db.exec("select 1")
        assert "(no cursor, commit, rollback)" in str(info.value)
        s = db.stats()
        assert (len(made), s.dials, s.dial_failures, s.open_connections) == (
            n,
            0,
            0,
            0,
        )
        assert not s.circuit_open
        assert db.pool._maintenance is None  # no probe loop
    assert all(w.closed == 1 for w in made)  # type: ignore[attr-defined]
    db.close()
    assert len(made) == 5


def test_setters_delegate_and_user_reset_runs(tmp_path: Path) -> None:
    seen: list[object] = []
    db = sqlgate.db.open(f"sqlite:///{tmp_path}/s.db", reset=seen.append, name="s")
    db.set_max_open_conns(5)
    db.set_max_idle_conns(1)
    db.set_max_connecting(1)
    db.set_conn_max_lifetime(60.0)
    db.set_conn_max_idle_time(30.0)
    db.set_min_idle_conns(0)
    db.ping()
    s = db.stats()
    assert (s.max_open_connections, s.max_idle) == (5, 1)
    assert len(seen) == 1
    assert db.pool is db._pool
    assert repr(db) == "<sqlgate.DB 's' open>"
    db.close()
    db.close()
    assert db.closed
    with pytest.raises(sqlgate.PoolClosed):
        db.exec("select 1")


def test_exec_outside_tx_commits_on_its_own(tmp_path: Path) -> None:
    with sqlgate.db.open(f"sqlite:///{tmp_path}/a.db") as db:
        db.exec("create table t(a)")
        db.exec("insert into t values (1)")
        other = sqlite3.connect(tmp_path / "a.db")
        assert other.execute("select count(*) from t").fetchone() == (1,)
        other.close()


def test_query_without_result_columns(db: DB) -> None:
    rows = db.query("insert into item(name) values ('q')")
    assert rows.columns == ()
    assert list(rows) == []
    assert db.stats().in_use == 0


def test_issue14_adapter_raising_a_programming_error_opens_no_circuit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter's own bug on a healthy database: the caller's error, as is."""
    from sqlgate.drivers import sqlite as sqlite_driver

    calls: list[object] = []

    def broken_prepare(conn: object) -> None:
        calls.append(conn)
        raise ValueError("prepare: bad option")

    monkeypatch.setattr(sqlite_driver.SYNC, "prepare", broken_prepare)
    db = sqlgate.db.open(f"sqlite:///{tmp_path / 'a.db'}", circuit_after=2)
    for n in range(1, 6):
        with pytest.raises(ValueError, match="prepare: bad option"):
            db.exec("select 1")
        s = db.stats()
        assert (len(calls), s.dials, s.dial_failures, s.open_connections) == (
            n,
            0,
            0,
            0,
        )
        assert not s.circuit_open
        assert db.pool._maintenance is None
    db.close()


def test_issue14_async_callable_of_unknown_driver_opens_no_circuit() -> None:
    import asyncio

    made: list[object] = []

    class Weird:
        async def close(self) -> None:
            pass

    async def connect() -> Weird:
        made.append(Weird())
        return made[-1]  # type: ignore[return-value]

    async def main() -> None:
        db = sqlgate.open_async(connect, circuit_after=2)
        for n in range(1, 6):
            with pytest.raises(TypeError, match=r"sqlgate\.open_async knows"):
                await db.exec("select 1")
            s = db.stats()
            assert (len(made), s.dials, s.dial_failures) == (n, 0, 0)
            assert not s.circuit_open
            assert db.pool._maintenance is None
        await db.close()

    asyncio.run(main())
