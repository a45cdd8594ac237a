"""What happens to a connection on its way back into a pool: the rollback rule.

One rule per driver, here and nowhere else: both pools' return paths use it,
and each driver adapter's ``reset`` (``sqlgate.drivers``) runs it first, then
puts back what only the adapter changed (autocommit). What each driver says
without I/O (which driver it is, whether a transaction is open or aborted) is
asked through ``sqlgate.drivers._probe``; no driver is imported.

- sqlite3 and aiosqlite: ``in_transaction`` (no I/O); ROLLBACK only then.
- psycopg (sync and async): ``info.transaction_status`` (local): INTRANS and
  INERROR get a ROLLBACK; ACTIVE and UNKNOWN cannot be trusted again.
- asyncpg: ``is_in_transaction()`` (local), or a ``Transaction`` object the
  caller left started; then ``reset()``, which rolls back and forgets that
  object (a bare ROLLBACK would not: the next ``transaction()`` would be a
  SAVEPOINT). A closed connection is unusable.
- PyMySQL: ``rollback()`` every time (it also finds a dead link at release);
  ``server_status``'s in-transaction bit says whether work was discarded.
- anything else: ``rollback()`` every time.

``pool.connection()`` ends its block with the twin rule: commit what is open
on a normal exit (``commit_open_transaction``; a PostgreSQL transaction the
driver reports aborted, by psycopg, psycopg2 or pg8000, is rolled back and
raises ``TransactionAborted`` instead of a COMMIT the server would answer
with ROLLBACK), roll back on an exception. A
transaction the return path rolls back is logged at DEBUG (logger
``sqlgate``): that work is discarded.

A ``conn`` argument is the driver's connection: a blocking DB-API
connection, or an asyncio driver's for the ``_async`` functions.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from sqlgate.drivers._probe import (
    MY_IN_TRANS,
    PG_IDLE,
    PG_INERROR,
    ROLLBACK,
    STATE_PROBES,
    UNUSABLE,
    is_pg8000,
    is_psycopg,
    is_psycopg2,
    is_pymysql,
    pg8000_aborted,
    state_probe,
)
from sqlgate.errors import TransactionAborted

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "commit_open_transaction",
    "commit_open_transaction_async",
    "end_quietly",
    "needs_rollback",
    "rollback_async",
    "rollback_for",
    "rollback_open_transaction",
    "rollback_open_transaction_async",
]

log = logging.getLogger("sqlgate")


def _discarding(conn: object) -> None:
    """Log that the return path rolls back a transaction the caller left open."""
    log.debug(
        "rolling back a transaction left open on a %s given back to the pool: "
        "its work is lost (commit it, or use pool.connection(), which commits)",
        type(conn).__name__,
    )


def _aborted(conn: object) -> TransactionAborted:
    return TransactionAborted(
        "the transaction was already aborted by an earlier error: it was "
        f"rolled back, nothing was committed ({type(conn).__name__})"
    )


#: How to roll back a connection of each class, worked out once per class:
#: ``getattr`` on a missing attribute raises and catches internally, which would
#: cost more than the rest of a release if it ran every time.
_rollbacks: dict[type, Callable[[Any], object]] = {}


def _rollback_if_in_transaction(conn: Any) -> None:
    if conn.in_transaction:
        _discarding(conn)
        conn.rollback()


def _rollback_by_status(conn: Any) -> None:
    if conn.info.transaction_status != PG_IDLE:
        _discarding(conn)
        conn.rollback()


def _rollback_by_server_status(conn: Any) -> None:
    if conn.server_status & MY_IN_TRANS:
        _discarding(conn)
    # Always sent, as before: on a raw pool this round trip is also what
    # finds a dead link at release and discards it.
    conn.rollback()


def _rollback_always(conn: Any) -> None:
    conn.rollback()


def rollback_for(cls: type) -> Callable[[Any], object]:
    """The rollback step for blocking connections of ``cls`` (cached in ``_rollbacks``).

    Drivers that say whether a transaction is open without I/O (sqlite3's
    ``in_transaction``, psycopg's ``info.transaction_status``, PyMySQL's
    ``server_status``) are asked first, so an idle connection costs no round
    trip, and a rollback that discards work is logged at DEBUG. Others are
    rolled back unconditionally, through the class's own
    ``rollback`` function when it has one (one call fewer per release).

    Args:
        cls: the connection's class.

    Returns:
        A callable taking the connection.
    """
    step: Callable[[Any], object]
    if hasattr(cls, "in_transaction"):
        step = _rollback_if_in_transaction
    elif is_psycopg(cls):
        step = _rollback_by_status
    elif is_pymysql(cls):
        step = _rollback_by_server_status
    elif callable(getattr(cls, "rollback", None)):
        step = cls.rollback  # type: ignore[attr-defined]
    else:
        step = _rollback_always
    _rollbacks[cls] = step
    return step


def rollback_open_transaction(conn: object) -> None:
    """Roll back a transaction the caller left open (see ``rollback_for``)."""
    (_rollbacks.get(type(conn)) or rollback_for(type(conn)))(conn)


def _commit_if_in_transaction(conn: Any) -> bool:
    if conn.in_transaction:
        conn.commit()
    return False


def _commit_by_status(conn: Any) -> bool:
    status = conn.info.transaction_status
    if status == PG_INERROR:
        conn.rollback()
        raise _aborted(conn)
    if status != PG_IDLE:
        conn.commit()
    return False


def _commit_unless_failed_pg8000(conn: Any) -> bool:
    if pg8000_aborted(conn):
        conn.rollback()
        raise _aborted(conn)
    conn.commit()
    return False


def _commit_by_server_status(conn: Any) -> bool:
    if conn.server_status & MY_IN_TRANS:
        conn.commit()
    # The return path's ROLLBACK stays: for PyMySQL it is also the round trip
    # that finds a dead link at release (see ``_rollback_by_server_status``).
    return True


def _commit_always(conn: Any) -> bool:
    commit = getattr(conn, "commit", None)
    if commit is not None:  # a connection with no commit() holds no transaction
        commit()
    return False


#: How to commit what a block left open, per connection class (as ``_rollbacks``).
_commits: dict[type, Callable[[Any], bool]] = {}


def _commit_for(cls: type) -> Callable[[Any], bool]:
    step: Callable[[Any], bool]
    if hasattr(cls, "in_transaction"):
        step = _commit_if_in_transaction
    elif is_psycopg(cls) or is_psycopg2(cls):
        step = _commit_by_status
    elif is_pg8000(cls):
        step = _commit_unless_failed_pg8000
    elif is_pymysql(cls):
        step = _commit_by_server_status
    else:
        step = _commit_always
    _commits[cls] = step
    return step


def commit_open_transaction(conn: object) -> bool:
    """Commit what a ``pool.connection()`` block left open (nothing if none).

    Asked as ``rollback_for`` asks (no I/O where the driver can tell);
    a driver that cannot tell gets ``commit()`` every time.

    Returns:
        Whether the return path's rollback is still wanted: False when the
        commit (or the driver's own status) leaves nothing open, True for
        PyMySQL, whose ROLLBACK on return is also its dead-link check.

    Raises:
        TransactionAborted: psycopg, psycopg2 (INERROR) or pg8000 (``E``)
            reports the transaction aborted by an earlier error; it was
            rolled back instead.
        The driver's error: the COMMIT failed.
    """
    return (_commits.get(type(conn)) or _commit_for(type(conn)))(conn)


def end_quietly(conn: object) -> None:
    """Roll back what a ``pool.connection()`` block left open as it raised.

    Raises:
        The driver's error: the ROLLBACK failed.
    """
    cls = type(conn)
    if hasattr(cls, "in_transaction") and not conn.in_transaction:  # type: ignore[attr-defined]
        return
    if is_psycopg(cls) and conn.info.transaction_status == PG_IDLE:  # type: ignore[attr-defined]
        return
    if is_pymysql(cls) and not conn.server_status & MY_IN_TRANS:  # type: ignore[attr-defined]
        return
    conn.rollback()  # type: ignore[attr-defined]


# -- asyncio connections: ask first (no I/O), then roll back if needed ----------


def needs_rollback(conn: object, *, quiet: bool = False) -> bool:
    """Whether an asyncio connection given back needs ``rollback_async`` (no I/O).

    A True answer is logged at DEBUG (the work will be discarded) unless ``quiet``.

    Args:
        conn: a connection (asyncio or blocking; the adapters use it too).
        quiet: do not log (the caller commits or means to roll back).

    Returns:
        True when a transaction (or an asyncpg ``Transaction``) was left open.

    Raises:
        ConnectionError: the driver says the connection is closed or in a
            state that cannot be trusted (psycopg ACTIVE or UNKNOWN).
    """
    state = (STATE_PROBES.get(type(conn)) or state_probe(conn))(conn)
    if state == UNUSABLE:
        raise ConnectionError("connection not reusable (closed, or mid-statement)")
    if state == ROLLBACK and not quiet:
        _discarding(conn)
    return state == ROLLBACK


async def rollback_async(conn: object) -> None:
    """Roll back the open transaction of an asyncio connection.

    asyncpg has no ``rollback()``: its public ``reset()`` rolls back and also
    forgets the ``Transaction`` object the caller left started (a bare
    ``ROLLBACK`` would not, and its next transaction would be a savepoint).
    Logged at DEBUG (the work is discarded); otherwise as
    ``rollback_open_transaction_async``.
    """
    _discarding(conn)
    await rollback_open_transaction_async(conn)


async def rollback_open_transaction_async(conn: object) -> None:
    """``rollback_async`` without its DEBUG line: the caller meant to roll back.

    Raises:
        The driver's error (the pool discards the connection).

    Cancellation:
        The connection's state is unknown; the pool discards it.
    """
    rollback = getattr(conn, "rollback", None)
    result = rollback() if rollback is not None else conn.reset()  # type: ignore[attr-defined]
    if inspect.isawaitable(result):
        await result


async def commit_open_transaction_async(conn: Any) -> None:
    """Commit what an ``AsyncPool.connection()`` block left open (nothing if none).

    Raises:
        TransactionAborted: the transaction was already aborted by an
            earlier error (psycopg's INERROR status, or asyncpg's COMMIT
            answered ROLLBACK); it was rolled back instead.
        ConnectionError: the driver says the connection cannot be trusted.
        The driver's error: the COMMIT failed.

    Cancellation:
        The commit may or may not have happened; the pool discards the
        connection.
    """
    if not needs_rollback(conn, quiet=True):
        return
    info = getattr(conn, "info", None)
    if info is not None and getattr(info, "transaction_status", None) == PG_INERROR:
        await conn.rollback()
        raise _aborted(conn)
    if hasattr(conn, "is_in_transaction"):  # asyncpg: COMMIT as SQL
        if not conn.is_in_transaction():
            return  # only a Transaction object is left: the return path resets
        tag = await conn.execute("COMMIT")
        if tag == "ROLLBACK":
            raise _aborted(conn)
        return
    commit = getattr(conn, "commit", None)
    if commit is not None:  # a connection with no commit() holds no transaction
        result = commit()
        if inspect.isawaitable(result):
            await result
