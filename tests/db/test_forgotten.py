"""Forgotten rows, transactions and reserved connections: their connection goes
back at once, to a blocked caller too (``sqlgate._reaper``)."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

import sqlgate
import sqlgate.db
from tests.fakes import wait_until


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
        assert not db._forgotten
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
