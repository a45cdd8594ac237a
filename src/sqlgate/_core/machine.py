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
    Close(entry, why)   close the driver connection, then report ``close_done(entry)``.
    Wake(waiter)        the waiter's outcome is settled (``waiter.entry`` or
                        ``waiter.error``); wake whoever is blocked on it.

Effects go to an outbox, not a return value, so the common path (an idle
connection handed out, then returned) allocates nothing and returns the entry
itself. The shell takes the effects (``take_effects``) under its lock and
carries them out after releasing it, so no driver call or user code ever runs
under the lock.

Life cycle of a connection (an ``Entry``)::

    (ticket) --connected--> NEW --_put--> IN_USE | IDLE | CLOSING
    IN_USE <--acquire / release--> IDLE
    IN_USE, IDLE --> CLOSING --close_done--> CLOSED
    IN_USE --reclaim (leak tracking)--> CLOSED

The states are named in ``states.py``, with the table of every move allowed
(which the test rig checks after every input). A connection leaves IN_USE
through one helper, ``_take_out``, and reaches CLOSED through another,
``_settle_closed``.

A dial is reserved before any I/O: issuing ``Connect`` bumps ``num_open``, so
a dial in flight counts toward ``max_open`` (Go's rule). A connection being
closed still counts until the shell reports ``close_done``: the driver never holds
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
through ``release`` like any returned one (nothing goes missing in the race
between a timeout and a hand-off).

Dials are issued by ``_maybe_dial`` after every input that can change demand or
capacity: enough to cover the queued waiters plus the ``min_idle`` deficit,
less those already in flight, within ``max_open`` and ``max_connecting``.
A failed dial fails the head waiter with the driver's error (nobody hangs on a
dial that will never come) and, if others still wait, dials again for them.
Refilling ``min_idle`` after a failure backs off exponentially instead.

A dial that raises a programming error (``is_programming_error``: TypeError,
ValueError and the other built-in classes that say the code is wrong, never an
OSError) fails its waiter with that error, but it is not a failed dial: the
database answered nothing, so it neither counts toward the circuit breaker
nor shows in ``last_dial_error`` or ``dial_failures``. Only the ``min_idle``
refill backs off, so a broken connect callable is not redialed in a hot loop.
While the circuit is already open such a dial counts as the probe's failure,
so the probe keeps its backoff.

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
I7 idle cap       idle <= effective max_idle (max_idle capped at max_open),
                  and so is min_idle; closed pools keep none
I8 closed         a closed pool has no idle connection, waiter or new dial
I9 circuit        the circuit is open only after ``circuit_after`` (> 0)
                  dials failed in a row; while it is open nobody waits and
                  no dial is issued but the one probe, at ``probe_at``

Circuit breaker
---------------
When the database is down every dial fails, usually after a connect timeout.
Without a breaker each caller would queue and wait out its own timeout. After
``circuit_after`` dials fail in a row the circuit *opens*: every queued caller
fails at once with ``CircuitOpen`` (the last dial error chained), and so does
every acquire that finds nothing idle, until it closes. Idle connections are
still handed out. One *probe* dial at a time retries, with exponential backoff
and jitter (``CIRCUIT_BACKOFF``; the jitter comes from ``rng``); ``expire``
returns its due time so the shell's maintenance wakes for it, and any input
made after that time issues it too. The first dial that succeeds closes the
circuit and service resumes. Since nobody may queue while it is open, there is
no backlog to serve when it closes: callers refused meanwhile retry on their
own, and the probe's connection goes idle for the next one.

Leak tracking
-------------
In leak-tracking mode the shell calls ``loosen`` on each entry it hands out:
the entry then keeps only a weak reference to its connection, so a caller that
drops it lets the garbage collector take it. The weak reference's callback
(set by the shell; it must not take the shell's lock) reports the entry, and
``reclaim`` settles it: its slot is freed and it counts as closed, with reason
``leaked``; there is nothing left to close (the driver's own finalizer closed
its socket). ``release`` and ``close_in_use`` take the strong reference back.

Words
-----
Each word below means one thing in the core.

closed      of a connection only: its close is done (state CLOSED, reported
            by ``close_done``; the ``closed`` figure counts them).
shut        the pool no longer serves: ``close()`` was called (``_shut_down``;
            ``is_closed`` and ``PoolClosed`` keep the public word). The
            circuit breaker's "open" and "closes" are its own standard terms.
take out    a connection leaves IN_USE (``_take_out``: released, reclaimed,
            or taken by ``close_in_use``).
leaked      a loosened connection the garbage collector took while in use;
            ``reclaim`` settles it (never "lost").
check       verify the invariants (``check()``); knob values are
            *validated* (``validate_int``, ``validate_duration``, PoolConfig).
effects     what the core asks of the shell; the shell *takes* them
            (``take_effects``), it does not "drain" them.

The same words outside the core, and the rest of sqlgate's: docs/design.md,
"Words".
"""

from __future__ import annotations

import math
import random
import weakref
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Final, Generic, TypeVar, cast

from sqlgate._core.config import PoolConfig
from sqlgate._core.states import (
    ABANDONED,
    CLOSED,
    CLOSING,
    FAILED,
    IDLE,
    IN_USE,
    NAMES,
    NEW,
    SERVED,
    WAITING,
)
from sqlgate.errors import CircuitOpen, InvariantError, PoolClosed, TooManyWaiters
from sqlgate.stats import Stats

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "PROGRAMMING_ERRORS",
    "Close",
    "Connect",
    "Effect",
    "Entry",
    "InvariantError",
    "PoolCore",
    "Waiter",
    "Wake",
    "is_programming_error",
]

C = TypeVar("C")

# Close reasons (``Close.reason``), also the keys of the per-reason counters.
BROKEN: Final = "broken"
MAX_IDLE: Final = "max_idle"
MAX_IDLE_TIME: Final = "max_idle_time"
MAX_LIFETIME: Final = "max_lifetime"
MAX_OPEN: Final = "max_open"
POOL_CLOSED: Final = "pool_closed"
LEAKED: Final = "leaked"

#: Lifetimes are shortened by a random fraction in [0, LIFETIME_JITTER) so that
#: connections dialed together do not all expire together; never lengthened, so
#: a lifetime set just below a server or proxy timeout stays below it.
LIFETIME_JITTER: Final = 0.05
#: Backoff for refilling ``min_idle`` after failed dials: first delay, cap (s).
#: Separate floats, not one ``Final`` tuple: mypyc (2.4) compiles a ``Final``
#: tuple of floats into a name that is missing at run time.
REFILL_FIRST: Final = 0.1
REFILL_CAP: Final = 10.0
REFILL_BACKOFF = (REFILL_FIRST, REFILL_CAP)
#: Backoff of the circuit breaker's probe dials: first delay, cap (s). Each
#: delay is then scaled by a random factor in [0.5, 1): a database that comes
#: back is found within about half a second, and a fleet of pools does not
#: probe in step.
CIRCUIT_FIRST: Final = 0.05
CIRCUIT_CAP: Final = 0.5
CIRCUIT_BACKOFF = (CIRCUIT_FIRST, CIRCUIT_CAP)
#: Built-in exception classes a dial raises when the code is wrong (a connect
#: callable or adapter bug, a bad argument), not when the database is down.
PROGRAMMING_ERRORS: Final = (
    TypeError,
    ValueError,
    AttributeError,
    NameError,
    LookupError,
    ArithmeticError,
    AssertionError,
    ImportError,
    NotImplementedError,
)


#: Errors that are connection failures even though they subclass one of
#: ``PROGRAMMING_ERRORS`` (both are ValueErrors).
CONNECTION_ERRORS: Final = (OSError, UnicodeError)


def is_programming_error(error: BaseException) -> bool:
    """Whether a dial's ``error`` says the code is wrong, not the database down.

    Any ``OSError`` is a connection failure, even one that is also a
    ValueError (``ssl.SSLCertVerificationError``), and so is a
    ``UnicodeError`` (a ValueError too): bytes the driver could not decode
    come from the other end (a port that answers another protocol, or
    garbage), not from the code. A driver's own error classes are never
    programming errors here.
    """
    return isinstance(error, PROGRAMMING_ERRORS) and not isinstance(
        error, CONNECTION_ERRORS
    )


class Entry(Generic[C]):
    """One driver connection and its bookkeeping."""

    __slots__ = (
        "acquired_at",
        "conn",
        "created_at",
        "jitter",
        "key",
        "ref",
        "returned_at",
        "state",
    )

    def __init__(self, conn: C, created_at: float, jitter: float) -> None:
        #: The driver connection. While ``ref`` is set (a loosened entry, in
        #: leak-tracking mode) this is None and ``ref`` reaches it instead.
        self.conn = conn
        #: ``id(conn)``, the registry key, fixed at creation.
        self.key: Final = id(conn)
        #: A weak reference to ``conn`` while loosened (see ``loosen``).
        self.ref: weakref.ref[C] | None = None
        #: One of NEW, IN_USE, IDLE, CLOSING, CLOSED (``states``).
        self.state = NEW
        #: When the dial completed (monotonic s); lifetime counts from here.
        self.created_at: Final = created_at
        #: Lifetime multiplier in (1 - LIFETIME_JITTER, 1], drawn once.
        self.jitter: Final = jitter
        #: When it was last given back: released (to the idle stack or
        #: straight to a waiter) or dialed (monotonic s). Idle-time expiry
        #: reads it only while IDLE; in use, ``acquired_at - returned_at`` is
        #: how long it sat idle before this checkout (0.0: never idle).
        self.returned_at = created_at
        #: When it was last handed out; use time counts from here.
        self.acquired_at = created_at

    def __repr__(self) -> str:
        return f"<Entry {self.get()!r} state={NAMES[self.state]}>"

    def get(self) -> C | None:
        """The connection, or None if it was loosened and then collected."""
        ref = self.ref
        return self.conn if ref is None else ref()


class Waiter(Generic[C]):
    """A queued acquire. The core settles it; the shell owns ``token``."""

    __slots__ = ("at_capacity", "enqueued_at", "entry", "error", "state", "token")

    def __init__(self, enqueued_at: float) -> None:
        #: One of WAITING, SERVED, FAILED, ABANDONED (``states``).
        self.state = WAITING
        self.enqueued_at: Final = enqueued_at
        #: Whether it was queued at ``max_open``: no dial, in flight or within
        #: the limit, was left for it then (set by ``acquire``). A waiter
        #: queued below the limit waits for a dial, not for capacity.
        self.at_capacity = False
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
    """Effect: close ``entry.conn`` (already CLOSING), then report ``close_done``."""

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
        return f"Wake(state={NAMES[self.waiter.state]})"


Effect = Connect | Close[C] | Wake[C]


class PoolCore(Generic[C]):
    """The pool state machine. Not thread-safe: the shell serialises calls."""

    def __init__(
        self,
        config: PoolConfig | None = None,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """Create an empty pool; no dial is issued until an input asks for one.

        Args:
            config: the knobs (``PoolConfig``, validated; its defaults if
                None). The core reads the pool's limits and its name; the
                acquire timeout, rollback and leak knobs are the shell's.
            rng: a source of floats in [0, 1) for the lifetime and probe
                backoff jitter.
        """
        #: The knobs; replaced whole by each setter (it is frozen).
        self.config = PoolConfig() if config is None else config
        self._rng = rng
        # The hot path's copies of the config, set by ``_configure``.
        #: ``config.conn_max_lifetime`` and ``config.conn_max_idle_time``.
        self._lifetime: float | None = None
        self._idle_time: float | None = None
        #: True while a lifetime or idle-time knob is set: the acquire path must
        #: then look at each idle connection's age.
        self._expiring = False
        #: ``config.idle_cap``, for ``release`` and ``_put``.
        self._idle_limit = 0
        self._configure(self.config)

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
        #: ``close()`` was called: the pool no longer serves (I8).
        self._shut_down = False
        #: Consecutive failed dials (the circuit's count), and when refilling
        #: min_idle may resume.
        self._fails_in_row = 0
        self._refill_at = 0.0
        #: Consecutive dials that raised a programming error: the refill's
        #: backoff grows with them, the circuit ignores them.
        self._bugs_in_row = 0
        #: The most recent dial failure while dials are failing, for chaining
        #: onto PoolTimeout and CircuitOpen; None once a dial succeeds (so its
        #: traceback, and every frame that reaches, is let go).
        self.last_dial_error: BaseException | None = None
        # -- counters (monotonic) --
        self._dials = 0
        self._dial_failures = 0
        self._closed_count = 0
        self._acquires = 0
        self._wait_count = 0
        self._timeouts = 0
        self._by_reason: dict[str, int] = dict.fromkeys(
            (
                BROKEN,
                MAX_IDLE,
                MAX_IDLE_TIME,
                MAX_LIFETIME,
                MAX_OPEN,
                POOL_CLOSED,
                LEAKED,
            ),
            0,
        )
        self._wait_duration = 0.0
        self._dial_duration = 0.0
        self._use_duration = 0.0
        #: Whether ``_put`` must check for a closed pool or one over max_open;
        #: set by close() and a shrinking set_max_open, cleared by ``_put``.
        self._put_slow = False
        # -- circuit breaker (I9) --
        #: When the circuit opened (monotonic s); None while it is closed.
        self._circuit_since: float | None = None
        #: When the next probe dial may be issued, while the circuit is open.
        self.probe_at = 0.0
        self._circuit_opens = 0

    # -- derived limits ------------------------------------------------------

    @property
    def name(self) -> str:
        """The pool's name, for messages (``config.name``)."""
        return self.config.name

    @property
    def is_closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._shut_down

    @property
    def circuit_open(self) -> bool:
        """Whether the circuit breaker is open (see the module header)."""
        return self._circuit_since is not None

    @property
    def failing(self) -> bool:
        """Whether the most recent dial failed (``last_dial_error`` is set)."""
        return self.last_dial_error is not None

    def _configure(self, config: PoolConfig) -> None:
        """Adopt ``config`` (validated) and refresh the hot path's copies of it."""
        self.config = config
        self._lifetime = config.conn_max_lifetime
        self._idle_time = config.conn_max_idle_time
        self._expiring = config.expiring
        self._idle_limit = config.idle_cap

    def _expiry_reason(self, entry: Entry[C], now: float) -> str | None:
        """Why ``entry`` must be closed now, or None if it may live on."""
        lifetime = self._lifetime
        if lifetime is not None and now - entry.created_at >= lifetime * entry.jitter:
            return MAX_LIFETIME
        idle_time = self._idle_time
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
        lifetime, idle_time = self._lifetime, self._idle_time
        if lifetime is not None:
            at = entry.created_at + lifetime * entry.jitter
        if idle_time is not None:
            at = min(at, entry.returned_at + idle_time)
        return at

    # -- inputs --------------------------------------------------------------

    def acquire(self, now: float) -> Entry[C] | Waiter[C]:
        """A caller wants a connection.

        Pre: the pool is open. Post: either an idle entry is now IN_USE and
        returned, or a new WAITING waiter is queued and returned (dials issued
        as needed; its ``at_capacity`` says whether it queued at ``max_open``).
        Idle connections found expired on the way are closed.

        Raises:
            PoolClosed: the pool is closed (nothing changes).
            TooManyWaiters: no idle connection and ``max_waiting`` are queued.
            CircuitOpen: no idle connection and the circuit is open (I9); the
                last dial error is chained. A probe may be issued first.
        """
        if self._shut_down:
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
        config = self.config
        if config.max_waiting and len(self._waiters) >= config.max_waiting:
            raise TooManyWaiters(
                f"{self.name}: max_waiting={config.max_waiting} callers already "
                f"waiting (max_open={config.max_open}, in_use={self._in_use})"
            )
        if self._circuit_since is not None:
            # I9: fail fast instead of queueing behind dials that will fail;
            # issue the probe if it is due (the shell runs it before raising).
            self._maybe_dial(now)
            raise self._circuit_error(now)
        waiter: Waiter[C] = Waiter(now)
        self._waiters.append(waiter)
        self._wait_count += 1
        self._maybe_dial(now)
        if config.max_open > 0:
            # Covered if the dials in flight plus the room left under
            # max_open reach every waiter up to this one (max_connecting only
            # delays dials; it does not take capacity away).
            room = len(self._tickets) + config.max_open - self.num_open
            waiter.at_capacity = len(self._waiters) > room
        return waiter

    def release(self, entry: Entry[C], now: float, broken: bool = False) -> None:
        """A caller gives back a connection it was handed.

        Pre: ``entry`` is IN_USE. Post: it went to a waiter, the idle stack, or
        CLOSING (broken, expired, over the limit, idle full, pool closed).

        Raises:
            ValueError: ``entry`` is not in use (released twice) or belongs to
                another pool; nothing changes.
        """
        if entry.state != IN_USE:
            raise ValueError(
                f"{self.name}: connection {entry.get()!r} is not in use "
                "(released twice?)"
            )
        if self._registry.get(entry.key) is not entry:
            # Another pool's entry: counting it here would corrupt both pools.
            raise ValueError(f"{self.name}: {entry!r} is not a connection of this pool")
        # _take_out(entry, now), inlined: the hot path of every release
        # (tests/core/test_core_scripted.py checks the copy is the same).
        ref = entry.ref
        if ref is not None:
            entry.conn = cast("C", ref())
            entry.ref = None
        self._in_use -= 1
        self._use_duration += now - entry.acquired_at
        if broken:
            self._close(entry, BROKEN)
        elif (
            self._lifetime is not None
            and self._expiry_reason(entry, now) == MAX_LIFETIME
        ):
            self._close(entry, MAX_LIFETIME)
        elif (
            not self._put_slow
            and not self._waiters
            and len(self._idle) < self._idle_limit
        ):
            # _put's common branch, inlined: this is the hot path of every
            # release, and the call is a measurable share of it.
            entry.state = IDLE
            entry.returned_at = now
            self._idle.append(entry)
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
        old = self._registry.get(id(conn))
        if old is not None and not (old.ref is not None and old.ref() is None):
            raise ValueError(f"{self.name}: connection {conn!r} is already registered")
        if old is not None:
            # A loosened connection was collected and its id reused before the
            # shell reported it: settle it now, so the key is free.
            self.reclaim(old, now)
        issued_at = self._tickets.pop(ticket)  # settles the reservation
        self._dials += 1
        self._dial_duration += now - issued_at
        self._fails_in_row = 0
        self._bugs_in_row = 0
        self.last_dial_error = None
        self._refill_at = 0.0
        self._circuit_since = None  # I9: one good dial closes the circuit
        entry = Entry(conn, now, 1.0 - LIFETIME_JITTER * self._rng())
        self._registry[id(conn)] = entry
        self._put(entry, now)
        self._maybe_dial(now)
        return entry

    def connect_failed(self, ticket: int, error: BaseException, now: float) -> None:
        """The dial for ``ticket`` failed with ``error``.

        Post: the ticket is settled and its slot freed; the head waiter, if
        any, fails with ``error``; dials are re-issued for remaining waiters;
        refilling ``min_idle`` backs off. After ``circuit_after`` failures in
        a row the circuit opens (or stays open): every waiter fails with
        ``CircuitOpen`` and the next probe is scheduled (I9). A programming
        error (``is_programming_error``) fails the head waiter with it but,
        unless the circuit is open already, is not a failed dial: no count,
        no ``last_dial_error``, only the refill's backoff.

        Raises:
            ValueError: unknown or already settled ticket; nothing changes.
        """
        if ticket not in self._tickets:
            raise ValueError(f"{self.name}: ticket {ticket} is not in flight")
        del self._tickets[ticket]  # settles the reservation
        self.num_open -= 1
        if self._circuit_since is None and is_programming_error(error):
            # The code is wrong, not the database down: its waiter gets the
            # error, nothing counts toward the circuit (I9), refills back off.
            self._bugs_in_row += 1
            self._refill_at = now + min(
                REFILL_CAP, REFILL_FIRST * 2 ** (self._bugs_in_row - 1)
            )
            if self._waiters:
                self._fail_head(error, now)
            self._maybe_dial(now)
            return
        self._dial_failures += 1
        self._fails_in_row += 1
        self.last_dial_error = error
        self._refill_at = now + min(
            REFILL_CAP, REFILL_FIRST * 2 ** (self._fails_in_row - 1)
        )
        if (
            self.config.circuit_after
            and self._fails_in_row >= self.config.circuit_after
        ):
            if self._circuit_since is None:
                self._circuit_since = now
                self._circuit_opens += 1
            tries = min(30, self._fails_in_row - self.config.circuit_after)
            delay = min(CIRCUIT_CAP, CIRCUIT_FIRST * 2**tries)
            delay *= 0.5 + 0.5 * self._rng()
            self.probe_at = now + delay
            while self._waiters:  # I9: nobody waits while the circuit is open
                self._fail_head(self._circuit_error(now), now)
        elif self._waiters:
            self._fail_head(error, now)
        self._maybe_dial(now)

    def close_done(self, entry: Entry[C], now: float) -> None:
        """The shell finished closing ``entry`` (whether or not the driver raised).

        Post: the entry is CLOSED, unregistered, and its slot is free; dials
        are issued if waiters can now use the room.

        Raises:
            ValueError: ``entry`` was not CLOSING, or belongs to another pool;
                nothing changes.
        """
        if entry.state != CLOSING:
            raise ValueError(f"{self.name}: {entry!r} is not being closed")
        if self._registry.get(entry.key) is not entry:
            raise ValueError(f"{self.name}: {entry!r} is not a connection of this pool")
        self._closing -= 1
        self._settle_closed(entry, now)

    def abandon(self, waiter: Waiter[C], now: float, *, timed_out: bool) -> None:
        """A waiter gives up (timeout or cancellation).

        Post: a WAITING waiter leaves the queue; a SERVED one's connection
        comes back exactly as ``release`` takes it (the hand-off raced the
        give-up, nothing goes missing; one too old is closed, not passed on); a
        FAILED or ABANDONED one is left as it is.
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
            self.release(entry, now)
        else:
            return
        waiter.state = ABANDONED

    def loosen(self, entry: Entry[C], callback: Callable[[object], object]) -> bool:
        """Leak tracking: keep only a weak reference to an in-use connection.

        Pre: ``entry`` is IN_USE and its caller holds ``entry.conn``. Post:
        ``entry.conn`` is None and ``entry.ref`` reaches the connection;
        ``callback`` runs (in whatever thread drops the last reference; it
        must not take the shell's lock) if the connection is collected before
        it is released. ``release`` and ``close_in_use`` undo this.

        Returns:
            False (and nothing changes) if the driver's connection objects do
            not support weak references.
        """
        if entry.state != IN_USE or entry.ref is not None:
            raise ValueError(f"{self.name}: {entry!r} is not in use, or loosened")
        try:
            entry.ref = weakref.ref(entry.conn, callback)
        except TypeError:
            return False
        entry.conn = cast("C", None)
        return True

    def reclaim(self, entry: Entry[C], now: float) -> bool:
        """A loosened connection may have been collected while in use.

        Post: if it was (the weak reference is dead and the entry still in
        use), the entry is CLOSED with reason ``leaked``, its slot is free
        and dials are issued if waiters can use the room; otherwise nothing
        changes (it was released or settled meanwhile).

        Returns:
            Whether the entry was reclaimed now.
        """
        ref = entry.ref
        if entry.state != IN_USE or ref is None or ref() is not None:
            return False
        self._take_out(entry, now)
        self._by_reason[LEAKED] += 1
        # The object is gone: nothing is left to close, so the slot is settled
        # here rather than through a Close effect.
        self._settle_closed(entry, now)
        return True

    def close_in_use(self, now: float) -> int:
        """Force-close every connection still handed out, after ``close``.

        Post: each IN_USE entry is CLOSING (reason ``pool_closed``) with a
        Close effect, or reclaimed if it was collected; a later ``release`` of
        one of them is refused (the shell may ignore that once closed).

        Returns:
            How many connections were taken from their callers.

        Raises:
            ValueError: the pool is not closed; nothing changes.
        """
        if not self._shut_down:
            raise ValueError(f"{self.name}: close_in_use() before close()")
        taken = 0
        for entry in list(self._registry.values()):
            if entry.state != IN_USE or self.reclaim(entry, now):
                continue
            self._take_out(entry, now)
            self._close(entry, POOL_CLOSED)
            taken += 1
        return taken

    def expire(self, now: float) -> float | None:
        """Maintenance tick: close expired idle connections, refill ``min_idle``.

        While the circuit is open, issue the probe if it is due.

        Returns:
            When the next tick is due (monotonic s), or None if nothing will
            need one until a knob or the pool changes.
        """
        if self._shut_down:
            return None
        self._sweep(now)
        self._maybe_dial(now)
        due = math.inf
        if self._expiring:
            for entry in self._idle:
                due = min(due, self._deadline(entry))
        # A refill or probe already due was just issued by _maybe_dial unless
        # max_open or max_connecting holds it back; then only a close or a
        # landing dial makes room, and those inputs dial themselves. Asking to
        # be woken "now" would only make the shell spin.
        if (
            self.config.min_idle
            and self._refill_at > now
            and len(self._idle) + len(self._tickets) < self.config.min_idle
        ):
            due = min(due, self._refill_at)
        if (
            self._circuit_since is not None
            and not self._tickets
            and self.probe_at > now
        ):
            due = min(due, self.probe_at)
        return None if due == math.inf else due

    def close(self, now: float) -> None:
        """Close the pool; idempotent.

        Post: idle connections are CLOSING, waiters FAILED with PoolClosed;
        connections in use are closed when released and dials in flight when
        they land; no new dial is issued.
        """
        if self._shut_down:
            return
        self._shut_down = True
        self._put_slow = True
        while self._idle:
            self._close(self._idle.pop(), POOL_CLOSED)
        while self._waiters:
            self._fail_head(PoolClosed(f"{self.name} was closed while waiting"), now)

    # -- setters -------------------------------------------------------------
    # Each takes its knob as ``object`` and hands it to ``PoolConfig`` as it
    # came: PoolConfig validates it and names the knob in its error. A typed
    # parameter, or a cast, would make the compiled build check (or convert:
    # True to 1) the value itself first, with mypyc's own message.

    def set_max_open(self, n: object, now: float) -> None:
        """Change ``max_open`` (0 = unlimited); takes effect at once.

        Shrinking closes surplus idle connections now and surplus in-use ones
        as they are released, and lowers ``min_idle`` to the new idle cap;
        growing dials for queued waiters.
        """
        self._configure(self.config.with_max_open(n))  # type: ignore[arg-type]
        self._put_slow = True
        self._shrink_idle()
        self._maybe_dial(now)

    def set_max_idle(self, n: object, now: float) -> None:
        """Change ``max_idle`` (<= 0 keeps none); surplus idle ones close now.

        A ``min_idle`` above the new idle cap is lowered to it.
        """
        self._configure(self.config.with_max_idle(n))  # type: ignore[arg-type]
        self._shrink_idle()
        self._maybe_dial(now)

    def set_min_idle(self, n: object, now: float) -> None:
        """Change the warm floor; it may not exceed the idle cap."""
        self._configure(replace(self.config, min_idle=n))  # type: ignore[arg-type]
        self._refill_at = 0.0
        self._maybe_dial(now)

    def set_max_connecting(self, n: object, now: float) -> None:
        """Change how many dials may be in flight at once (0 = unlimited)."""
        self._configure(replace(self.config, max_connecting=n))  # type: ignore[arg-type]
        self._maybe_dial(now)

    def set_conn_max_lifetime(self, seconds: object, now: float) -> None:
        """Change the lifetime (None = forever); expired idle ones close now."""
        self._configure(
            replace(self.config, conn_max_lifetime=seconds)  # type: ignore[arg-type]
        )
        self._sweep(now)
        self._maybe_dial(now)

    def set_conn_max_idle_time(self, seconds: object, now: float) -> None:
        """Change the idle time limit (None = forever); expired ones close now."""
        self._configure(
            replace(self.config, conn_max_idle_time=seconds)  # type: ignore[arg-type]
        )
        self._sweep(now)
        self._maybe_dial(now)

    def set_circuit_after(self, n: object, now: float) -> None:
        """Change how many failed dials in a row open the circuit (0 = never).

        An open circuit closes at once if the new threshold is 0 or above the
        failures counted so far.
        """
        self._configure(replace(self.config, circuit_after=n))  # type: ignore[arg-type]
        after = self.config.circuit_after
        if not after or self._fails_in_row < after:
            self._circuit_since = None
        self._maybe_dial(now)

    def set_max_waiting(self, n: object) -> None:
        """Change the queue bound (0 = unbounded); queued callers stay queued."""
        self._configure(replace(self.config, max_waiting=n))  # type: ignore[arg-type]

    def renew(self) -> PoolCore[C]:
        """A new, empty core with this one's knobs (for a forked child)."""
        core: PoolCore[C] = PoolCore(self.config, rng=self._rng)
        return core

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
        if entry is None or (entry.conn is not conn and entry.get() is not conn):
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
        return entry is not None and (entry.conn is conn or entry.get() is conn)

    def take_effects(self) -> list[Effect[C]]:
        """Hand the outbox to the shell and start a fresh one."""
        out = self.outbox
        self.outbox = []
        return out

    def stats(self) -> Stats:
        """A snapshot of every figure (see ``Stats``)."""
        by = self._by_reason
        return Stats(
            max_open_connections=self.config.max_open,
            open_connections=self.num_open,
            in_use=self._in_use,
            idle=len(self._idle),
            wait_count=self._wait_count,
            wait_duration=self._wait_duration,
            max_idle_closed=by[MAX_IDLE],
            max_idle_time_closed=by[MAX_IDLE_TIME],
            max_lifetime_closed=by[MAX_LIFETIME],
            max_idle=self.config.idle_cap,
            min_idle=self.config.min_idle,
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
            circuit_open=self._circuit_since is not None,
            circuit_opens=self._circuit_opens,
            leaks_reclaimed=by[LEAKED],
        )

    def snapshot(self) -> tuple[object, ...]:
        """A hashable summary of the state, for exhaustive search to dedupe on.

        Two cores with equal snapshots answer the same inputs alike: it holds
        the counts, every knob, the failure streak and its backoff, the
        circuit, and the ages of idle connections when they can expire.
        Entries in use and waiters are left out as individuals (which caller
        holds which is the caller's business), as are pure statistics.
        """
        ages: tuple[tuple[float, float, float], ...] = ()
        if self._expiring:
            ages = tuple((e.created_at, e.jitter, e.returned_at) for e in self._idle)
        return (
            self.num_open,
            len(self._tickets),
            len(self._idle),
            self._in_use,
            self._closing,
            len(self._waiters),
            self._shut_down,
            self.config,
            self._fails_in_row,
            self._bugs_in_row,
            self._refill_at,
            self._circuit_since is not None,
            self.probe_at,
            self._dials - self._closed_count,
            ages,
        )

    def check(self) -> None:
        """Verify every invariant (I1-I9 in the module header).

        Raises:
            InvariantError: naming the first invariant that does not hold.
        """
        config = self.config
        dialing = len(self._tickets)
        idle = len(self._idle)
        states = [e.state for e in self._registry.values()]
        in_use = states.count(IN_USE)
        closing = states.count(CLOSING)

        def fail(rule: str) -> None:
            raise InvariantError(
                f"{self.name}: {rule}: num_open={self.num_open} dialing={dialing} "
                f"idle={idle} in_use={self._in_use} closing={self._closing} "
                f"waiting={len(self._waiters)} max_open={config.max_open}"
            )

        if self.num_open != dialing + idle + self._in_use + self._closing:
            fail("I1 conservation")
        if self._dials != self._closed_count + idle + self._in_use + self._closing:
            fail("I2 ledger")
        over = config.max_open > 0 and self.num_open - self._closing > config.max_open
        if over and idle:
            fail("I3 limit")
        if self._waiters and idle:
            fail("I4 no barging")
        if self._waiters and not self._shut_down:
            want = len(self._waiters)
            if config.max_open > 0:
                want = min(want, dialing + max(0, config.max_open - self.num_open))
            if config.max_connecting > 0:
                want = min(want, config.max_connecting)
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
        cap = config.idle_cap
        if idle > cap or config.min_idle > cap:
            fail("I7 idle cap")
        if self._shut_down and (idle or self._waiters):
            fail("I8 closed")
        if self._circuit_since is not None and (
            self._waiters
            or not config.circuit_after
            or self._fails_in_row < config.circuit_after
        ):
            fail("I9 circuit")
        if any(
            (e.ref is None) == (e.conn is None)
            or (e.ref is not None and e.state != IN_USE)
            for e in self._registry.values()
        ):
            fail("I6 exactly once (loosened entry)")

    # -- internals -----------------------------------------------------------

    def _put(self, entry: Entry[C], now: float) -> None:
        """The choke point: a free connection goes to a waiter, idle, or closing.

        Pre: ``entry`` is counted in no state (the caller uncounted it).
        """
        if self._put_slow:  # closed, or max_open shrank: rare, so one flag
            if self._shut_down:
                self._close(entry, POOL_CLOSED)
                return
            if (
                self.config.max_open > 0
                and self.num_open - self._closing > self.config.max_open
            ):
                # Over the limit after set_max_open shrank it: closing ones no
                # longer count here, or a slow close would make us close one
                # too many.
                self._close(entry, MAX_OPEN)
                return
            self._put_slow = False  # back under the limit
        if self._waiters:
            waiter = self._waiters.popleft()
            entry.state = IN_USE
            # Handed over without sitting idle: its idle gap is 0.
            entry.returned_at = entry.acquired_at = now
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

    def _take_out(self, entry: Entry[C], now: float) -> None:
        """Take ``entry`` out of use: it is then counted in no state.

        The strong reference comes back if it was loosened (None if the
        connection was collected), and its time in use is added up. Pre:
        ``entry`` is IN_USE. ``release`` carries an inlined copy.
        """
        ref = entry.ref
        if ref is not None:
            entry.conn = cast("C", ref())
            entry.ref = None
        self._in_use -= 1
        self._use_duration += now - entry.acquired_at

    def _settle_closed(self, entry: Entry[C], now: float) -> None:
        """``entry`` (counted in no state) is gone: CLOSED, its slot free.

        Unregisters it, settles the slot reserved when it was dialed, and
        dials if waiters can now use the room.
        """
        entry.state = CLOSED
        del self._registry[entry.key]
        self.num_open -= 1
        self._closed_count += 1
        self._maybe_dial(now)

    def _fail_head(self, error: BaseException, now: float) -> None:
        """Settle the head waiter as FAILED with ``error`` and wake it."""
        waiter = self._waiters.popleft()
        waiter.state = FAILED
        waiter.error = error
        self._wait_duration += now - waiter.enqueued_at
        self.outbox.append(Wake(waiter))

    def _close(self, entry: Entry[C], reason: str) -> None:
        """Start closing ``entry`` (counted in no state); it stays counted open."""
        entry.state = CLOSING
        self._closing += 1
        self._by_reason[reason] += 1
        self.outbox.append(Close(entry, reason))

    def _shrink_idle(self) -> None:
        """Close idle connections above the cap (or any, if over max_open)."""
        cap = self.config.idle_cap
        if self.config.max_open > 0:
            busy = self.num_open - self._closing - len(self._idle)
            cap = min(cap, max(0, self.config.max_open - busy))
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

    def _circuit_error(self, now: float) -> CircuitOpen:
        """A fresh CircuitOpen for one caller, the last dial error chained."""
        since = self._circuit_since
        assert since is not None
        error = CircuitOpen(
            f"{self.name}: database unreachable for {now - since:.2f} s "
            f"({self._fails_in_row} dials failed in a row; next try in "
            f"{max(0.0, self.probe_at - now):.2f} s): {self.last_dial_error!r}"
        )
        error.__cause__ = self.last_dial_error
        error.unreachable_since = since
        return error

    def _maybe_dial(self, now: float) -> None:
        """Issue dials for queued waiters and the ``min_idle`` deficit (I5).

        While the circuit is open, issue only the probe, once due (I9).
        """
        if self._shut_down:
            return
        config = self.config
        if self._circuit_since is not None:
            # The one probe, once due; nobody waits (I9) and refills wait too.
            n = 1 if not self._tickets and now >= self.probe_at else 0
        else:
            n = len(self._waiters) - len(self._tickets)
            if config.min_idle and now >= self._refill_at:
                n += max(0, config.min_idle - len(self._idle))
        if config.max_open > 0:
            n = min(n, config.max_open - self.num_open)
        if config.max_connecting > 0:
            n = min(n, config.max_connecting - len(self._tickets))
        for _ in range(n):
            # Reserve before I/O (I3): the slot counts from now until the
            # ticket is settled by connected() or connect_failed().
            ticket = self._next_ticket
            self._next_ticket += 1
            self._tickets[ticket] = now
            self.num_open += 1
            self.outbox.append(Connect(ticket))
