"""The named states of a connection and of a waiter, and the moves between them.

States are plain ints (``Final``), so the hot path compares ints; ``NAMES``
turns one back into its name, for reprs and error messages only.

A connection (an ``Entry``)::

    NEW ------> IN_USE | IDLE | CLOSING     a dial landed, through ``_put``
    IDLE -----> IN_USE                      handed out by ``acquire``
    IDLE -----> CLOSING                     expired, over the idle cap, pool closed
    IN_USE ---> IDLE                        released to the idle stack
    IN_USE ---> IN_USE                      released straight to a waiter
    IN_USE ---> CLOSING                     broken, expired, over max_open, idle
                                            full, or taken by ``close_in_use``
    IN_USE ---> CLOSED                      collected while loosened (``reclaim``)
    CLOSING --> CLOSED                      the shell reported the close done
                                            (``close_done``)

A waiter (a queued ``acquire``)::

    WAITING --> SERVED | FAILED | ABANDONED
    SERVED ---> ABANDONED                   gave up after the hand-off; the
                                            connection went back as a release

``ENTRY_MOVES`` and ``WAITER_MOVES`` hold these tables; the core's test rig
checks every state change it sees against them after every input.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ABANDONED",
    "CLOSED",
    "CLOSING",
    "ENTRY_MOVES",
    "FAILED",
    "IDLE",
    "IN_USE",
    "NAMES",
    "NEW",
    "SERVED",
    "WAITER_MOVES",
    "WAITING",
]

# Connection (``Entry``) states.
#: Just dialed, counted in no state yet: ``_put`` places it at once.
NEW: Final = 0
#: Handed to a caller.
IN_USE: Final = 1
#: On the idle stack.
IDLE: Final = 2
#: A ``Close`` effect is out; still counted open until the shell reports it.
CLOSING: Final = 3
#: Closed (or collected while in use): unregistered, its slot free.
CLOSED: Final = 4

# Waiter states.
#: Queued.
WAITING: Final = 10
#: Handed a connection (``waiter.entry``).
SERVED: Final = 11
#: Settled with an error (``waiter.error``).
FAILED: Final = 12
#: Gave up (timeout or cancellation).
ABANDONED: Final = 13

#: Every state's name, by value: for reprs and messages, never the hot path.
NAMES: Final[dict[int, str]] = {
    NEW: "NEW",
    IN_USE: "IN_USE",
    IDLE: "IDLE",
    CLOSING: "CLOSING",
    CLOSED: "CLOSED",
    WAITING: "WAITING",
    SERVED: "SERVED",
    FAILED: "FAILED",
    ABANDONED: "ABANDONED",
}

#: The moves a connection may make, (from, to), as one core input sees them.
ENTRY_MOVES: Final[frozenset[tuple[int, int]]] = frozenset(
    {
        (NEW, IN_USE),
        (NEW, IDLE),
        (NEW, CLOSING),
        (IDLE, IN_USE),
        (IDLE, CLOSING),
        (IN_USE, IDLE),
        (IN_USE, IN_USE),
        (IN_USE, CLOSING),
        (IN_USE, CLOSED),
        (CLOSING, CLOSED),
    }
)

#: The moves a waiter may make, (from, to).
WAITER_MOVES: Final[frozenset[tuple[int, int]]] = frozenset(
    {
        (WAITING, SERVED),
        (WAITING, FAILED),
        (WAITING, ABANDONED),
        (SERVED, ABANDONED),
    }
)
