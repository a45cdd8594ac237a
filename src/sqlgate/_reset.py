"""What happens to a connection on its way back into the pool: rollback, then reset."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["make_reset", "rollback_open_transaction"]

C = TypeVar("C")


#: Per connection class: does it say whether a transaction is open? Asked once
#: per class, because ``getattr`` with a default on a missing attribute raises
#: and catches internally, which costs more than the rest of a release.
_has_tx_flag: dict[type, bool] = {}


def rollback_open_transaction(conn: object) -> None:
    """Roll back a transaction the caller left open.

    Drivers that say whether a transaction is open (sqlite3's
    ``in_transaction``) are asked first, so an idle connection costs no round
    trip; psycopg's ``rollback`` is itself free when no transaction is open.
    Others are rolled back unconditionally.
    """
    cls = type(conn)
    flag = _has_tx_flag.get(cls)
    if flag is None:
        flag = _has_tx_flag[cls] = hasattr(cls, "in_transaction")
    if flag and not conn.in_transaction:  # type: ignore[attr-defined]
        return
    conn.rollback()  # type: ignore[attr-defined]


def make_reset(
    rollback: bool, reset: Callable[[C], object] | None
) -> Callable[[C], object] | None:
    """Build the return-path step for a pool; None when there is nothing to do.

    Args:
        rollback: roll back an open transaction first.
        reset: the user's hook, run after the rollback.

    Returns:
        One callable doing both, or None (so the fast path skips the call).
    """
    if not rollback:
        return reset
    if reset is None:
        return rollback_open_transaction

    def rollback_then_reset(conn: C) -> None:
        rollback_open_transaction(conn)
        reset(conn)

    return rollback_then_reset
