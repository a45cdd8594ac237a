"""A test rig that plays the shell for a bare ``PoolCore``.

It keeps the driver-level ledger (connections opened and closed by the
"driver"), sorts the core's effects into pending dials, pending closes and
woken waiters, and lets a test settle them one by one in any order.
"""

from __future__ import annotations

from typing import Any

from sqlgate._core import Close, Connect, Entry, PoolCore, Waiter, Wake
from tests.fakes import FakeClock

__all__ = ["Conn", "Rig"]


class Conn:
    """A stand-in driver connection, numbered in dial order."""

    def __init__(self, number: int) -> None:
        self.number = number

    def __repr__(self) -> str:
        return f"c{self.number}"


class Rig:
    """A ``PoolCore`` plus the shell's bookkeeping, driven by hand."""

    def __init__(self, *, rng_value: float = 0.0, **knobs: Any) -> None:
        self.clock = FakeClock(0.0)
        self.core: PoolCore[Conn] = PoolCore(rng=lambda: rng_value, **knobs)
        #: Driver level: connections dialed successfully / closed.
        self.opened = 0
        self.closed = 0
        #: Tickets whose Connect was issued and not yet settled, in order.
        self.dials: list[int] = []
        #: Close effects not yet carried out, in order.
        self.closes: list[Close[Conn]] = []
        #: Every Wake, in order.
        self.woken: list[Waiter[Conn]] = []
        #: Effects of the most recent step.
        self.last: list[Any] = []

    @property
    def now(self) -> float:
        return self.clock.now

    def drain(self) -> list[Any]:
        """Take the core's effects and file them; returns them."""
        out: list[Any] = self.core.take_effects()
        for effect in out:
            if isinstance(effect, Connect):
                self.dials.append(effect.ticket)
            elif isinstance(effect, Close):
                self.closes.append(effect)
            else:
                assert isinstance(effect, Wake)
                self.woken.append(effect.waiter)
        self.last = out
        return out

    # -- inputs, each followed by drain() ---------------------------------------

    def acquire(self) -> Entry[Conn] | Waiter[Conn]:
        got = self.core.acquire(self.now)
        self.drain()
        return got

    def release(self, entry: Entry[Conn], *, broken: bool = False) -> None:
        self.core.release(entry, self.now, broken=broken)
        self.drain()

    def connect(self, ticket: int | None = None) -> Entry[Conn]:
        """Settle a dial (the oldest by default) with a new connection."""
        if ticket is None:
            ticket = self.dials[0]
        self.opened += 1
        conn = Conn(self.opened)
        entry = self.core.connected(ticket, conn, self.now)
        self.dials.remove(ticket)
        self.drain()
        return entry

    def fail(self, error: BaseException, ticket: int | None = None) -> None:
        """Settle a dial (the oldest by default) as failed."""
        if ticket is None:
            ticket = self.dials[0]
        self.core.connect_failed(ticket, error, self.now)
        self.dials.remove(ticket)
        self.drain()

    def finish_close(self, close: Close[Conn] | None = None) -> Entry[Conn]:
        """Carry out a Close (the oldest by default): the driver closes it."""
        if close is None:
            close = self.closes[0]
        self.closes.remove(close)
        self.closed += 1
        self.core.closed(close.entry, self.now)
        self.drain()
        return close.entry

    def finish_all_closes(self) -> None:
        while self.closes:
            self.finish_close()

    def abandon(self, waiter: Waiter[Conn], *, timed_out: bool = True) -> None:
        self.core.abandon(waiter, self.now, timed_out=timed_out)
        self.drain()

    def expire(self) -> float | None:
        due = self.core.expire(self.now)
        self.drain()
        return due

    def close(self) -> None:
        self.core.close(self.now)
        self.drain()

    # -- checks ------------------------------------------------------------------

    def check(self) -> None:
        """``check()`` plus the driver-level ledger against the core's counts."""
        core = self.core
        core.check()
        s = core.stats()
        assert s.dialing == len(self.dials)
        assert s.closing == len(self.closes)
        # Every connection the driver holds is idle, in use or closing.
        assert self.opened - self.closed == s.open_connections - s.dialing
        assert self.opened - self.closed == s.idle + s.in_use + s.closing
        assert s.dials == self.opened
        assert s.closed == self.closed

    def counts(self) -> tuple[int, int, int, int, int, int]:
        """(open, dialing, idle, in_use, closing, waiting)."""
        s = self.core.stats()
        return (s.open_connections, s.dialing, s.idle, s.in_use, s.closing, s.waiting)
