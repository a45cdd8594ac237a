"""The circuit breaker (I9), step by step on a bare core with a fixed rng."""

from __future__ import annotations

import pytest

from sqlgate._core import (
    CIRCUIT_AFTER,
    CIRCUIT_BACKOFF,
    FAILED,
    REFILL_BACKOFF,
    SERVED,
    WAITING,
    Connect,
    Entry,
    InvariantError,
    Waiter,
)
from sqlgate.errors import CircuitOpen, ConnectError, PoolClosed
from tests.core.rig import Conn, Rig, force_knobs

FIRST, CAP = CIRCUIT_BACKOFF


def waiter_of(got: object) -> Waiter[Conn]:
    assert isinstance(got, Waiter)
    return got


def entry_of(got: object) -> Entry[Conn]:
    assert isinstance(got, Entry)
    return got


def open_circuit(rig: Rig, waiters: int = 3) -> list[Waiter[Conn]]:
    """Queue ``waiters`` callers, then fail dials until the circuit opens.

    Another caller queues whenever no dial is in flight, so each failure has
    a dial to fail.
    """
    queued = [waiter_of(rig.acquire()) for _ in range(waiters)]
    for i in range(rig.core.config.circuit_after):
        if not rig.dials:
            queued.append(waiter_of(rig.acquire()))
        rig.fail(OSError(f"refused {i}"))
        rig.check()
    assert rig.core.circuit_open
    return queued


def test_default_threshold_is_three() -> None:
    assert CIRCUIT_AFTER == 3
    assert Rig().core.config.circuit_after == 3


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, ValueError, "circuit_after must be >= 0, got -1"),
        (1.5, TypeError, "circuit_after must be an int, got 1.5"),
        (True, TypeError, "circuit_after must be an int, got True"),
        ("3", TypeError, "circuit_after must be an int, got '3'"),
    ],
)
def test_bad_threshold_is_refused(
    value: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Rig(circuit_after=value)
    rig = Rig()
    with pytest.raises(error, match=match):
        rig.core.set_circuit_after(value, 0.0)
    assert rig.core.config.circuit_after == 3


def test_failures_below_threshold_fail_one_waiter_each() -> None:
    rig = Rig(max_open=4, max_connecting=1)
    a, b, c = (waiter_of(rig.acquire()) for _ in range(3))
    first = OSError("refused 1")
    rig.fail(first)
    assert (a.state, a.error) == (FAILED, first)
    assert (b.state, c.state) == (WAITING, WAITING)
    assert len(rig.dials) == 1  # dialing again for b and c
    rig.fail(OSError("refused 2"))
    assert b.state == FAILED
    assert c.state == WAITING
    assert not rig.core.circuit_open
    assert not rig.core.stats().circuit_open
    rig.check()


def test_third_failure_opens_and_fails_every_waiter_at_once() -> None:
    rig = Rig(max_open=4, max_connecting=1)
    queued = [waiter_of(rig.acquire()) for _ in range(5)]
    rig.fail(OSError("refused 1"))
    rig.clock.advance(1.0)
    rig.fail(OSError("refused 2"))
    rig.clock.advance(1.0)
    last = OSError("refused 3")
    rig.fail(last)
    assert rig.core.circuit_open
    assert [w.state for w in queued] == [FAILED] * 5
    for w in queued[2:]:
        assert isinstance(w.error, CircuitOpen)
        assert isinstance(w.error, ConnectError)
        assert w.error.__cause__ is last
        assert w.error.unreachable_since == 2.0
        assert "database unreachable for 0.00 s" in str(w.error)
        assert "3 dials failed in a row" in str(w.error)
    # One exception object per caller: they are raised in different threads.
    assert len({id(w.error) for w in queued[2:]}) == 3
    assert rig.dials == []  # no dial until the probe is due
    s = rig.core.stats()
    assert (s.circuit_open, s.circuit_opens, s.waiting, s.dial_failures) == (
        True,
        1,
        0,
        3,
    )
    assert s.wait_duration == pytest.approx(0 + 1 + 2 + 2 + 2)  # a, b, then 3 x 2 s
    rig.check()


def test_acquire_while_open_fails_at_once_and_queues_nobody() -> None:
    rig = Rig(max_open=4)
    open_circuit(rig, waiters=1)
    before = rig.core.stats()
    rig.clock.advance(0.01)  # before the probe is due (25 ms with rng 0)
    with pytest.raises(CircuitOpen, match=r"unreachable for 0\.01 s") as info:
        rig.acquire()
    assert isinstance(info.value.__cause__, OSError)
    assert str(info.value.__cause__) == "refused 2"  # the third
    assert rig.core.outbox == []
    after = rig.core.stats()
    assert (after.waiting, after.wait_count, after.dialing) == (
        0,
        before.wait_count,
        0,
    )
    rig.check()


def test_idle_connections_are_still_served_while_open() -> None:
    rig = Rig(max_open=4, max_idle=4, max_connecting=1)
    a = waiter_of(rig.acquire())
    rig.connect()
    assert a.state == SERVED
    assert a.entry is not None
    open_circuit(rig, waiters=1)
    rig.release(a.entry)
    assert entry_of(rig.acquire()) is a.entry
    rig.check()


def test_expire_reports_the_probe_and_issues_exactly_one() -> None:
    rig = Rig(max_open=4)
    open_circuit(rig, waiters=1)
    due = FIRST * 0.5  # first delay, times the rng's 0.5 + 0.5 * 0.0
    assert rig.core.probe_at == pytest.approx(due)
    assert rig.expire() == pytest.approx(due)
    assert rig.dials == []
    rig.clock.advance(due)
    assert rig.expire() is None  # issued; nothing else to wake for
    assert len(rig.dials) == 1
    assert rig.expire() is None
    assert len(rig.dials) == 1  # one probe at a time
    with pytest.raises(CircuitOpen):
        rig.acquire()
    assert len(rig.dials) == 1
    rig.check()


def test_acquire_after_the_probe_is_due_issues_it_then_fails() -> None:
    rig = Rig(max_open=4)
    open_circuit(rig, waiters=1)
    rig.clock.advance(1.0)
    with pytest.raises(CircuitOpen):
        rig.core.acquire(rig.now)
    out = rig.file_effects()
    assert len(out) == 1
    assert isinstance(out[0], Connect)
    rig.check()


def test_failed_probes_back_off_exponentially_up_to_the_cap() -> None:
    rig = Rig(max_open=4)
    open_circuit(rig, waiters=1)
    delays = []
    for i in range(8):
        rig.clock.advance(rig.core.probe_at - rig.now)
        rig.expire()
        assert len(rig.dials) == 1
        rig.fail(OSError(f"probe {i}"))
        delays.append(round(rig.core.probe_at - rig.now, 6))
        rig.check()
    assert delays == [0.05, 0.1, 0.2, 0.25, 0.25, 0.25, 0.25, 0.25]
    assert rig.core.stats().circuit_opens == 1
    with pytest.raises(CircuitOpen, match="11 dials failed in a row") as info:
        rig.acquire()
    assert str(info.value.__cause__) == "probe 7"


def test_jitter_comes_from_the_rng() -> None:
    rig = Rig(max_open=4, rng_value=0.5)
    open_circuit(rig, waiters=1)
    assert rig.core.probe_at - rig.now == pytest.approx(FIRST * 0.75)
    high = Rig(max_open=4, rng_value=0.999999)
    open_circuit(high, waiters=1)
    assert high.core.probe_at - high.now == pytest.approx(FIRST, rel=1e-5)


def test_successful_probe_closes_the_circuit_and_service_resumes() -> None:
    rig = Rig(max_open=4, max_idle=2)
    open_circuit(rig, waiters=2)
    rig.clock.advance(1.0)
    rig.expire()
    probe = rig.connect()
    assert not rig.core.circuit_open
    assert probe.state == 2  # IDLE: nobody waited, it waits for the next one
    assert entry_of(rig.acquire()) is probe
    w = waiter_of(rig.acquire())  # queues again, and dials for it
    assert len(rig.dials) == 1
    rig.connect()
    assert w.state == SERVED
    s = rig.core.stats()
    assert (s.circuit_open, s.circuit_opens, s.in_use) == (False, 1, 2)
    rig.check()


def test_a_dial_in_flight_when_it_opens_is_the_probe() -> None:
    rig = Rig(max_open=4, max_connecting=2)
    waiters = [waiter_of(rig.acquire()) for _ in range(4)]
    assert len(rig.dials) == 2
    rig.fail(OSError("1"))
    assert len(rig.dials) == 2
    rig.fail(OSError("2"))
    rig.fail(OSError("3"), ticket=rig.dials[0])
    assert rig.core.circuit_open
    assert [w.state for w in waiters] == [FAILED] * 4
    assert len(rig.dials) == 1  # issued before it opened: no second one
    rig.clock.advance(10.0)
    assert rig.expire() is None
    assert len(rig.dials) == 1
    rig.connect()
    assert not rig.core.circuit_open
    rig.check()


def test_no_probe_while_every_slot_is_in_use() -> None:
    rig = Rig(max_open=1, max_idle=1)
    a = waiter_of(rig.acquire())
    rig.connect()
    assert a.entry is not None
    rig.core.set_max_open(2, rig.now)
    rig.file_effects()
    b = waiter_of(rig.acquire())
    rig.fail(OSError("1"))
    assert b.state == FAILED
    for i in (2, 3):
        c = waiter_of(rig.acquire())
        rig.fail(OSError(str(i)))
        assert c.state == FAILED
    assert rig.core.circuit_open
    rig.core.set_max_open(1, rig.now)
    rig.file_effects()
    rig.clock.advance(5.0)
    rig.expire()
    assert rig.dials == []  # the one slot is in use
    rig.release(a.entry)  # goes idle: served to the next caller
    assert entry_of(rig.acquire()) is a.entry
    rig.check()


def test_threshold_zero_disables_the_breaker() -> None:
    rig = Rig(max_open=4, max_connecting=1, circuit_after=0)
    queued = [waiter_of(rig.acquire()) for _ in range(10)]
    for i in range(9):
        rig.fail(OSError(str(i)))
        assert queued[i].state == FAILED
        assert queued[i + 1].state == WAITING
        assert not rig.core.circuit_open
        rig.check()
    assert len(rig.dials) == 1


def test_lowering_the_threshold_to_zero_closes_an_open_circuit() -> None:
    rig = Rig(max_open=4, min_idle=1, max_idle=2)
    for i in range(3):
        rig.clock.advance(1.0)  # past the min_idle refill backoff
        rig.expire()
        rig.fail(OSError(str(i)))
    assert rig.core.circuit_open
    rig.core.set_circuit_after(0, rig.now)
    rig.file_effects()
    assert not rig.core.circuit_open
    w = waiter_of(rig.acquire())
    assert len(rig.dials) == 1
    rig.connect()
    assert w.state == SERVED
    rig.check()


def test_raising_the_threshold_above_the_failures_closes_it() -> None:
    rig = Rig(max_open=4)
    open_circuit(rig, waiters=1)
    rig.core.set_circuit_after(5, rig.now)
    assert not rig.core.circuit_open
    rig.core.set_circuit_after(2, rig.now)  # 3 failures >= 2, but it opens
    assert not rig.core.circuit_open  # only on the next failure
    waiter_of(rig.acquire())
    rig.fail(OSError("4"))
    assert rig.core.circuit_open
    rig.check()


def test_close_while_open() -> None:
    rig = Rig(max_open=4)
    open_circuit(rig, waiters=1)
    rig.close()
    with pytest.raises(PoolClosed):
        rig.acquire()
    rig.clock.advance(5.0)
    assert rig.expire() is None
    assert rig.dials == []
    rig.check()


def test_check_names_i9() -> None:
    rig = Rig(max_open=4)
    open_circuit(rig, waiters=1)
    rig.clock.advance(1.0)
    rig.expire()  # the probe is in flight, so I5 holds for one waiter
    rig.core._waiters.append(Waiter(rig.now))
    with pytest.raises(InvariantError, match="I9 circuit"):
        rig.core.check()
    rig.core._waiters.clear()
    rig.core.check()
    force_knobs(rig.core, circuit_after=10)
    with pytest.raises(InvariantError, match="I9 circuit"):
        rig.core.check()


def test_renew_keeps_knobs_and_forgets_state() -> None:
    rig = Rig(max_open=7, max_idle=3, min_idle=1, circuit_after=5, max_waiting=9)
    rig.expire()
    fresh = rig.core.renew()
    assert fresh.config == rig.core.config
    knobs = fresh.config
    assert (knobs.max_open, knobs.max_idle, knobs.min_idle) == (7, 3, 1)
    assert (knobs.circuit_after, knobs.max_waiting, knobs.name) == (5, 9, "pool")
    s = fresh.stats()
    assert (s.open_connections, s.dialing, s.dials) == (0, 0, 0)
    fresh.check()


# -- programming errors are no failed dials (issue 14) ---------------------------


@pytest.mark.parametrize(
    "error",
    [
        TypeError("connect() takes 0 arguments"),
        ValueError("bad port"),
        AttributeError("no cursor"),
        KeyError("host"),
        ImportError("no driver"),
        NotImplementedError("later"),
    ],
)
def test_issue14_programming_error_fails_its_waiter_and_counts_nothing(
    error: BaseException,
) -> None:
    rig = Rig(max_open=2, circuit_after=2)
    waiters = [waiter_of(rig.acquire()) for _ in range(3)]
    assert len(rig.dials) == 2
    for n in range(1, 6):
        rig.fail(error)
        rig.check()
        # Each failure fails exactly the head waiter, with the error itself.
        assert waiters[0].state == FAILED
        assert waiters[0].error is error
        assert not rig.core.circuit_open
        assert rig.core.last_dial_error is None
        assert not rig.core.failing
        s = rig.core.stats()
        assert (s.dial_failures, s.dials) == (0, 0)
        waiters.pop(0)
        if not waiters:
            waiters.append(waiter_of(rig.acquire()))
        assert n == rig.core._bugs_in_row
    # The expiry tick has nothing to probe.
    assert rig.core.expire(rig.now) is None
    # One good dial resets the streak.
    rig.connect()
    rig.check()
    assert rig.core._bugs_in_row == 0


def test_issue14_oserror_that_is_a_valueerror_is_a_failed_dial() -> None:
    import ssl

    rig = Rig(max_open=1, circuit_after=2)
    waiter_of(rig.acquire())
    for _ in range(2):
        rig.fail(ssl.SSLCertVerificationError("certificate verify failed"))
        if not rig.core.circuit_open:
            waiter_of(rig.acquire())
    assert rig.core.circuit_open
    assert rig.core.stats().dial_failures == 2


def test_issue14_programming_error_between_failures_neither_counts_nor_resets() -> None:
    rig = Rig(max_open=1, circuit_after=3)
    waiter_of(rig.acquire())
    rig.fail(OSError("refused"))
    waiter_of(rig.acquire())
    rig.fail(TypeError("bug"))
    waiter_of(rig.acquire())
    rig.fail(OSError("refused"))
    assert rig.core._fails_in_row == 2
    assert not rig.core.circuit_open
    waiter_of(rig.acquire())
    rig.fail(OSError("refused"))
    assert rig.core.circuit_open
    assert rig.core.stats().dial_failures == 3
    rig.check()


def test_issue14_programming_error_of_the_probe_keeps_the_circuit_backing_off() -> None:
    rig = Rig(max_open=2, circuit_after=2)
    open_circuit(rig, waiters=1)
    rig.clock.advance(rig.core.probe_at - rig.now)
    rig.core.expire(rig.now)
    rig.file_effects()
    assert len(rig.dials) == 1
    before = rig.core.stats().dial_failures
    rig.fail(TypeError("bug in the probe"))
    rig.check()
    # Counted while open: the probe is rescheduled later, not issued again now.
    assert rig.core.circuit_open
    assert rig.core.probe_at > rig.now
    assert rig.core.stats().dial_failures == before + 1
    assert rig.dials == []


def test_issue14_refill_backs_off_after_programming_errors() -> None:
    rig = Rig(max_open=2, max_idle=2, min_idle=1, max_connecting=1)
    first, cap = REFILL_BACKOFF
    rig.core.expire(rig.now)
    rig.file_effects()
    for n in range(1, 10):
        assert len(rig.dials) == 1, n
        rig.fail(ValueError("bad option"))
        rig.check()
        delay = min(cap, first * 2 ** (n - 1))
        assert rig.core._refill_at == pytest.approx(rig.now + delay)
        assert rig.dials == []
        assert not rig.core.circuit_open
        rig.clock.advance(delay)
        rig.core.expire(rig.now)
        rig.file_effects()
    assert rig.core.stats().dial_failures == 0
