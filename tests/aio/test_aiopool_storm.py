"""A storm: 2,000 tasks on 5 connections, with cancels, timeouts and failed dials.

Seeded, so a failure replays. The loop's own scheduling decides the exact
interleavings; the invariants must hold under every one of them, so the test
checks them at every controller step and the ledger at the end.
"""

from __future__ import annotations

import asyncio
import random

import pytest

import sqlgate
from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import AsyncFakeConn, AsyncFakeDriver, assert_ledger, close_clean

TASKS = 2000
MAX_OPEN = 5


class ChaosDriver(AsyncFakeDriver):
    """Dials that sometimes fail; every driver call sometimes yields."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.delay = self._jitter

    async def _jitter(self) -> None:
        for _ in range(self.rng.randrange(3)):
            await asyncio.sleep(0)

    async def aconnect(self) -> AsyncFakeConn:
        await self._jitter()
        if self.rng.random() < 0.05:
            self.attempts += 1
            raise OSError("chaos: connection refused")
        return await super().aconnect()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_storm_leaves_every_count_right(seed: int) -> None:
    rng = random.Random(seed)
    driver = ChaosDriver(rng)
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_open=MAX_OPEN, max_idle=3, name="storm"
    )
    outcomes: dict[str, int] = {}
    held: set[AsyncFakeConn] = set()

    async def use(conn: AsyncFakeConn) -> None:
        assert conn not in held, f"{conn!r} handed out twice"
        held.add(conn)
        try:
            conn.in_transaction = rng.random() < 0.5
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
        finally:
            held.discard(conn)

    async def client() -> None:
        style = rng.randrange(4)
        timeout = rng.choice([0, 0.001, 0.005, 0.02, None])
        if style == 0:
            conn = await pool.acquire(timeout)
            try:
                await use(conn)
            finally:
                await pool.release(conn, broken=rng.random() < 0.05)
        elif style == 1:
            async with pool.connection(timeout) as conn:
                await use(conn)
        elif style == 2:
            async with asyncio.timeout(rng.choice([0.001, 0.01])):
                async with pool.connection() as conn:
                    await use(conn)
        else:
            conn = await asyncio.wait_for(pool.acquire(), rng.choice([0.002, 0.02]))
            try:
                await use(conn)
            finally:
                await pool.release(conn)

    async def run(i: int) -> None:
        try:
            await client()
            kind = "ok"
        except asyncio.CancelledError:
            kind = "cancelled"
        except sqlgate.PoolTimeout:
            kind = "pool_timeout"
        except TimeoutError:
            kind = "asyncio_timeout"
        except sqlgate.ConnectError:
            kind = "connect_error"
        outcomes[kind] = outcomes.get(kind, 0) + 1

    tasks = []
    for i in range(TASKS):
        tasks.append(asyncio.create_task(run(i)))
        if i % 50 == 0:
            await asyncio.sleep(0)
    # The controller: cancel at random points, check the invariants each step.
    steps = 0
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0)
        steps += 1
        pool._core.check()
        # Handed over but not yet resumed, or mid-release, counts in use too.
        assert pool.stats().in_use >= len(held)
        assert len(driver.live) <= MAX_OPEN
        if rng.random() < 0.3:
            pending = [t for t in tasks if not t.done()]
            if pending:
                rng.choice(pending).cancel()
    await asyncio.gather(*tasks)
    # Let the pool's own dials and closes land.
    while pool._tasks:
        await asyncio.wait(list(pool._tasks))
    assert sum(outcomes.values()) == TASKS
    # How many time out depends on the machine's speed; that some get through
    # and some are cancelled does not.
    assert outcomes.get("ok", 0) > 0, outcomes
    assert outcomes.get("cancelled", 0) > 0, outcomes
    s = pool.stats()
    assert driver.opened - driver.closed == s.open_connections == s.idle, s
    assert (s.in_use, s.waiting, s.dialing, s.closing) == (0, 0, 0, 0), s
    assert driver.max_live <= MAX_OPEN
    assert_ledger(pool, driver)
    await close_clean(pool, driver)
