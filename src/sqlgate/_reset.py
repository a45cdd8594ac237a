"""What happens to a connection on its way back into the pool: rollback, then reset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["rollback_for", "rollback_open_transaction"]


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
    """The rollback step for connections of ``cls`` (cached in ``_rollbacks``).

    Drivers that say whether a transaction is open (sqlite3's
    ``in_transaction``) are asked first, so an idle connection costs no round
    trip; psycopg's ``rollback`` is itself free when no transaction is open.
    Others are rolled back unconditionally, through the class's own
    ``rollback`` function when it has one (one call fewer per release).
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
    """Roll back a transaction the caller left open (see ``rollback_for``)."""
    (_rollbacks.get(type(conn)) or rollback_for(type(conn)))(conn)
