"""Issue 13, items 5 and 6: the return-path reset leaves the next caller clean.

Item 5: a caller turns autocommit off through ``Conn.raw`` (sqlite3 and
aiosqlite ``isolation_level``, psycopg ``autocommit``, PyMySQL
``autocommit(False)``) and gives the connection back; the next caller's
``exec`` must be durable, not rolled back by the following reset. Each test
runs with ``max_open=1`` so the second caller gets the same connection.

Item 6: an asyncpg caller leaves a ``Transaction`` object started through
``.raw``; the next caller's ``raw.transaction()`` must be a top-level
transaction (not a SAVEPOINT) and its work durable, through both the DB
handle and a plain ``AsyncPool``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from sqlgate.aiopool import AsyncPool

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _autocommit_off_sync(family: str, raw: Any) -> None:
    if family == "sqlite":
        raw.isolation_level = "DEFERRED"
    elif family == "postgresql":
        raw.autocommit = False
    else:
        raw.autocommit(False)


async def _autocommit_off_async(family: str, raw: Any) -> None:
    if family == "sqlite":
        raw.isolation_level = "DEFERRED"
    else:
        await raw.set_autocommit(False)


@pytest.fixture
def target(
    request: pytest.FixtureRequest, tmp_path: Path, table: str
) -> tuple[str, str, str]:
    """(family, DSN, table) for each server and SQLite."""
    family = request.param
    if family == "sqlite":
        return family, f"sqlite:///{tmp_path / 'reset.db'}", table
    if family == "postgresql":
        return family, request.getfixturevalue("pg_dsn"), table
    return family, request.getfixturevalue("my_dsn"), table


FAMILIES = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.mark.parametrize("target", FAMILIES, indirect=True)
def test_reset_restores_autocommit_sync_issue13_item5(
    target: tuple[str, str, str], cleanup: Callable[[Callable[[], object]], None]
) -> None:
    family, dsn, table = target
    db = sqlgate.open(dsn, max_open=1, max_idle=1)
    cleanup(db.close)
    db.exec(f"create table {table} (id int)")
    cleanup(lambda: db.exec(f"drop table {table}"))
    with db.conn() as c:
        _autocommit_off_sync(family, c.raw)
    assert db.exec(f"insert into {table} values (1)").rows_affected == 1
    # A second connection sees it: the insert was committed, not held open.
    other = sqlgate.open(dsn)
    cleanup(other.close)
    assert other.query_row(f"select count(*) from {table}") == (1,)
    assert db.query_row(f"select count(*) from {table}") == (1,)
    assert db.stats().open_connections == 1


ASYNC_FAMILIES = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize("target", ASYNC_FAMILIES, indirect=True)
def test_reset_restores_autocommit_async_issue13_item5(
    target: tuple[str, str, str],
) -> None:
    family, dsn, table = target

    async def run() -> None:
        db = sqlgate.open_async(dsn, max_open=1, max_idle=1)
        other = sqlgate.open_async(dsn)
        try:
            await db.exec(f"create table {table} (id int)")
            async with await db.conn() as c:
                await _autocommit_off_async(family, c.raw)
            result = await db.exec(f"insert into {table} values (1)")
            assert result.rows_affected == 1
            assert await other.query_row(f"select count(*) from {table}") == (1,)
            assert await db.query_row(f"select count(*) from {table}") == (1,)
            assert db.stats().open_connections == 1
            await db.exec(f"drop table {table}")
        finally:
            await other.close()
            await db.close()

    asyncio.run(run())


ASYNCPG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


async def _left_transaction_then_next_caller(
    acquire: Callable[[], Any], release: Callable[[Any], Any], table: str
) -> None:
    """Caller 1 leaves a Transaction started (twice: plain, and ended by a raw
    COMMIT); caller 2's ``transaction()`` must be top-level and durable."""
    for how in ("left open", "ended by raw COMMIT"):
        raw = await acquire()
        tr = raw.transaction()
        await tr.start()
        await raw.execute(f"insert into {table} values (0)")
        if how == "ended by raw COMMIT":
            await raw.execute("COMMIT")
        await release(raw)
        raw = await acquire()
        try:
            async with raw.transaction():
                # A SAVEPOINT here would mean the old Transaction survived.
                assert raw.is_in_transaction()
                await raw.execute(f"insert into {table} values (1)")
        finally:
            await release(raw)


@pytest.mark.postgres
def test_asyncpg_reset_forgets_a_left_transaction_db_issue13_item6(
    pg_up: None, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("asyncpg")
    caplog.set_level(logging.ERROR, logger="asyncio")

    async def run() -> None:
        db = sqlgate.open_async(ASYNCPG, max_open=1, max_idle=1)
        try:
            await db.exec(f"create table {table} (id int)")
            conns: list[Any] = []

            async def acquire() -> Any:
                conns.append(await db.conn())
                return conns[-1].raw

            async def release(raw: Any) -> None:
                await conns.pop().close()

            await _left_transaction_then_next_caller(acquire, release, table)
            # Caller 1's first insert was rolled back, the raw-COMMITted one
            # kept; both of caller 2's committed.
            rows = await db.query(f"select id from {table} order by id")
            assert await rows.all() == [(0,), (1,), (1,)]
            s = db.stats()
            assert (s.open_connections, s.max_idle_closed) == (1, 0)
            await db.exec(f"drop table {table}")
        finally:
            await db.close()

    asyncio.run(run())


@pytest.mark.postgres
def test_asyncpg_reset_forgets_a_left_transaction_pool_issue13_item6(
    pg_up: None, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    caplog.set_level(logging.ERROR, logger="asyncio")

    async def run() -> None:
        pool: AsyncPool[Any] = AsyncPool(
            lambda: asyncpg.connect(ASYNCPG.replace("+asyncpg", "")),
            max_open=1,
            max_idle=1,
        )
        try:
            async with pool.connection() as raw:
                await raw.execute(f"create table {table} (id int)")
            await _left_transaction_then_next_caller(pool.acquire, pool.release, table)
            async with pool.connection() as raw:
                got = await raw.fetch(f"select id from {table} order by id")
                assert [tuple(r) for r in got] == [(0,), (1,), (1,)]
                await raw.execute(f"drop table {table}")
            assert pool.stats().open_connections == 1
        finally:
            await pool.close()

    asyncio.run(run())
