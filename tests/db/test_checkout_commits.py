"""Issue 13, item 1: ``pool.connection()`` commits on a clean exit, rolls back
on an exception; a bare ``release`` rolls back and says so at DEBUG.

Plain pools over the drivers' own connections in their default (manual
commit) mode: sqlite3, psycopg and PyMySQL with ``Pool``; aiosqlite, psycopg
async and asyncpg (an explicit BEGIN: it has no manual mode) with
``AsyncPool``. A second connection outside the pool is the witness of what
was committed. PostgreSQL also shows the aborted case: an error caught
inside the block, then a clean exit, raises ``TransactionAborted`` and
commits nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from sqlgate.aiopool import AsyncPool
from sqlgate.pool import Pool

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

DISCARD = "rolling back a transaction left open"
PG = "host=127.0.0.1 port=5432 user=postgres dbname=test"


class Boom(Exception):
    pass


def _sqlite(path: Path) -> tuple[Callable[[], Any], Callable[[], Any], str]:
    def connect() -> Any:
        return sqlite3.connect(path, check_same_thread=False)

    return connect, connect, "?"


def _pg() -> tuple[Callable[[], Any], Callable[[], Any], str]:
    import psycopg

    return (
        lambda: psycopg.connect(PG),
        lambda: psycopg.connect(PG, autocommit=True),
        "%s",
    )


def _my() -> tuple[Callable[[], Any], Callable[[], Any], str]:
    import pymysql

    def connect(autocommit: bool = False) -> Any:
        return pymysql.connect(
            host="127.0.0.1",
            user="root",
            password="",
            database="test",
            autocommit=autocommit,
        )

    return connect, lambda: connect(True), "%s"


@pytest.fixture
def driver(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, Callable[[], Any], Callable[[], Any], str]:
    name = request.param
    if name == "sqlite3":
        return (name, *_sqlite(tmp_path / "c.db"))
    if name == "psycopg":
        request.getfixturevalue("pg_up")
        return (name, *_pg())
    request.getfixturevalue("my_up")
    return (name, *_my())


SYNC = [
    "sqlite3",
    pytest.param("psycopg", marks=pytest.mark.postgres),
    pytest.param("pymysql", marks=pytest.mark.mysql),
]


def _run(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    cur = conn.cursor()
    cur.execute(sql, params) if params else cur.execute(sql)
    return cur


def _count(witness: Any, table: str) -> int:
    row = _run(witness, f"select count(*) from {table}").fetchone()
    return int(row[0])


def _insert_then_raise(pool: Pool[Any], sql: str) -> None:
    with pool.connection() as conn:
        _run(conn, sql, (2,))
        raise Boom


def _insert_after_a_caught_error(pool: Pool[Any], sql: str) -> None:
    with pool.connection() as conn:
        conn.execute(sql)
        with pytest.raises(Exception, match="division by zero"):
            conn.execute("select 1/0")


@pytest.mark.parametrize("driver", SYNC, indirect=True)
def test_connection_commits_rolls_back_and_logs_sync_issue13_item1(
    driver: tuple[str, Callable[[], Any], Callable[[], Any], str],
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name, connect, autocommit, mark = driver
    caplog.set_level(logging.DEBUG, logger="sqlgate")
    witness = autocommit()
    if name == "sqlite3":
        witness.isolation_level = None
    pool: Pool[Any] = Pool(connect, max_open=1, max_idle=1)
    try:
        _run(witness, f"create table {table} (id int)")
        # A clean exit commits.
        with pool.connection() as conn:
            _run(conn, f"insert into {table} values ({mark})", (1,))
        assert _count(witness, table) == 1
        # An exception rolls back, and propagates.
        with pytest.raises(Boom):
            _insert_then_raise(pool, f"insert into {table} values ({mark})")
        assert _count(witness, table) == 1
        assert not [r for r in caplog.records if DISCARD in r.getMessage()]
        # A bare release rolls back, and says so at DEBUG.
        conn = pool.acquire()
        _run(conn, f"insert into {table} values ({mark})", (3,))
        pool.release(conn)
        assert _count(witness, table) == 1
        logged = [r for r in caplog.records if DISCARD in r.getMessage()]
        assert len(logged) == 1
        assert logged[0].levelno == logging.DEBUG
        # A clean exit with nothing open commits nothing and logs nothing.
        with pool.connection() as conn:
            _run(conn, "select 1").fetchall()
        s = pool.stats()
        assert (s.open_connections, s.broken_closed, s.dials) == (1, 0, 1)
        _run(witness, f"drop table {table}")
    finally:
        pool.close()
        witness.close()


@pytest.mark.postgres
def test_connection_aborted_transaction_raises_sync_issue13_item1(
    pg_up: None, table: str
) -> None:
    connect, autocommit, _ = _pg()
    witness = autocommit()
    pool: Pool[Any] = Pool(connect, max_open=1, max_idle=1)
    try:
        witness.execute(f"create table {table} (id int)")
        with pytest.raises(sqlgate.TransactionAborted, match="already aborted"):
            _insert_after_a_caught_error(pool, f"insert into {table} values (1)")
        assert _count(witness, table) == 0
        # The connection was rolled back and kept: usable at once.
        with pool.connection() as conn:
            conn.execute(f"insert into {table} values (2)")
        assert _count(witness, table) == 1
        s = pool.stats()
        assert (s.open_connections, s.broken_closed) == (1, 0)
        witness.execute(f"drop table {table}")
    finally:
        pool.close()
        witness.close()


# -- asyncio ------------------------------------------------------------------


async def _acount(witness: Any, table: str) -> int:
    return int(await witness.fetchval(f"select count(*) from {table}"))


ASYNC = [
    "aiosqlite",
    pytest.param("psycopg", marks=pytest.mark.postgres),
    pytest.param("asyncpg", marks=pytest.mark.postgres),
]


def _async_driver(name: str, path: Path) -> tuple[Any, Any, Any]:
    """(connect, witness connect, exec(conn, sql))."""
    if name == "aiosqlite":
        import aiosqlite

        async def execute(conn: Any, sql: str) -> None:
            await conn.execute(sql)

        return (
            lambda: aiosqlite.connect(path),
            lambda: aiosqlite.connect(path, isolation_level=None),
            execute,
        )
    if name == "psycopg":
        import psycopg

        async def pexecute(conn: Any, sql: str) -> None:
            await conn.execute(sql)

        return (
            lambda: psycopg.AsyncConnection.connect(PG),
            lambda: psycopg.AsyncConnection.connect(PG, autocommit=True),
            pexecute,
        )
    import asyncpg

    async def aexecute(conn: Any, sql: str) -> None:
        if not conn.is_in_transaction() and sql.startswith("insert"):
            await conn.execute("BEGIN")  # asyncpg has no manual-commit mode
        await conn.execute(sql)

    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    return lambda: asyncpg.connect(dsn), lambda: asyncpg.connect(dsn), aexecute


async def _witness_count(name: str, witness: Any, table: str) -> int:
    if name == "asyncpg":
        return await _acount(witness, table)
    cur = await witness.execute(f"select count(*) from {table}")
    row = await cur.fetchone()
    return int(row[0])


async def _ainsert_then_raise(pool: AsyncPool[Any], execute: Any, table: str) -> None:
    async with pool.connection() as conn:
        await execute(conn, f"insert into {table} values (2)")
        raise Boom


async def _ainsert_after_a_caught_error(
    pool: AsyncPool[Any], execute: Any, table: str
) -> None:
    async with pool.connection() as conn:
        await execute(conn, f"insert into {table} values (4)")
        with pytest.raises(Exception, match="division by zero"):
            await conn.execute("select 1/0")


@pytest.mark.parametrize("name", ASYNC)
def test_connection_commits_rolls_back_and_logs_async_issue13_item1(
    request: pytest.FixtureRequest,
    name: str,
    tmp_path: Path,
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if name != "aiosqlite":
        request.getfixturevalue("pg_up")
    connect, witness_connect, execute = _async_driver(name, tmp_path / "a.db")
    caplog.set_level(logging.DEBUG, logger="sqlgate")

    async def run() -> None:
        witness = await witness_connect()
        pool: AsyncPool[Any] = AsyncPool(connect, max_open=1, max_idle=1)
        try:
            await witness.execute(f"create table {table} (id int)")
            async with pool.connection() as conn:
                await execute(conn, f"insert into {table} values (1)")
            assert await _witness_count(name, witness, table) == 1
            with pytest.raises(Boom):
                await _ainsert_then_raise(pool, execute, table)
            assert await _witness_count(name, witness, table) == 1
            assert not [r for r in caplog.records if DISCARD in r.getMessage()]
            conn = await pool.acquire()
            await execute(conn, f"insert into {table} values (3)")
            await pool.release(conn)
            assert await _witness_count(name, witness, table) == 1
            logged = [r for r in caplog.records if DISCARD in r.getMessage()]
            assert [r.levelno for r in logged] == [logging.DEBUG]
            s = pool.stats()
            assert (s.open_connections, s.broken_closed, s.dials) == (1, 0, 1)
            if name != "aiosqlite":
                # Aborted by an error the block caught: nothing committed.
                with pytest.raises(sqlgate.TransactionAborted):
                    await _ainsert_after_a_caught_error(pool, execute, table)
                assert await _witness_count(name, witness, table) == 1
                async with pool.connection() as conn:
                    await execute(conn, f"insert into {table} values (5)")
                assert await _witness_count(name, witness, table) == 2
                assert pool.stats().broken_closed == 0
            await witness.execute(f"drop table {table}")
        finally:
            await pool.close()
            await witness.close()

    asyncio.run(run())
