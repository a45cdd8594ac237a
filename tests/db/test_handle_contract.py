"""Issue 13, items 2, 3, 4, 11, 12: the handle's transaction contract.

2. A commit of a transaction PostgreSQL already aborted raises
   ``TransactionAborted`` and commits nothing (psycopg sync and async,
   asyncpg); MariaDB and SQLite roll back only the failed statement, so there
   the commit keeps the rest (no false alarm).
3. Ending a Tx or closing a Conn closes the rows it made; using them then
   raises, and never reads through a connection another caller now holds.
4. A second ``Conn.begin()`` while a Tx of that Conn is open is refused; the
   outer transaction keeps its meaning.
11. ``async with db.begin() as tx`` / ``db.query(...)`` / ``db.conn()`` (and
    on a Conn/Tx) work without ``await``.
12. ``db = await open_async(...)`` verifies the target (``min_idle``
    connections, or one ping); the plain call stays lazy.

Every item runs on SQLite, PostgreSQL and MariaDB where the face exists:
sync (sqlite3, psycopg, PyMySQL) and async (aiosqlite, psycopg, asyncpg).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate

if TYPE_CHECKING:
    from pathlib import Path

PG = "postgresql://postgres@127.0.0.1:5432/test"
ASYNCPG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
MY = "mysql://root@127.0.0.1:3306/test"

SYNC = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]
ASYNC = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("asyncpg", marks=pytest.mark.postgres),
]


@pytest.fixture
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    family = request.param
    if family == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    if family == "mysql":
        request.getfixturevalue("my_up")
        return MY
    request.getfixturevalue("pg_up")
    return PG if family == "postgresql" else ASYNCPG


def _pg(dsn: str) -> bool:
    return dsn.startswith("postgresql")


def _count(db: sqlgate.DB, table: str) -> int:
    row = db.query_row(f"select count(*) from {table}")
    assert row is not None
    return int(row[0])


async def _acount(db: sqlgate.AsyncDB, table: str) -> int:
    row = await db.query_row(f"select count(*) from {table}")
    assert row is not None
    return int(row[0])


# -- item 2 ---------------------------------------------------------------------


def _fails(tx: sqlgate.Tx) -> None:
    with pytest.raises(Exception, match=r"(?i)no such table|does not exist|doesn't"):
        tx.exec("select * from sqlgate_no_such_table")


@pytest.mark.parametrize("dsn", SYNC, indirect=True)
def test_commit_after_a_caught_error_issue13_item2(dsn: str, table: str) -> None:
    db = sqlgate.open(dsn, max_open=1)
    try:
        db.exec(f"create table {table} (id int)")
        tx = db.begin()
        tx.exec(f"insert into {table} values (1)")
        _fails(tx)
        if _pg(dsn):
            with pytest.raises(sqlgate.TransactionAborted, match="already aborted"):
                tx.commit()
            assert _count(db, table) == 0
        else:  # statement-level rollback: the insert stands
            tx.commit()
            assert _count(db, table) == 1
        assert tx.done
        # The same through the context manager.
        with pytest.raises(sqlgate.TransactionAborted) if _pg(dsn) else _nothing():
            _block_with_caught_error(db, table)
        assert _count(db, table) == (0 if _pg(dsn) else 2)
        s = db.stats()
        assert (s.in_use, s.broken_closed, s.open_connections) == (0, 0, 1)
        db.exec(f"drop table {table}")
    finally:
        db.close()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _block_with_caught_error(db: sqlgate.DB, table: str) -> None:
    with db.begin() as tx:
        tx.exec(f"insert into {table} values (2)")
        _fails(tx)


@pytest.mark.parametrize("dsn", ASYNC, indirect=True)
def test_commit_after_a_caught_error_async_issue13_item2(dsn: str, table: str) -> None:
    async def run() -> None:
        db = sqlgate.open_async(dsn, max_open=1)
        try:
            await db.exec(f"create table {table} (id int)")
            tx = await db.begin()
            await tx.exec(f"insert into {table} values (1)")
            with pytest.raises(Exception, match=r"(?i)no such table|does not exist"):
                await tx.exec("select * from sqlgate_no_such_table")
            if _pg(dsn):
                with pytest.raises(sqlgate.TransactionAborted):
                    await tx.commit()
                assert await _acount(db, table) == 0
            else:
                await tx.commit()
                assert await _acount(db, table) == 1
            assert tx.done
            s = db.stats()
            assert (s.in_use, s.broken_closed, s.open_connections) == (0, 0, 1)
            await db.exec(f"drop table {table}")
        finally:
            await db.close()

    asyncio.run(run())


# -- item 3 ---------------------------------------------------------------------

ROWS_CLOSED = "rows closed: their"


@pytest.mark.parametrize("dsn", SYNC, indirect=True)
def test_rows_end_with_their_tx_or_conn_issue13_item3(dsn: str, table: str) -> None:
    db = sqlgate.open(dsn, max_open=1, max_idle=1)
    try:
        db.exec(f"create table {table} (id int)")
        for i in range(5):
            db.exec(f"insert into {table} values ({i})")
        tx = db.begin()
        rows = tx.query(f"select id from {table} order by id")
        assert next(rows) == (0,)
        tx.commit()
        assert rows.closed
        # Another caller now holds the (only) connection, mid-transaction.
        other = db.begin()
        other.exec(f"insert into {table} values (99)")
        with pytest.raises(sqlgate.Error, match=ROWS_CLOSED + " transaction"):
            next(rows)
        with pytest.raises(sqlgate.Error, match=ROWS_CLOSED):
            rows.all()
        other.rollback()
        # A Conn: closing it closes its rows and its Tx's rows.
        conn = db.conn()
        rows = conn.query(f"select id from {table} order by id")
        tx = conn.begin()
        tx_rows = tx.query(f"select id from {table} order by id")
        assert next(rows) == (0,)
        assert next(tx_rows) == (0,)
        conn.close()
        for r in (rows, tx_rows):
            assert r.closed
            with pytest.raises(sqlgate.Error, match=ROWS_CLOSED):
                r.first()
        assert _count(db, table) == 5
        s = db.stats()
        assert (s.in_use, s.broken_closed, s.open_connections) == (0, 0, 1)
        db.exec(f"drop table {table}")
    finally:
        db.close()


@pytest.mark.parametrize("dsn", ASYNC, indirect=True)
def test_rows_end_with_their_tx_or_conn_async_issue13_item3(
    dsn: str, table: str
) -> None:
    async def run() -> None:
        db = sqlgate.open_async(dsn, max_open=1, max_idle=1)
        try:
            await db.exec(f"create table {table} (id int)")
            for i in range(5):
                await db.exec(f"insert into {table} values ({i})")
            tx = await db.begin()
            rows = await tx.query(f"select id from {table} order by id")
            assert await anext(rows) == (0,)
            await tx.rollback()
            other = await db.begin()
            await other.exec(f"insert into {table} values (99)")
            with pytest.raises(sqlgate.Error, match=ROWS_CLOSED + " transaction"):
                await anext(rows)
            await other.rollback()
            conn = await db.conn()
            rows = await conn.query(f"select id from {table} order by id")
            assert await anext(rows) == (0,)
            await conn.close()
            with pytest.raises(sqlgate.Error, match=ROWS_CLOSED + " Conn"):
                await rows.all()
            s = db.stats()
            assert (s.in_use, s.broken_closed, s.open_connections) == (0, 0, 1)
            await db.exec(f"drop table {table}")
        finally:
            await db.close()

    asyncio.run(run())


# -- item 4 ---------------------------------------------------------------------

NESTED = "still open: commit or roll it back first"


@pytest.mark.parametrize("dsn", SYNC, indirect=True)
def test_second_begin_on_a_conn_is_refused_issue13_item4(dsn: str, table: str) -> None:
    db = sqlgate.open(dsn)
    try:
        db.exec(f"create table {table} (id int)")
        with db.conn() as conn:
            tx = conn.begin()
            tx.exec(f"insert into {table} values (1)")
            with pytest.raises(sqlgate.Error, match=NESTED):
                conn.begin()
            tx.exec(f"insert into {table} values (2)")
            tx.rollback()  # undoes everything: nothing was committed inside
            assert _count(db, table) == 0
            with conn.begin() as again:  # once ended, a new one is fine
                again.exec(f"insert into {table} values (3)")
        assert _count(db, table) == 1
        assert db.stats().broken_closed == 0
        db.exec(f"drop table {table}")
    finally:
        db.close()


@pytest.mark.parametrize("dsn", ASYNC, indirect=True)
def test_second_begin_on_a_conn_is_refused_async_issue13_item4(
    dsn: str, table: str
) -> None:
    async def run() -> None:
        db = sqlgate.open_async(dsn)
        try:
            await db.exec(f"create table {table} (id int)")
            async with db.conn() as conn:
                tx = await conn.begin()
                await tx.exec(f"insert into {table} values (1)")
                with pytest.raises(sqlgate.Error, match=NESTED):
                    await conn.begin()
                await tx.rollback()
                assert await _acount(db, table) == 0
                async with conn.begin() as again:
                    await again.exec(f"insert into {table} values (3)")
            assert await _acount(db, table) == 1
            await db.exec(f"drop table {table}")
        finally:
            await db.close()

    asyncio.run(run())


# -- item 11 --------------------------------------------------------------------


class Boom(Exception):
    pass


async def _raise_in_tx(db: sqlgate.AsyncDB, table: str) -> None:
    async with db.begin() as tx:
        await tx.exec(f"insert into {table} values (2)")
        raise Boom


@pytest.mark.parametrize("dsn", ASYNC, indirect=True)
def test_async_with_without_await_issue13_item11(dsn: str, table: str) -> None:
    async def run() -> None:
        db = sqlgate.open_async(dsn, max_open=2)
        try:
            await db.exec(f"create table {table} (id int)")
            async with db.begin() as tx:
                assert isinstance(tx, sqlgate.db_async.AsyncTx)
                await tx.exec(f"insert into {table} values (1)")
                async with tx.query(f"select id from {table}") as rows:
                    assert [r async for r in rows] == [(1,)]
                assert rows.closed
            assert tx.done
            assert await _acount(db, table) == 1
            with pytest.raises(Boom):
                await _raise_in_tx(db, table)
            assert await _acount(db, table) == 1
            async with db.query(f"select id from {table}") as rows:
                assert db.stats().in_use == 1
                assert await rows.first() == (1,)
            async with db.conn() as conn, conn.query("select 1") as crows:
                assert await crows.all() == [(1,)]
            assert conn.closed
            # The awaited forms still work.
            tx = await db.begin()
            await tx.rollback()
            assert (await (await db.query("select 2")).first()) == (2,)
            s = db.stats()
            assert (s.in_use, s.broken_closed) == (0, 0)
            await db.exec(f"drop table {table}")
        finally:
            await db.close()

    asyncio.run(run())


# -- item 12 --------------------------------------------------------------------


@pytest.mark.parametrize("dsn", ASYNC, indirect=True)
def test_await_open_async_verifies_the_target_issue13_item12(dsn: str) -> None:
    async def run() -> None:
        lazy = sqlgate.open_async(dsn)
        assert lazy.stats().dials == 0  # the plain call dials nothing
        await lazy.close()
        db = await sqlgate.open_async(dsn)
        try:
            s = db.stats()
            assert (s.dials, s.open_connections, s.in_use) == (1, 1, 0)
            assert await db.query_row("select 1") == (1,)
        finally:
            await db.close()
        async with await sqlgate.open_async(dsn, min_idle=2, max_idle=2) as warm:
            s = warm.stats()
            assert (s.idle, s.open_connections, s.in_use) == (2, 2, 0)

    asyncio.run(run())


@pytest.mark.parametrize(
    "target",
    # (No SQLite case: aiosqlite answers a failed connect by stopping its
    # thread with a future nobody awaits, which races the loop's closing.)
    [
        pytest.param("postgresql://postgres@127.0.0.1:1/test", id="pg-refused"),
        pytest.param("postgresql+asyncpg://postgres@127.0.0.1:1/test", id="asyncpg"),
    ],
)
def test_await_open_async_fails_closed_issue13_item12(target: str) -> None:
    async def run() -> Any:
        return await sqlgate.open_async(target, acquire_timeout=5)

    with pytest.raises(sqlgate.ConnectError) as info:
        asyncio.run(run())
    assert info.value.__cause__ is not None  # the driver's error, chained
