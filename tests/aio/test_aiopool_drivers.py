"""AsyncPool over real async drivers: psycopg, asyncpg (PostgreSQL), aiosqlite.

Each test names its connections with an application_name of its own, so the
server's pg_stat_activity can say how many of *ours* are open, and uses a
table prefixed ``sqlgate_aio_`` that it drops at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate

if TYPE_CHECKING:
    from pathlib import Path

    import aiosqlite
    import asyncpg
    import psycopg


async def server_count(dsn: str, app: str) -> int:
    """How many backends the server has for ``app`` (seen from a fresh link)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        cur = await admin.execute(
            "select count(*) from pg_stat_activity where application_name = %s",
            (app,),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def server_state(dsn: str, app: str) -> list[str]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        cur = await admin.execute(
            "select state from pg_stat_activity where application_name = %s",
            (app,),
        )
        return [str(r[0]) for r in await cur.fetchall()]


async def until_no_backend_left(dsn: str, app: str) -> None:
    """The server reaps a backend just after its client leaves: wait for it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (n := await server_count(dsn, app)) != 0:
        assert loop.time() < deadline, f"{n} backend(s) of {app} still open"
        await asyncio.sleep(0.01)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.mark.postgres
async def test_psycopg_async_connection(pg_dsn: str) -> None:
    import psycopg

    app = unique("sqlgate-aio-psycopg")
    table = unique("sqlgate_aio_psy")

    async def aconnect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(pg_dsn, application_name=app)

    async with sqlgate.AsyncPool(aconnect, max_open=1, name="psy") as pool:
        async with pool.connection() as conn:
            await conn.execute(f"create table {table} (n int)")
            await conn.commit()
        assert await server_count(pg_dsn, app) == 1
        # Leave a transaction open: the pool rolls it back on return.
        conn = await pool.acquire()
        await conn.execute(f"insert into {table} values (1)")
        assert await server_state(pg_dsn, app) == ["idle in transaction"]
        await pool.release(conn)
        assert await server_state(pg_dsn, app) == ["idle"]
        async with pool.connection() as again:
            assert again is conn  # the same link: it would see its own insert
            cur = await again.execute(f"select count(*) from {table}")
            assert await cur.fetchone() == (0,)
            await again.execute(f"drop table {table}")
            await again.commit()
        s = pool.stats()
        assert (s.dials, s.in_use, s.idle) == (1, 0, 1)
    await until_no_backend_left(pg_dsn, app)
    assert pool.stats().open_connections == 0


@pytest.mark.postgres
async def test_asyncpg_connection(pg_dsn: str) -> None:
    import asyncpg

    app = unique("sqlgate-aio-asyncpg")
    table = unique("sqlgate_aio_apg")

    async def aconnect() -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            pg_dsn, server_settings={"application_name": app}
        )
        return conn

    async with sqlgate.AsyncPool(aconnect, max_open=1, name="apg") as pool:
        async with pool.connection() as conn:
            await conn.execute(f"create table {table} (n int)")
        conn = await pool.acquire()
        tx = conn.transaction()
        await tx.start()  # left open on purpose
        await conn.execute(f"insert into {table} values (1)")
        assert await server_state(pg_dsn, app) == ["idle in transaction"]
        await pool.release(conn)
        assert await server_state(pg_dsn, app) == ["idle"]
        async with pool.connection() as again:
            assert again is conn
            assert not again.is_in_transaction()
            assert await again.fetchval(f"select count(*) from {table}") == 0
            async with again.transaction():  # a real transaction, not a savepoint
                await again.execute(f"insert into {table} values (2)")
            assert await again.fetchval(f"select count(*) from {table}") == 1
            await again.execute(f"drop table {table}")
        # Many tasks through one connection: served one at a time, in order.
        order: list[int] = []

        async def client(i: int) -> None:
            async with pool.connection() as c:
                order.append(await c.fetchval("select $1::int", i))

        await asyncio.gather(*(client(i) for i in range(20)))
        assert order == list(range(20))
        assert pool.stats().dials == 1
    await until_no_backend_left(pg_dsn, app)


@pytest.mark.postgres
async def test_postgres_pool_close_with_many_connections(pg_dsn: str) -> None:
    import asyncpg

    app = unique("sqlgate-aio-close")

    async def aconnect() -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            pg_dsn, server_settings={"application_name": app}
        )
        return conn

    pool = sqlgate.AsyncPool(aconnect, max_open=4, max_idle=4, name="many")
    conns = [await pool.acquire() for _ in range(4)]
    assert await server_count(pg_dsn, app) == 4
    for c in conns[:3]:
        await pool.release(c)
    await pool.close()  # idle ones close now; the one in use on release
    assert pool.stats().open_connections == 1
    await pool.release(conns[3])
    await pool.close()
    assert pool.stats().open_connections == 0
    await until_no_backend_left(pg_dsn, app)


@pytest.mark.postgres
async def test_postgres_dial_failure_chains_the_driver_error(pg_dsn: str) -> None:
    import psycopg

    async def aconnect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            pg_dsn, dbname="sqlgate_no_such_database"
        )

    pool = sqlgate.AsyncPool(aconnect, name="bad")
    with pytest.raises(sqlgate.ConnectError) as info:
        await pool.acquire()
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert "sqlgate_no_such_database" in str(info.value.__cause__)
    await pool.close()


async def test_aiosqlite(tmp_path: Path) -> None:
    import aiosqlite

    path = tmp_path / "aio.db"

    async def aconnect() -> aiosqlite.Connection:
        return await aiosqlite.connect(path)

    async with sqlgate.AsyncPool(aconnect, max_open=1, name="lite") as pool:
        async with pool.connection() as conn:
            await conn.execute("create table sqlgate_aio_t (n int)")
            await conn.commit()
        conn = await pool.acquire()
        await conn.execute("insert into sqlgate_aio_t values (1)")
        assert conn.in_transaction
        await pool.release(conn)
        async with pool.connection() as again:
            assert again is conn
            assert not again.in_transaction
            cur = await again.execute("select count(*) from sqlgate_aio_t")
            assert await cur.fetchone() == (0,)
        assert pool.stats().dials == 1
    assert pool.stats().open_connections == 0
    assert pool.stats().closed == 1
