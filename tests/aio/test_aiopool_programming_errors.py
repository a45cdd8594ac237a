"""AsyncPool: a programming error in a dial is the caller's, not an outage.

Issue 14: an async connect callable that raises TypeError, ValueError or the
like reaches the caller as that very error; it never counts as a failed dial,
never opens the circuit breaker and never starts the probe loop.
"""

from __future__ import annotations

import pytest

from sqlgate import ConnectError
from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import AsyncFakeConn, AsyncFakeDriver, close_clean, spin


@pytest.mark.parametrize(
    "error",
    [
        TypeError("connect() got an unexpected keyword argument 'hots'"),
        ValueError("invalid literal for int() with base 10: 'x'"),
        AttributeError("'NoneType' object has no attribute 'cursor'"),
        KeyError("host"),
    ],
    ids=type,
)
async def test_issue14_programming_error_reaches_the_caller_and_opens_nothing(
    error: Exception, driver: AsyncFakeDriver
) -> None:
    driver.fail_with = error
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_open=2, circuit_after=2, name="p"
    )
    for n in range(1, 6):
        with pytest.raises(type(error)) as info:
            await pool.acquire(timeout=10)
        assert info.value is error  # the error itself, not a ConnectError
        await spin()
        s = pool.stats()
        assert (driver.attempts, s.dials, s.dial_failures) == (n, 0, 0)
        assert (s.open_connections, s.dialing, s.waiting) == (0, 0, 0)
        assert not pool._core.circuit_open
        assert pool._core.last_dial_error is None
        assert pool._maintenance is None  # no probe loop
    await spin(200)
    assert driver.attempts == 5
    driver.fail_with = None
    conn = await pool.acquire(timeout=10)
    await pool.release(conn)
    assert (driver.attempts, pool.stats().dials) == (6, 1)
    await close_clean(pool, driver)


async def test_issue14_connection_failures_still_open_the_circuit(
    driver: AsyncFakeDriver,
) -> None:
    driver.fail_with = ConnectionRefusedError("refused")
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_open=2, circuit_after=2, name="p"
    )
    for _ in range(2):
        with pytest.raises(ConnectError) as info:
            await pool.acquire(timeout=10)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        await spin()
    assert pool._core.circuit_open
    assert pool.stats().dial_failures == 2
    driver.fail_with = None
    await close_clean(pool, driver)
