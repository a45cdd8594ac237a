"""A test rig that plays the shell for a bare ``PoolCore``.

It keeps the driver-level ledger (connections opened and closed by the
"driver"), sorts the core's effects into pending dials, pending closes and
woken waiters, and lets a test settle them one by one in any order. After
every input it checks each state change of every connection and waiter it
has seen against the core's tables of allowed moves (``sqlgate._core.states``).
"""

from __future__ import annotations

import copy
from typing import Any

from sqlgate._core import (
    ABANDONED,
    CLOSED,
    ENTRY_MOVES,
    FAILED,
    NAMES,
    NEW,
    WAITER_MOVES,
    WAITING,
    Close,
    Connect,
    Entry,
    PoolConfig,
    PoolCore,
    Waiter,
    Wake,
)
from tests.fakes import FakeClock

__all__ = ["Conn", "Rig", "force_knobs"]


class Conn:
    """A stand-in driver connection, numbered in dial order."""

    def __init__(self, number: int) -> None:
        self.number = number

    def __repr__(self) -> str:
        return f"c{self.number}"


def force_knobs(core: PoolCore[Any], **changes: Any) -> None:
    """Overwrite knobs in place, unvalidated, as a bug could: for ``check()`` tests."""
    config = copy.copy(core.config)
    for name, value in changes.items():
        object.__setattr__(config, name, value)
    core.config = config


def _follow(
    seen: dict[int, tuple[Any, int]],
    moves: frozenset[tuple[int, int]],
    final: tuple[int, ...],
) -> None:
    """Check each watched object's move since last seen; stop watching final ones."""
    for key, (obj, before) in list(seen.items()):
        after = obj.state
        assert after in NAMES, f"{obj!r}: unknown state {after}"
        if after != before:
            move = (before, after)
            assert move in moves, f"{obj!r}: move {NAMES[before]} -> {NAMES[after]}"
        if after in final:
            del seen[key]
        else:
            seen[key] = (obj, after)


class Rig:
    """A ``PoolCore`` plus the shell's bookkeeping, driven by hand."""

    def __init__(self, *, rng_value: float = 0.0, **knobs: Any) -> None:
        self.clock = FakeClock(0.0)
        self.core: PoolCore[Conn] = PoolCore(PoolConfig(**knobs), rng=lambda: rng_value)
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
        #: Every connection and waiter seen and not yet in a final state, by
        #: id, with the state it was last seen in.
        self.entry_states: dict[int, tuple[Entry[Conn], int]] = {}
        self.waiter_states: dict[int, tuple[Waiter[Conn], int]] = {}

    @property
    def now(self) -> float:
        return self.clock.now

    def file_effects(self) -> list[Any]:
        """Take the core's effects and file them, then check the moves; returns them."""
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
        self.check_moves()
        return out

    def check_moves(self) -> None:
        """Every state change since the last input is in the table of moves.

        Connections are those registered, being closed or handed to a woken
        waiter; waiters those queued or woken. One first seen comes from NEW
        (a connection) or WAITING (a waiter). Final states (CLOSED; FAILED,
        ABANDONED) end the watch.
        """
        core = self.core
        woken = [e.waiter for e in self.last if isinstance(e, Wake)]
        entries = [*core._registry.values(), *(c.entry for c in self.closes)]
        entries += [w.entry for w in woken if w.entry is not None]
        for entry in entries:
            self.entry_states.setdefault(id(entry), (entry, NEW))
        for waiter in [*core._waiters, *woken]:
            self.waiter_states.setdefault(id(waiter), (waiter, WAITING))
        _follow(self.entry_states, ENTRY_MOVES, (CLOSED,))
        _follow(self.waiter_states, WAITER_MOVES, (FAILED, ABANDONED))

    # -- inputs, each followed by file_effects() ---------------------------------------

    def acquire(self) -> Entry[Conn] | Waiter[Conn]:
        got = self.core.acquire(self.now)
        self.file_effects()
        return got

    def release(self, entry: Entry[Conn], *, broken: bool = False) -> None:
        self.core.release(entry, self.now, broken=broken)
        self.file_effects()

    def connect(self, ticket: int | None = None) -> Entry[Conn]:
        """Settle a dial (the oldest by default) with a new connection."""
        if ticket is None:
            ticket = self.dials[0]
        self.opened += 1
        conn = Conn(self.opened)
        entry = self.core.connected(ticket, conn, self.now)
        self.dials.remove(ticket)
        self.file_effects()
        return entry

    def fail(self, error: BaseException, ticket: int | None = None) -> None:
        """Settle a dial (the oldest by default) as failed."""
        if ticket is None:
            ticket = self.dials[0]
        self.core.connect_failed(ticket, error, self.now)
        self.dials.remove(ticket)
        self.file_effects()

    def finish_close(self, close: Close[Conn] | None = None) -> Entry[Conn]:
        """Carry out a Close (the oldest by default): the driver closes it."""
        if close is None:
            close = self.closes[0]
        self.closes.remove(close)
        self.closed += 1
        self.core.close_done(close.entry, self.now)
        self.file_effects()
        return close.entry

    def finish_all_closes(self) -> None:
        while self.closes:
            self.finish_close()

    def abandon(self, waiter: Waiter[Conn], *, timed_out: bool = True) -> None:
        self.core.abandon(waiter, self.now, timed_out=timed_out)
        self.file_effects()

    def expire(self) -> float | None:
        due = self.core.expire(self.now)
        self.file_effects()
        return due

    def close(self) -> None:
        self.core.close(self.now)
        self.file_effects()

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
