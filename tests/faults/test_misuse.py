"""Misuse: each wrong call gets a clear error, and no count leaks."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from sqlgate import ConnectError, Pool, PoolClosed, PoolTimeout
from tests.fakes import FakeDriver, Gate
from tests.faults.load import wait_for


def settled(pool: Pool[Any]) -> None:
    wait_for(
        lambda: pool.stats().dialing == 0 and pool.stats().closing == 0, 5, "settle"
    )
    pool._core.check()


def test_release_twice() -> None:
    pool: Pool[Any] = Pool(FakeDriver().connect)
    conn = pool.acquire()
    pool.release(conn)
    with pytest.raises(ValueError, match=r"not in use \(released twice\?\)"):
        pool.release(conn)
    assert pool.stats().idle == 1
    pool.close()


def test_release_foreign_object() -> None:
    pool: Pool[Any] = Pool(FakeDriver().connect)
    with pytest.raises(ValueError, match="not a connection of this pool"):
        pool.release(object())
    pool.close()


def test_acquire_after_close() -> None:
    pool: Pool[Any] = Pool(FakeDriver().connect)
    pool.close()
    with pytest.raises(PoolClosed, match="is closed"):
        pool.acquire()


def test_close_while_waiters_wait() -> None:
    pool: Pool[Any] = Pool(FakeDriver().connect, max_open=1)
    conn = pool.acquire()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.acquire(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wait) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: pool.stats().waiting == 3, 5, "waiters")
    pool.close()
    for t in threads:
        t.join(5)
    assert [type(e) for e in errors] == [PoolClosed] * 3
    pool.release(conn)
    settled(pool)
    assert pool.stats().open_connections == 0


def test_close_from_another_thread_while_in_use() -> None:
    driver = FakeDriver()
    pool: Pool[Any] = Pool(driver.connect)
    conn = pool.acquire()
    t = threading.Thread(target=pool.close)
    t.start()
    t.join(5)
    pool.release(conn)
    settled(pool)
    assert driver.opened - driver.closed == 0


def test_close_from_inside_a_hook() -> None:
    driver = FakeDriver()
    holder: list[Pool[Any]] = []
    try:
        pool: Pool[Any] = Pool(driver.connect, on_release=lambda c: holder[0].close())
    except TypeError:
        pytest.skip("no hooks in this Pool")
    holder.append(pool)
    conn = pool.acquire()
    pool.release(conn)
    assert pool.closed
    settled(pool)
    assert driver.opened - driver.closed == 0


@pytest.mark.parametrize(
    ("knob", "value", "error"),
    [
        ("max_open", -1, ValueError),
        ("max_open", math.nan, TypeError),
        ("max_open", 2**70, None),
        ("min_idle", -1, ValueError),
        ("max_connecting", -1, ValueError),
        ("max_waiting", -1, ValueError),
        ("circuit_after", -1, ValueError),
        ("conn_max_lifetime", 0, ValueError),
        ("conn_max_lifetime", -1.0, ValueError),
        ("conn_max_lifetime", math.nan, ValueError),
        ("conn_max_lifetime", 1e300, None),
        ("conn_max_idle_time", 0, ValueError),
        ("acquire_timeout", -1, ValueError),
        ("acquire_timeout", math.nan, ValueError),
        ("acquire_timeout", 0, None),
        ("leak_threshold", 0, ValueError),
        ("leak_threshold", -5, ValueError),
        ("leak_threshold", math.nan, ValueError),
    ],
)
def test_knob_values(knob: str, value: object, error: type[Exception] | None) -> None:
    kwargs: dict[str, Any] = {knob: value}
    if error is None:
        Pool(FakeDriver().connect, **kwargs).close()
        return
    with pytest.raises(error, match=knob):
        Pool(FakeDriver().connect, **kwargs)


@pytest.mark.parametrize("bad", [-1, math.nan, "1"])
def test_acquire_timeout_argument(bad: object) -> None:
    pool: Pool[Any] = Pool(FakeDriver().connect, max_open=1)
    conn = pool.acquire()
    with pytest.raises((ValueError, TypeError), match="timeout"):
        pool.acquire(timeout=bad)  # type: ignore[arg-type]
    settled(pool)
    assert pool.stats().waiting == 0
    pool.release(conn)
    pool.close()


def test_connect_returns_none() -> None:
    driver = FakeDriver(return_none=True)
    pool: Pool[Any] = Pool(driver.connect, circuit_after=0)
    with pytest.raises(TypeError, match="returned None"):
        pool.acquire(timeout=5)
    settled(pool)
    assert pool.stats().open_connections == 0
    pool.close()


def test_connect_hangs_bounded_by_acquire_timeout_and_no_count_leaks() -> None:
    gate = Gate()
    driver = FakeDriver(connect_gate=gate)
    pool: Pool[Any] = Pool(driver.connect, max_open=1)
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=0.05)
    assert pool.stats().dialing == 1
    gate.open()  # the hung dial finally returns: its connection goes idle
    settled(pool)
    s = pool.stats()
    assert (s.open_connections, s.idle, s.in_use, s.dialing) == (1, 1, 0, 0)
    pool.close()
    settled(pool)
    assert driver.opened - driver.closed == 0


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_connect_raises_base_exception(exc: BaseException) -> None:
    driver = FakeDriver(fail_with=exc)
    pool: Pool[Any] = Pool(driver.connect, circuit_after=0)
    with pytest.raises(ConnectError) as info:
        pool.acquire(timeout=5)
    assert info.value.__cause__ is exc
    settled(pool)
    s = pool.stats()
    assert (s.open_connections, s.dialing, s.dial_failures) == (0, 0, 1)
    pool.close()
