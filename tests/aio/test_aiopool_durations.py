"""AsyncPool and durations longer than a thread can wait (issue 11, defect 5).

AsyncPool shares the knob checks with Pool: above ``threading.TIMEOUT_MAX`` a
duration means "no limit", as ``math.inf`` does, and a waiting acquire works.
"""

from __future__ import annotations

import asyncio
import math
import sys

import pytest

from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import (
    AsyncFakeConn,
    AsyncFakeDriver,
    assert_ledger,
    close_clean,
    until,
)


@pytest.mark.parametrize("forever", [sys.maxsize, 1e10, 10**400, math.inf])
async def test_issue11_defect5_huge_durations_mean_forever(
    driver: AsyncFakeDriver, forever: float
) -> None:
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect,
        name="t",
        max_open=1,
        acquire_timeout=forever,
        conn_max_lifetime=forever,
        conn_max_idle_time=forever,
        leak_threshold=forever,
    )
    assert pool._timeout is None
    assert pool._core.config.conn_max_lifetime is None
    c1 = await pool.acquire()
    for per_call in (None, forever):
        waiter = asyncio.ensure_future(pool.acquire(per_call))
        await until(lambda: pool.stats().waiting == 1, "the acquire to queue")
        await pool.release(c1)
        c1 = await waiter
        assert_ledger(pool, driver)
    await pool.release(c1)
    await pool.set_conn_max_lifetime(forever)
    assert await pool.close(timeout=forever) == 0
    await close_clean(pool, driver)
