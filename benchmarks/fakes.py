"""Do-nothing connections and drivers, so pool bookkeeping is all that is timed."""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

# psycopg's TransactionStatus.IDLE is 0; psycopg_pool reads it on every return.
_IDLE = 0


class _PgConnStub:
    """What psycopg_pool reads of ``conn.pgconn``: the transaction status."""

    __slots__ = ()
    transaction_status = _IDLE


class FakeConnection:
    """A DB-API connection whose methods do nothing.

    It has no ``in_transaction`` attribute (like most drivers), so pools that
    roll back on return do call ``rollback``. It also carries the two things
    psycopg_pool reads (``pgconn.transaction_status``, and attributes it sets),
    so the same object serves every pool.
    """

    pgconn = _PgConnStub()
    _serial = itertools.count(1)

    def __init__(self) -> None:
        self.number = next(self._serial)
        # Pools that tag connections (psycopg_pool sets _pool, _created_at,
        # _expire_at) then grow an existing instance dict, as with a real one.
        self.closed = False

    def __repr__(self) -> str:
        return f"<FakeConnection #{self.number}>"

    def close(self) -> None:
        self.closed = True

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def cursor(self, *args: object, **kwargs: object) -> FakeCursor:
        return FakeCursor()


class FakeCursor:
    """A cursor that returns one row of ``1``."""

    def execute(self, *args: object, **kwargs: object) -> None:
        pass

    def fetchone(self) -> tuple[int]:
        return (1,)

    def close(self) -> None:
        pass


class _Error(Exception):
    pass


class DialModule:
    """A DB-API "module" whose ``connect`` is a given callable (for DBUtils).

    Args:
        dial: returns a new connection.
        dbapi: the real driver module whose exceptions DBUtils should treat as
            connection failures, or None for fake ones.
    """

    apilevel = "2.0"
    paramstyle = "qmark"

    def __init__(self, dial: Callable[[], Any], dbapi: Any = None) -> None:
        self.connect = dial
        self.threadsafety = 2
        source = dbapi if dbapi is not None else self
        self.Error: type[BaseException] = getattr(source, "Error", _Error)
        self.OperationalError = getattr(source, "OperationalError", _Error)
        self.InterfaceError = getattr(source, "InterfaceError", _Error)
        self.InternalError = getattr(source, "InternalError", _Error)


def fake_dial(delay: float = 0.0) -> Callable[[], FakeConnection]:
    """A connect callable returning fresh fake connections, sleeping ``delay`` s."""
    if delay <= 0:
        return FakeConnection

    def dial() -> FakeConnection:
        time.sleep(delay)
        return FakeConnection()

    return dial


def connection_class_for(dial: Callable[[], Any]) -> type:
    """A class psycopg_pool can use as ``connection_class``: ``connect`` calls ``dial``.

    psycopg_pool only ever calls ``connection_class.connect(conninfo, **kwargs)``
    and then works on the object returned, so this pools fake connections as
    well as real psycopg ones without a server.
    """

    def connect(cls: type, /, conninfo: str = "", **kwargs: object) -> Any:
        return dial()

    return type("DialConnection", (), {"connect": classmethod(connect)})
