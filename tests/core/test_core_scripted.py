"""Step-by-step transitions of PoolCore: state and effects after every step."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import pytest

from sqlgate._core import (
    ABANDONED,
    CLOSED,
    CLOSING,
    ENTRY_MOVES,
    FAILED,
    IDLE,
    IN_USE,
    NAMES,
    SERVED,
    WAITER_MOVES,
    WAITING,
    Close,
    Connect,
    Entry,
    InvariantError,
    PoolConfig,
    PoolCore,
    Waiter,
    Wake,
    machine,
    validate_duration,
)
from sqlgate.errors import PoolClosed, TooManyWaiters
from tests.core.rig import Conn, Rig, force_knobs


def entry_of(got: Entry[Conn] | Waiter[Conn]) -> Entry[Conn]:
    assert isinstance(got, Entry), got
    return got


def waiter_of(got: Entry[Conn] | Waiter[Conn]) -> Waiter[Conn]:
    assert isinstance(got, Waiter), got
    return got


def served(waiter: Waiter[Conn]) -> Entry[Conn]:
    assert waiter.state == SERVED
    assert waiter.entry is not None
    return waiter.entry


def full_state(core: PoolCore[Any]) -> tuple[object, ...]:
    """Everything an illegal input must leave untouched."""
    return (
        core.stats(),
        core.snapshot(),
        tuple(id(e) for e in core._idle),
        tuple(id(w) for w in core._waiters),
        tuple(sorted(core._registry)),
        tuple(e.state for e in core._registry.values()),
        tuple(core._tickets),
        len(core.outbox),
    )


# -- the simple paths ------------------------------------------------------------------


def test_first_acquire_queues_and_dials() -> None:
    rig = Rig(max_open=2)
    w = waiter_of(rig.acquire())
    assert w.state == WAITING
    assert [type(e) for e in rig.last] == [Connect]
    assert rig.dials == [1]
    assert rig.counts() == (1, 1, 0, 0, 0, 1)
    rig.check()

    entry = rig.connect()
    assert served(w) is entry
    assert entry.state == IN_USE
    assert [type(e) for e in rig.last] == [Wake]
    assert rig.woken == [w]
    assert rig.counts() == (1, 0, 0, 1, 0, 0)
    rig.check()

    rig.release(entry)
    assert entry.state == IDLE
    assert rig.last == []
    assert rig.counts() == (1, 0, 1, 0, 0, 0)
    rig.check()

    again = entry_of(rig.acquire())
    assert again is entry
    assert rig.last == []
    assert rig.counts() == (1, 0, 0, 1, 0, 0)
    s = rig.core.stats()
    assert (s.acquires, s.wait_count, s.dials) == (2, 1, 1)
    rig.check()


def test_idle_reused_most_recently_returned_first() -> None:
    rig = Rig(max_open=3, max_idle=3, max_connecting=2)
    waiters = [waiter_of(rig.acquire()) for _ in range(3)]
    assert rig.dials == [1, 2]  # max_connecting=2 holds the third back
    e1 = rig.connect()
    assert rig.dials == [2, 3]
    e2 = rig.connect()
    e3 = rig.connect()
    assert [served(w) for w in waiters] == [e1, e2, e3]  # FIFO
    for e in (e1, e2, e3):
        rig.release(e)
    assert list(rig.core._idle) == [e1, e2, e3]
    assert entry_of(rig.acquire()) is e3
    assert entry_of(rig.acquire()) is e2
    rig.check()


def test_broken_release_closes_and_redials_for_waiter() -> None:
    rig = Rig(max_open=1)
    waiter_of(rig.acquire())
    e1 = rig.connect()
    w2 = waiter_of(rig.acquire())
    assert rig.dials == []  # max_open reached
    rig.release(e1, broken=True)
    assert e1.state == CLOSING
    assert [type(e) for e in rig.last] == [Close]
    assert rig.closes[0].reason == "broken"
    assert rig.counts() == (1, 0, 0, 0, 1, 1)
    rig.check()
    rig.finish_close()
    assert e1.state == CLOSED
    assert [type(e) for e in rig.last] == [Connect]  # the slot is free now
    assert rig.counts() == (1, 1, 0, 0, 0, 1)
    rig.check()
    e2 = rig.connect()
    assert served(w2) is e2
    assert rig.core.stats().broken_closed == 1
    rig.check()


# -- illegal input raises and changes nothing ------------------------------------------


def test_release_twice_raises_and_changes_nothing() -> None:
    rig = Rig(max_open=2)
    rig.acquire()
    e = rig.connect()
    rig.release(e)
    before = full_state(rig.core)
    with pytest.raises(ValueError, match=r"is not in use \(released twice\?\)"):
        rig.core.release(e, rig.now)
    assert full_state(rig.core) == before
    rig.check()


def test_release_of_a_foreign_entry_raises_and_changes_nothing() -> None:
    rig = Rig(max_open=2)
    other = Rig(max_open=2)
    rig.acquire()
    rig.connect()
    other.acquire()
    foreign = other.connect()
    assert foreign.state == IN_USE
    before = full_state(rig.core)
    with pytest.raises(ValueError, match="not a connection of this pool"):
        rig.core.release(foreign, rig.now)
    assert full_state(rig.core) == before
    assert foreign.state == IN_USE
    rig.check()
    other.check()


def test_closed_on_a_foreign_closing_entry_raises_and_changes_nothing() -> None:
    rig = Rig(max_open=2)
    other = Rig(max_open=2)
    rig.acquire()
    mine = rig.connect()
    rig.release(mine, broken=True)
    other.acquire()
    foreign = other.connect()
    other.release(foreign, broken=True)
    assert foreign.state == CLOSING
    before = full_state(rig.core)
    with pytest.raises(ValueError, match="not a connection of this pool"):
        rig.core.close_done(foreign, rig.now)
    assert foreign.state == CLOSING
    assert full_state(rig.core) == before
    rig.check()


def test_unknown_ticket_raises_and_changes_nothing() -> None:
    rig = Rig(max_open=2)
    rig.acquire()
    before = full_state(rig.core)
    with pytest.raises(ValueError, match="ticket 7 is not in flight"):
        rig.core.connected(7, Conn(99), rig.now)
    with pytest.raises(ValueError, match="ticket 7 is not in flight"):
        rig.core.connect_failed(7, OSError("x"), rig.now)
    assert full_state(rig.core) == before
    rig.check()


def test_connected_twice_raises_and_changes_nothing() -> None:
    rig = Rig(max_open=2)
    rig.acquire()
    rig.connect(ticket=1)
    before = full_state(rig.core)
    with pytest.raises(ValueError, match="ticket 1 is not in flight"):
        rig.core.connected(1, Conn(50), rig.now)
    with pytest.raises(ValueError, match="ticket 1 is not in flight"):
        rig.core.connect_failed(1, OSError("late"), rig.now)
    assert full_state(rig.core) == before
    rig.check()


def test_same_connection_registered_twice_raises_and_changes_nothing() -> None:
    rig = Rig(max_open=3)
    rig.acquire()
    rig.acquire()
    e1 = rig.connect(ticket=1)
    before = full_state(rig.core)
    with pytest.raises(ValueError, match="c1 is already registered"):
        rig.core.connected(2, e1.conn, rig.now)
    assert full_state(rig.core) == before
    rig.check()


def test_closed_on_a_non_closing_entry_raises_and_changes_nothing() -> None:
    rig = Rig(max_open=2)
    rig.acquire()
    e = rig.connect()
    for state in (IN_USE, IDLE):
        assert e.state == state
        before = full_state(rig.core)
        with pytest.raises(ValueError, match="is not being closed"):
            rig.core.close_done(e, rig.now)
        assert full_state(rig.core) == before
        assert e.state == state
        if state == IN_USE:
            rig.release(e)
    rig.close()
    rig.finish_close()
    assert e.state == CLOSED
    before = full_state(rig.core)
    with pytest.raises(ValueError, match="is not being closed"):
        rig.core.close_done(e, rig.now)
    assert full_state(rig.core) == before
    rig.check()


def test_lookup_and_holds() -> None:
    rig = Rig(max_open=2)
    rig.acquire()
    e = rig.connect()
    assert rig.core.lookup(e.conn) is e
    assert rig.core.holds(e.conn)
    assert not rig.core.holds(Conn(5))
    with pytest.raises(ValueError, match="c5 is not a connection of this pool"):
        rig.core.lookup(Conn(5))
    rig.release(e)
    with pytest.raises(ValueError, match=r"c1 is not in use \(released twice\?\)"):
        rig.core.lookup(e.conn)
    assert rig.core.holds(e.conn)


def test_check_names_the_broken_invariant() -> None:
    rig = Rig(max_open=2)
    rig.acquire()
    e = rig.connect()
    rig.release(e)
    rig.core.num_open += 1
    with pytest.raises(InvariantError, match="I1 conservation"):
        rig.core.check()
    rig.core.num_open -= 1
    rig.core._dials += 1
    with pytest.raises(InvariantError, match="I2 ledger"):
        rig.core.check()
    rig.core._dials -= 1
    force_knobs(rig.core, max_open=0)
    rig.core.check()


# -- Go issue 6593: a dial that lands after its waiter was served -------------------


def test_go6593_late_dial_ends_idle() -> None:
    rig = Rig(max_open=3, max_idle=2)
    rig.acquire()
    e1 = rig.connect()
    w = waiter_of(rig.acquire())
    assert rig.dials == [2]
    assert rig.counts() == (2, 1, 0, 1, 0, 1)
    rig.release(e1)  # the release serves the waiter before the dial lands
    assert served(w) is e1
    assert rig.counts() == (2, 1, 0, 1, 0, 0)
    rig.check()
    e2 = rig.connect()  # the dial lands: nobody waits for it
    assert e2.state == IDLE
    assert rig.last == []
    assert rig.counts() == (2, 0, 1, 1, 0, 0)
    rig.check()


def test_go6593_late_dial_with_idle_full_is_closed() -> None:
    rig = Rig(max_open=3, max_idle=1)
    rig.acquire()
    rig.acquire()
    e1 = rig.connect()
    e2 = rig.connect()
    w = waiter_of(rig.acquire())
    assert rig.dials == [3]
    rig.release(e1)
    assert served(w) is e1
    rig.release(e2)
    assert e2.state == IDLE  # the idle set (cap 1) is now full
    assert rig.counts() == (3, 1, 1, 1, 0, 0)
    rig.check()
    e3 = rig.connect()
    assert e3.state == CLOSING
    assert [(type(x), x.reason) for x in rig.last] == [(Close, "max_idle")]
    assert rig.counts() == (3, 0, 1, 1, 1, 0)
    assert rig.core.stats().max_idle_closed == 1
    rig.check()
    rig.finish_close()
    assert rig.counts() == (2, 0, 1, 1, 0, 0)
    assert (rig.opened, rig.closed) == (3, 1)
    rig.check()


# -- a timeout racing a hand-off -------------------------------------------------------


def test_abandon_waiting_leaves_queue_and_counts_timeout() -> None:
    rig = Rig(max_open=1)
    rig.acquire()
    e1 = rig.connect()
    w = waiter_of(rig.acquire())
    rig.clock.advance(2.0)
    rig.abandon(w, timed_out=True)
    assert w.state == ABANDONED
    assert rig.last == []
    assert rig.counts() == (1, 0, 0, 1, 0, 0)
    s = rig.core.stats()
    assert (s.timeouts, s.wait_duration) == (1, 2.0)
    rig.check()
    rig.abandon(w)  # abandoning twice is a no-op
    assert rig.core.stats().timeouts == 1
    rig.release(e1)
    assert e1.state == IDLE
    rig.check()


def test_served_then_abandoned_goes_to_next_waiter() -> None:
    rig = Rig(max_open=1)
    rig.acquire()
    e1 = rig.connect()
    w1 = waiter_of(rig.acquire())
    w2 = waiter_of(rig.acquire())
    rig.release(e1)
    assert served(w1) is e1
    rig.abandon(w1, timed_out=True)  # its timeout fired as the hand-off happened
    assert w1.state == ABANDONED
    assert w1.entry is None
    assert served(w2) is e1
    assert rig.woken[-2:] == [w1, w2]
    assert rig.counts() == (1, 0, 0, 1, 0, 0)
    assert rig.core.stats().timeouts == 0  # it did get a connection
    rig.check()


def test_served_then_abandoned_goes_idle() -> None:
    rig = Rig(max_open=1)
    w = waiter_of(rig.acquire())
    e1 = rig.connect()
    assert served(w) is e1
    rig.abandon(w, timed_out=False)
    assert e1.state == IDLE
    assert rig.counts() == (1, 0, 1, 0, 0, 0)
    rig.check()


def test_served_then_abandoned_past_its_lifetime_is_closed() -> None:
    # The hand-off raced the give-up, and by then the connection had outlived
    # conn_max_lifetime: it comes back as a release would, so it is closed
    # instead of being passed on to the next waiter.
    rig = Rig(max_open=1, conn_max_lifetime=10.0)  # rng 0: no jitter
    rig.acquire()
    e1 = rig.connect()
    w1 = waiter_of(rig.acquire())
    w2 = waiter_of(rig.acquire())
    rig.clock.advance(9.0)
    rig.release(e1)
    assert served(w1) is e1
    rig.clock.advance(1.0)  # e1 is now 10 s old
    rig.abandon(w1, timed_out=True)
    assert w1.state == ABANDONED
    assert e1.state == CLOSING
    assert [(c.entry, c.reason) for c in rig.last] == [(e1, "max_lifetime")]
    assert w2.state == WAITING
    s = rig.core.stats()
    assert (s.max_lifetime_closed, s.use_duration) == (1, 10.0)
    rig.check()
    rig.finish_close()
    assert rig.dials == [2]  # the freed slot is dialed for w2
    e2 = rig.connect()
    assert served(w2) is e2
    rig.check()


def test_failed_then_abandoned_is_a_no_op() -> None:
    rig = Rig(max_open=1)
    w = waiter_of(rig.acquire())
    err = OSError("refused")
    rig.fail(err)
    assert w.state == FAILED
    assert w.error is err
    before = full_state(rig.core)
    rig.abandon(w)
    assert w.state == FAILED
    assert full_state(rig.core) == before


def test_abandon_foreign_waiter_raises_and_changes_nothing() -> None:
    rig = Rig(max_open=1)
    rig.acquire()
    stranger: Waiter[Conn] = Waiter(0.0)
    before = full_state(rig.core)
    with pytest.raises(ValueError):  # noqa: PT011 (deque.remove's own message)
        rig.core.abandon(stranger, rig.now, timed_out=True)
    assert full_state(rig.core) == before


# -- dial failures ---------------------------------------------------------------------


def test_dial_failure_fails_head_waiter_and_redials_for_the_rest() -> None:
    rig = Rig(max_open=4, max_connecting=1)
    w1 = waiter_of(rig.acquire())
    w2 = waiter_of(rig.acquire())
    assert rig.dials == [1]
    err = ConnectionRefusedError("db down")
    rig.clock.advance(1.5)
    rig.fail(err)
    assert w1.state == FAILED
    assert w1.error is err
    assert w2.state == WAITING
    assert [type(e) for e in rig.last] == [Wake, Connect]
    assert rig.dials == [2]
    assert rig.counts() == (1, 1, 0, 0, 0, 1)
    assert rig.core.last_dial_error is err
    assert rig.core.failing
    s = rig.core.stats()
    assert (s.dial_failures, s.wait_duration) == (1, 1.5)
    rig.check()
    e = rig.connect()
    assert served(w2) is e
    assert not rig.core.failing
    rig.check()


def test_dial_error_is_let_go_once_a_dial_succeeds() -> None:
    # The error (with its traceback, and the frames that keeps alive) is kept
    # only while it can still be chained onto a PoolTimeout or CircuitOpen.
    rig = Rig(max_open=1)
    w1 = waiter_of(rig.acquire())
    rig.fail(OSError("refused"))
    assert rig.core.last_dial_error is w1.error
    w2 = waiter_of(rig.acquire())
    e = rig.connect()
    assert served(w2) is e
    assert rig.core.last_dial_error is None
    rig.check()


def test_dial_failure_with_no_waiters_issues_no_dial() -> None:
    rig = Rig(max_open=2)
    w = waiter_of(rig.acquire())
    e1 = rig.connect()
    w2 = waiter_of(rig.acquire())
    rig.release(e1)  # serves w2; the dial for it is now surplus
    assert served(w2) is e1
    assert served(w) is not None
    rig.fail(OSError("x"))
    assert rig.last == []
    assert rig.counts() == (1, 0, 0, 1, 0, 0)
    rig.check()


# -- limits ----------------------------------------------------------------------------


def test_max_waiting_refuses_with_numbers_and_changes_nothing() -> None:
    rig = Rig(max_open=1, max_waiting=2)
    rig.acquire()
    rig.acquire()
    before = full_state(rig.core)
    with pytest.raises(
        TooManyWaiters,
        match=r"^pool: max_waiting=2 callers already waiting \(max_open=1, in_use=0\)$",
    ):
        rig.core.acquire(rig.now)
    assert full_state(rig.core) == before
    rig.core.set_max_waiting(0)
    waiter_of(rig.acquire())
    assert rig.core.stats().waiting == 3
    rig.check()


def test_fifo_service_order() -> None:
    rig = Rig(max_open=2)
    rig.acquire()
    rig.acquire()
    a = rig.connect()
    b = rig.connect()
    waiters = [waiter_of(rig.acquire()) for _ in range(5)]
    order: list[Waiter[Conn]] = []
    for step in range(5):
        rig.release(a if step % 2 == 0 else b)
        order.extend(w for w in rig.woken if w in waiters and w not in order)
        a, b = (served(order[-1]), b) if step % 2 == 0 else (a, served(order[-1]))
        rig.check()
    assert order == waiters
    assert rig.dials == []


def test_never_more_than_max_open_dialed() -> None:
    rig = Rig(max_open=3, max_connecting=0)
    for _ in range(10):
        rig.acquire()
    assert rig.dials == [1, 2, 3]
    assert rig.counts() == (3, 3, 0, 0, 0, 10)
    rig.check()


def test_unlimited_max_open_dials_per_waiter() -> None:
    rig = Rig(max_open=0, max_connecting=0)
    for _ in range(4):
        rig.acquire()
    assert rig.dials == [1, 2, 3, 4]
    rig.check()


# -- close -----------------------------------------------------------------------------


def test_close_fails_waiters_and_closes_in_use_on_release() -> None:
    rig = Rig(max_open=2, max_idle=2)
    rig.acquire()
    rig.acquire()
    e1, e2 = rig.connect(), rig.connect()
    waiting = [waiter_of(rig.acquire()) for _ in range(2)]
    rig.clock.advance(3.0)
    rig.close()
    assert rig.core.is_closed
    assert [x.state for x in waiting] == [FAILED, FAILED]
    assert [str(x.error) for x in waiting] == ["pool was closed while waiting"] * 2
    assert all(isinstance(x.error, PoolClosed) for x in waiting)
    assert [type(x) for x in rig.last] == [Wake, Wake]
    assert rig.core.stats().wait_duration == 6.0
    assert rig.counts() == (2, 0, 0, 2, 0, 0)
    rig.check()
    before = full_state(rig.core)
    with pytest.raises(PoolClosed, match=r"^pool is closed$"):
        rig.core.acquire(rig.now)
    assert full_state(rig.core) == before
    rig.close()  # idempotent
    assert rig.last == []
    for e in (e1, e2):
        rig.release(e)
        assert e.state == CLOSING
        rig.check()
    assert [c.reason for c in rig.closes] == ["pool_closed"] * 2
    rig.finish_all_closes()
    assert rig.last == []  # no redial after close
    assert rig.counts() == (0, 0, 0, 0, 0, 0)
    assert rig.opened - rig.closed == 0
    rig.check()


def test_close_with_idle_and_dial_in_flight() -> None:
    rig = Rig(max_open=3, max_idle=3)
    rig.acquire()
    e1 = rig.connect()
    rig.release(e1)
    rig.acquire()
    rig.acquire()  # e1 went out; this one waits and dials
    assert rig.dials == [2]
    rig.core.release(e1, rig.now)  # served straight to the waiter
    rig.file_effects()
    rig.close()
    assert rig.last == []  # nothing idle, nobody waiting
    e2 = rig.connect()  # the dial lands after close: closed at once
    assert e2.state == CLOSING
    assert [(type(x), x.reason) for x in rig.last] == [(Close, "pool_closed")]
    assert rig.dials == []
    rig.release(e1)
    rig.finish_all_closes()
    assert rig.last == []  # no redial after close
    assert rig.counts() == (0, 0, 0, 0, 0, 0)
    assert rig.opened - rig.closed == 0
    rig.check()


def test_close_closes_idle_now() -> None:
    rig = Rig(max_open=2, max_idle=2)
    rig.acquire()
    rig.acquire()
    e1 = rig.connect()
    e2 = rig.connect()
    rig.release(e1)
    rig.release(e2)
    rig.close()
    assert [(type(x), x.reason) for x in rig.last] == [(Close, "pool_closed")] * 2
    assert rig.counts() == (2, 0, 0, 0, 2, 0)
    rig.check()
    rig.finish_all_closes()
    assert rig.counts() == (0, 0, 0, 0, 0, 0)
    assert rig.expire() is None
    rig.check()


def test_dial_failure_after_close_settles_quietly() -> None:
    rig = Rig(max_open=2)
    w = waiter_of(rig.acquire())
    rig.close()
    assert w.state == FAILED
    rig.fail(OSError("late"))
    assert rig.last == []
    assert rig.counts() == (0, 0, 0, 0, 0, 0)
    rig.check()


# -- set_max_open ----------------------------------------------------------------------


def test_set_max_open_shrink_with_dials_and_in_use() -> None:
    rig = Rig(max_open=4, max_idle=4, max_connecting=0)
    w1, w2, w3, w4 = (waiter_of(rig.acquire()) for _ in range(4))
    e1 = rig.connect()
    e2 = rig.connect()
    assert (served(w1), served(w2)) == (e1, e2)
    assert rig.dials == [3, 4]
    assert rig.counts() == (4, 2, 0, 2, 0, 2)
    rig.core.set_max_open(1, rig.now)
    rig.file_effects()
    assert rig.last == []
    assert rig.core.stats().max_idle == 1
    rig.check()
    e3 = rig.connect()  # lands over the limit: closed, the waiters keep waiting
    assert e3.state == CLOSING
    assert rig.closes[-1].reason == "max_open"
    assert (w3.state, w4.state) == (WAITING, WAITING)
    rig.check()
    e4 = rig.connect()
    assert e4.state == CLOSING
    rig.check()
    rig.release(e1)  # still over (e1, e2 live with max 1): closed
    assert e1.state == CLOSING
    assert [c.reason for c in rig.closes] == ["max_open"] * 3
    assert w3.state == WAITING
    rig.check()
    rig.finish_all_closes()
    assert rig.last == []  # e2 alone fills the limit: no dial
    assert rig.counts() == (1, 0, 0, 1, 0, 2)
    rig.check()
    rig.release(e2)  # at the limit, not over: hand it over
    assert served(w3) is e2
    rig.check()
    rig.release(e2)
    assert served(w4) is e2
    rig.release(e2)
    assert e2.state == IDLE
    assert rig.counts() == (1, 0, 1, 0, 0, 0)
    assert (rig.opened, rig.closed) == (4, 3)
    rig.check()


def test_set_max_open_shrink_closes_surplus_idle() -> None:
    rig = Rig(max_open=3, max_idle=3)
    for _ in range(3):
        rig.acquire()
    entries = [rig.connect() for _ in range(3)]
    rig.release(entries[0])
    rig.release(entries[1])
    rig.core.set_max_open(2, rig.now)
    rig.file_effects()
    # One in use, so at most one of the two idle ones may stay: the oldest goes.
    assert [(c.entry, c.reason) for c in rig.closes] == [(entries[0], "max_idle")]
    assert list(rig.core._idle) == [entries[1]]
    rig.check()
    rig.finish_all_closes()
    rig.release(entries[2])
    assert entries[2].state == IDLE
    assert rig.counts() == (2, 0, 2, 0, 0, 0)
    rig.check()


def test_set_max_open_grow_dials_for_waiters() -> None:
    rig = Rig(max_open=1, max_connecting=0)
    rig.acquire()
    rig.connect()
    w1 = waiter_of(rig.acquire())
    w2 = waiter_of(rig.acquire())
    assert rig.dials == []
    rig.core.set_max_open(3, rig.now)
    rig.file_effects()
    assert rig.dials == [2, 3]
    rig.check()
    rig.core.set_max_open(0, rig.now)
    rig.file_effects()
    assert rig.dials == [2, 3]
    e2 = rig.connect()
    e3 = rig.connect()
    assert (served(w1), served(w2)) == (e2, e3)
    rig.check()


def test_set_max_open_lowers_min_idle() -> None:
    rig = Rig(max_open=4, max_idle=4, min_idle=3)
    rig.core.set_max_open(2, rig.now)
    assert rig.core.config.min_idle == 2
    rig.core.set_max_idle(1, rig.now)
    assert rig.core.config.min_idle == 1
    rig.file_effects()
    rig.check()


# -- expiry ----------------------------------------------------------------------------


def test_lifetime_with_jitter_expires_at_acquire() -> None:
    rig = Rig(max_open=2, conn_max_lifetime=100.0, rng_value=0.5)
    rig.acquire()
    e = rig.connect()
    assert e.jitter == 1.0 - 0.05 * 0.5
    rig.release(e)
    rig.clock.advance(97.4)
    assert entry_of(rig.acquire()) is e  # 97.4 < 97.5
    rig.release(e)
    assert rig.expire() == 97.5
    rig.clock.advance(0.1)  # 97.5 >= 97.5: expired
    w = waiter_of(rig.acquire())
    assert [(type(x), getattr(x, "reason", None)) for x in rig.last] == [
        (Close, "max_lifetime"),
        (Connect, None),
    ]
    assert rig.core.stats().max_lifetime_closed == 1
    rig.check()
    e2 = rig.connect()
    assert served(w) is e2


def test_lifetime_expires_at_release() -> None:
    rig = Rig(max_open=1, conn_max_lifetime=10.0)
    w0 = waiter_of(rig.acquire())
    e = rig.connect()
    assert served(w0) is e
    w = waiter_of(rig.acquire())
    rig.clock.advance(10.0)
    rig.release(e)  # too old to hand over
    assert e.state == CLOSING
    assert rig.closes[0].reason == "max_lifetime"
    assert w.state == WAITING
    rig.check()
    rig.finish_close()
    assert rig.dials == [2]
    e2 = rig.connect()
    assert served(w) is e2
    rig.check()


def test_idle_time_expires_at_acquire_and_by_expire() -> None:
    rig = Rig(max_open=3, max_idle=3, conn_max_idle_time=5.0)
    for _ in range(3):
        rig.acquire()
    a, b, c = rig.connect(), rig.connect(), rig.connect()
    rig.release(a)
    rig.clock.advance(1.0)
    rig.release(b)
    rig.clock.advance(1.0)
    rig.release(c)
    assert rig.expire() == 5.0  # a's deadline
    rig.clock.advance(3.0)  # now 5.0: a expires
    assert rig.expire() == 6.0
    assert [(x.entry, x.reason) for x in rig.closes] == [(a, "max_idle_time")]
    rig.check()
    rig.clock.advance(1.5)  # now 6.5: b expired, c not
    got = entry_of(rig.acquire())
    assert got is c
    rig.release(c)
    assert rig.core.stats().idle == 2  # b (expired) is still idle: c was on top
    assert rig.core.acquire(rig.now) is c
    rig.release(c)
    assert rig.expire() == 11.5  # b closed now; c returned at 6.5
    assert [x.entry for x in rig.closes] == [a, b]
    assert rig.core.stats().max_idle_time_closed == 2
    rig.finish_all_closes()
    rig.check()


def test_expire_nothing_to_do_returns_none() -> None:
    rig = Rig(max_open=2)
    assert rig.expire() is None
    rig.acquire()
    rig.release(rig.connect())
    assert rig.expire() is None  # no expiry knobs


def test_setting_lifetime_sweeps_now() -> None:
    rig = Rig(max_open=2, max_idle=2)
    rig.acquire()
    rig.acquire()
    a, b = rig.connect(), rig.connect()
    rig.release(a)
    rig.clock.advance(10.0)
    rig.release(b)
    rig.core.set_conn_max_lifetime(5.0, rig.now)
    rig.file_effects()
    assert [(x.entry, x.reason) for x in rig.closes] == [
        (a, "max_lifetime"),
        (b, "max_lifetime"),
    ]
    rig.core.set_conn_max_lifetime(None, rig.now)
    rig.core.set_conn_max_idle_time(1.0, rig.now)
    rig.core.set_conn_max_idle_time(math.inf, rig.now)
    assert rig.core.config.conn_max_idle_time is None
    assert not rig.core._expiring
    rig.file_effects()
    rig.finish_all_closes()
    rig.check()


# -- min_idle --------------------------------------------------------------------------


def test_min_idle_refill_and_backoff() -> None:
    rig = Rig(max_open=4, max_idle=3, min_idle=2)
    assert rig.dials == []  # nothing is dialed until an input asks
    assert rig.expire() is None  # the deficit is being dialed
    assert rig.dials == [1, 2]
    assert rig.expire() is None  # covered by dials in flight
    rig.fail(OSError("down"))
    assert rig.dials == [2]  # no redial: back off 0.1 s
    assert rig.expire() == 0.1
    rig.fail(OSError("down"))
    assert rig.expire() == 0.2  # doubled
    rig.clock.advance(0.2)
    assert rig.expire() is None
    assert rig.dials == [3, 4]
    rig.connect()
    assert rig.dials == [4]
    assert rig.core.stats().idle == 1
    rig.connect()
    assert rig.core.stats().idle == 2
    assert rig.expire() is None
    rig.check()
    # Taking one out opens a deficit the next input fills.
    e = entry_of(rig.acquire())
    assert rig.dials == []
    rig.expire()
    assert rig.dials == [5]
    rig.check()
    rig.release(e)
    rig.connect()
    assert rig.core.stats().idle == 3
    rig.check()


def test_min_idle_backoff_is_capped() -> None:
    rig = Rig(max_open=2, max_idle=1, min_idle=1, max_connecting=1)
    for _ in range(12):
        rig.expire()
        rig.fail(OSError("down"))
        rig.clock.advance(rig.core._refill_at - rig.now)
    rig.expire()
    rig.fail(OSError("down"))
    assert rig.core._refill_at - rig.now == 10.0


def test_expire_does_not_ask_to_be_woken_when_refill_is_blocked() -> None:
    # min_idle wants a connection but max_open is taken by callers: only a
    # release or a close can help, and both reach the core anyway. expire()
    # must not answer "due now", or the maintenance thread spins.
    rig = Rig(max_open=1, max_idle=1, min_idle=1)
    w = waiter_of(rig.acquire())
    rig.connect()
    assert w.state == SERVED
    assert rig.dials == []
    assert rig.expire() is None
    assert rig.dials == []
    rig.check()


def test_set_min_idle_resets_backoff_and_dials() -> None:
    rig = Rig(max_open=3, max_idle=3)
    rig.core.set_min_idle(2, rig.now)
    rig.file_effects()
    assert rig.dials == [1, 2]
    rig.fail(OSError("x"))
    rig.core.set_min_idle(2, rig.now)
    rig.file_effects()
    assert rig.dials == [2, 3]
    rig.check()


def test_max_connecting_setter_releases_held_dials() -> None:
    rig = Rig(max_open=5, max_connecting=1)
    for _ in range(3):
        rig.acquire()
    assert rig.dials == [1]
    rig.core.set_max_connecting(0, rig.now)
    rig.file_effects()
    assert rig.dials == [1, 2, 3]
    rig.check()


def test_set_max_idle_closes_surplus() -> None:
    rig = Rig(max_open=0, max_idle=3)
    for _ in range(3):
        rig.acquire()
    es = [rig.connect() for _ in range(3)]
    for e in es:
        rig.release(e)
    rig.core.set_max_idle(-5, rig.now)
    rig.file_effects()
    assert rig.core.config.max_idle == 0
    assert [(c.entry, c.reason) for c in rig.closes] == [(e, "max_idle") for e in es]
    rig.finish_all_closes()
    rig.check()


# -- knob validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "value", "error", "message"),
    [
        ("max_open", -1, ValueError, "max_open must be >= 0, got -1"),
        ("max_open", True, TypeError, "max_open must be an int, got True"),
        ("max_open", 1.5, TypeError, "max_open must be an int, got 1.5"),
        ("max_open", "4", TypeError, "max_open must be an int, got '4'"),
        ("max_idle", None, TypeError, "max_idle must be an int, got None"),
        ("max_idle", False, TypeError, "max_idle must be an int, got False"),
        ("min_idle", -1, ValueError, "min_idle must be >= 0, got -1"),
        ("min_idle", 3, ValueError, "min_idle=3 exceeds the idle cap 2"),
        ("max_connecting", -2, ValueError, "max_connecting must be >= 0, got -2"),
        ("max_connecting", 2.0, TypeError, "max_connecting must be an int, got 2.0"),
        ("max_waiting", -1, ValueError, "max_waiting must be >= 0, got -1"),
        (
            "conn_max_lifetime",
            0,
            ValueError,
            "conn_max_lifetime must be > 0 seconds or None, got 0",
        ),
        (
            "conn_max_lifetime",
            -1.0,
            ValueError,
            "conn_max_lifetime must be > 0 seconds or None, got -1.0",
        ),
        (
            "conn_max_lifetime",
            math.nan,
            ValueError,
            "conn_max_lifetime must be a number of seconds, got nan",
        ),
        (
            "conn_max_lifetime",
            "10",
            TypeError,
            "conn_max_lifetime must be a number of seconds or None, got '10'",
        ),
        (
            "conn_max_idle_time",
            True,
            TypeError,
            "conn_max_idle_time must be a number of seconds or None, got True",
        ),
        (
            "conn_max_idle_time",
            -math.inf,
            ValueError,
            "conn_max_idle_time must be > 0 seconds or None, got -inf",
        ),
    ],
)
def test_bad_knob_raises_naming_knob_and_value(
    knob: str, value: object, error: type[Exception], message: str
) -> None:
    kwargs: dict[str, Any] = {knob: value}
    with pytest.raises(error) as info:
        PoolConfig(**kwargs)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("setter", "value", "error", "message"),
    [
        ("set_max_open", -1, ValueError, "max_open must be >= 0, got -1"),
        ("set_max_open", True, TypeError, "max_open must be an int, got True"),
        ("set_max_idle", "2", TypeError, "max_idle must be an int, got '2'"),
        ("set_min_idle", 5, ValueError, "min_idle=5 exceeds the idle cap 2"),
        ("set_min_idle", -1, ValueError, "min_idle must be >= 0, got -1"),
        ("set_max_connecting", -1, ValueError, "max_connecting must be >= 0, got -1"),
        (
            "set_conn_max_lifetime",
            math.nan,
            ValueError,
            "conn_max_lifetime must be a number of seconds, got nan",
        ),
        (
            "set_conn_max_idle_time",
            0.0,
            ValueError,
            "conn_max_idle_time must be > 0 seconds or None, got 0.0",
        ),
    ],
)
def test_bad_setter_value_raises_and_changes_nothing(
    setter: str, value: object, error: type[Exception], message: str
) -> None:
    rig = Rig(max_open=4, max_idle=2, min_idle=1, conn_max_lifetime=60.0)
    rig.expire()
    rig.connect()
    before = full_state(rig.core)
    knobs = rig.core.config
    with pytest.raises(error) as info:
        getattr(rig.core, setter)(value, rig.now)
    assert str(info.value).startswith(message)
    assert full_state(rig.core) == before
    assert rig.core.config is knobs


def test_set_max_waiting_validates() -> None:
    core: PoolCore[Conn] = PoolCore()
    with pytest.raises(ValueError, match="max_waiting must be >= 0, got -3"):
        core.set_max_waiting(-3)
    with pytest.raises(TypeError, match=r"max_waiting must be an int, got 1\.0"):
        core.set_max_waiting(1.0)
    assert core.config.max_waiting == 0


def test_negative_max_idle_keeps_none() -> None:
    rig = Rig(max_open=2, max_idle=-1)
    assert rig.core.config.max_idle == 0
    rig.acquire()
    e = rig.connect()
    rig.release(e)
    assert e.state == CLOSING
    assert rig.closes[0].reason == "max_idle"


def test_validate_duration() -> None:
    assert validate_duration("t", None) is None
    assert validate_duration("t", math.inf) is None
    assert validate_duration("t", 0, zero_ok=True) == 0.0
    assert validate_duration("t", 2) == 2.0
    with pytest.raises(ValueError, match=r"^t must be >= 0 seconds or None, got -1$"):
        validate_duration("t", -1, zero_ok=True)


def test_reprs() -> None:
    rig = Rig(max_open=1)
    w = waiter_of(rig.acquire())
    assert repr(rig.last[0]) == "Connect(1)"
    e = rig.connect()
    assert repr(rig.last[0]) == "Wake(state=SERVED)"
    assert repr(e) == "<Entry c1 state=IN_USE>"
    assert w.state == SERVED
    rig.release(e, broken=True)
    assert repr(rig.last[0]) == "Close(<Entry c1 state=CLOSING>, 'broken')"


def test_every_state_has_a_name_and_the_moves_use_only_named_states() -> None:
    entries = ["NEW", "IN_USE", "IDLE", "CLOSING", "CLOSED"]
    waiters = ["WAITING", "SERVED", "FAILED", "ABANDONED"]
    assert sorted(NAMES.values()) == sorted([*entries, *waiters])
    for before, after in ENTRY_MOVES | WAITER_MOVES:
        assert before in NAMES
        assert after in NAMES


def test_the_rig_refuses_a_move_outside_the_table() -> None:
    rig = Rig(max_open=1)
    waiter_of(rig.acquire())
    e = rig.connect()
    e.state = IDLE  # IN_USE -> IDLE is allowed ...
    rig.file_effects()
    e.state = CLOSED  # ... IDLE -> CLOSED is not: only CLOSING reaches CLOSED
    with pytest.raises(AssertionError, match="move IDLE -> CLOSED"):
        rig.file_effects()


def test_the_rig_refuses_a_waiter_move_outside_the_table() -> None:
    rig = Rig(max_open=1)
    w = waiter_of(rig.acquire())
    w.state = SERVED
    rig.file_effects()  # WAITING -> SERVED is allowed ...
    w.state = WAITING  # ... but a served waiter never queues again
    with pytest.raises(AssertionError, match="move SERVED -> WAITING"):
        rig.file_effects()


def _body(name: str) -> list[str]:
    """``PoolCore``'s method ``name`` as source lines, docstring left out.

    Read from the source file, not the function object: in the compiled
    build the method is C and has no source of its own.
    """
    tree = ast.parse((Path(str(machine.__file__)).parent / "machine.py").read_text())
    core = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PoolCore"
    )
    node = next(
        n for n in core.body if isinstance(n, ast.FunctionDef) and n.name == name
    )
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return [ast.unparse(stmt) for stmt in body]


def test_release_carries_the_same_take_out_as_the_helper() -> None:
    # ``release`` inlines ``_take_out`` (no call on the hot path): the copy
    # must be the helper's statements, in order, one after another.
    helper = _body("_take_out")
    release = _body("release")
    starts = [i for i, s in enumerate(release) if s == helper[0]]
    assert len(starts) == 1, "release must carry _take_out's statements once"
    start = starts[0]
    assert release[start : start + len(helper)] == helper


def test_expire_does_not_ask_to_be_woken_when_the_probe_is_blocked() -> None:
    rig = Rig(max_open=2, circuit_after=1)
    waiter_of(rig.acquire())
    e1 = rig.connect()
    waiter_of(rig.acquire())
    rig.fail(OSError("down"))
    assert rig.core.circuit_open
    rig.core.set_max_open(1, rig.now)  # e1 alone fills the pool: no room to probe
    rig.file_effects()
    rig.clock.advance(rig.core.probe_at - rig.now + 1.0)
    assert rig.expire() is None
    assert rig.dials == []
    rig.release(e1, broken=True)
    rig.finish_close()  # the slot frees: the probe goes out at once
    assert rig.dials == [3]
    rig.check()


def test_snapshot_tells_apart_states_that_behave_differently() -> None:
    # Same counts, but one core has a failed dial behind it: two more failures
    # open its circuit and not the other's. Exhaustive search dedupes on
    # snapshot(), so it must tell them apart.
    a, b = Rig(max_open=2), Rig(max_open=2)
    for rig in (a, b):
        waiter_of(rig.acquire())
    a.fail(OSError("down"))
    waiter_of(a.acquire())
    assert a.counts() == b.counts()
    assert a.core.snapshot() != b.core.snapshot()
    # Knobs that change what happens next are part of it too.
    c, d = Rig(max_open=2, max_connecting=1), Rig(max_open=2, max_connecting=2)
    assert c.core.snapshot() != d.core.snapshot()
    e, f = Rig(max_waiting=1), Rig(max_waiting=2)
    assert e.core.snapshot() != f.core.snapshot()
    # Idle connections of different ages expire at different times.
    g, h = Rig(conn_max_idle_time=5.0), Rig(conn_max_idle_time=5.0)
    for rig in (g, h):
        rig.acquire()
    h.clock.advance(1.0)
    g.release(g.connect())
    h.release(h.connect())
    assert g.counts() == h.counts()
    assert g.core.snapshot() != h.core.snapshot()
    hash(h.core.snapshot())


# -- at_capacity: was a waiter queued at max_open? (issue 16) ----------------------


def test_issue16_waiter_at_capacity_only_when_no_dial_is_left_for_it() -> None:
    rig = Rig(max_open=2, max_connecting=1)
    first = waiter_of(rig.acquire())
    assert not first.at_capacity  # a dial was issued for it
    # max_connecting holds the second dial back, but max_open has room for it.
    second = waiter_of(rig.acquire())
    assert rig.dials == [1]
    assert not second.at_capacity
    third = waiter_of(rig.acquire())  # two slots, three callers
    assert third.at_capacity
    rig.check()
    rig.connect()  # serves the first; the second's dial goes out
    assert served(first).state == IN_USE
    assert rig.dials == [2]
    fourth = waiter_of(rig.acquire())
    assert fourth.at_capacity
    assert (second.at_capacity, third.at_capacity) == (False, True)  # fixed
    rig.check()


def test_issue16_unlimited_pool_never_queues_at_capacity() -> None:
    rig = Rig(max_open=0, max_connecting=1)
    waiters = [waiter_of(rig.acquire()) for _ in range(3)]
    assert [w.at_capacity for w in waiters] == [False, False, False]
    assert rig.dials == [1]
    rig.check()


def test_issue16_closing_connections_still_take_capacity() -> None:
    rig = Rig(max_open=1)
    w = waiter_of(rig.acquire())
    entry = rig.connect()
    assert served(w) is entry
    rig.release(entry, broken=True)  # closing: still counted against max_open
    assert rig.counts()[4] == 1
    late = waiter_of(rig.acquire())
    assert late.at_capacity
    rig.check()
