"""Deadlines end to end on the real servers: the statement stops on the server.

Each proof runs a statement that would take 7 s (``pg_sleep(7)``, MariaDB's
``SLEEP(7)``, an endless recursive CTE on SQLite) under a 0.3 s deadline and
checks: ``DeadlineExceeded`` (or, for a cancel from outside, the asyncio
error) within ``RAISED_WITHIN``; the server no longer running it within
``GONE_WITHIN`` (``pg_stat_activity``, ``information_schema.processlist``);
the handle serving the next call, and ``stats().in_use`` back to 0.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path

DEADLINE = 0.3
RAISED_WITHIN = 0.5
GONE_WITHIN = 1.5
ASYNC_PG = ["postgresql", "postgresql+asyncpg"]
ENDLESS_CTE = (
    "with recursive c(x) as (select 1 union all select x + 1 from c) "
    "select count(*) from c"
)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def _gone_within(seconds: float, running: Callable[[], int]) -> float:
    """Seconds until ``running()`` counts 0; fails after ``seconds``."""
    start = time.monotonic()
    while True:
        n = running()
        took = time.monotonic() - start
        if n == 0:
            return took
        assert took < seconds, f"still running on the server after {took:.2f} s"
        time.sleep(0.02)


def _pg_running(admin: Any, app_name: str) -> Callable[[], int]:
    def count() -> int:
        row = admin.execute(
            "select count(*) from pg_stat_activity where application_name = %s "
            "and state = 'active' and query like '%%pg_sleep(7)%%'",
            (app_name,),
        ).fetchone()
        return int(row[0])

    return count


def _my_running(admin: Any, marker: str) -> Callable[[], int]:
    def count() -> int:
        with admin.cursor() as cur:
            cur.execute(
                "select count(*) from information_schema.processlist "
                "where info like %s and info not like %s",
                (f"%{marker}%", "%processlist%"),
            )
            return int(cur.fetchone()[0])

    return count


def _timed(call: Callable[[], object], error: type[BaseException]) -> BaseException:
    start = time.monotonic()
    with pytest.raises(error) as info:
        call()
    took = time.monotonic() - start
    assert took < RAISED_WITHIN, f"raised after {took:.2f} s"
    return info.value


# -- threads ----------------------------------------------------------------------


@pytest.mark.postgres
def test_pg_sleep_cancelled(pg_dsn: str, pg_admin: Any, app_name: str) -> None:
    db = sqlgate.open(pg_dsn, max_open=2)
    db.ping()  # dialed beforehand: the deadline is the statement's alone
    exc = _timed(
        lambda: db.exec("select pg_sleep(7)", timeout=DEADLINE),
        sqlgate.DeadlineExceeded,
    )
    import psycopg

    assert isinstance(exc.__cause__, psycopg.errors.QueryCanceled)
    _gone_within(GONE_WITHIN, _pg_running(pg_admin, app_name))
    assert db.query_row("select 1") == (1,)
    s = db.stats()
    assert (s.in_use, s.broken_closed, s.open_connections) == (0, 0, 1)
    db.close()


@pytest.mark.postgres
def test_pg_deadline_in_a_transaction(
    pg_dsn: str, pg_admin: Any, app_name: str
) -> None:
    db = sqlgate.open(pg_dsn, max_open=1)
    tx = db.begin()
    tx.exec("select 1")
    _timed(
        lambda: tx.exec("select pg_sleep(7)", timeout=DEADLINE),
        sqlgate.DeadlineExceeded,
    )
    assert tx.done
    with pytest.raises(sqlgate.Error, match="rolled back"):
        tx.exec("select 1")
    _gone_within(GONE_WITHIN, _pg_running(pg_admin, app_name))
    assert db.query_row("select 2") == (2,)
    assert db.stats().in_use == 0
    db.close()


@pytest.mark.mysql
def test_mariadb_sleep_killed(my_dsn: str, my_admin: Any) -> None:
    marker = f"sqlgate-{uuid.uuid4().hex[:10]}"
    db = sqlgate.open(my_dsn, max_open=2)
    db.ping()
    _timed(
        lambda: db.query_row(f"SELECT SLEEP(7), '{marker}'", timeout=DEADLINE),
        sqlgate.DeadlineExceeded,
    )
    _gone_within(GONE_WITHIN, _my_running(my_admin, marker))
    assert db.query_row("SELECT 1") == (1,)
    assert db.stats().in_use == 0
    db.close()


def test_sqlite_endless_cte_interrupted(tmp_path: Path) -> None:
    db = sqlgate.open(f"sqlite:///{tmp_path / 'd.db'}", max_open=2)
    db.ping()
    exc = _timed(
        lambda: db.query_row(ENDLESS_CTE, timeout=DEADLINE), sqlgate.DeadlineExceeded
    )
    assert "interrupt" in repr(exc.__cause__)
    assert db.query_row("select 1") == (1,)
    assert db.stats().in_use == 0
    db.close()


@pytest.mark.postgres
def test_pg_deadline_waiting_for_a_connection(pg_dsn: str) -> None:
    db = sqlgate.open(pg_dsn, max_open=1)
    with db.conn():
        exc = _timed(
            lambda: db.exec("select 1", timeout=DEADLINE), sqlgate.DeadlineExceeded
        )
        assert isinstance(exc.__cause__, sqlgate.PoolTimeout)
        s = db.stats()
        assert (s.in_use, s.waiting) == (1, 0)
    s = db.stats()
    assert (s.in_use, s.idle, s.waiting) == (0, 1, 0)
    db.close()


# -- asyncio ----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ASYNC_PG)
@pytest.mark.parametrize("how", ["wait_for", "timeout="])
def test_pg_async_sleep_cancelled(
    pg_dsn: str, pg_admin: Any, app_name: str, scheme: str, how: str
) -> None:
    dsn = pg_dsn.replace("postgresql", scheme, 1)

    async def main() -> None:
        db = sqlgate.open_async(dsn, max_open=2)
        await db.ping()
        start = time.monotonic()
        if how == "wait_for":
            with pytest.raises(TimeoutError) as info:
                await asyncio.wait_for(db.exec("select pg_sleep(7)"), DEADLINE)
            assert not isinstance(info.value, sqlgate.DeadlineExceeded)
        else:
            with pytest.raises(sqlgate.DeadlineExceeded):
                await db.exec("select pg_sleep(7)", timeout=DEADLINE)
        took = time.monotonic() - start
        assert took < RAISED_WITHIN, f"raised after {took:.2f} s"
        await asyncio.to_thread(
            _gone_within, GONE_WITHIN, _pg_running(pg_admin, app_name)
        )
        assert await db.query_row("select 1") == (1,)
        assert db.stats().in_use == 0
        await db.close()

    run(main())


@pytest.mark.parametrize("how", ["wait_for", "timeout="])
def test_aiosqlite_endless_cte_interrupted(tmp_path: Path, how: str) -> None:
    async def main() -> None:
        db = sqlgate.open_async(f"sqlite:///{tmp_path / 'd.db'}", max_open=2)
        await db.ping()
        start = time.monotonic()
        if how == "wait_for":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(db.query_row(ENDLESS_CTE), DEADLINE)
        else:
            with pytest.raises(sqlgate.DeadlineExceeded):
                await db.query_row(ENDLESS_CTE, timeout=DEADLINE)
        took = time.monotonic() - start
        assert took < RAISED_WITHIN, f"raised after {took:.2f} s"
        assert await db.query_row("select 1") == (1,)
        assert db.stats().in_use == 0
        await db.close()

    run(main())
