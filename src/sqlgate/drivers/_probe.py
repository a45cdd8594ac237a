"""What the pools ask a driver's connection without I/O: tx state, socket, thread.

All the duck-typed driver knowledge the pools and the return path need, in
one place; no driver is imported (sqlite3, from the standard library, only
once a connection is asked about its thread).

- Which driver made a connection class: ``is_psycopg``, ``is_psycopg2``,
  ``is_pg8000``, ``is_pymysql`` (by the class's top-level package).
- Whether a PostgreSQL transaction was aborted by an earlier error
  (``libpq_aborted``: psycopg and psycopg2's INERROR; ``pg8000_aborted``).
- What a connection given back needs (``state_probe``): nothing (``CLEAN``),
  a rollback (``ROLLBACK``), or it cannot be trusted again (``UNUSABLE``).
  asyncpg has ``is_in_transaction()``, psycopg ``info.transaction_status``,
  sqlite3 and aiosqlite ``in_transaction``; a driver that says nothing is
  rolled back every time.
- Where a connection's socket is (``fileno_of``), for the fork handler.
- Whether a connection refuses use from another thread (``thread_bound``:
  sqlite3's ``check_same_thread``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CLEAN",
    "MY_IN_TRANS",
    "PG_IDLE",
    "PG_INERROR",
    "ROLLBACK",
    "STATE_PROBES",
    "UNUSABLE",
    "fileno_of",
    "is_pg8000",
    "is_psycopg",
    "is_psycopg2",
    "is_pymysql",
    "libpq_aborted",
    "pg8000_aborted",
    "state_probe",
    "thread_bound",
]

# -- which driver made it -------------------------------------------------------

#: psycopg's ``TransactionStatus`` values (plain ints: psycopg is not imported);
#: libpq's, so psycopg2's ``info.transaction_status`` too.
PG_IDLE = 0
PG_INERROR = 3
#: PyMySQL's ``SERVER_STATUS_IN_TRANS`` bit of ``server_status``.
MY_IN_TRANS = 1


def _package(cls: type) -> str:
    return cls.__module__.split(".")[0]


def is_psycopg(cls: type) -> bool:
    """Whether ``cls`` is psycopg's (3) connection class."""
    return _package(cls) == "psycopg" and hasattr(cls, "info")


def is_psycopg2(cls: type) -> bool:
    """Whether ``cls`` is psycopg2's connection class."""
    return _package(cls) == "psycopg2" and hasattr(cls, "info")


def is_pg8000(cls: type) -> bool:
    """Whether ``cls`` is pg8000's connection class."""
    return _package(cls) == "pg8000"


def is_pymysql(cls: type) -> bool:
    """Whether ``cls`` is PyMySQL's connection class."""
    return _package(cls) == "pymysql"


def libpq_aborted(conn: Any) -> bool:
    """Whether a psycopg or psycopg2 transaction was aborted (libpq's INERROR)."""
    return bool(conn.info.transaction_status == PG_INERROR)


def pg8000_aborted(conn: Any) -> bool:
    """Whether a pg8000 transaction was aborted (no I/O).

    pg8000 keeps the last ReadyForQuery status: ``b"E"`` is "in a failed
    transaction block".
    """
    return getattr(conn, "_transaction_status", None) == b"E"


# -- what a connection given back needs --------------------------------------------

CLEAN = 0
ROLLBACK = 1
UNUSABLE = 2

#: psycopg's ``TransactionStatus``: IDLE needs nothing, INTRANS and INERROR a
#: rollback; ACTIVE (a query still running) and UNKNOWN (link lost) cannot be
#: trusted again.
_PSYCOPG_STATUS = {PG_IDLE: CLEAN, 2: ROLLBACK, PG_INERROR: ROLLBACK}


def _asyncpg_state(conn: Any) -> int:
    if conn.is_closed():
        return UNUSABLE
    # A Transaction object started through the connection and not ended (its
    # work may have been ended by hand with a raw COMMIT) also needs reset().
    left = getattr(conn, "_top_xact", None) is not None
    return ROLLBACK if left or conn.is_in_transaction() else CLEAN


def _psycopg_state(conn: Any) -> int:
    return _PSYCOPG_STATUS.get(int(conn.info.transaction_status), UNUSABLE)


def _flag_state(conn: Any) -> int:
    return ROLLBACK if conn.in_transaction else CLEAN


def _unknown_state(conn: object) -> int:
    return ROLLBACK


#: Connection class -> how to ask it, worked out once.
STATE_PROBES: dict[type, Callable[[Any], int]] = {}


def state_probe(conn: object) -> Callable[[Any], int]:
    """How to ask ``conn`` what it needs before reuse, as cheaply as it allows.

    Worked out once per connection class; callers on a hot path read
    ``STATE_PROBES`` first (``STATE_PROBES.get(type(conn)) or
    state_probe(conn)``).

    Returns:
        A callable taking the connection and returning ``CLEAN``,
        ``ROLLBACK`` or ``UNUSABLE``.
    """
    probe = STATE_PROBES.get(type(conn))
    if probe is None:
        if hasattr(conn, "is_in_transaction"):
            probe = _asyncpg_state
        elif hasattr(getattr(conn, "info", None), "transaction_status"):
            probe = _psycopg_state
        elif hasattr(conn, "in_transaction"):
            probe = _flag_state
        else:
            probe = _unknown_state
        STATE_PROBES[type(conn)] = probe
    return probe


# -- its socket, its thread ----------------------------------------------------


def fileno_of(conn: object) -> Callable[[], object] | None:
    """The connection's socket ``fileno``, wherever the driver keeps it; or None."""
    fileno = getattr(conn, "fileno", None)  # psycopg (sync and async)
    if fileno is None:  # PyMySQL keeps its socket as _sock
        fileno = getattr(getattr(conn, "_sock", None), "fileno", None)
    if fileno is None:  # asyncpg: the socket behind its asyncio transport
        transport = getattr(conn, "_transport", None)
        extra = getattr(transport, "get_extra_info", None)
        if callable(extra):
            try:
                fileno = getattr(extra("socket"), "fileno", None)
            except Exception:
                return None
    return fileno if callable(fileno) else None


def thread_bound(conn: object) -> bool:
    """Whether a DB-API connection refuses use from a thread other than its own.

    Only sqlite3 binds its connections (``check_same_thread``); it is asked
    from a short-lived thread: creating a cursor checks the thread, nothing
    else.
    """
    import sqlite3

    if not isinstance(conn, sqlite3.Connection):
        return False
    refused: list[bool] = []

    def probe() -> None:
        try:
            conn.cursor().close()
        except sqlite3.ProgrammingError:
            refused.append(True)

    thread = threading.Thread(target=probe, name="sqlgate-thread-probe")
    thread.start()
    thread.join()
    return bool(refused)
