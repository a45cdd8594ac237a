"""The generic PEP 249 adapter on an embedded driver: duckdb (issue 14).

duckdb autocommits and opens a transaction only on BEGIN, and its ``cursor()``
is a session of its own: the adapter learns the first from a new connection's
refusing ``rollback()`` and drives it in explicit mode. There is no server
here, so the proof's server-side steps have embedded counterparts: a
connection closed underneath the pool between calls stands for a killed
backend, ``interrupt()`` during a statement for a kill mid-statement, and the
connections the connect callable made, all closed, for the server's count.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
import sqlgate.db
from sqlgate.drivers.dbapi import DBAPIAdapter

if TYPE_CHECKING:
    from pathlib import Path

duckdb = pytest.importorskip("duckdb")


class Maker:
    """A connect callable for one database file that keeps what it made."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.made: list[Any] = []
        #: Runs on each new connection (e.g. to register a function).
        self.setup: Any = None

    def __call__(self) -> Any:
        conn = duckdb.connect(self.path)
        conn.execute("SET enable_progress_bar = false")
        if self.setup is not None:
            self.setup(conn)
        self.made.append(conn)
        return conn

    def closed(self) -> int:
        """How many connections made were closed (a closed one refuses SQL)."""
        n = 0
        for conn in self.made:
            try:
                conn.execute("select 1")
            except duckdb.ConnectionException:
                n += 1
        return n


@pytest.fixture
def maker(tmp_path: Path) -> Maker:
    return Maker(tmp_path / "t.duckdb")


def test_crud_in_qmark(maker: Maker) -> None:
    with sqlgate.db.open(maker, max_open=2) as db:
        assert db.paramstyle == "qmark"
        assert isinstance(db._drv, DBAPIAdapter)
        assert db._drv.name == "duckdb"
        db.exec("create table t (id integer primary key, name text unique)")
        assert db.exec("insert into t values (?, ?)", (1, "a")).rows_affected == 1
        db.exec("insert into t values (?, ?), (?, ?)", (2, "b", 3, "c"))
        with db.query("select id, name from t order by id") as rows:
            assert rows.columns == ("id", "name")
            assert list(rows) == [(1, "a"), (2, "b"), (3, "c")]
        assert (
            db.exec("update t set name = upper(name) where id > ?", (1,)).rows_affected
            == 2
        )
        assert db.query_row("select name from t where id = ?", (3,)) == ("C",)
        assert db.exec("delete from t where id = ?", (1,)).rows_affected == 1
        # Another pooled connection sees every statement: each committed.
        with db.conn() as c1, db.conn() as c2:
            assert c1.query_row("select count(*) from t") == (2,)
            assert c2.query_row("select count(*) from t") == (2,)
        s = db.stats()
        assert (s.broken_closed, s.in_use) == (0, 0)


def test_commit_and_rollback_through_begin(maker: Maker) -> None:
    with sqlgate.db.open(maker, max_open=2) as db:
        db.exec("create table t (name text)")
        with db.begin() as tx:
            tx.exec("insert into t values (?)", ("kept",))
            assert tx.query_row("select count(*) from t") == (1,)
            assert db.query_row("select count(*) from t") == (0,)
        assert db.query_row("select name from t") == ("kept",)
        tx = db.begin()
        tx.exec("insert into t values (?)", ("gone",))
        tx.rollback()
        assert db.query_row("select count(*) from t") == (1,)

        def fail_in_tx() -> None:
            with db.begin() as tx:
                tx.exec("insert into t values (?)", ("raised",))
                raise RuntimeError

        with pytest.raises(RuntimeError):
            fail_in_tx()
        assert db.query_row("select count(*) from t") == (1,)
        # duckdb has no SET TRANSACTION: refused clearly, nothing left open.
        with pytest.raises(ValueError, match=r"duckdb \(generic DB-API adapter\) can"):
            db.begin(isolation="serializable")
        with pytest.raises(ValueError, match="read_only=True"):
            db.begin(read_only=True)
        assert db.query_row("select count(*) from t") == (1,)
        s = db.stats()
        assert (s.broken_closed, s.in_use) == (0, 0)


def test_sql_error_keeps_the_connection(maker: Maker) -> None:
    with sqlgate.db.open(maker, max_open=1) as db:
        db.exec("create table t (name text unique)")
        db.exec("insert into t values ('a')")
        with pytest.raises(duckdb.ParserException):
            db.exec("selec 1")
        with pytest.raises(duckdb.ConstraintException):
            db.exec("insert into t values ('a')")
        with db.begin() as tx:
            with pytest.raises(duckdb.CatalogException):
                tx.exec("select * from nope")
            tx.rollback()
        assert db.query_row("select count(*) from t") == (1,)
        s = db.stats()
        assert (s.broken_closed, s.dials, s.in_use) == (0, 1, 0)


def test_connections_closed_between_calls_are_replaced(maker: Maker) -> None:
    with sqlgate.db.open(maker, ping_idle=0) as db:
        c1, c2 = db.conn(), db.conn()
        raws = [c1.raw, c2.raw]
        c1.close()
        c2.close()
        for raw in raws:
            raw.close()  # gone underneath the pool, as a killed backend
        assert db.query_row("select 1") == (1,)
        s = db.stats()
        assert (s.broken_closed, s.dials, s.idle, s.in_use) == (2, 3, 1, 0)


def test_statement_interrupted_fails_once(maker: Maker) -> None:
    starts: list[int] = []
    entered, go = threading.Event(), threading.Event()

    def tick(x: int) -> int:
        if x == 0:  # once per execution of the statement
            starts.append(x)
            entered.set()
            go.wait(10)
        return x

    maker.setup = lambda conn: conn.create_function(
        "tick", tick, ["BIGINT"], "BIGINT", side_effects=True
    )
    with sqlgate.db.open(maker, ping_idle=0) as db:
        db.ping()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                db.query_row("select sum(tick(range)) from range(1000000)")
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        assert entered.wait(10)
        maker.made[0].interrupt()
        go.set()
        thread.join(10)
        assert not thread.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], duckdb.InterruptException)
        # Run once, never again; an interrupt is no dead link: kept.
        assert starts == [0]
        s = db.stats()
        assert (s.broken_closed, s.dials, s.in_use) == (0, 1, 0)
        assert db.query_row("select 2") == (2,)


def test_every_connection_made_is_closed(maker: Maker) -> None:
    db = sqlgate.db.open(maker, max_open=3)
    conns = [db.conn() for _ in range(3)]
    assert db.stats().open_connections == len(maker.made) == 3
    for c in conns:
        c.close()
    db.set_max_idle_conns(1)
    assert maker.closed() == 2
    assert db.stats().open_connections == 1
    db.close()
    assert db.stats().open_connections == 0
    assert maker.closed() == len(maker.made) == 3
