"""The bad-connection retry rule, pure: when a call may run again, and where.

Go's ``database/sql`` retries a call that met ``driver.ErrBadConn`` twice on
pooled connections, then once on a fresh one. The catch (Go issue 11978, an
UPDATE run twice) is that a driver may only say "bad connection" when the
server cannot have seen the statement. Python's drivers cannot tell us that:
once ``execute`` has written to the socket, a reset or a terminated backend
looks the same whether it came before or during the statement. So sqlgate
splits the call in two phases:

``CHECKOUT``
    From acquire up to the moment the statement is handed to the driver: the
    adapter's zero-cost "already closed?" test and, for a connection idle
    longer than ``ping_idle``, its cheap ping. A dead link found here is safe
    to retry: nothing of the caller's was sent.
``SENT``
    The statement was handed to the driver. Any error goes to the caller; a
    dead link also discards the connection. Never a second execution.

A SQL error (constraint, syntax, serialization failure) never discards the
connection, in either phase. Inside a transaction nothing is retried: the
transaction's earlier statements lived on the connection that died.

This module decides; the handle (``db_async.py``, ``db.py``) carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "MAX_POOLED_TRIES",
    "Decision",
    "Phase",
    "Source",
    "decide",
    "plan",
]

#: Tries on pooled connections before the last, fresh one (Go's maxBadConnRetries).
MAX_POOLED_TRIES = 2


class Source(Enum):
    """Where an attempt takes its connection from."""

    #: The pool as usual: the most recently returned idle connection, or a dial.
    POOLED = "pooled"
    #: A connection proven alive before use: always pinged, and every dead idle
    #: one met on the way is discarded until one answers or a new one is dialed.
    FRESH = "fresh"


class Phase(Enum):
    """How far an attempt got when it failed."""

    #: Nothing of the caller's reached the driver yet.
    CHECKOUT = "checkout"
    #: The statement was handed to the driver; it may have run.
    SENT = "sent"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt.

    Attributes:
        discard: release the connection as broken (it is a dead link).
        retry: run the call again on another connection; False means the
            error goes to the caller.
    """

    discard: bool
    retry: bool


def plan(retry: bool) -> tuple[Source, ...]:
    """The sources to try, in order, for one call.

    Args:
        retry: the caller allows retrying on a dead connection.

    Returns:
        ``(POOLED, POOLED, FRESH)`` with retry, else ``(POOLED,)``.
    """
    return _PLANS[bool(retry)]


# Built once: ``plan`` runs on every checkout.
_PLANS = {
    True: (Source.POOLED,) * MAX_POOLED_TRIES + (Source.FRESH,),
    False: (Source.POOLED,),
}


def decide(*, dead: bool, phase: Phase, in_tx: bool, retry: bool) -> Decision:
    """Decide the fate of a failed attempt.

    Args:
        dead: the adapter classed the error as a dead link (not a SQL error).
        phase: how far the attempt got.
        in_tx: the connection belongs to a transaction (or a dedicated Conn):
            the call cannot move to another connection.
        retry: the caller allows retrying, and tries remain in the plan.

    Returns:
        Discard the connection exactly when it is dead; retry only a dead
        link found before anything was sent, outside a transaction.
    """
    return Decision(
        discard=dead,
        retry=dead and retry and not in_tx and phase is Phase.CHECKOUT,
    )
