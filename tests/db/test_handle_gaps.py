"""Pool names, psycopg's own DSN options, and forgotten objects reaped at once."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
import sqlgate.db
from sqlgate.drivers import parse
from tests.fakes import wait_until

if TYPE_CHECKING:
    from pathlib import Path


# -- pool names (db.client.connection.pool.name) --------------------------------


@pytest.mark.parametrize(
    ("target", "name"),
    [
        (
            "postgresql://app:Sekr3t@db.example.com:6432/orders",
            "db.example.com:6432/orders",
        ),
        (
            "postgres://app:Sekr3t@db.example.com/orders?sslmode=require",
            "db.example.com:5432/orders",
        ),
        ("postgresql+asyncpg://u@10.1.2.3:5433/x", "10.1.2.3:5433/x"),
        ("postgresql:///orders", "localhost:5432/orders"),
        ("postgresql://u:p@[::1]:5432/t", "[::1]:5432/t"),
        ("mysql://root:Sekr3t@127.0.0.1/test", "127.0.0.1:3306/test"),
        ("mariadb://root@my.host:3307/shop", "my.host:3307/shop"),
        ("sqlite:///:memory:", "sqlite::memory:"),
        ("sqlite:////var/lib/app.db", "sqlite:/var/lib/app.db"),
    ],
)
def test_pool_name_of_a_dsn(target: str, name: str) -> None:
    assert parse(target).pool_name() == name


def test_relative_sqlite_name_is_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse("sqlite:///app.db?timeout=2").pool_name() == (
        "sqlite:" + os.path.join(str(tmp_path), "app.db")
    )


def test_open_names_the_pool_without_user_or_password() -> None:
    db = sqlgate.open("postgresql://app:Sekr3t@127.0.0.1:1/orders?connect_timeout=1")
    try:
        assert db.pool.name == "127.0.0.1:1/orders"
        assert repr(db) == "<sqlgate.DB '127.0.0.1:1/orders' open>"
    finally:
        db.close()
    with sqlgate.open("sqlite:///:memory:") as mem:
        assert mem.pool.name == "sqlite::memory:"


def test_name_knob_overrides() -> None:
    with sqlgate.open("sqlite:///:memory:", name="orders-db") as db:
        assert db.pool.name == "orders-db"
    adb = sqlgate.open_async("sqlite:///:memory:", name="orders-adb")
    assert adb.pool.name == "orders-adb"
    assert repr(adb) == "<sqlgate.AsyncDB 'orders-adb' open>"
    asyncio.run(adb.close())
    with sqlgate.open(
        lambda: __import__("sqlite3").connect(":memory:"), name="cb"
    ) as c:
        assert c.pool.name == "cb"


def test_open_async_default_name() -> None:
    adb = sqlgate.open_async("postgresql+asyncpg://u:Sekr3t@h.example:5439/d")
    assert adb.pool.name == "h.example:5439/d"
    asyncio.run(adb.close())


@pytest.mark.parametrize("bad", ["", 3, b"x"])
def test_bad_name(bad: object) -> None:
    with pytest.raises(
        TypeError, match=f"name must be a non-empty str or None, got {bad!r}"
    ):
        sqlgate.open("sqlite:///:memory:", name=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a non-empty str or None"):
        sqlgate.open_async("sqlite:///:memory:", name=bad)  # type: ignore[arg-type]


# -- psycopg's own DSN options -----------------------------------------------------


def test_psycopg_options_are_not_libpq_parameters() -> None:
    pytest.importorskip("psycopg")
    from sqlgate.drivers.postgres import connect_options, conninfo_kwargs

    dsn = parse(
        "postgresql://u:pw@h:5432/d?prepare_threshold=none&prepared_max=7"
        "&application_name=a&sslmode=disable"
    )
    assert conninfo_kwargs(dsn) == {
        "application_name": "a",
        "sslmode": "disable",
        "host": "h",
        "port": 5432,
        "user": "u",
        "password": "pw",
        "dbname": "d",
    }
    kwargs, attrs = connect_options(dsn)
    assert kwargs["prepare_threshold"] is None
    assert kwargs["autocommit"] is True
    assert "prepared_max" not in kwargs
    assert attrs == {"prepared_max": 7}
    for query, want in [("0", 0), ("12", 12), ("", None), ("None", None)]:
        got = connect_options(parse(f"postgresql://h/d?prepare_threshold={query}"))
        assert got[0]["prepare_threshold"] == want
    assert "prepare_threshold" not in connect_options(parse("postgresql://h/d"))[0]


@pytest.mark.parametrize("value", ["-1", "often", "1.5"])
def test_bad_prepare_threshold(value: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(
        ValueError,
        match=rf"bad value for parameter 'prepare_threshold' in "
        rf"postgresql://u:\*\*\*@h/d\?prepare_threshold={value}: '{value}'",
    ):
        sqlgate.open(f"postgresql://u:Sekr3t@h/d?prepare_threshold={value}")


def test_prepare_threshold_reaches_psycopg(pg_dsn: str) -> None:
    with sqlgate.open(pg_dsn + "&prepare_threshold=none&prepared_max=3") as db:
        with db.conn() as c:
            assert c.raw.prepare_threshold is None
            assert c.raw.prepared_max == 3
        assert db.query_row("select 1") == (1,)

    async def main() -> None:
        adb = sqlgate.open_async(pg_dsn + "&prepare_threshold=0")
        async with adb, await adb.conn() as c:
            assert c.raw.prepare_threshold == 0
            assert c.raw.prepared_max == 100  # psycopg's default, untouched

    asyncio.run(main())


# -- forgotten objects: their connection goes to a waiter at once -----------------


def _blocked_query(
    db: sqlgate.DB,
) -> tuple[threading.Thread, threading.Event, list[Any]]:
    """A thread blocked in acquire (max_open=1, the connection held)."""
    got: list[Any] = []
    done = threading.Event()

    def run() -> None:
        got.append(db.query_row("select 42"))
        done.set()

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: db.pool.stats().waiting == 1, what="the thread to queue")
    return t, done, got


@pytest.mark.parametrize("what", ["Rows", "Tx", "Conn"])
def test_forgotten_object_serves_a_blocked_acquire(what: str) -> None:
    db = sqlgate.open("sqlite:///:memory:", max_open=1, acquire_timeout=30)
    try:
        if what == "Rows":
            held: Any = db.query("select 1 union all select 2")
            assert next(held) == (1,)
        elif what == "Tx":
            held = db.begin()
            held.exec("create table dbt_reap(a)")
        else:
            held = db.conn()
        t, done, got = _blocked_query(db)
        del held
        gc.collect()
        # Nothing else calls the DB: only the reaper can hand it over.
        assert done.wait(10), "the blocked thread was not served"
        t.join()
        assert got == [(42,)]
        with pytest.warns(ResourceWarning, match=f"a {what} was garbage-collected"):
            s = db.stats()
        # wait_count: the first dial, then the blocked thread.
        assert (s.in_use, s.idle, s.wait_count, s.broken_closed) == (0, 1, 2, 0)
        if what == "Tx":  # rolled back by the return-path reset
            assert db.query_row(
                "select count(*) from sqlite_master where name = 'dbt_reap'"
            ) == (0,)
    finally:
        db.close()


def test_drain_in_progress_is_waited_for() -> None:
    """A caller that finds the deque empty still waits for the reaper's item."""
    gate = threading.Event()
    entered = threading.Event()

    def slow_reset(conn: object) -> None:
        if threading.current_thread().name == "sqlgate-reaper":
            entered.set()
            assert gate.wait(10)

    db = sqlgate.open("sqlite:///:memory:", max_open=2, reset=slow_reset)
    try:
        rows = db.query("select 1")
        del rows
        gc.collect()
        assert entered.wait(10)  # the reaper took the item and is releasing it
        assert not db._orphans
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(_stats_with_warning(db)))
        t.start()
        gate.set()
        t.join(10)
        assert result == [(0, 1)]
    finally:
        db.close()


def _stats_with_warning(db: sqlgate.DB) -> tuple[int, int]:
    with pytest.warns(ResourceWarning, match="a Rows was garbage-collected"):
        s = db.stats()
    return s.in_use, s.idle


def test_forgotten_async_rows_serve_a_waiting_task() -> None:
    async def main() -> None:
        db = sqlgate.open_async("sqlite:///:memory:", max_open=1, acquire_timeout=30)
        rows = await db.query("select 1 union all select 2")
        assert await rows.__anext__() == (1,)
        waiter = asyncio.create_task(db.query_row("select 42"))
        await asyncio.sleep(0)  # one loop turn: the task runs up to its wait
        assert db.pool.stats().waiting == 1
        del rows
        gc.collect()
        # This task makes no DB call: the loop's drain task hands it over.
        assert await asyncio.wait_for(waiter, 10) == (42,)
        with pytest.warns(ResourceWarning, match="an AsyncRows was garbage-collected"):
            s = db.stats()
        assert (s.in_use, s.idle) == (0, 1)
        await db.close()

    asyncio.run(main())
