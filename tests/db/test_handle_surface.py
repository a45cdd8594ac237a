"""The handle's surface Python users expect, sync and async (issue 14).

``exec_many`` (the driver's ``executemany``, retried as ``exec`` is), row
factories per handle and per call (``query_row`` too), ``Rows.columns`` for
every driver, and ``Rows.all()`` after ``first()`` raising. Every driver:
sqlite3, aiosqlite, psycopg (sync and async), asyncpg, PyMySQL, and the
generic adapter's pg8000, psycopg2, mysql-connector-python and duckdb.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from tests.servers import MY_URL as MY_BASE
from tests.servers import PG_URL as PG_BASE

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from pathlib import Path


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


# -- the sync drivers, one table each ------------------------------------------


class Target:
    """A sync DSN (or callable) with its paramstyle's placeholder and DDL."""

    def __init__(self, target: Any, ph: str, serial: str, drop: bool) -> None:
        self.target = target
        self.ph = ph
        self.serial = serial
        self.drop = drop


SYNC = [
    pytest.param("sqlite", id="sqlite3"),
    pytest.param("postgresql", id="psycopg", marks=pytest.mark.postgres),
    pytest.param("mysql", id="pymysql", marks=pytest.mark.mysql),
    pytest.param("postgresql+pg8000", id="pg8000", marks=pytest.mark.postgres),
    pytest.param("postgresql+psycopg2", id="psycopg2", marks=pytest.mark.postgres),
    pytest.param("mysql+mysqlconnector", id="mysqlconnector", marks=pytest.mark.mysql),
    pytest.param("duckdb", id="duckdb"),
]


@pytest.fixture(params=SYNC)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    scheme: str = request.param
    if scheme == "sqlite":
        yield Target(f"sqlite:///{tmp_path / 'a.db'}", "?", "integer", False)
    elif scheme == "duckdb":
        duckdb = pytest.importorskip("duckdb")
        path = str(tmp_path / "a.duckdb")
        yield Target(lambda: duckdb.connect(path), "?", "integer", False)
    elif scheme.startswith("postgresql"):
        request.getfixturevalue("pg_up")
        yield Target(PG_BASE.replace("postgresql", scheme, 1), "%s", "int", True)
    else:
        request.getfixturevalue("my_up")
        yield Target(MY_BASE.replace("mysql", scheme, 1), "%s", "int", True)


@pytest.fixture
def db(target: Target) -> Iterator[Any]:
    table = f"hs_{uuid.uuid4().hex[:10]}"
    db = sqlgate.open(target.target, max_open=2)
    db.exec(f"create table {table} (id {target.serial} primary key, name text)")
    db.table = table  # type: ignore[attr-defined]
    db.ph = target.ph  # type: ignore[attr-defined]
    yield db
    if target.drop:
        db.exec(f"drop table {table}")
    db.close()
    assert db.stats().open_connections == 0


def test_exec_many_inserts_every_set(db: Any) -> None:
    t, ph = db.table, db.ph
    sets = [(i, f"n{i}") for i in range(1, 6)]
    r = db.exec_many(f"insert into {t} (id, name) values ({ph}, {ph})", sets)
    assert r.last_insert_id is None
    assert r.rows_affected in (5, -1)  # -1 where the driver does not sum it
    assert db.query(f"select id, name from {t} order by id").all() == sets
    # A generator is read once.
    r = db.exec_many(f"delete from {t} where id = {ph}", ((i,) for i in (1, 2)))
    assert r.rows_affected in (2, -1)
    assert db.query_row(f"select count(*) from {t}") == (3,)
    # Inside a transaction it waits for the commit, and a rollback undoes it.
    with db.begin() as tx:
        tx.exec_many(f"insert into {t} (id, name) values ({ph}, {ph})", [(7, "x")])
        tx.rollback()
    with db.conn() as c:
        c.exec_many(f"insert into {t} (id, name) values ({ph}, {ph})", [(8, "y")])
    assert db.query_row(f"select count(*) from {t}") == (4,)
    s = db.stats()
    assert (s.broken_closed, s.in_use) == (0, 0)


@pytest.mark.parametrize("bad", ["abc", b"ab", {"a": 1}, 5, None])
def test_exec_many_refuses_no_sequence_before_sending(bad: object) -> None:
    db = sqlgate.open("sqlite:///:memory:")
    with pytest.raises(TypeError, match="seq_of_params must be an iterable"):
        db.exec_many("select ?", bad)
    assert db.stats().dials == 0  # nothing was sent (not even a dial)
    db.close()


def test_row_factories_per_handle_and_per_call(db: Any) -> None:
    t, ph = db.table, db.ph
    db.exec_many(
        f"insert into {t} (id, name) values ({ph}, {ph})", [(1, "a"), (2, "b")]
    )
    q = f"select id, name from {t} order by id"
    assert db.query_row(q) == (1, "a")
    assert db.query_row(q, row_factory=sqlgate.dict_row) == {"id": 1, "name": "a"}
    row = db.query_row(q, row_factory=sqlgate.namedtuple_row)
    assert (row.id, row.name) == (1, "a")
    assert db.query(q, row_factory=sqlgate.dict_row).all() == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
    ]
    assert db.query_row(f"select id from {t} where id = {ph}", (9,)) is None

    def upper(columns: tuple[str, ...]) -> Callable[[tuple[Any, ...]], Any]:
        return lambda r: {c.upper(): v for c, v in zip(columns, r, strict=True)}

    assert db.query_row(q, row_factory=upper) == {"ID": 1, "NAME": "a"}
    with db.begin() as tx:
        assert tx.query_row(q, row_factory=sqlgate.dict_row) == {"id": 1, "name": "a"}
        assert tx.query(q, row_factory=sqlgate.namedtuple_row).first().name == "a"
    with db.conn() as c:
        assert [r["name"] for r in c.query(q, row_factory=sqlgate.dict_row)] == [
            "a",
            "b",
        ]


def test_row_factory_of_the_handle(target: Target) -> None:
    db = sqlgate.open(target.target, row_factory=sqlgate.dict_row, max_open=1)
    try:
        assert db.query_row("select 1 as one") == {"one": 1}
        assert db.query("select 1 as one").all() == [{"one": 1}]
        assert db.query_row("select 1 as one", row_factory=sqlgate.tuple_row) == (1,)
        with db.conn() as c:
            assert c.query_row("select 2 as two") == {"two": 2}
            with c.begin() as tx:
                assert tx.query_row("select 3 as three") == {"three": 3}
    finally:
        db.close()


def test_bad_row_factory_is_refused() -> None:
    with pytest.raises(TypeError, match=r"row_factory must be callable.*got 'dict'"):
        sqlgate.open("sqlite:///:memory:", row_factory="dict")  # type: ignore[arg-type]
    db = sqlgate.open("sqlite:///:memory:")
    with pytest.raises(TypeError, match="row_factory must be callable"):
        db.query_row("select 1", row_factory=42)  # type: ignore[arg-type]
    db.close()


def test_columns_for_every_driver(db: Any) -> None:
    t, ph = db.table, db.ph
    with db.query(f"select id, name from {t}") as rows:  # no rows at all
        assert rows.columns == ("id", "name")
        assert rows.all() == []
    with db.query(f"select name, id from {t} where id = {ph}", (1,)) as rows:
        assert rows.columns == ("name", "id")
    with db.conn() as c, c.query(f"select id as k from {t}") as rows:
        assert rows.columns == ("k",)
    rows = db.query(f"update {t} set name = 'z' where id = 0")
    # What the driver says: no columns, except duckdb's DML, which returns
    # its count as a one-column result.
    assert rows.columns in ((), ("Count",))
    rows.close()


def test_all_after_first_raises(db: Any) -> None:
    t, ph = db.table, db.ph
    db.exec_many(
        f"insert into {t} (id, name) values ({ph}, {ph})", [(1, "a"), (2, "b")]
    )
    rows = db.query(f"select id from {t} order by id")
    assert rows.first() == (1,)
    with pytest.raises(sqlgate.Error, match=r"all\(\) on rows already closed"):
        rows.all()
    with pytest.raises(sqlgate.Error, match=r"first\(\) on rows already closed"):
        rows.first()
    rows = db.query(f"select id from {t} order by id")
    assert rows.all() == [(1,), (2,)]
    with pytest.raises(sqlgate.Error):
        rows.all()
    rows = db.query(f"select id from {t} order by id")
    assert next(rows) == (1,)
    assert rows.all() == [(2,)]  # what remains, then closed
    rows = db.query(f"select id from {t}")
    rows.close()
    with pytest.raises(sqlgate.Error):
        rows.first()
    assert db.stats().in_use == 0


@pytest.mark.postgres
def test_exec_many_retried_on_dead_idle_connections(
    pg_dsn: str, pg_admin: Any, app_name: str, table: str
) -> None:
    pg_admin.execute(f"create table {table} (a int)")
    try:
        with sqlgate.open(pg_dsn, ping_idle=0) as db:
            c1, c2 = db.conn(), db.conn()
            c1.close()
            c2.close()
            rows = pg_admin.execute(
                "select pg_terminate_backend(pid, 5000) from pg_stat_activity "
                "where application_name = %s",
                (app_name,),
            ).fetchall()
            assert len(rows) == 2
            r = db.exec_many(f"insert into {table} values (%s)", [(1,), (2,), (3,)])
            assert r.rows_affected == 3
            s = db.stats()
            assert (s.broken_closed, s.dials, s.in_use) == (2, 3, 0)
        # Sent once: three rows, not six.
        assert pg_admin.execute(f"select count(*) from {table}").fetchone() == (3,)
    finally:
        pg_admin.execute(f"drop table {table}")


# -- the async drivers --------------------------------------------------------------


ASYNC = [
    pytest.param("sqlite", id="aiosqlite"),
    pytest.param("postgresql", id="psycopg-async", marks=pytest.mark.postgres),
    pytest.param("postgresql+asyncpg", id="asyncpg", marks=pytest.mark.postgres),
]


@pytest.fixture(params=ASYNC)
def async_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    scheme: str = request.param
    if scheme == "sqlite":
        return f"sqlite:///{tmp_path / 'a.db'}", "?"
    request.getfixturevalue("pg_up")
    return PG_BASE.replace("postgresql", scheme, 1), (
        "$" if "asyncpg" in scheme else "%s"
    )


def _phs(ph: str, n: int) -> str:
    return ", ".join(f"${i}" if ph == "$" else ph for i in range(1, n + 1))


def test_async_surface(async_target: tuple[str, str]) -> None:
    dsn, ph = async_target
    table = f"hs_{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        db = sqlgate.open_async(dsn, max_open=2, row_factory=sqlgate.namedtuple_row)
        try:
            await db.exec(f"create table {table} (id int primary key, name text)")
            sets = [(i, f"n{i}") for i in range(1, 4)]
            r = await db.exec_many(
                f"insert into {table} (id, name) values ({_phs(ph, 2)})", sets
            )
            assert r.rows_affected in (3, -1)
            assert r.last_insert_id is None
            q = f"select id, name from {table} order by id"
            row = await db.query_row(q)
            assert (row.id, row.name) == (1, "n1")
            assert await db.query_row(q, row_factory=sqlgate.tuple_row) == (1, "n1")
            assert await db.query_row(q, row_factory=sqlgate.dict_row) == {
                "id": 1,
                "name": "n1",
            }
            rows = await db.query(q, row_factory=sqlgate.tuple_row)
            assert rows.columns == ("id", "name")
            assert await rows.first() == (1, "n1")
            with pytest.raises(sqlgate.Error, match=r"all\(\) on rows already"):
                await rows.all()
            empty = await db.query(f"select name from {table} where id < 0")
            assert empty.columns == ("name",)
            assert await empty.all() == []
            async with await db.begin() as tx:
                await tx.exec_many(
                    f"insert into {table} (id, name) values ({_phs(ph, 2)})",
                    [(9, "x")],
                )
                assert (await tx.query_row(f"select count(*) as n from {table}")).n == 4
                await tx.rollback()
            async with await db.conn() as c:
                got = await (await c.query(q, row_factory=sqlgate.dict_row)).all()
                assert [g["name"] for g in got] == ["n1", "n2", "n3"]
            with pytest.raises(TypeError, match="seq_of_params"):
                await db.exec_many("select 1", "abc")
            s = db.stats()
            assert (s.broken_closed, s.in_use) == (0, 0)
        finally:
            await db.exec(f"drop table {table}")
            await db.close()

    run(main())
