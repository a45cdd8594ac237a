"""DB after os.fork(): the child drops the parent's forgotten objects.

The parent's reaper is held inside one DB's drain (a gated ``reset`` hook)
while a second DB has a forgotten object not yet drained, so the fork lands
with the first DB mid-drain and the second holding a parent's connection in
its deque: the two states a child must not inherit. The child reports
through its exit code.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import traceback
import warnings
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process with threads warns on 3.12+; the child only os._exit()s.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

#: Bound on the child's run: past it the child is killed and the test fails.
CHILD_LIMIT = 30.0


def _wait_child(pid: int) -> int:
    """The child's exit code; kill it and fail if it outlives CHILD_LIMIT."""
    deadline = time.monotonic() + CHILD_LIMIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status), f"child ended by signal: {status}"
            return os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child hung for {CHILD_LIMIT} s (a lock it inherited?)")
        time.sleep(0.05)


def _reaper_alive() -> bool:
    return any(
        t.name == "sqlgate-reaper" and t.is_alive() for t in threading.enumerate()
    )


def _child(gated: sqlgate.DB, other: sqlgate.DB, inherited: list[Any]) -> int:
    """The child's checks; the exit code names the first that failed."""
    if not _reaper_alive():
        return 10
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        # The parent's forgotten object in other's deque must not be given back here.
        if other.query_row("select 1") != (1,):
            return 11
        # gated was mid-drain in the parent (its reaper held): no wait here.
        if gated.query_row("select 2") != (2,):
            return 12
        # An object inherited from the parent, forgotten in the child: its
        # connection is the parent's, so it is not queued.
        inherited.clear()
        # A forgotten object of the child's own: the child's reaper gives its
        # connection back (pool.acquire never drains by itself).
        other.set_max_open_conns(1)
        rows = other.query("select 3")
        del rows
        conn = other.pool.acquire(timeout=10)
        other.pool.release(conn)
        s = other.stats()
        if (s.in_use, s.open_connections) != (0, 1):
            return 13
        if other.query_row("select 4") != (4,):
            return 14
        gated.close()
        other.close()
    forgotten = [w for w in seen if issubclass(w.category, ResourceWarning)]
    if len(forgotten) != 1 or "a Rows was garbage-collected" not in str(
        forgotten[0].message
    ):
        return 15
    return 0


def _fork_scenario(dsn_gated: str, dsn_other: str, sql_ok: str) -> None:
    entered, go = threading.Event(), threading.Event()
    armed = [False]

    def reset(conn: Any) -> None:
        if armed[0] and os.getpid() == parent:
            armed[0] = False
            entered.set()
            go.wait(CHILD_LIMIT)

    parent = os.getpid()
    gated = sqlgate.open(dsn_gated, reset=reset)
    other = sqlgate.open(dsn_other)
    try:
        held = other.conn()  # the parent's session, kept across the fork
        assert held.query_row(sql_ok) == (1,)
        gated.exec(sql_ok)  # an idle connection with an idle age
        armed[0] = True
        rows = gated.query(sql_ok)
        del rows  # the reaper takes it and blocks in reset
        assert entered.wait(10)
        inherited = [other.query(sql_ok)]
        rows = other.query(sql_ok)
        del rows  # stays in other's deque: the reaper is busy
        pid = os.fork()
        if pid == 0:  # the child
            code = 99
            try:
                code = _child(gated, other, inherited)
            except BaseException:
                traceback.print_exc()  # into the parent's captured stderr
            finally:
                os._exit(code)
        try:
            code = _wait_child(pid)
        finally:
            go.set()
        assert code == 0
        # The parent's connections and bookkeeping are untouched by the child.
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert held.query_row(sql_ok) == (1,)
            assert other.query_row(sql_ok) == (1,)
            assert gated.query_row(sql_ok) == (1,)
            inherited[0].close()
            assert other.stats().in_use == 1  # held
            assert gated.stats().in_use == 0
        messages = sorted(
            str(w.message) for w in seen if issubclass(w.category, ResourceWarning)
        )
        assert len(messages) == 2
        assert all("a Rows was garbage-collected" in m for m in messages)
        held.close()
        assert other.stats().in_use == 0
    finally:
        go.set()
        with warnings.catch_warnings():  # a failed run's owed warnings
            warnings.simplefilter("ignore")
            gated.close()
            other.close()


def test_sqlite_child_drops_the_parents_forgotten_objects(tmp_path: Path) -> None:
    _fork_scenario(
        f"sqlite:///{tmp_path / 'gated.db'}",
        f"sqlite:///{tmp_path / 'other.db'}",
        "select 1",
    )


@pytest.mark.postgres
def test_postgres_child_drops_the_parents_forgotten_objects(pg_dsn: str) -> None:
    _fork_scenario(pg_dsn, pg_dsn, "select 1")


def _async_child(db: sqlgate.AsyncDB, sql_ok: str) -> int:
    """The child's checks on the inherited AsyncDB, on a loop of its own."""

    async def checks() -> int:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if await db.query_row(sql_ok) != (1,):
                return 21
            s = db.stats()
            if (s.in_use, s.open_connections) != (0, 1):
                return 22
            await db.close()
        if any(issubclass(w.category, ResourceWarning) for w in seen):
            return 23  # the parent's forgotten AsyncRows warned here
        return 0

    codes: list[int] = []
    # The parent's loop is running in this thread: the child's runs in another.
    worker = threading.Thread(target=lambda: codes.append(asyncio.run(checks())))
    worker.start()
    worker.join(CHILD_LIMIT)
    return codes[0] if codes else 24


def _async_fork_scenario(dsn: str, sql_ok: str) -> None:
    db = sqlgate.open_async(dsn)

    async def run() -> None:
        held = await db.conn()  # the parent's session, kept across the fork
        assert await held.query_row(sql_ok) == (1,)
        rows = await db.query(sql_ok)
        del rows  # queued in db's deque; its drain task starts at the next await
        pid = os.fork()
        if pid == 0:  # the child
            code = 99
            try:
                code = _async_child(db, sql_ok)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        assert await asyncio.to_thread(_wait_child, pid) == 0
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert await held.query_row(sql_ok) == (1,)
            assert await db.query_row(sql_ok) == (1,)
            await held.close()
            s = db.stats()
            assert (s.in_use, s.open_connections) == (0, 2)
        assert [str(w.message) for w in seen if w.category is ResourceWarning] == [
            f"{db.name}: an AsyncRows was garbage-collected without being closed; "
            "its connection was returned to the pool"
        ]
        await db.close()

    asyncio.run(run())


def test_sqlite_async_child_drops_the_parents_forgotten_objects(tmp_path: Path) -> None:
    _async_fork_scenario(f"sqlite:///{tmp_path / 'a.db'}", "select 1")


@pytest.mark.postgres
def test_postgres_async_child_drops_the_parents_forgotten_objects(pg_dsn: str) -> None:
    _async_fork_scenario(pg_dsn, "select 1")
