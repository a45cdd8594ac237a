"""AsyncPool through an outage: the circuit breaker opens after ``circuit_after``
failed dials, every queued and new acquire fails at once with CircuitOpen, and
the maintenance task wakes for the probe dial that closes it again.

The dials are gated (the test fails or lands each one) and the pool's clock is
a fake one (``sqlgate.aiopool.monotonic`` patched), so each step is exact.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sqlgate import CircuitOpen, ConnectError
from sqlgate.aiopool import AsyncPool
from tests.aio.fakes import (
    AsyncFakeConn,
    AsyncFakeDriver,
    FakeClock,
    assert_ledger,
    close_clean,
    eventually,
    spin,
    until,
)


def refuses_at_once(pool: AsyncPool[Any]) -> CircuitOpen:
    """Start an acquire and require that it raises before its first suspension."""
    coro = pool.acquire(timeout=60)
    try:
        coro.send(None)
    except CircuitOpen as exc:
        return exc
    finally:
        coro.close()
    raise AssertionError("acquire did not fail at once")


async def open_the_circuit(
    pool: AsyncPool[AsyncFakeConn], driver: AsyncFakeDriver
) -> tuple[list[asyncio.Task[Any]], list[OSError]]:
    """Queue 5 acquires, then fail the three dials made for them, one by one."""
    waiters = [asyncio.create_task(pool.acquire(timeout=60)) for _ in range(5)]
    errors = [OSError(f"connection refused #{i}") for i in range(3)]
    for i, error in enumerate(errors):
        await until(lambda: len(driver.pending) == 1, f"dial {i + 1}")
        assert pool.stats().waiting == 5 - i
        driver.pending[0].fail(error)
        await spin()
    return waiters, errors


async def test_outage_fails_fast_and_the_probe_closes_the_circuit(
    clock: FakeClock, gated_driver: AsyncFakeDriver
) -> None:
    driver = gated_driver
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, name="o", max_connecting=1, circuit_after=3
    )
    waiters, errors = await open_the_circuit(pool, driver)
    # The first two waiters each got their own dial's error ...
    for waiter, error in zip(waiters[:2], errors, strict=False):
        with pytest.raises(ConnectError) as info:
            await waiter
        assert info.value.__cause__ is error
    # ... and the third failure opened the circuit: the rest failed at once.
    for waiter in waiters[2:]:
        assert waiter.done()
        with pytest.raises(
            CircuitOpen, match=r"o: database unreachable .* \(3 dials failed in a row"
        ) as circuit:
            await waiter
        assert circuit.value.__cause__ is errors[2]
    s = pool.stats()
    assert (s.circuit_open, s.circuit_opens, s.waiting, s.dialing) == (1, 1, 0, 0)
    assert (s.dial_failures, s.dials, s.wait_count) == (3, 0, 5)
    assert driver.pending == []

    # New acquires fail before they ever suspend, with the cause chained.
    assert refuses_at_once(pool).__cause__ is errors[2]
    assert pool.stats().wait_count == 5  # nobody queued
    maintenance = pool._maintenance
    assert maintenance is not None
    assert not maintenance.done()  # awake for the probe
    await spin()
    assert driver.pending == []  # not due yet on the pool's clock

    # Past the probe's due time, maintenance issues it by itself.
    clock.now += 1.0
    await eventually(lambda: len(driver.pending) == 1, "the probe dial")
    assert pool.stats().dialing == 1
    refuses_at_once(pool)  # still open while the probe is in flight
    driver.pending[0].land()
    await until(lambda: pool.stats().idle == 1, "the probe's connection")
    s = pool.stats()
    assert (s.circuit_open, s.dials, s.dial_failures, s.waiting) == (0, 1, 3, 0)
    conn = await pool.acquire(timeout=0)  # served from idle: service resumed
    assert conn.number == 1
    await pool.release(conn)
    pool._wake_maintenance()  # on its next tick it finds nothing to do
    await until(lambda: maintenance.done(), "maintenance to stop")
    assert_ledger(pool, driver)
    await close_clean(pool, driver)


async def test_failed_probe_keeps_it_open_then_a_later_probe_closes_it(
    clock: FakeClock, gated_driver: AsyncFakeDriver
) -> None:
    driver = gated_driver
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_connecting=1, circuit_after=3
    )
    waiters, _ = await open_the_circuit(pool, driver)
    await asyncio.gather(*waiters, return_exceptions=True)
    clock.now += 1.0
    pool._wake_maintenance()
    await until(lambda: len(driver.pending) == 1, "the first probe")
    still_down = OSError("still refused")
    driver.pending[0].fail(still_down)
    await spin()
    s = pool.stats()
    assert (s.circuit_open, s.circuit_opens, s.dial_failures) == (1, 1, 4)
    assert refuses_at_once(pool).__cause__ is still_down
    clock.now += 1.0
    pool._wake_maintenance()
    await until(lambda: len(driver.pending) == 1, "the second probe")
    driver.pending[0].land()
    await until(lambda: pool.stats().idle == 1, "the probe's connection")
    assert pool.stats().circuit_open == 0
    async with pool.connection() as conn:
        assert conn.number == 1
    await close_clean(pool, driver)


async def test_set_circuit_after_zero_closes_the_circuit(
    clock: FakeClock, gated_driver: AsyncFakeDriver
) -> None:
    driver = gated_driver
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_connecting=1, circuit_after=3
    )
    waiters, _ = await open_the_circuit(pool, driver)
    await asyncio.gather(*waiters, return_exceptions=True)
    await pool.set_circuit_after(0)
    assert pool.stats().circuit_open == 0
    task = asyncio.create_task(pool.acquire(timeout=60))  # queues again
    await until(lambda: len(driver.pending) == 1, "a dial for it")
    driver.pending[0].land()
    conn = await task
    await pool.release(conn)
    await close_clean(pool, driver)


async def test_close_during_an_outage_stops_maintenance(
    clock: FakeClock, gated_driver: AsyncFakeDriver
) -> None:
    driver = gated_driver
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_connecting=1, circuit_after=3
    )
    waiters, _ = await open_the_circuit(pool, driver)
    await asyncio.gather(*waiters, return_exceptions=True)
    maintenance = pool._maintenance
    assert maintenance is not None
    await close_clean(pool, driver)
    assert maintenance.done()


async def test_circuit_opening_and_closing_are_logged(
    clock: FakeClock, gated_driver: AsyncFakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    driver = gated_driver
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, name="alog", max_connecting=1, circuit_after=3
    )
    with caplog.at_level(logging.DEBUG, logger="sqlgate"):
        waiters, _ = await open_the_circuit(pool, driver)
        await asyncio.gather(*waiters, return_exceptions=True)
        clock.now += 1.0
        await eventually(lambda: len(driver.pending) == 1, "the probe dial")
        driver.pending[0].land()
        await until(lambda: pool.stats().idle == 1, "the probe's connection")
    circuit = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if "circuit" in r.getMessage()
    ]
    assert circuit == [
        (
            logging.WARNING,
            "alog: circuit open after 3 failed dials in a row (last: "
            "OSError('connection refused #2')): acquires that find nothing idle "
            "fail at once until a probe connects",
        ),
        (logging.WARNING, "alog: circuit closed: a dial succeeded, service resumes"),
    ]
    await close_clean(pool, driver)
