"""Every input sequence up to a small depth, for small pools and three callers.

Breadth-first over the core's inputs, for ``max_open`` and ``max_idle`` in
{0, 1, 2} (and ``max_connecting`` 1 or unlimited). States are deduplicated on
``PoolCore.snapshot()`` plus what the callers hold; ``check()``, the
driver-level ledger and FIFO service are verified after every step, and each
reached state is then closed and settled to prove nothing leaks from it.
"""

from __future__ import annotations

import itertools

import pytest

from sqlgate._core import FAILED, SERVED, Connect, Entry, Waiter
from sqlgate.errors import CircuitOpen, PoolClosed, TooManyWaiters
from tests.core.rig import Conn, Rig

DEPTH = 6
CLIENTS = 3
Input = tuple[str, int]


class World:
    """A rig plus what each caller holds: the unit of search."""

    def __init__(self, max_open: int, max_idle: int, max_connecting: int) -> None:
        self.rig = Rig(
            max_open=max_open,
            max_idle=max_idle,
            max_connecting=max_connecting,
            max_waiting=2,
            name="x",
        )
        #: Callers not holding or waiting for anything.
        self.free = CLIENTS
        #: Waiters queued, in arrival order (the FIFO model).
        self.queue: list[Waiter[Conn]] = []
        #: Waiters served, not yet resumed.
        self.served: list[Waiter[Conn]] = []
        #: Entries held.
        self.held: list[Entry[Conn]] = []
        self.wakes_seen = 0

    def key(self) -> tuple[object, ...]:
        return (
            self.rig.core.snapshot(),
            self.free,
            len(self.queue),
            len(self.served),
            len(self.held),
            len(self.rig.dials),
            len(self.rig.closes),
        )

    def inputs(self) -> list[Input]:
        rig = self.rig
        out: list[Input] = []
        if self.free:
            out.append(("acquire", 0))
        if self.held:
            out += [("release", 0), ("release_broken", 0)]
        if self.served:
            out += [("release_served", 0), ("abandon_served", 0)]
        out += [("abandon_waiting", i) for i in range(len(self.queue))]
        if rig.dials:
            out += [("connected", 0), ("connect_failed", 0), ("connect_bug", 0)]
        if rig.closes:
            out.append(("close_done", 0))
        if not rig.core.is_closed:
            out.append(("close", 0))
            max_open = rig.core.config.max_open
            out += [("set_max_open", n) for n in (0, 1, 2) if n != max_open]
        return out

    def apply(self, step: Input) -> None:
        rig = self.rig
        what, i = step
        if what == "acquire":
            self.free -= 1
            try:
                got = rig.acquire()
            except (PoolClosed, TooManyWaiters, CircuitOpen):
                rig.file_effects()
                self.free += 1
            else:
                if isinstance(got, Entry):
                    self.held.append(got)
                else:
                    self.queue.append(got)
        elif what in ("release", "release_broken"):
            rig.release(self.held.pop(0), broken=what == "release_broken")
            self.free += 1
        elif what == "release_served":
            waiter = self.served.pop(0)
            assert waiter.entry is not None
            rig.release(waiter.entry)
            self.free += 1
        elif what == "abandon_served":
            rig.abandon(self.served.pop(0), timed_out=True)
            self.free += 1
        elif what == "abandon_waiting":
            rig.abandon(self.queue.pop(i), timed_out=True)
            self.free += 1
        elif what == "connected":
            rig.connect()
        elif what == "connect_failed":
            rig.fail(OSError("refused"))
        elif what == "connect_bug":  # a programming error (issue 14)
            failures = rig.core.stats().dial_failures
            was_open = rig.core.circuit_open
            rig.fail(TypeError("bad argument"))
            if not was_open:
                assert not rig.core.circuit_open
                assert rig.core.stats().dial_failures == failures
        elif what == "close_done":
            rig.finish_close()
        elif what == "close":
            rig.close()
        else:
            assert what == "set_max_open"
            rig.core.set_max_open(i, rig.now)
            rig.file_effects()
        self.after(step)

    def after(self, step: Input) -> None:
        """The checks after every step."""
        rig = self.rig
        for waiter in rig.woken[self.wakes_seen :]:
            assert self.queue, f"{step}: woke a waiter nobody queued"
            assert waiter is self.queue[0], f"{step}: waiters settled out of order"
            self.queue.pop(0)
            if waiter.state == SERVED:
                self.served.append(waiter)
            else:
                assert waiter.state == FAILED
                self.free += 1
        self.wakes_seen = len(rig.woken)
        rig.check()
        core = rig.core
        max_open = core.config.max_open
        if any(type(e) is Connect for e in rig.last) and max_open:
            assert core.num_open <= max_open, f"{step}: dialed over max_open"
        held = len(self.held) + len(self.served)
        assert core.stats().in_use == held
        assert self.free + len(self.queue) + held == CLIENTS

    def settle_all(self) -> None:
        """Close the pool, give everything back, settle everything: no leak."""
        rig = self.rig
        rig.close()
        self.after(("close", 0))
        for waiter in self.served:
            assert waiter.entry is not None
            rig.release(waiter.entry)
        for entry in self.held:
            rig.release(entry)
        while rig.dials:
            rig.connect()
        rig.finish_all_closes()
        rig.check()
        assert rig.opened == rig.closed
        assert rig.counts() == (0, 0, 0, 0, 0, 0)


CONFIGS = list(itertools.product((0, 1, 2), (0, 1, 2), (1, 0)))


@pytest.mark.parametrize(("max_open", "max_idle", "max_connecting"), CONFIGS)
def test_every_sequence(max_open: int, max_idle: int, max_connecting: int) -> None:
    # Worlds are rebuilt by replaying their path: the core keys its registry by
    # id(conn), so a deep copy would not be the same state.
    def replay(path: tuple[Input, ...]) -> World:
        world = World(max_open, max_idle, max_connecting)
        for step in path:
            world.apply(step)
        return world

    seen = {replay(()).key()}
    frontier: list[tuple[Input, ...]] = [()]
    for _ in range(DEPTH):
        successors: list[tuple[Input, ...]] = []
        for path in frontier:
            for step in replay(path).inputs():
                world = replay(path)
                world.apply(step)
                k = world.key()
                if k not in seen:
                    seen.add(k)
                    successors.append((*path, step))
        frontier = successors
    assert len(seen) > 40  # the search did explore
    for path in frontier:
        replay(path).settle_all()
