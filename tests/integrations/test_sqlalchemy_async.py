"""SQLAlchemy's asyncio engine (Core and AsyncSession) on AsyncSqlgatePool.

Each test body is a coroutine run under ``asyncio.run`` (a fresh loop per
test), as the AsyncPool tests do.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("greenlet")

from sqlalchemy import create_engine, exc, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.util import greenlet_spawn

from sqlgate.integrations.sqlalchemy import AsyncSqlgatePool, SqlgatePool
from tests.integrations.conftest import PG_DSN
from tests.integrations.test_sqlalchemy import Base, Item

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path


def run(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """Make a coroutine test a plain one that runs it in a fresh event loop."""

    @functools.wraps(test)
    def runner(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return runner


def gate(engine: AsyncEngine) -> AsyncSqlgatePool:
    pool = engine.pool
    assert isinstance(pool, AsyncSqlgatePool)
    return pool


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``predicate`` holds (a generous 10 s bound)."""
    deadline = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def settle(engine: AsyncEngine) -> None:
    pool = gate(engine)
    await until(
        lambda: pool.stats().dialing == 0 and pool.stats().closing == 0,
        "dials and closes to settle",
    )


def queued(pool: AsyncSqlgatePool, n: int) -> bool:
    return pool.stats().waiting == n


def check(engine: AsyncEngine) -> None:
    gate(engine).sqlgate_pool._core.check()


def sqlite_engine(tmp_path: Path, **kw: Any) -> AsyncEngine:
    kw.setdefault("max_open", 2)
    return create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'sa.db'}", poolclass=AsyncSqlgatePool, **kw
    )


# -- wiring ------------------------------------------------------------------


def test_each_pool_class_is_refused_by_the_other_kind_of_engine(
    tmp_path: Path,
) -> None:
    with pytest.raises(exc.ArgumentError, match="SqlgatePool cannot be used with"):
        create_async_engine(
            f"sqlite+aiosqlite:///{tmp_path}/a.db", poolclass=SqlgatePool
        )
    with pytest.raises(exc.ArgumentError, match="AsyncSqlgatePool cannot be used with"):
        create_engine(f"sqlite:///{tmp_path}/b.db", poolclass=AsyncSqlgatePool)


@run
async def test_create_async_engine_passes_sqlgate_knobs(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path, max_idle=1, pool_timeout=5, name="sa-aio")
    pool = gate(engine)
    s = pool.stats()
    assert (s.max_open_connections, s.max_idle) == (2, 1)
    assert pool.sqlgate_pool.name == "sa-aio"
    assert pool.sqlgate_pool._timeout == 5
    await engine.dispose()


# -- SQLite (aiosqlite) -------------------------------------------------------


@run
async def test_core_on_aiosqlite(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    async with engine.begin() as conn:
        await conn.execute(text("create table obs_saa_core (x integer)"))
        await conn.execute(text("insert into obs_saa_core values (1), (2), (3)"))
    async with engine.connect() as conn:
        total = await conn.scalar(text("select sum(x) from obs_saa_core"))
    assert total == 6
    pool = gate(engine)
    s = pool.stats()
    assert (s.in_use, s.idle, s.dials, s.acquires) == (0, 1, 1, 2)
    assert pool.status().startswith("AsyncSqlgatePool ")
    assert "open=1 in_use=0 idle=1 waiting=0 max_open=2" in pool.status()
    assert (pool.checkedout(), pool.checkedin()) == (0, 1)
    check(engine)
    first = pool.sqlgate_pool
    await engine.dispose()
    s = first.stats()
    assert (s.open_connections, s.closed) == (0, 1)


@run
async def test_orm_on_aiosqlite(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session, session.begin():
        session.add_all([Item(name="a"), Item(name="b")])
    async with AsyncSession(engine) as session:
        names = (await session.scalars(select(Item.name).order_by(Item.id))).all()
    assert names == ["a", "b"]
    assert gate(engine).stats().in_use == 0
    check(engine)
    await engine.dispose()


@run
async def test_limit_and_fifo_through_the_engine(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    pool = gate(engine)
    a = await engine.connect()
    b = await engine.connect()
    order: list[int] = []

    async def wait(i: int) -> None:
        async with engine.connect() as c:
            order.append(i)
            await c.execute(text("select 1"))

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(wait(i)))
        await until(functools.partial(queued, pool, i + 1), "queueing")
    assert pool.stats().open_connections == 2  # max_open holds
    await a.close()
    await asyncio.gather(*tasks)
    await b.close()
    assert order == [0, 1, 2]  # first come, first served
    assert pool.stats().wait_count == 2 + 3  # two waited for their dial
    check(engine)
    await engine.dispose()


@run
async def test_timeout_is_sqlalchemys_timeout_error(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path, max_open=1, pool_timeout=0)
    pool = gate(engine)
    # Below max_open, pool_timeout=0 still waits for the dial (issue 16).
    held = await engine.connect()
    with pytest.raises(exc.TimeoutError, match=r"no connection after 0\.00 s"):
        await engine.connect()  # at max_open: fails at once
    await held.close()
    s = pool.stats()
    assert (s.timeouts, s.in_use, s.idle, s.dials) == (1, 0, 1, 1)
    check(engine)
    await engine.dispose()


@run
async def test_dispose_closes_and_recreates(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path, name="sa-aio-dispose")
    old = gate(engine)
    first = old.sqlgate_pool
    held = await engine.connect()
    async with engine.connect():
        pass
    await engine.dispose()
    new = gate(engine)
    assert new is not old
    assert new.stats().max_open_connections == 2
    assert new.sqlgate_pool.name == "sa-aio-dispose"
    assert first.closed  # the idle one closed; the old pool itself stays usable
    assert old.sqlgate_pool is not first
    assert (first.stats().open_connections, first.stats().in_use) == (1, 1)
    await held.close()  # a late check-in to the disposed pool closes it
    await until(lambda: first.stats().open_connections == 0, "the late close")
    assert (first.stats().closed, first.stats().in_use) == (2, 0)
    async with engine.connect() as conn:
        assert await conn.scalar(text("select 1")) == 1
    check(engine)
    await engine.dispose()


@run
async def test_issue16_invalidated_record_is_kept_and_reconnected(
    tmp_path: Path,
) -> None:
    engine = sqlite_engine(tmp_path)
    pool = gate(engine)
    async with engine.connect() as conn:
        fairy = await conn.get_raw_connection()
        record = fairy._connection_record
        info = fairy.record_info
        assert info is not None
        info["mark"] = 16
        await conn.invalidate()
    assert record is not None
    assert record.dbapi_connection is None
    await settle(engine)
    s = pool.stats()
    assert (s.open_connections, s.idle, s.broken_closed) == (0, 0, 1)
    async with engine.connect() as conn:  # the next dial reconnects that record
        fairy = await conn.get_raw_connection()
        assert fairy._connection_record is record
        assert fairy.record_info == {"mark": 16}
        assert await conn.scalar(text("select 1")) == 1
    s = pool.stats()
    assert (s.open_connections, s.idle, s.dials, s.closed) == (1, 1, 2, 1)
    check(engine)
    await engine.dispose()


@run
async def test_a_return_outside_the_greenlet_is_counted(tmp_path: Path) -> None:
    # A detach (as SQLAlchemy does for a garbage-collected connection) gives
    # the record back from plain code, outside SQLAlchemy's greenlet: the
    # pool's loop releases it on its next turn.
    engine = sqlite_engine(tmp_path)
    pool = gate(engine)
    fairy = await greenlet_spawn(engine.sync_engine.raw_connection)
    assert pool.stats().in_use == 1
    fairy.detach()
    assert len(pool.sqlgate_pool._returns) == 1  # queued, not released here
    await settle(engine)
    await until(lambda: pool.stats().in_use == 0, "the queued release")
    s = pool.stats()
    assert (s.in_use, s.idle, s.broken_closed, s.open_connections) == (0, 0, 1, 0)
    check(engine)
    await greenlet_spawn(fairy.close)  # the detached DBAPI connection is ours
    await engine.dispose()


# -- PostgreSQL (asyncpg and psycopg) ----------------------------------------

DRIVERS = ["asyncpg", "psycopg"]


def pg_engine(driver: str, app: str, **kw: Any) -> AsyncEngine:
    if driver == "asyncpg":
        connect_args: dict[str, Any] = {"server_settings": {"application_name": app}}
    else:
        connect_args = {"application_name": app}
    return create_async_engine(
        f"postgresql+{driver}://postgres@127.0.0.1:5432/test",
        poolclass=AsyncSqlgatePool,
        connect_args=connect_args,
        **kw,
    )


def server_count(app: str) -> int:
    """Backends connected with ``application_name`` ``app``, as the server sees them."""
    import psycopg

    with psycopg.connect(PG_DSN) as c:
        row = c.execute(
            "select count(*) from pg_stat_activity where application_name = %s", (app,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def kill(pid: object) -> None:
    """End backend ``pid`` and return once it has exited (not merely signalled)."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as c:
        row = c.execute("select pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    assert row == (True,), f"backend {pid} still running 10 s after SIGTERM"


def unique_app(tag: str) -> str:
    return f"sqlgate-saa-{tag}-{uuid.uuid4().hex[:10]}"


@pytest.mark.postgres
@pytest.mark.parametrize("driver", DRIVERS)
@run
async def test_core_and_orm_on_postgres_leave_nothing_open(
    pg_url: str, driver: str
) -> None:
    app = unique_app(driver)
    engine = pg_engine(driver, app, max_open=3, max_idle=2, name=f"sa-aio-{driver}")
    table = f"obs_saa_{driver}"
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"drop table if exists {table}"))
            await conn.execute(text(f"create table {table} (x integer)"))
            await conn.execute(text(f"insert into {table} values (1), (2), (3)"))

        async def total() -> int:
            async with engine.connect() as conn:
                await asyncio.sleep(0.01)  # hold it, so the three overlap
                return int(await conn.scalar(text(f"select sum(x) from {table}")))

        assert list(await asyncio.gather(*(total() for _ in range(4)))) == [6] * 4
        async with AsyncSession(engine) as session:  # the ORM, on Postgres
            rows = await session.execute(select(text("x")).select_from(text(table)))
            assert sorted(r[0] for r in rows) == [1, 2, 3]
        pool = gate(engine)
        await settle(engine)  # max_idle=2: the third one back is closed
        s = pool.stats()
        assert (s.in_use, s.idle, s.open_connections) == (0, 2, 2)
        assert server_count(app) == s.open_connections
        check(engine)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"drop table if exists {table}"))
        await engine.dispose()
    assert pool.stats().open_connections == 0
    assert server_count(app) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("driver", DRIVERS)
@run
async def test_orm_session_on_postgres(pg_url: str, driver: str) -> None:
    engine = pg_engine(driver, unique_app("orm"), max_open=2)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("drop table if exists obs_sa_item"))
            await conn.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine) as session, session.begin():
            session.add_all([Item(name=f"n{i}") for i in range(5)])
        async with AsyncSession(engine) as session:
            assert await session.scalar(select(Item.id).where(Item.name == "n3"))
            assert len((await session.scalars(select(Item))).all()) == 5
        assert gate(engine).stats().in_use == 0
        check(engine)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("drop table if exists obs_sa_item"))
        await engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("driver", DRIVERS)
@run
async def test_invalidation_of_a_dead_connection_keeps_the_record(
    pg_url: str, driver: str
) -> None:
    app = unique_app(f"kill-{driver}")
    engine = pg_engine(driver, app, max_open=2)
    pool = gate(engine)
    try:
        async with engine.connect() as conn:
            pid = await conn.scalar(text("select pg_backend_pid()"))
        assert pool.stats().idle == 1
        await asyncio.to_thread(kill, pid)
        async with engine.connect() as conn:
            with pytest.raises(exc.DBAPIError) as caught:
                await conn.execute(text("select 1"))
            assert caught.value.connection_invalidated
            assert conn.invalidated
        await settle(engine)
        s = pool.stats()
        assert (s.broken_closed, s.closed, s.in_use, s.idle) == (1, 1, 0, 0)
        assert s.open_connections == 0
        check(engine)
        async with engine.connect() as conn:  # a dial reconnects that record
            assert await conn.scalar(text("select pg_backend_pid()")) != pid
        s = pool.stats()
        assert (s.dials, s.open_connections, s.idle) == (2, 1, 1)
        check(engine)
    finally:
        await engine.dispose()
    assert server_count(app) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("driver", DRIVERS)
@run
async def test_pre_ping_replaces_the_dead_one(pg_url: str, driver: str) -> None:
    app = unique_app(f"ping-{driver}")
    engine = pg_engine(driver, app, pool_pre_ping=True)
    pool = gate(engine)
    try:
        async with engine.connect() as conn:
            pid = await conn.scalar(text("select pg_backend_pid()"))
        await asyncio.to_thread(kill, pid)
        async with engine.connect() as conn:  # the ping fails; SQLAlchemy redials
            assert await conn.scalar(text("select pg_backend_pid()")) != pid
        check(engine)
        s = pool.stats()
        assert (s.in_use, s.idle, s.open_connections) == (0, 1, 1)
        assert server_count(app) == 1
    finally:
        await engine.dispose()
    assert server_count(app) == 0
