"""Pool and durations longer than a thread can wait (issue 11, defect 5).

The threaded twin of tests/aio/test_aiopool_durations.py: above
``threading.TIMEOUT_MAX`` a duration means "no limit", as ``math.inf`` does,
and a waiting acquire works; a bad one still names its knob.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sqlgate import Pool
from tests.fakes import FakeConn, FakeDriver, assert_ledger, wait_until

LeakCheck = Callable[[Pool[Any], FakeDriver], None]


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.mark.parametrize("forever", [sys.maxsize, 1e10, 10**400, math.inf])
def test_issue11_defect5_huge_timeouts_mean_forever(
    driver: FakeDriver, leak_check: LeakCheck, forever: float
) -> None:
    pool = Pool(
        driver.connect,
        max_open=1,
        acquire_timeout=forever,
        conn_max_lifetime=forever,
        conn_max_idle_time=forever,
        leak_threshold=forever,
    )
    leak_check(pool, driver)
    assert pool._timeout is None
    assert pool._core.config.conn_max_lifetime is None
    assert pool._core.config.conn_max_idle_time is None
    got: list[FakeConn] = []
    errors: list[BaseException] = []

    def waiter(timeout: float | None) -> None:
        try:
            got.append(pool.acquire(timeout))
        except BaseException as exc:
            errors.append(exc)

    for per_call in (None, forever):
        got.clear()
        c1 = pool.acquire()

        thread = threading.Thread(target=waiter, args=(per_call,))
        thread.start()
        wait_until(lambda: pool.stats().waiting == 1)  # blocked: no OverflowError
        pool.release(c1)
        thread.join(10)
        assert errors == []
        assert got == [c1]
        pool.release(c1)
    pool.set_conn_max_lifetime(forever)
    pool.set_conn_max_idle_time(forever)
    assert pool.close(timeout=forever) == 0
    assert_ledger(pool, driver)


def test_issue11_defect5_threading_timeout_max_is_the_bound(
    driver: FakeDriver, leak_check: LeakCheck
) -> None:
    pool = Pool(driver.connect, acquire_timeout=threading.TIMEOUT_MAX)
    leak_check(pool, driver)
    assert pool._timeout == threading.TIMEOUT_MAX  # the longest real wait
    pool2 = Pool(driver.connect, acquire_timeout=threading.TIMEOUT_MAX * 2)
    leak_check(pool2, driver)
    assert pool2._timeout is None


@pytest.mark.parametrize(
    ("knob", "bad", "message"),
    [
        ("acquire_timeout", -1, "acquire_timeout must be >= 0 seconds or None"),
        ("conn_max_lifetime", -(10**400), "conn_max_lifetime must be > 0 seconds"),
        ("leak_threshold", math.nan, "leak_threshold must be a number of seconds"),
    ],
)
def test_issue11_defect5_bad_durations_still_name_the_knob(
    driver: FakeDriver, knob: str, bad: float, message: str
) -> None:
    knobs: dict[str, Any] = {knob: bad}
    with pytest.raises(ValueError, match=message):
        Pool(driver.connect, **knobs)
