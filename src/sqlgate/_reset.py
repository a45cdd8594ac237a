"""What happens to a connection on its way back into a pool: the rollback rule.

One rule per driver, here and nowhere else: both pools' return paths use it,
and each driver adapter's ``reset`` (``sqlgate.drivers``) runs it first, then
puts back what only the adapter changed (autocommit). Everything is
duck-typed: no driver is imported.

- sqlite3 and aiosqlite: ``in_transaction`` (no I/O); ROLLBACK only then.
- psycopg (sync and async): ``info.transaction_status`` (local): INTRANS and
  INERROR get a ROLLBACK; ACTIVE and UNKNOWN cannot be trusted again.
- asyncpg: ``is_in_transaction()`` (local), or a ``Transaction`` object the
  caller left started; then ``reset()``, which rolls back and forgets that
  object (a bare ROLLBACK would not: the next ``transaction()`` would be a
  SAVEPOINT). A closed connection is unusable.
- anything else: ``rollback()`` every time (PyMySQL; the adapters read its
  ``server_status`` first).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "needs_rollback",
    "rollback_async",
    "rollback_for",
    "rollback_open_transaction",
]


#: How to roll back a connection of each class, worked out once per class:
#: ``getattr`` on a missing attribute raises and catches internally, which would
#: cost more than the rest of a release if it ran every time.
_rollbacks: dict[type, Callable[[Any], object]] = {}


def _rollback_if_in_transaction(conn: Any) -> None:
    if conn.in_transaction:
        conn.rollback()


def _rollback_always(conn: Any) -> None:
    conn.rollback()


def rollback_for(cls: type) -> Callable[[Any], object]:
    """The rollback step for blocking connections of ``cls`` (cached in ``_rollbacks``).

    Drivers that say whether a transaction is open (sqlite3's
    ``in_transaction``) are asked first, so an idle connection costs no round
    trip; psycopg's ``rollback`` is itself free when no transaction is open.
    Others are rolled back unconditionally, through the class's own
    ``rollback`` function when it has one (one call fewer per release).

    Args:
        cls: the connection's class.

    Returns:
        A callable taking the connection.
    """
    step: Callable[[Any], object]
    if hasattr(cls, "in_transaction"):
        step = _rollback_if_in_transaction
    elif callable(getattr(cls, "rollback", None)):
        step = cls.rollback  # type: ignore[attr-defined]
    else:
        step = _rollback_always
    _rollbacks[cls] = step
    return step


def rollback_open_transaction(conn: object) -> None:
    """Roll back a transaction the caller left open (see ``rollback_for``).

    Args:
        conn: a blocking DB-API connection.
    """
    (_rollbacks.get(type(conn)) or rollback_for(type(conn)))(conn)


# -- asyncio connections: ask first (no I/O), then roll back if needed ----------

#: What a returned connection needs, from its class's probe.
_CLEAN = 0
_ROLLBACK = 1
_UNUSABLE = 2

#: psycopg's ``TransactionStatus``: IDLE needs nothing, INTRANS and INERROR a
#: rollback; ACTIVE (a query still running) and UNKNOWN (link lost) cannot be
#: trusted again. Plain ints, so psycopg need not be imported.
_PSYCOPG_STATUS = {0: _CLEAN, 2: _ROLLBACK, 3: _ROLLBACK}


def _asyncpg_state(conn: Any) -> int:
    if conn.is_closed():
        return _UNUSABLE
    # A Transaction object started through the connection and not ended (its
    # work may have been ended by hand with a raw COMMIT) also needs reset().
    left = getattr(conn, "_top_xact", None) is not None
    return _ROLLBACK if left or conn.is_in_transaction() else _CLEAN


def _psycopg_state(conn: Any) -> int:
    return _PSYCOPG_STATUS.get(int(conn.info.transaction_status), _UNUSABLE)


def _flag_state(conn: Any) -> int:
    return _ROLLBACK if conn.in_transaction else _CLEAN


def _unknown_state(conn: object) -> int:
    return _ROLLBACK


#: Connection class -> how to ask it, worked out once.
_STATE_PROBES: dict[type, Callable[[Any], int]] = {}


def _state_probe(conn: object) -> Callable[[Any], int]:
    """How to ask ``conn`` what it needs before reuse, as cheaply as it allows.

    asyncpg has ``is_in_transaction()``, psycopg's ``AsyncConnection`` has
    ``info.transaction_status``, aiosqlite and sqlite3 have ``in_transaction``.
    A driver that says nothing is rolled back every time. Worked out once per
    connection class (``AsyncPool.release`` reads ``_STATE_PROBES`` first).
    """
    probe = _STATE_PROBES.get(type(conn))
    if probe is None:
        if hasattr(conn, "is_in_transaction"):
            probe = _asyncpg_state
        elif hasattr(getattr(conn, "info", None), "transaction_status"):
            probe = _psycopg_state
        elif hasattr(conn, "in_transaction"):
            probe = _flag_state
        else:
            probe = _unknown_state
        _STATE_PROBES[type(conn)] = probe
    return probe


def needs_rollback(conn: object) -> bool:
    """Whether an asyncio connection given back needs ``rollback_async`` (no I/O).

    Args:
        conn: an asyncio driver's connection.

    Returns:
        True when a transaction (or an asyncpg ``Transaction``) was left open.

    Raises:
        ConnectionError: the driver says the connection is closed or in a
            state that cannot be trusted (psycopg ACTIVE or UNKNOWN).
    """
    state = (_STATE_PROBES.get(type(conn)) or _state_probe(conn))(conn)
    if state == _UNUSABLE:
        raise ConnectionError("connection not reusable (closed, or mid-statement)")
    return state == _ROLLBACK


async def rollback_async(conn: object) -> None:
    """Roll back the open transaction of an asyncio connection.

    asyncpg has no ``rollback()``: its public ``reset()`` rolls back and also
    forgets the ``Transaction`` object the caller left started (a bare
    ``ROLLBACK`` would not, and its next transaction would be a savepoint).

    Args:
        conn: an asyncio driver's connection.

    Raises:
        The driver's error (the pool discards the connection).

    Cancellation:
        The connection's state is unknown; the pool discards it.
    """
    rollback = getattr(conn, "rollback", None)
    result = rollback() if rollback is not None else conn.reset()  # type: ignore[attr-defined]
    if inspect.isawaitable(result):
        await result
