"""What sqlgate logs under the ``sqlgate`` logger; the fast path logs nothing."""

from __future__ import annotations

import logging

import pytest

from sqlgate import ConnectError, Pool
from tests.fakes import FakeDriver, wait_until
from tests.observe.helpers import close_clean, settle


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "sqlgate"]


def test_dial_failure_is_a_warning_naming_the_pool_and_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver(fail_with=OSError("connection refused"))
    pool = Pool(driver.connect, name="logpool", max_open=1)
    with caplog.at_level(logging.DEBUG, logger="sqlgate"):
        with pytest.raises(ConnectError):
            pool.acquire()
        settle(pool)
    assert (
        logging.WARNING,
        "logpool: connect failed: OSError('connection refused')",
    ) in records(caplog)
    close_clean(pool, driver)


def test_reset_failure_and_the_discard_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, name="logpool")
    conn = pool.acquire()
    conn.in_transaction = True
    conn.rollback_error = OSError("server closed the connection")
    with caplog.at_level(logging.INFO, logger="sqlgate"):
        pool.release(conn)
        settle(pool)
    got = records(caplog)
    assert (
        logging.INFO,
        "logpool: discarding a connection that failed reset: "
        "OSError('server closed the connection')",
    ) in got
    assert (logging.INFO, f"logpool: discarding a broken connection {conn!r}") in got
    assert pool.stats().broken_closed == 1
    close_clean(pool, driver)


def test_broken_release_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, name="logpool")
    conn = pool.acquire()
    with caplog.at_level(logging.INFO, logger="sqlgate"):
        pool.release(conn, broken=True)
        settle(pool)
    assert records(caplog) == [
        (logging.INFO, f"logpool: discarding a broken connection {conn!r}")
    ]
    close_clean(pool, driver)


def test_close_error_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, name="logpool", max_idle=0)
    conn = pool.acquire()
    conn.close_error = OSError("broken pipe")
    with caplog.at_level(logging.INFO, logger="sqlgate"):
        pool.release(conn)  # max_idle=0: closed at once
        settle(pool)
    assert records(caplog) == [
        (logging.INFO, "logpool: error closing a connection: OSError('broken pipe')")
    ]
    close_clean(pool, driver)


def test_the_fast_path_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, name="logpool")
    conn = pool.acquire()
    pool.release(conn)
    with caplog.at_level(logging.DEBUG, logger="sqlgate"):
        for _ in range(10):
            conn = pool.acquire()
            pool.release(conn)
    assert records(caplog) == []
    close_clean(pool, driver)


def test_circuit_opening_and_closing_are_logged_once_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = [OSError(f"refused {n}") for n in (1, 2, 3)]
    driver = FakeDriver(fail_with=[*refused, None])
    pool = Pool(
        driver.connect, name="cb", max_open=1, max_connecting=1, circuit_after=3
    )
    with caplog.at_level(logging.DEBUG, logger="sqlgate"):
        for _ in refused:
            with pytest.raises(ConnectError):
                pool.acquire()
        assert pool.stats().circuit_open
        # The probe (the maintenance thread, after its backoff) connects.
        wait_until(lambda: not pool.stats().circuit_open, what="the probe")
        # The probe's thread logs just after it closes the circuit (outside
        # the lock): wait for its record, then require exactly these two.
        wait_until(
            lambda: any("circuit closed" in msg for _, msg in records(caplog)),
            what="the probe's record",
        )
        settle(pool)
    circuit = [(lvl, msg) for lvl, msg in records(caplog) if "circuit" in msg]
    assert circuit == [
        (
            logging.WARNING,
            "cb: circuit open after 3 failed dials in a row (last: "
            "OSError('refused 3')): acquires that find nothing idle fail at once "
            "until a probe connects",
        ),
        (logging.WARNING, "cb: circuit closed: a dial succeeded, service resumes"),
    ]
    close_clean(pool, driver)
