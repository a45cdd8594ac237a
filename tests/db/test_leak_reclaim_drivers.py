"""Issue 13, item 14: leak reclaim, driver by driver, and its stated limit.

A connection acquired with ``leak_threshold`` set and dropped without release
is reclaimed once garbage-collected, when the driver's connections can be
weakly referenced: psycopg and PyMySQL (``Pool``), aiosqlite, asyncpg and
psycopg async (``AsyncPool``). sqlite3's cannot: the pool says so once (a
WARNING naming the class), the slot stays taken, and ``close(timeout)`` takes
it back. ``max_open=1`` makes a reclaim visible: the next acquire succeeds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate import _leaks
from sqlgate.aiopool import AsyncPool
from sqlgate.errors import PoolTimeout
from sqlgate.pool import Pool

if TYPE_CHECKING:
    from collections.abc import Callable

#: The dropped connection is the leak under test: its driver's finalizer warns.
pytestmark = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)

PG = "host=127.0.0.1 port=5432 user=postgres dbname=test"
LIMIT = "cannot be weakly referenced"


def _drop_one(pool: Pool[Any]) -> None:
    pool.acquire()  # dropped at once: a leak


def test_sqlite3_leak_is_reported_not_reclaimed_issue13_item14(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _leaks._unreclaimable.discard(sqlite3.Connection)
    caplog.set_level(logging.WARNING, logger="sqlgate")
    pool: Pool[Any] = Pool(
        lambda: sqlite3.connect(":memory:", check_same_thread=False),
        max_open=1,
        leak_threshold=60,
    )
    try:
        conn = pool.acquire()
        pool.release(conn)
        del conn
        _drop_one(pool)
        gc.collect()
        with pytest.raises(PoolTimeout):
            pool.acquire(timeout=0)
        s = pool.stats()
        assert (s.in_use, s.leaks_reclaimed) == (1, 0)
        said = [r for r in caplog.records if LIMIT in r.getMessage()]
        assert len(said) == 1  # once per class, not per acquire
        assert "Connection connections" in said[0].getMessage()
    finally:
        assert pool.close(timeout=0.01) == 1  # the documented way back


def _pg() -> Any:
    import psycopg

    return psycopg.connect(PG)


def _my() -> Any:
    import pymysql

    return pymysql.connect(host="127.0.0.1", user="root", password="", database="test")


@pytest.mark.parametrize(
    ("connect", "fixture"),
    [
        pytest.param(_pg, "pg_up", marks=pytest.mark.postgres, id="psycopg"),
        pytest.param(_my, "my_up", marks=pytest.mark.mysql, id="pymysql"),
    ],
)
def test_leak_reclaimed_sync_issue13_item14(
    request: pytest.FixtureRequest,
    connect: Callable[[], Any],
    fixture: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    request.getfixturevalue(fixture)
    pool: Pool[Any] = Pool(connect, max_open=1, leak_threshold=60)
    try:
        _drop_one(pool)
        gc.collect()
        conn = pool.acquire(timeout=5)  # the reclaimed slot dials anew
        pool.release(conn)
        s = pool.stats()
        assert (s.leaks_reclaimed, s.in_use, s.dials) == (1, 0, 2)
        assert not [r for r in caplog.records if LIMIT in r.getMessage()]
    finally:
        pool.close()


async def _aiosqlite() -> Any:
    import aiosqlite

    return await aiosqlite.connect(":memory:")


async def _asyncpg() -> Any:
    import asyncpg

    return await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")


async def _apg() -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(PG)


@pytest.mark.parametrize(
    ("connect", "fixture"),
    [
        pytest.param(_aiosqlite, None, id="aiosqlite"),
        pytest.param(_asyncpg, "pg_up", marks=pytest.mark.postgres, id="asyncpg"),
        pytest.param(_apg, "pg_up", marks=pytest.mark.postgres, id="psycopg"),
    ],
)
def test_leak_reclaimed_async_issue13_item14(
    request: pytest.FixtureRequest,
    connect: Callable[[], Any],
    fixture: str | None,
) -> None:
    if fixture is not None:
        request.getfixturevalue(fixture)

    async def run() -> None:
        pool: AsyncPool[Any] = AsyncPool(connect, max_open=1, leak_threshold=60)
        try:
            await pool.acquire()  # dropped at once: a leak
            gc.collect()
            conn = await pool.acquire(timeout=5)
            await pool.release(conn)
            s = pool.stats()
            assert (s.leaks_reclaimed, s.in_use, s.dials) == (1, 0, 2)
        finally:
            await pool.close()

    asyncio.run(run())
