"""What the handle tests share: stand-in cursors, a dead-link SQLite adapter,
the pool's figures, and killing PostgreSQL backends by application_name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlgate.drivers.sqlite import SqliteAdapter

if TYPE_CHECKING:
    import sqlgate

__all__ = [
    "ACutCursor",
    "CutCursor",
    "DeadOnLinkGone",
    "LinkGone",
    "figures",
    "terminate",
]


class CutCursor:
    """Wraps an adapter's real ``Cursor``: its fetch (or its close) raises ``exc``."""

    def __init__(
        self, real: Any, exc: BaseException, *, in_close: bool = False
    ) -> None:
        self._real = real
        self._exc = exc
        self._in_close = in_close
        self.columns = real.columns

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        if self._in_close:
            return list(self._real.fetchmany(n))
        raise self._exc

    def close(self) -> None:
        self._real.close()
        if self._in_close:
            raise self._exc


class ACutCursor:
    """Wraps an adapter's real ``AsyncCursor``: its fetch raises ``exc``."""

    def __init__(self, real: Any, exc: BaseException) -> None:
        self._real = real
        self._exc = exc
        self.columns = real.columns

    async def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        raise self._exc

    async def aclose(self) -> None:
        await self._real.aclose()


class LinkGone(Exception):
    """What a driver raises when its socket died (SQLite never does)."""


class DeadOnLinkGone(SqliteAdapter):
    """SQLite has no link to lose: this adapter calls ``LinkGone`` a dead link."""

    def is_dead(self, conn: Any, exc: BaseException) -> bool:
        return isinstance(exc, LinkGone)


def figures(db: sqlgate.DB | sqlgate.AsyncDB) -> tuple[int, int, int]:
    """(in use, idle, broken closed) of ``db``'s pool, after ``check()`` passed."""
    db.pool._core.check()
    s = db.stats()
    return s.in_use, s.idle, s.broken_closed


def terminate(admin: Any, app_name: str) -> int:
    """Kill every backend of ``app_name`` and wait (up to 5 s) until each exits.

    Returns:
        How many backends were killed.
    """
    rows = admin.execute(
        "select pg_terminate_backend(pid, 5000) from pg_stat_activity "
        "where application_name = %s",
        (app_name,),
    ).fetchall()
    assert all(r[0] for r in rows)
    return len(rows)
