"""Fork safety: a forked child's AsyncPool forgets the parent's connections
(never closing them) and works on the child's own event loop.

The child reports through its exit code only (``os._exit``), so nothing of
pytest's runs twice.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import AsyncFakeConn, AsyncFakeDriver, close_clean

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def in_child(body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Fork; the child runs ``body`` on a fresh loop and exits with its result."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = asyncio.run(body())
        except BaseException:
            code = 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    return os.WEXITSTATUS(status)


async def test_child_pool_starts_empty_and_never_closes_the_parents(
    driver: AsyncFakeDriver,
) -> None:
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_open=4, max_idle=4, leak_threshold=60.0
    )
    held = await pool.acquire()
    idle = await pool.acquire()
    await pool.release(idle)

    async def child() -> int:
        s = pool.stats()
        if (s.open_connections, s.in_use, s.idle, s.dials) != (0, 0, 0, 0):
            return 2
        if pool._held or pool._tasks:
            return 3
        async with pool.connection() as conn:  # binds to this new loop
            if conn.number != 3:
                return 4
        if await pool.close(timeout=1) != 0:
            return 5
        # Only the child's own connection was closed.
        if [c.closes for c in driver.conns] != [0, 0, 1]:
            return 6
        return 0

    assert in_child(child) == 0
    # The parent's pool is untouched and still works on its own loop.
    s = pool.stats()
    assert (s.open_connections, s.in_use, s.idle, s.dials) == (2, 1, 1, 2)
    await pool.release(held)
    async with pool.connection() as conn:
        assert conn is idle or conn is held
    assert [c.closes for c in driver.conns] == [0, 0]
    await close_clean(pool, driver)


@pytest.mark.postgres
async def test_asyncpg_child_gets_a_fresh_pool_and_parent_sessions_survive(
    pg_dsn: str,
) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from tests.aio.test_aiopool_drivers import server_count

    app = f"sqlgate-aio-fork-{uuid.uuid4().hex[:12]}"

    def connect() -> Any:
        return asyncpg.connect(pg_dsn, server_settings={"application_name": app})

    pool: AsyncPool[Any] = AsyncPool(connect, max_open=4, max_idle=4)
    held = await pool.acquire()
    idle = await pool.acquire()
    await pool.release(idle)
    assert await held.fetchval("select 1") == 1
    held_fd = held._transport.get_extra_info("socket").fileno()

    async def child() -> int:
        # The inherited socket now leads nowhere in this process.
        if os.readlink(f"/proc/self/fd/{held_fd}") != os.devnull:
            return 2
        if pool.stats().open_connections != 0:
            return 3
        async with pool.connection() as conn:
            if await conn.fetchval("select 2") != 2:
                return 4
        await pool.close()
        return 0

    assert in_child(child) == 0
    # The parent's sessions survived the child: both still answer.
    assert await held.fetchval("select 3") == 3
    await pool.release(held)
    async with pool.connection() as conn:
        assert await conn.fetchval("select 4") == 4
    s = pool.stats()
    assert (s.open_connections, s.dials, s.closed) == (2, 2, 0)
    assert await server_count(pg_dsn, app) == 2
    await pool.close()
    pool._core.check()
    assert pool.stats().open_connections == 0
