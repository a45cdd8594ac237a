"""AsyncDB over aiosqlite, psycopg's AsyncConnection and asyncpg."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import traceback
from typing import TYPE_CHECKING, Any

import aiosqlite
import pytest

import sqlgate
from sqlgate.aiodb import AsyncConn, AsyncRows, AsyncTx
from tests.db.helpers import terminate

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

ASYNC_PG = ["postgresql", "postgresql+asyncpg"]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _ph(dsn: str, n: int) -> str:
    return f"${n}" if "asyncpg" in dsn else "%s"


# -- SQLite (aiosqlite) ---------------------------------------------------------


def test_sqlite_crud_tx_and_rows() -> None:
    async def main() -> None:
        db = sqlgate.open_async("sqlite:///:memory:", max_open=2)
        assert db.paramstyle == "qmark"
        await db.exec("create table t(id integer primary key, v text)")
        assert await db.exec("insert into t(v) values (?)", ("a",)) == sqlgate.Result(
            1, 1
        )
        rows = await db.query("select id, v from t")
        assert isinstance(rows, AsyncRows)
        assert rows.columns == ("id", "v")
        assert [r async for r in rows] == [(1, "a")]
        assert rows.closed
        async with await db.begin() as tx:
            assert isinstance(tx, AsyncTx)
            await tx.exec("insert into t(v) values ('b')")

        async def failing() -> None:
            async with await db.begin() as tx2:
                await tx2.exec("insert into t(v) values ('lost')")
                raise LookupError

        with pytest.raises(LookupError):
            await failing()
        assert await (await db.query("select v from t order by id")).all() == [
            ("a",),
            ("b",),
        ]
        with pytest.raises(sqlgate.Error, match="transaction already committed"):
            await tx.exec("select 1")
        with pytest.raises(ValueError, match="not supported by SQLite"):
            await db.begin(isolation="read committed")
        s = db.stats()
        assert (s.in_use, s.broken_closed) == (0, 0)
        await db.close()

    run(main())


def test_sqlite_memory_shared_and_conn() -> None:
    async def main() -> None:
        db = sqlgate.open_async("sqlite:///:memory:", max_open=2)
        c1 = await db.conn()
        c2 = await db.conn()
        assert isinstance(c1, AsyncConn)
        assert isinstance(c1.raw, aiosqlite.Connection)
        await c1.exec("create table shared(a)")
        await c2.exec("insert into shared values (7)")
        assert await c1.query_row("select a from shared") == (7,)
        async with await c1.begin(read_only=True) as tx:
            with pytest.raises(Exception, match="readonly"):
                await tx.exec("insert into shared values (8)")
        await c1.close()
        await c2.close()
        with pytest.raises(sqlgate.Error, match="connection already closed"):
            await c1.exec("select 1")
        assert db.stats().in_use == 0
        await db.close()

    run(main())


def test_dropped_async_rows_returned_at_next_call() -> None:
    async def main() -> None:
        db = sqlgate.open_async("sqlite:///:memory:", max_open=1, acquire_timeout=5)
        rows = await db.query("select 1 union all select 2")
        assert await rows.__anext__() == (1,)
        assert db.stats().in_use == 1
        del rows
        gc.collect()
        with pytest.warns(ResourceWarning, match="an AsyncRows was garbage-collected"):
            assert await db.query_row("select 3") == (3,)
        assert db.stats().in_use == 0
        await db.close()

    run(main())


def test_async_bad_input() -> None:
    with pytest.raises(ValueError, match="no asyncio driver for mysql"):
        sqlgate.open_async("mysql://root@127.0.0.1/test")
    with pytest.raises(ValueError, match="unknown scheme 'redis'"):
        sqlgate.open_async("redis://h/0")
    with pytest.raises(ValueError, match="ping_idle must be >= 0"):
        sqlgate.open_async("sqlite:///:memory:", ping_idle=-2)

    async def main() -> None:
        async def connect() -> aiosqlite.Connection:
            return await aiosqlite.connect(":memory:")

        db = sqlgate.open_async(connect)
        with pytest.raises(sqlgate.Error, match="paramstyle is known after"):
            _ = db.paramstyle
        await db.ping()
        assert db.paramstyle == "qmark"
        await db.close()

    run(main())


# -- PostgreSQL: psycopg async and asyncpg ----------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ASYNC_PG)
def test_pg_crud_and_isolation(pg_dsn: str, scheme: str) -> None:
    dsn = pg_dsn.replace("postgresql", scheme, 1)

    async def main() -> None:
        db = sqlgate.open_async(dsn, max_open=2)
        await db.exec("create temp table if not exists x(a int)")  # one session only
        assert await db.query_row(f"select {_ph(dsn, 1)}::int + 1", (41,)) == (42,)
        async with await db.begin(isolation="serializable", read_only=True) as tx:
            assert await tx.query_row("show transaction_isolation") == ("serializable",)
            assert await tx.query_row("show transaction_read_only") == ("on",)
        rows = await db.query("select generate_series(1, 250) as n")
        assert rows.columns == ("n",)
        assert [r[0] async for r in rows] == list(range(1, 251))
        assert (await db.exec("select generate_series(1, 3)")).rows_affected == 3
        s = db.stats()
        assert (s.in_use, s.broken_closed) == (0, 0)
        await db.close()

    run(main())


@pytest.mark.postgres
def test_asyncpg_rejects_named_params(pg_dsn: str) -> None:
    async def main() -> None:
        db = sqlgate.open_async(pg_dsn.replace("postgresql", "postgresql+asyncpg", 1))
        assert db.paramstyle == "numeric_dollar"
        with pytest.raises(TypeError, match=r"asyncpg takes positional parameters"):
            await db.exec("select $1", {"a": 1})
        assert db.stats().broken_closed == 0
        await db.close()

    run(main())


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ASYNC_PG)
def test_pg_ping_is_an_empty_query(
    pg_dsn: str, scheme: str, pg_admin: Any, app_name: str
) -> None:
    async def main() -> None:
        db = sqlgate.open_async(pg_dsn.replace("postgresql", scheme, 1))
        await db.ping()
        assert pg_admin.execute(
            "select query from pg_stat_activity where application_name = %s",
            (app_name,),
        ).fetchall() == [("",)]
        assert await db.query_row("select 1") == (1,)  # the link is intact
        await db.close()

    run(main())


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ASYNC_PG)
def test_pg_killed_idle_connections_are_retried(
    pg_dsn: str, scheme: str, pg_admin: Any, app_name: str
) -> None:
    async def main() -> None:
        db = sqlgate.open_async(pg_dsn.replace("postgresql", scheme, 1), ping_idle=0)
        c1, c2 = await db.conn(), await db.conn()
        await c1.close()
        await c2.close()
        assert terminate(pg_admin, app_name) == 2
        assert await db.query_row("select 1") == (1,)
        s = db.stats()
        assert (s.broken_closed, s.dials, s.idle, s.in_use) == (2, 3, 1, 0)
        await db.close()

    run(main())


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ASYNC_PG)
def test_pg_killed_during_statement_runs_it_once(
    pg_dsn: str, scheme: str, pg_admin: Any, app_name: str, table: str
) -> None:
    seq = f"{table}_seq"
    pg_admin.execute(f"create sequence {seq}")

    async def main() -> None:
        db = sqlgate.open_async(pg_dsn.replace("postgresql", scheme, 1), ping_idle=0)
        task = asyncio.create_task(
            db.query_row(f"select nextval('{seq}'), pg_sleep(5)")
        )
        await _wait_for(
            lambda: (
                pg_admin.execute(
                    "select count(*) from pg_stat_activity where application_name = %s"
                    " and state = 'active' and query like %s",
                    (app_name, "%pg_sleep%"),
                ).fetchone()[0]
                == 1
            ),
            "the statement to run",
        )
        assert terminate(pg_admin, app_name) == 1
        with pytest.raises(Exception) as info:  # noqa: PT011  (driver's own type)
            await asyncio.wait_for(task, 10)
        assert not isinstance(info.value, TimeoutError)
        s = db.stats()
        assert (s.broken_closed, s.dials, s.in_use) == (1, 1, 0)
        await db.close()

    try:
        run(main())
        assert pg_admin.execute(f"select last_value from {seq}").fetchone() == (1,)
    finally:
        pg_admin.execute(f"drop sequence {seq}")


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ASYNC_PG)
def test_pg_password_never_shown(
    pg_up: None, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "".join(["Av3", "pw", "Kk"])
    caplog.set_level(logging.DEBUG, logger="sqlgate")

    async def main() -> None:
        db = sqlgate.open_async(
            f"{scheme}://postgres:{secret}@127.0.0.1:1/test?connect_timeout=2",
            acquire_timeout=5,
        )
        assert secret not in repr(db)
        with pytest.raises(sqlgate.ConnectError) as info:
            await db.exec("select 1")
        text = "".join(traceback.format_exception(info.value))
        assert secret not in text
        await db.close()

    run(main())
    assert secret not in caplog.text
