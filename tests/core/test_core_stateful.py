"""PoolCore driven by Hypothesis through every input, in any order.

Every core input is a rule. After each step the machine calls ``check()`` and
compares the core against a reference model of its own:

* FIFO: waiters are settled (served or failed) in the order they queued, less
  those that gave up;
* the driver-level ledger: connections the "driver" opened minus those it
  closed equals ``num_open - dialing`` (each one is idle, in use or closing);
* a dial is issued only below ``max_open``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from sqlgate._core import (
    ABANDONED,
    FAILED,
    IDLE,
    IN_USE,
    SERVED,
    WAITING,
    Entry,
    Waiter,
)
from sqlgate.errors import Error, PoolClosed, TooManyWaiters
from tests.core.rig import Conn, Rig

durations = st.one_of(st.none(), st.sampled_from([0.5, 1.0, 3.0, 10.0]))
index = st.integers(min_value=0, max_value=7)


class CoreMachine(RuleBasedStateMachine):
    """Every input of PoolCore as a rule; the model checks what comes out."""

    def __init__(self) -> None:
        super().__init__()
        self.rig = Rig(
            max_open=2, max_idle=1, max_connecting=2, rng_value=0.5, name="m"
        )
        #: Waiters not yet settled, in the order they queued (the model).
        self.queue: list[Waiter[Conn]] = []
        #: Waiters served and not yet resumed by their caller.
        self.served: list[Waiter[Conn]] = []
        #: Entries held by callers.
        self.held: list[Entry[Conn]] = []
        self.wakes_seen = 0

    @rule(
        max_open=st.integers(0, 3),
        max_idle=st.integers(-1, 3),
        min_idle=st.integers(0, 2),
        max_connecting=st.integers(0, 2),
        max_waiting=st.integers(0, 3),
        lifetime=durations,
        idle_time=durations,
    )
    @precondition(lambda self: self.rig.opened == 0 and not self.rig.dials)
    def configure(
        self,
        max_open: int,
        max_idle: int,
        min_idle: int,
        max_connecting: int,
        max_waiting: int,
        lifetime: float | None,
        idle_time: float | None,
    ) -> None:
        """Start over with other knobs (only before anything happened)."""
        cap = max(0, max_idle) if max_open == 0 else min(max(0, max_idle), max_open)
        self.rig = Rig(
            max_open=max_open,
            max_idle=max_idle,
            min_idle=min(min_idle, cap),
            max_connecting=max_connecting,
            max_waiting=max_waiting,
            conn_max_lifetime=lifetime,
            conn_max_idle_time=idle_time,
            rng_value=0.5,
            name="m",
        )
        self.queue.clear()
        self.served.clear()
        self.held.clear()
        self.wakes_seen = 0

    # -- bookkeeping after each input --------------------------------------------

    def settle(self, *, dials_allowed: bool = True) -> None:
        """File the step's wakes against the FIFO model and check the dial rule."""
        rig = self.rig
        new = rig.woken[self.wakes_seen :]
        self.wakes_seen = len(rig.woken)
        for waiter in new:
            assert self.queue, "a waiter was woken that the model has not queued"
            assert waiter is self.queue[0], "waiters settled out of FIFO order"
            self.queue.pop(0)
            if waiter.state == SERVED:
                self.served.append(waiter)
            else:
                assert waiter.state == FAILED
                assert waiter.error is not None
        assert list(rig.core._waiters) == self.queue
        issued = [e for e in rig.last if type(e).__name__ == "Connect"]
        if issued:
            assert dials_allowed
            core = rig.core
            assert not core.is_closed
            if core.config.max_open > 0:
                assert core.num_open <= core.config.max_open, "dialed over max_open"

    # -- callers -----------------------------------------------------------------

    @rule()
    def acquire(self) -> None:
        rig = self.rig
        core = rig.core
        waiting = len(core._waiters)
        try:
            got = rig.acquire()
        except PoolClosed:
            assert core.is_closed
            rig.file_effects()
        except TooManyWaiters:
            assert core.config.max_waiting
            assert waiting >= core.config.max_waiting
            assert not core._idle
            rig.file_effects()
        except Error:  # the circuit breaker, where the core has one
            assert getattr(core, "circuit_open", False)
            rig.file_effects()
        else:
            if isinstance(got, Entry):
                assert got.state == IN_USE
                self.held.append(got)
            else:
                assert got.state == WAITING
                self.queue.append(got)
        self.settle()

    @rule(i=index, broken=st.booleans())
    @precondition(lambda self: self.held)
    def release(self, i: int, broken: bool) -> None:
        entry = self.held.pop(i % len(self.held))
        self.rig.release(entry, broken=broken)
        if broken:
            assert entry in [c.entry for c in self.rig.closes]
        self.settle()

    @rule(i=index)
    @precondition(lambda self: self.held)
    def release_twice(self, i: int) -> None:
        entry = self.held[i % len(self.held)]
        self.rig.release(entry)
        self.held.remove(entry)
        self.settle()
        if entry.state == IN_USE:  # handed straight to a waiter: not ours now
            return
        with pytest.raises(ValueError, match="not in use"):
            self.rig.core.release(entry, self.rig.now)

    @rule(i=index)
    @precondition(lambda self: self.served)
    def resume(self, i: int) -> None:
        """A served caller wakes up and takes its connection."""
        waiter = self.served.pop(i % len(self.served))
        assert waiter.state == SERVED
        assert waiter.entry is not None
        assert waiter.entry.state == IN_USE
        self.held.append(waiter.entry)

    @rule(i=index, timed_out=st.booleans())
    @precondition(lambda self: self.queue)
    def abandon_waiting(self, i: int, timed_out: bool) -> None:
        waiter = self.queue.pop(i % len(self.queue))
        timeouts = self.rig.core.stats().timeouts
        self.rig.abandon(waiter, timed_out=timed_out)
        assert waiter.state == ABANDONED
        assert self.rig.core.stats().timeouts == timeouts + timed_out
        assert self.rig.last == []
        self.settle(dials_allowed=False)

    @rule(i=index)
    @precondition(lambda self: self.served)
    def abandon_served(self, i: int) -> None:
        """The timeout fired just as the connection was handed over."""
        waiter = self.served.pop(i % len(self.served))
        entry = waiter.entry
        assert entry is not None
        self.rig.abandon(waiter, timed_out=True)
        assert waiter.state == ABANDONED
        assert waiter.entry is None
        assert entry.state != IN_USE or any(
            w.entry is entry for w in self.rig.woken[self.wakes_seen :]
        )
        self.settle(dials_allowed=False)

    # -- the driver ---------------------------------------------------------------

    @rule(i=index)
    @precondition(lambda self: self.rig.dials)
    def connected(self, i: int) -> None:
        rig = self.rig
        entry = rig.connect(rig.dials[i % len(rig.dials)])
        assert entry.state in (IN_USE, IDLE) or entry in [c.entry for c in rig.closes]
        self.settle()

    @rule(i=index)
    @precondition(lambda self: self.rig.dials)
    def connect_failed(self, i: int) -> None:
        rig = self.rig
        head = self.queue[0] if self.queue else None
        error = OSError(f"dial {i} failed")
        rig.fail(error, rig.dials[i % len(rig.dials)])
        if head is not None:
            assert head.state == FAILED
            assert head.error is error or getattr(rig.core, "circuit_open", False)
        self.settle()

    @rule(i=index)
    @precondition(lambda self: self.rig.dials)
    def connect_bug(self, i: int) -> None:
        """A dial raises a programming error: never a failed dial (issue 14)."""
        rig = self.rig
        core = rig.core
        head = self.queue[0] if self.queue else None
        was_open = core.circuit_open
        before = (core.stats().dial_failures, core._fails_in_row)
        error = TypeError(f"dial {i}: bad argument")
        rig.fail(error, rig.dials[i % len(rig.dials)])
        if head is not None:
            assert head.state == FAILED
            assert head.error is error or was_open
        if not was_open:
            assert not core.circuit_open
            assert (core.stats().dial_failures, core._fails_in_row) == before
        self.settle()

    @rule(i=index)
    @precondition(lambda self: self.rig.closes)
    def close_done(self, i: int) -> None:
        rig = self.rig
        entry = rig.finish_close(rig.closes[i % len(rig.closes)])
        assert not rig.core.holds(entry.conn)
        self.settle()

    @rule(dt=st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.0, 4.0]), sweep=st.booleans())
    def expire(self, dt: float, sweep: bool) -> None:
        """Time passes; maybe the maintenance tick runs."""
        rig = self.rig
        rig.clock.advance(dt)
        if not sweep:
            return
        due = rig.expire()
        if rig.core.is_closed:
            assert due is None
        elif due is not None:
            assert due >= rig.now or rig.core.stats().closing == 0
        self.settle()

    # -- close and the setters (one rule, so they do not crowd out the rest) -------

    @rule(
        which=st.sampled_from(
            [
                "close",
                "max_open",
                "max_open",
                "max_idle",
                "min_idle",
                "max_connecting",
                "lifetime",
                "idle_time",
                "max_waiting",
            ]
        ),
        n=st.integers(-1, 4),
        seconds=durations,
    )
    def knob(self, which: str, n: int, seconds: float | None) -> None:
        rig = self.rig
        core = rig.core
        now = rig.now
        if which == "close":
            rig.close()
            assert core.is_closed
            self.settle(dials_allowed=False)
            assert not self.queue
            return
        if which == "max_open":
            core.set_max_open(max(0, n), now)
        elif which == "max_idle":
            core.set_max_idle(n, now)
            assert core.config.max_idle == max(0, n)
        elif which == "min_idle":
            n = max(0, n)
            cap = core.stats().max_idle
            if n > cap:
                with pytest.raises(ValueError, match=f"min_idle={n} exceeds the idle"):
                    core.set_min_idle(n, now)
                assert not core.outbox
                return
            core.set_min_idle(n, now)
        elif which == "max_connecting":
            core.set_max_connecting(max(0, n), now)
        elif which == "lifetime":
            core.set_conn_max_lifetime(seconds, now)
        elif which == "idle_time":
            core.set_conn_max_idle_time(seconds, now)
        else:
            core.set_max_waiting(max(0, n))
            assert not core.outbox
        rig.file_effects()
        self.settle()

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def core_checks(self) -> None:
        self.rig.check()  # check() plus the driver-level ledger
        core = self.rig.core
        s = core.stats()
        assert s.waiting == len(self.queue)
        assert s.in_use == len(self.held) + len(self.served)
        assert self.rig.opened - self.rig.closed == s.open_connections - s.dialing
        assert core.snapshot() == core.snapshot()
        hash(core.snapshot())

    def teardown(self) -> None:
        """Close, give everything back, settle every effect: nothing may leak."""
        rig = self.rig
        rig.close()
        for waiter in self.served:
            assert waiter.entry is not None
            self.held.append(waiter.entry)
        for entry in self.held:
            rig.release(entry)
        while rig.dials or rig.closes:
            if rig.dials:
                rig.connect()
            else:
                rig.finish_close()
        rig.check()
        assert rig.opened - rig.closed == 0
        assert rig.core.num_open == 0


#: Examples in CI: about 2 s of CPU (20 ms each), so about 10 s of wall clock at
#: load 10 on 2 cores, well inside pytest's 60 s (250 took over 60 s once under
#: load). ``SQLGATE_STATEFUL_EXAMPLES`` asks for more; the slow soak below runs
#: 3000 longer ones.
EXAMPLES = int(os.environ.get("SQLGATE_STATEFUL_EXAMPLES", "100"))

CoreMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoreMachine = CoreMachine.TestCase


class SlowCoreMachine(CoreMachine):
    pass


SlowCoreMachine.TestCase.settings = settings(
    max_examples=3000,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSlowCoreMachine = pytest.mark.timeout(1800)(
    pytest.mark.slow(SlowCoreMachine.TestCase)
)
