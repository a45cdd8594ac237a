r"""The pool's state machine: every count, every rule, every decision; no I/O.

Theory of operation
===================

``PoolCore`` is the whole of sqlgate's pool logic. It never opens, closes or
waits on anything: it takes no lock, reads no clock (each input takes ``now``,
a monotonic time in float seconds), calls no driver and never awaits. A shell
(``Pool`` for threads, ``AsyncPool`` for asyncio) tells it what happened, and
the core answers by appending *effects* to its ``outbox``:

    Connect(ticket)     dial one connection, then report ``connected(ticket,
                        conn)`` or ``connect_failed(ticket, error)``, exactly once.
    Close(entry, why)   close the driver connection, then report ``closed(entry)``.
    Wake(waiter)        the waiter's outcome is settled (``waiter.entry`` or
                        ``waiter.error``); wake whoever is blocked on it.

Effects go to an outbox, not a return value, so the common path (an idle
connection handed out, then returned) allocates nothing and returns the entry
itself. The shell drains the outbox under its lock and carries the effects out
after releasing it, so no driver call or user code ever runs under the lock.

Life cycle of a connection (an ``Entry``)::

    (ticket) DIALING --connected--> IN_USE <--> IDLE
                                       \        /
                                        CLOSING --closed--> CLOSED

A dial is reserved before any I/O: issuing ``Connect`` bumps ``num_open``, so
a dial in flight counts toward ``max_open`` (Go's rule). A connection being
closed still counts until the shell reports ``closed``: the driver never holds
more than ``max_open`` live connections, even while a close is slow.

Every connection that becomes free goes through one choke point, ``_put``:
the head waiter gets it; else it stays idle if there is room; else it is
closed. Releases, finished dials and abandoned hand-offs all take this path.
That is how Go issue 6593 cannot happen here: a dial that completes after its
waiter was served by a release does not vanish, it meets ``_put`` like any
other connection and ends with the next waiter, idle, or closed.

Waiters are served first come, first served (a deque). Idle connections are
reused most recently returned first (a stack), so that when demand falls the
surplus sits untouched at the bottom and ages out through
``conn_max_idle_time``. A waiter that gives up calls ``abandon``; if a
connection was handed to it in the meantime, that connection goes back
through ``_put`` (nothing is lost in the race between a timeout and a
hand-off).

Dials are issued by ``_maybe_dial`` after every input that can change demand or
capacity: enough to cover the queued waiters plus the ``min_idle`` deficit,
less those already in flight, within ``max_open`` and ``max_connecting``.
A failed dial fails the head waiter with the driver's error (nobody hangs on a
dial that will never come) and, if others still wait, dials again for them.
Refilling ``min_idle`` after a failure backs off exponentially instead.

Invariants (``check()`` verifies each and names the one that fails)
-------------------------------------------------------------------
I1 conservation   num_open == dialing + idle + in_use + closing
I2 ledger         dials == closed + idle + in_use + closing: every connection
                  ever dialed is idle, in use, being closed or closed
I3 limit          a dial is reserved only while num_open < max_open; over
                  the limit (num_open - closing > max_open, which only a
                  shrinking ``set_max_open`` can cause) nothing is idle
I4 no barging     if anyone waits, nothing is idle
I5 liveness       if anyone waits, enough dials are in flight to cover them,
                  as far as max_open and max_connecting allow
I6 exactly once   each entry, ticket and waiter is in exactly one state, and
                  the registry, idle stack and waiter queue agree with it
I7 idle cap       idle <= effective max_idle; closed pools keep none
I8 closed         a closed pool has no idle connection, waiter or new dial
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from sqlgate.errors import PoolClosed, TooManyWaiters
from sqlgate.stats import Stats

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CLOSED",
    "CLOSING",
    "IDLE",
    "IN_USE",
    "Close",
    "Connect",
    "Effect",
    "Entry",
    "InvariantError",
    "PoolCore",
    "Waiter",
    "Wake",
]

C = TypeVar("C")

# Entry states.
IN_USE: Final = 1
IDLE: Final = 2
CLOSING: Final = 3
CLOSED: Final = 4

# Waiter states.
WAITING: Final = 10
SERVED: Final = 11
FAILED: Final = 12
ABANDONED: Final = 13

# Close reasons (``Close.reason``), also the keys of the per-reason counters.
BROKEN: Final = "broken"
MAX_IDLE: Final = "max_idle"
MAX_IDLE_TIME: Final = "max_idle_time"
MAX_LIFETIME: Final = "max_lifetime"
MAX_OPEN: Final = "max_open"
POOL_CLOSED: Final = "pool_closed"

#: Lifetimes are shortened by a random fraction in [0, LIFETIME_JITTER) so that
#: connections dialed together do not all expire together; never lengthened, so
#: a lifetime set just below a server or proxy timeout stays below it.
LIFETIME_JITTER: Final = 0.05
#: Backoff for refilling ``min_idle`` after failed dials: first delay, cap (s).
REFILL_BACKOFF: Final = (0.1, 10.0)


class InvariantError(AssertionError):
    """``PoolCore.check()`` found a broken invariant; the message names it."""


class Entry(Generic[C]):
    """One driver connection and its bookkeeping."""

    __slots__ = ("acquired_at", "conn", "created_at", "jitter", "returned_at", "state")

    def __init__(self, conn: C, created_at: float, jitter: float) -> None:
        self.conn: Final = conn
        #: One of IN_USE, IDLE, CLOSING, CLOSED.
        self.state = IN_USE
        #: When the dial completed (monotonic s); lifetime counts from here.
        self.created_at: Final = created_at
        #: Lifetime multiplier in (1 - LIFETIME_JITTER, 1], drawn once.
        self.jitter: Final = jitter
        #: When it last became idle; idle time counts from here.
        self.returned_at = created_at
        #: When it was last handed out; use time counts from here.
        self.acquired_at = created_at

    def __repr__(self) -> str:
        return f"<Entry {self.conn!r} state={self.state}>"


class Waiter(Generic[C]):
    """A queued acquire. The core settles it; the shell owns ``token``."""

    __slots__ = ("enqueued_at", "entry", "error", "state", "token")

    def __init__(self, enqueued_at: float) -> None:
        #: One of WAITING, SERVED, FAILED, ABANDONED.
        self.state = WAITING
        self.enqueued_at: Final = enqueued_at
        #: The connection handed over, once SERVED.
        self.entry: Entry[C] | None = None
        #: Why it failed, once FAILED: a driver error or PoolClosed.
        self.error: BaseException | None = None
        #: The shell's wake-up primitive (a lock, a future); opaque here.
        self.token: object = None


class Connect:
    """Effect: dial one connection for ``ticket``; report how it went, once."""

    __slots__ = ("ticket",)

    def __init__(self, ticket: int) -> None:
        self.ticket: Final = ticket

    def __repr__(self) -> str:
        return f"Connect({self.ticket})"


class Close(Generic[C]):
    """Effect: close ``entry.conn`` (it is already CLOSING), then report ``closed``."""

    __slots__ = ("entry", "reason")

    def __init__(self, entry: Entry[C], reason: str) -> None:
        self.entry: Final = entry
        self.reason: Final = reason

    def __repr__(self) -> str:
        return f"Close({self.entry!r}, {self.reason!r})"


class Wake(Generic[C]):
    """Effect: ``waiter`` is settled (served or failed); wake it."""

    __slots__ = ("waiter",)

    def __init__(self, waiter: Waiter[C]) -> None:
        self.waiter: Final = waiter

    def __repr__(self) -> str:
        return f"Wake(state={self.waiter.state})"


Effect = Connect | Close[C] | Wake[C]


# -- knob validation ---------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_duration(name: str, value: object, *, zero_ok: bool = False) -> float | None:
    """Validate a duration knob: None or ``math.inf`` mean "no limit".

    Args:
        name: the knob's name, for the error message.
        value: what the caller passed.
        zero_ok: whether 0 is allowed (a timeout of 0 is; a lifetime of 0 is not).

    Returns:
        The value as a float, or None for "no limit".

    Raises:
        TypeError: not a number.
        ValueError: NaN, negative, or zero where zero makes no sense.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be {bound} seconds or None, got {value!r}")
    return None if seconds == math.inf else seconds


class PoolCore(Generic[C]):
    """The pool state machine. Not thread-safe: the shell serialises calls."""

    def __init__(
        self,
        *,
        max_open: int = 0,
        max_idle: int = 2,
        min_idle: int = 0,
        max_connecting: int = 2,
        conn_max_lifetime: float | None = None,
        conn_max_idle_time: float | None = None,
        max_waiting: int = 0,
        name: str = "pool",
        rng: Callable[[], float] = random.random,
    ) -> None:
        """Create an empty pool; no dial is issued until an input asks for one.

        Args:
            max_open: most connections open at once, dials in flight and closes
                in progress included; 0 means unlimited.
            max_idle: most connections kept idle; <= 0 keeps none. Capped at
                ``max_open`` when that is set.
            min_idle: idle connections the pool keeps dialed in the background;
                must not exceed ``max_idle`` (nor ``max_open``).
            max_connecting: most dials in flight at once; 0 means unlimited.
            conn_max_lifetime: seconds a connection may live (less up to 5 %
                jitter); None means forever.
            conn_max_idle_time: seconds a connection may sit idle; None means
                forever.
            max_waiting: most callers queued at once; 0 means unbounded.
            name: the pool's name, used in error messages.
            rng: a source of floats in [0, 1) for the lifetime jitter.

        Raises:
            TypeError: a knob of the wrong type.
            ValueError: a knob out of range, naming the knob and the value.
        """
        # -- knobs (validated; the setters re-validate) --
        #: Most connections counted open at once; <= 0 means unlimited.
        self.max_open = _check_int("max_open", max_open, 0)
        #: Idle cap as configured; <= 0 keeps none. See ``_idle_cap``.
        self.max_idle = max(0, _check_int("max_idle", max_idle, -(2**63)))
        #: Warm floor of idle connections, refilled in the background.
        self.min_idle = _check_int("min_idle", min_idle, 0)
        #: Most dials in flight at once; 0 means unlimited.
        self.max_connecting = _check_int("max_connecting", max_connecting, 0)
        #: Seconds a connection may live; None means forever.
        self.conn_max_lifetime = check_duration("conn_max_lifetime", conn_max_lifetime)
        #: Seconds a connection may sit idle; None means forever.
        self.conn_max_idle_time = check_duration(
            "conn_max_idle_time", conn_max_idle_time
        )
        #: Most callers queued at once; 0 means unbounded.
        self.max_waiting = _check_int("max_waiting", max_waiting, 0)
        self.name = name
        self._rng = rng
        self._check_min_idle(self.min_idle, self.max_idle, self.max_open)

        # -- state --
        #: Effects for the shell to carry out, oldest first.
        self.outbox: list[Effect[C]] = []
        #: Idle connections; the right end is the most recently returned.
        self._idle: deque[Entry[C]] = deque()
        #: Queued acquires, first come first served.
        self._waiters: deque[Waiter[C]] = deque()
        #: Every connection not yet closed, by ``id(conn)`` (HikariCP's shared list).
        self._registry: dict[int, Entry[C]] = {}
        #: Dials in flight: ticket -> when it was issued.
        self._tickets: dict[int, float] = {}
        self._next_ticket = 1
        #: dialing + idle + in_use + closing (I1): what counts against max_open.
        self.num_open = 0
        self._in_use = 0
        self._closing = 0
        self._closed = False
        #: True while a lifetime or idle-time knob is set: the acquire path must
        #: then look at each idle connection's age.
        self._expiring = False
        #: Consecutive failed dials, and when refilling min_idle may resume.
        self._fails_in_row = 0
        self._refill_at = 0.0
        #: The most recent dial failure, for chaining onto PoolTimeout.
        self.last_dial_error: BaseException | None = None
        # -- counters (monotonic) --
        self._dials = 0
        self._dial_failures = 0
        self._closed_count = 0
        self._acquires = 0
        self._wait_count = 0
        self._timeouts = 0
        self._by_reason: dict[str, int] = dict.fromkeys(
            (BROKEN, MAX_IDLE, MAX_IDLE_TIME, MAX_LIFETIME, MAX_OPEN, POOL_CLOSED), 0
        )
        self._wait_duration = 0.0
        self._dial_duration = 0.0
        self._use_duration = 0.0
        self._update_expiring()
        #: ``_idle_cap()``, cached for ``_put``; see ``_limits_changed``.
        self._idle_limit = self._idle_cap()
        #: Whether ``_put`` must check for a closed pool or one over max_open;
        #: set by close() and a shrinking set_max_open, cleared by ``_put``.
        self._put_checks = False

    # -- derived limits ------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    @property
    def failing(self) -> bool:
        """Whether the most recent dial failed (``last_dial_error`` is current)."""
        return self._fails_in_row > 0

    def _idle_cap(self) -> int:
        """The effective idle cap: ``max_idle`` capped at ``max_open`` (Go's rule)."""
        if self.max_open > 0:
            return min(self.max_idle, self.max_open)
        return self.max_idle

    def _limits_changed(self) -> None:
        """Recompute what the hot path reads instead of calling ``_idle_cap``."""
        self._idle_limit = self._idle_cap()

    @staticmethod
    def _check_min_idle(min_idle: int, max_idle: int, max_open: int) -> None:
        cap = min(max_idle, max_open) if max_open > 0 else max_idle
        if min_idle > cap:
            raise ValueError(
                f"min_idle={min_idle} exceeds the idle cap {cap} "
                f"(max_idle={max_idle}, max_open={max_open})"
            )

    def _update_expiring(self) -> None:
        self._expiring = (
            self.conn_max_lifetime is not None or self.conn_max_idle_time is not None
        )

    def _expiry_reason(self, entry: Entry[C], now: float) -> str | None:
        """Why ``entry`` must be closed now, or None if it may live on."""
        lifetime = self.conn_max_lifetime
        if lifetime is not None and now - entry.created_at >= lifetime * entry.jitter:
            return MAX_LIFETIME
        idle_time = self.conn_max_idle_time
        if (
            idle_time is not None
            and entry.state == IDLE
            and now - entry.returned_at >= idle_time
        ):
            return MAX_IDLE_TIME
        return None

    def _deadline(self, entry: Entry[C]) -> float:
        """When idle ``entry`` expires (math.inf if never)."""
        at = math.inf
        if self.conn_max_lifetime is not None:
            at = entry.created_at + self.conn_max_lifetime * entry.jitter
        if self.conn_max_idle_time is not None:
            at = min(at, entry.returned_at + self.conn_max_idle_time)
        return at

    # -- inputs --------------------------------------------------------------

    def acquire(self, now: float) -> Entry[C] | Waiter[C]:
        """A caller wants a connection.

        Pre: the pool is open. Post: either an idle entry is now IN_USE and
        returned, or a new WAITING waiter is queued and returned (dials issued
        as needed). Idle connections found expired on the way are closed.

        Raises:
            PoolClosed: the pool is closed (nothing changes).
            TooManyWaiters: no idle connection and ``max_waiting`` are queued.
        """
        if self._closed:
            raise PoolClosed(f"{self.name} is closed")
        idle = self._idle
        while idle:
            entry = idle.pop()
            if self._expiring:
                reason = self._expiry_reason(entry, now)
                if reason is not None:
                    self._close(entry, reason)
                    continue
            entry.state = IN_USE
            entry.acquired_at = now
            self._in_use += 1
            self._acquires += 1
            return entry
        if self.max_waiting and len(self._waiters) >= self.max_waiting:
            raise TooManyWaiters(
                f"{self.name}: max_waiting={self.max_waiting} callers already waiting "
                f"(max_open={self.max_open}, in_use={self._in_use})"
            )
        waiter: Waiter[C] = Waiter(now)
        self._waiters.append(waiter)
        self._wait_count += 1
        self._maybe_dial(now)
        return waiter

    def release(self, entry: Entry[C], now: float, *, broken: bool = False) -> None:
        """A caller gives back a connection it was handed.

        Pre: ``entry`` is IN_USE. Post: it went to a waiter, the idle stack, or
        CLOSING (broken, expired, over the limit, idle full, pool closed).

        Raises:
            ValueError: ``entry`` is not in use (released twice); nothing changes.
        """
        if entry.state != IN_USE:
            raise ValueError(
                f"{self.name}: connection {entry.conn!r} is not in use "
                "(released twice?)"
            )
        self._in_use -= 1
        self._use_duration += now - entry.acquired_at
        if broken:
            self._close(entry, BROKEN)
        elif (
            self.conn_max_lifetime is not None
            and self._expiry_reason(entry, now) == MAX_LIFETIME
        ):
            self._close(entry, MAX_LIFETIME)
        else:
            self._put(entry, now)

    def connected(self, ticket: int, conn: C, now: float) -> Entry[C]:
        """The dial for ``ticket`` succeeded with ``conn``.

        Pre: ``ticket`` is in flight. Post: the ticket is settled and the new
        entry went through ``_put`` (a waiter, idle, or CLOSING).

        Raises:
            ValueError: unknown or already settled ticket, or ``conn`` is
                already registered; nothing changes.
        """
        if ticket not in self._tickets:
            raise ValueError(f"{self.name}: ticket {ticket} is not in flight")
        if id(conn) in self._registry:
            raise ValueError(f"{self.name}: connection {conn!r} is already registered")
        issued_at = self._tickets.pop(ticket)  # settles the reservation
        self._dials += 1
        self._dial_duration += now - issued_at
        self._fails_in_row = 0
        self._refill_at = 0.0
        entry = Entry(conn, now, 1.0 - LIFETIME_JITTER * self._rng())
        self._registry[id(conn)] = entry
        self._put(entry, now)
        self._maybe_dial(now)
        return entry

    def connect_failed(self, ticket: int, error: BaseException, now: float) -> None:
        """The dial for ``ticket`` failed with ``error``.

        Post: the ticket is settled and its slot freed; the head waiter, if
        any, fails with ``error``; dials are re-issued for remaining waiters;
        refilling ``min_idle`` backs off.

        Raises:
            ValueError: unknown or already settled ticket; nothing changes.
        """
        if ticket not in self._tickets:
            raise ValueError(f"{self.name}: ticket {ticket} is not in flight")
        del self._tickets[ticket]  # settles the reservation
        self.num_open -= 1
        self._dial_failures += 1
        self._fails_in_row += 1
        self.last_dial_error = error
        first, cap = REFILL_BACKOFF
        self._refill_at = now + min(cap, first * 2 ** (self._fails_in_row - 1))
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.state = FAILED
            waiter.error = error
            self._wait_duration += now - waiter.enqueued_at
            self.outbox.append(Wake(waiter))
        self._maybe_dial(now)

    def closed(self, entry: Entry[C], now: float) -> None:
        """The shell finished closing ``entry`` (whether or not the driver raised).

        Post: the entry is CLOSED, unregistered, and its slot is free; dials
        are issued if waiters can now use the room.

        Raises:
            ValueError: ``entry`` was not CLOSING; nothing changes.
        """
        if entry.state != CLOSING:
            raise ValueError(f"{self.name}: {entry!r} is not being closed")
        entry.state = CLOSED
        del self._registry[id(entry.conn)]
        self._closing -= 1
        self.num_open -= 1  # settles the slot reserved when it was dialed
        self._closed_count += 1
        self._maybe_dial(now)

    def abandon(self, waiter: Waiter[C], now: float, *, timed_out: bool) -> None:
        """A waiter gives up (timeout or cancellation).

        Post: a WAITING waiter leaves the queue; a SERVED one's connection goes
        back through ``_put`` (the hand-off raced the give-up, nothing is lost);
        a FAILED or ABANDONED one is left as it is.
        """
        if waiter.state == WAITING:
            self._waiters.remove(waiter)
            self._wait_duration += now - waiter.enqueued_at
            if timed_out:
                self._timeouts += 1
        elif waiter.state == SERVED:
            entry = waiter.entry
            assert entry is not None
            waiter.entry = None
            self._in_use -= 1
            self._put(entry, now)
        else:
            return
        waiter.state = ABANDONED

    def expire(self, now: float) -> float | None:
        """Maintenance tick: close expired idle connections, refill ``min_idle``.

        Returns:
            When the next tick is due (monotonic s), or None if nothing will
            need one until a knob or the pool changes.
        """
        if self._closed:
            return None
        self._sweep(now)
        self._maybe_dial(now)
        due = math.inf
        if self._expiring:
            for entry in self._idle:
                due = min(due, self._deadline(entry))
        if (
            self.min_idle
            and len(self._idle) + len(self._tickets) < self._min_idle_target()
        ):
            due = min(due, max(self._refill_at, now))
        return None if due == math.inf else due

    def close(self, now: float) -> None:
        """Close the pool; idempotent.

        Post: idle connections are CLOSING, waiters FAILED with PoolClosed;
        connections in use are closed when released and dials in flight when
        they land; no new dial is issued.
        """
        if self._closed:
            return
        self._closed = True
        self._put_checks = True
        while self._idle:
            self._close(self._idle.pop(), POOL_CLOSED)
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.state = FAILED
            waiter.error = PoolClosed(f"{self.name} was closed while waiting")
            self._wait_duration += now - waiter.enqueued_at
            self.outbox.append(Wake(waiter))

    # -- setters -------------------------------------------------------------

    def set_max_open(self, n: int, now: float) -> None:
        """Change ``max_open`` (0 = unlimited); takes effect at once.

        Shrinking closes surplus idle connections now and surplus in-use ones
        as they are released; growing dials for queued waiters.
        """
        n = _check_int("max_open", n, 0)
        if n and self.min_idle > min(self.max_idle, n):
            # Keep the knobs coherent rather than refuse: Go lowers max_idle too.
            self.min_idle = min(self.max_idle, n)
        self.max_open = n
        self._put_checks = True
        self._limits_changed()
        self._shrink_idle()
        self._maybe_dial(now)

    def set_max_idle(self, n: int, now: float) -> None:
        """Change ``max_idle`` (<= 0 keeps none); surplus idle ones close now."""
        n = max(0, _check_int("max_idle", n, -(2**63)))
        self.max_idle = n
        self._limits_changed()
        self.min_idle = min(self.min_idle, self._idle_cap())
        self._shrink_idle()
        self._maybe_dial(now)

    def set_min_idle(self, n: int, now: float) -> None:
        """Change the warm floor; it may not exceed the idle cap."""
        n = _check_int("min_idle", n, 0)
        self._check_min_idle(n, self.max_idle, self.max_open)
        self.min_idle = n
        self._refill_at = 0.0
        self._maybe_dial(now)

    def set_max_connecting(self, n: int, now: float) -> None:
        """Change how many dials may be in flight at once (0 = unlimited)."""
        self.max_connecting = _check_int("max_connecting", n, 0)
        self._maybe_dial(now)

    def set_conn_max_lifetime(self, seconds: float | None, now: float) -> None:
        """Change the lifetime (None = forever); expired idle ones close now."""
        self.conn_max_lifetime = check_duration("conn_max_lifetime", seconds)
        self._update_expiring()
        self._sweep(now)
        self._maybe_dial(now)

    def set_conn_max_idle_time(self, seconds: float | None, now: float) -> None:
        """Change the idle time limit (None = forever); expired ones close now."""
        self.conn_max_idle_time = check_duration("conn_max_idle_time", seconds)
        self._update_expiring()
        self._sweep(now)
        self._maybe_dial(now)

    def set_max_waiting(self, n: int) -> None:
        """Change the queue bound (0 = unbounded); queued callers stay queued."""
        self.max_waiting = _check_int("max_waiting", n, 0)

    # -- queries -------------------------------------------------------------

    def lookup(self, conn: object) -> Entry[C]:
        """The entry of a connection this pool handed out.

        A single dict read, safe without the shell's lock; ``release`` checks
        the state again under it.

        Raises:
            ValueError: ``conn`` is not a connection of this pool that is in
                use now (foreign, already released, or closed).
        """
        entry = self._registry.get(id(conn))
        if entry is None or entry.conn is not conn:
            raise ValueError(
                f"{self.name}: {conn!r} is not a connection of this pool "
                "(foreign, or already closed)"
            )
        if entry.state != IN_USE:
            raise ValueError(f"{self.name}: {conn!r} is not in use (released twice?)")
        return entry

    def holds(self, conn: object) -> bool:
        """Whether ``conn`` is a live (not yet closed) connection of this pool."""
        entry = self._registry.get(id(conn))
        return entry is not None and entry.conn is conn

    def take_effects(self) -> list[Effect[C]]:
        """Hand the outbox to the shell and start a fresh one."""
        out = self.outbox
        self.outbox = []
        return out

    def stats(self) -> Stats:
        """A snapshot of every figure (see ``Stats``)."""
        by = self._by_reason
        return Stats(
            max_open_connections=self.max_open,
            open_connections=self.num_open,
            in_use=self._in_use,
            idle=len(self._idle),
            wait_count=self._wait_count,
            wait_duration=self._wait_duration,
            max_idle_closed=by[MAX_IDLE],
            max_idle_time_closed=by[MAX_IDLE_TIME],
            max_lifetime_closed=by[MAX_LIFETIME],
            max_idle=self._idle_cap(),
            min_idle=self._min_idle_target(),
            waiting=len(self._waiters),
            dialing=len(self._tickets),
            closing=self._closing,
            acquires=self._acquires,
            timeouts=self._timeouts,
            dials=self._dials,
            dial_failures=self._dial_failures,
            broken_closed=by[BROKEN],
            closed=self._closed_count,
            dial_duration=self._dial_duration,
            use_duration=self._use_duration,
        )

    def snapshot(self) -> tuple[object, ...]:
        """A hashable summary of the state, for exhaustive search to dedupe on."""
        return (
            self.num_open,
            len(self._tickets),
            len(self._idle),
            self._in_use,
            self._closing,
            len(self._waiters),
            self._closed,
            self.max_open,
            self.max_idle,
        )

    def check(self) -> None:
        """Verify every invariant (I1-I8 in the module header).

        Raises:
            InvariantError: naming the first invariant that does not hold.
        """
        dialing = len(self._tickets)
        idle = len(self._idle)
        states = [e.state for e in self._registry.values()]
        in_use = states.count(IN_USE)
        closing = states.count(CLOSING)

        def fail(rule: str) -> None:
            raise InvariantError(
                f"{self.name}: {rule}: num_open={self.num_open} dialing={dialing} "
                f"idle={idle} in_use={self._in_use} closing={self._closing} "
                f"waiting={len(self._waiters)} max_open={self.max_open}"
            )

        if self.num_open != dialing + idle + self._in_use + self._closing:
            fail("I1 conservation")
        if self._dials != self._closed_count + idle + self._in_use + self._closing:
            fail("I2 ledger")
        over = self.max_open > 0 and self.num_open - self._closing > self.max_open
        if over and idle:
            fail("I3 limit")
        if self._waiters and idle:
            fail("I4 no barging")
        if self._waiters and not self._closed:
            want = len(self._waiters)
            if self.max_open > 0:
                want = min(want, dialing + max(0, self.max_open - self.num_open))
            if self.max_connecting > 0:
                want = min(want, self.max_connecting)
            if dialing < want:
                fail("I5 liveness")
        if (
            in_use != self._in_use
            or closing != self._closing
            or len(states) != idle + in_use + closing
            or any(e.state != IDLE for e in self._idle)
            or any(w.state != WAITING for w in self._waiters)
            or len(set(map(id, self._idle))) != idle
        ):
            fail("I6 exactly once")
        if idle > self._idle_cap():
            fail("I7 idle cap")
        if self._closed and (idle or self._waiters):
            fail("I8 closed")

    # -- internals -----------------------------------------------------------

    def _min_idle_target(self) -> int:
        return min(self.min_idle, self._idle_cap())

    def _put(self, entry: Entry[C], now: float) -> None:
        """The choke point: a free connection goes to a waiter, idle, or closing.

        Pre: ``entry`` is counted in no state (the caller uncounted it).
        """
        if self._put_checks:  # closed, or max_open shrank: rare, so one flag
            if self._closed:
                self._close(entry, POOL_CLOSED)
                return
            if self.max_open > 0 and self.num_open - self._closing > self.max_open:
                # Over the limit after set_max_open shrank it: closing ones no
                # longer count here, or a slow close would make us close one
                # too many.
                self._close(entry, MAX_OPEN)
                return
            self._put_checks = False  # back under the limit
        if self._waiters:
            waiter = self._waiters.popleft()
            entry.state = IN_USE
            entry.acquired_at = now
            self._in_use += 1
            self._acquires += 1
            waiter.entry = entry
            waiter.state = SERVED
            self._wait_duration += now - waiter.enqueued_at
            self.outbox.append(Wake(waiter))
        elif len(self._idle) < self._idle_limit:
            entry.state = IDLE
            entry.returned_at = now
            self._idle.append(entry)
        else:
            self._close(entry, MAX_IDLE)

    def _close(self, entry: Entry[C], reason: str) -> None:
        """Start closing ``entry`` (counted in no state); it stays counted open."""
        entry.state = CLOSING
        self._closing += 1
        self._by_reason[reason] += 1
        self.outbox.append(Close(entry, reason))

    def _shrink_idle(self) -> None:
        """Close idle connections above the cap (or any, if over max_open)."""
        cap = self._idle_cap()
        if self.max_open > 0:
            busy = self.num_open - self._closing - len(self._idle)
            cap = min(cap, max(0, self.max_open - busy))
        while len(self._idle) > cap:
            # The oldest-returned first: the bottom of the stack.
            self._close(self._idle.popleft(), MAX_IDLE)

    def _sweep(self, now: float) -> None:
        """Close every expired idle connection."""
        if not self._expiring or not self._idle:
            return
        keep: deque[Entry[C]] = deque()
        for entry in self._idle:
            reason = self._expiry_reason(entry, now)
            if reason is None:
                keep.append(entry)
            else:
                self._close(entry, reason)
        self._idle = keep

    def _maybe_dial(self, now: float) -> None:
        """Issue dials for queued waiters and the ``min_idle`` deficit (I5)."""
        if self._closed:
            return
        need = len(self._waiters)
        if self.min_idle and now >= self._refill_at:
            need += max(0, self._min_idle_target() - len(self._idle))
        n = need - len(self._tickets)
        if self.max_open > 0:
            n = min(n, self.max_open - self.num_open)
        if self.max_connecting > 0:
            n = min(n, self.max_connecting - len(self._tickets))
        for _ in range(n):
            # Reserve before I/O (I3): the slot counts from now until the
            # ticket is settled by connected() or connect_failed().
            ticket = self._next_ticket
            self._next_ticket += 1
            self._tickets[ticket] = now
            self.num_open += 1
            self.outbox.append(Connect(ticket))
