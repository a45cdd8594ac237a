"""Pool (threads): a programming error in a dial is the caller's, not an outage.

Issue 14: a connect callable that raises TypeError, ValueError or the like
against a healthy server reaches the caller as that very error; it never
counts as a failed dial, never opens the circuit breaker and never starts the
probe loop. Only connection failures count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sqlgate import ConnectError, Pool
from tests.fakes import FakeDriver, settled

LeakCheck = Callable[[Pool[Any], FakeDriver], None]


@pytest.mark.parametrize(
    "error",
    [
        TypeError("connect() got an unexpected keyword argument 'hots'"),
        ValueError("invalid literal for int() with base 10: 'x'"),
        AttributeError("'NoneType' object has no attribute 'cursor'"),
        KeyError("host"),
        ImportError("No module named 'nodriver'"),
    ],
    ids=type,
)
def test_issue14_programming_error_reaches_the_caller_and_opens_nothing(
    error: Exception, leak_check: LeakCheck
) -> None:
    driver = FakeDriver(fail_with=error)
    pool = Pool(driver.connect, max_open=2, circuit_after=2, name="p")
    leak_check(pool, driver)
    for n in range(1, 6):
        with pytest.raises(type(error)) as info:
            pool.acquire(timeout=10)
        assert info.value is error  # the error itself, not a ConnectError
        settled(pool)
        s = pool.stats()
        assert (driver.attempts, s.dials, s.dial_failures) == (n, 0, 0)
        assert (s.open_connections, s.waiting) == (0, 0)
        assert not pool._core.circuit_open
        assert pool._core.last_dial_error is None
        assert pool._maintenance is None  # no probe loop
    # Nothing dials behind the caller's back.
    settled(pool)
    assert driver.attempts == 5
    driver.fail_with = None
    conn = pool.acquire(timeout=10)
    pool.release(conn)
    assert (driver.attempts, pool.stats().dials) == (6, 1)


def test_issue14_connection_failures_still_open_the_circuit(
    leak_check: LeakCheck,
) -> None:
    driver = FakeDriver(fail_with=ConnectionRefusedError("refused"))
    pool = Pool(driver.connect, max_open=2, circuit_after=2, name="p")
    leak_check(pool, driver)
    for _ in range(2):
        with pytest.raises(ConnectError) as info:
            pool.acquire(timeout=10)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        settled(pool)
    assert pool._core.circuit_open
    assert pool.stats().dial_failures == 2
    driver.fail_with = None


def test_issue14_programming_errors_between_failures_do_not_close_the_gap(
    leak_check: LeakCheck,
) -> None:
    refused = ConnectionRefusedError("refused")
    bug = TypeError("bad argument")
    driver = FakeDriver(fail_with=[refused, bug, refused])
    pool = Pool(driver.connect, max_open=1, circuit_after=3, name="p")
    leak_check(pool, driver)
    with pytest.raises(ConnectError):
        pool.acquire(timeout=10)
    settled(pool)
    with pytest.raises(TypeError):
        pool.acquire(timeout=10)
    settled(pool)
    with pytest.raises(ConnectError):
        pool.acquire(timeout=10)
    settled(pool)
    s = pool.stats()
    assert (driver.attempts, s.dial_failures) == (3, 2)
    assert not pool._core.circuit_open
    conn = pool.acquire(timeout=10)
    pool.release(conn)
