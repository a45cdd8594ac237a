"""The generic PEP 249 adapter's rules, on a scripted fake driver (issue 14).

The fake driver is a package registered in ``sys.modules``: ``fakedb`` holds
the paramstyle and the exception classes, ``fakedb.core.conn`` the connection
class, so the adapter must walk up the packages to find them. Every statement,
commit and rollback is recorded, so each rule is checked by exact counts.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from sqlgate.drivers import dbapi
from sqlgate.drivers.dbapi import DBAPIAdapter

if TYPE_CHECKING:
    from collections.abc import Iterator


class Error(Exception):
    pass


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class OperationalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class Cursor:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: Any = None
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        conn = self.conn
        conn.log.append(sql)
        failure = conn.fail.pop(0) if conn.fail else None
        if failure is not None:
            raise failure
        if sql.lower().startswith("select"):
            self.description = [("x", None, None, None, None, None, None)]
            self._rows = [(1,)]
            self.rowcount = 1
        else:
            self.rowcount = 1

    def executemany(self, sql: str, seq: Any) -> None:
        n = 0
        for _ in seq:
            self.conn.log.append(sql)
            n += 1
        self.rowcount = n

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def close(self) -> None:
        pass


class Conn:
    def __init__(self) -> None:
        #: Statements sent, in order; "COMMIT"/"ROLLBACK" for those calls.
        self.log: list[str] = []
        #: What the next executes raise (None: succeed).
        self.fail: list[BaseException | None] = []
        #: What the next rollback raises (explicit-mode drivers refuse one
        #: outside a transaction).
        self.refuse_rollback: BaseException | None = None
        self.closed = False
        self.autocommit = False

    def cursor(self) -> Cursor:
        return Cursor(self)

    def commit(self) -> None:
        self.log.append("COMMIT")

    def rollback(self) -> None:
        self.log.append("ROLLBACK")
        if self.refuse_rollback is not None:
            raise self.refuse_rollback

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fakedb() -> Iterator[types.ModuleType]:
    root = types.ModuleType("fakedb")
    root.paramstyle = "named"  # type: ignore[attr-defined]
    for cls in (Error, InterfaceError, DatabaseError, OperationalError):
        setattr(root, cls.__name__, cls)
    core = types.ModuleType("fakedb.core")
    leaf = types.ModuleType("fakedb.core.conn")
    klass = type("Connection", (Conn,), {"__module__": "fakedb.core.conn"})
    leaf.Connection = klass  # type: ignore[attr-defined]
    mods = {"fakedb": root, "fakedb.core": core, "fakedb.core.conn": leaf}
    sys.modules.update(mods)
    dbapi._adapters.pop("fakedb.core.conn", None)
    yield leaf
    for name in mods:
        del sys.modules[name]
    dbapi._adapters.pop("fakedb.core.conn", None)


def make(fakedb: types.ModuleType) -> Conn:
    conn: Conn = fakedb.Connection()
    return conn


def test_paramstyle_and_classes_come_from_a_parent_package(
    fakedb: types.ModuleType,
) -> None:
    adapter = dbapi.for_connection(make(fakedb))
    assert isinstance(adapter, DBAPIAdapter)
    assert (adapter.name, adapter.paramstyle) == ("fakedb", "named")
    assert dbapi.for_connection(make(fakedb)) is adapter  # one per module


def test_not_a_dbapi_connection_is_a_type_error() -> None:
    class Half:
        def close(self) -> None:
            pass

        def cursor(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"not a DB-API 2\.0 connection \(no commit"):
        dbapi.for_connection(Half())
    no_style = types.ModuleType("nostyle")
    sys.modules["nostyle"] = no_style
    try:
        klass = type("C", (Conn,), {"__module__": "nostyle"})
        with pytest.raises(TypeError, match="nostyle has no DB-API paramstyle"):
            dbapi.for_connection(klass())
    finally:
        del sys.modules["nostyle"]


def test_manual_commit_outside_a_transaction(fakedb: types.ModuleType) -> None:
    conn = make(fakedb)
    adapter = dbapi.for_connection(conn)
    adapter.prepare(conn)  # learns the mode: rollback accepted -> manual
    assert conn.log == ["ROLLBACK"]
    conn.log.clear()
    assert adapter.exec(conn, "insert 1", None) == (1, None)
    assert conn.log == ["insert 1", "COMMIT"]
    conn.log.clear()
    conn.fail = [ProgrammingError("syntax")]
    with pytest.raises(ProgrammingError):
        adapter.exec(conn, "insert 2", None)
    assert conn.log == ["insert 2", "ROLLBACK"]  # no implicit tx left open
    conn.log.clear()
    adapter.begin(conn, None, False)
    adapter.exec(conn, "insert 3", None)
    adapter.exec_many(conn, "insert 4", [{}, {}])
    assert conn.log == ["insert 3", "insert 4", "insert 4"]  # no commit yet
    adapter.commit(conn, False)
    assert conn.log[-1] == "COMMIT"
    conn.log.clear()
    adapter.reset(conn)
    assert conn.log == ["ROLLBACK"]  # every return costs a rollback


def test_begin_with_modes_sends_set_transaction(fakedb: types.ModuleType) -> None:
    conn = make(fakedb)
    adapter = dbapi.for_connection(conn)
    adapter.prepare(conn)
    conn.log.clear()
    adapter.begin(conn, "repeatable read", True)
    assert conn.log == ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"]
    adapter.rollback(conn, True)
    conn.fail = [ProgrammingError("syntax error at ISOLATION")]
    with pytest.raises(
        ValueError, match=r"fakedb \(generic DB-API adapter\) can"
    ) as info:
        adapter.begin(conn, "serializable", False)
    assert isinstance(info.value.__cause__, ProgrammingError)
    assert not adapter._inside(conn)


def test_dead_link_told_from_sql_error(fakedb: types.ModuleType) -> None:
    conn = make(fakedb)
    adapter = dbapi.for_connection(conn)
    adapter.prepare(conn)
    conn.log.clear()
    # InterfaceError or OSError: dead, no probe.
    assert adapter.is_dead(conn, InterfaceError("network error"))
    assert adapter.is_dead(conn, ConnectionResetError())
    assert conn.log == []
    # A SQL error: alive, no probe.
    assert not adapter.is_dead(conn, ProgrammingError("syntax"))
    assert conn.log == []
    # OperationalError: the probe decides. It answers: alive.
    assert not adapter.is_dead(conn, OperationalError("canceling statement"))
    assert conn.log == ["SELECT 1", "ROLLBACK"]
    conn.log.clear()
    # The probe fails the same way: dead.
    conn.fail = [OperationalError("server closed the connection")]
    assert adapter.is_dead(conn, OperationalError("terminating connection"))
    assert conn.log == ["SELECT 1"]
    # The probe meets a SQL error (an aborted transaction): it answered.
    adapter.begin(conn, None, False)
    conn.fail = [ProgrammingError("current transaction is aborted")]
    assert not adapter.is_dead(conn, OperationalError("deadlock"))
    # A connection that says it is closed: dead, no I/O.
    conn.log.clear()
    conn.closed = True
    assert adapter.is_closed(conn)
    assert adapter.is_dead(conn, OperationalError("x"))
    assert conn.log == []


def test_explicit_mode_for_a_driver_that_refuses_rollback(
    fakedb: types.ModuleType,
) -> None:
    conn = make(fakedb)
    conn.refuse_rollback = DatabaseError("no transaction is active")
    adapter = dbapi.for_connection(conn)
    adapter.prepare(conn)
    assert adapter._explicit is True
    assert conn.log == ["ROLLBACK", "SELECT 1"]  # refused, then the link probed
    conn.log.clear()
    adapter.exec(conn, "insert 1", None)
    assert conn.log == ["insert 1"]  # the driver commits it itself
    adapter.reset(conn)
    assert conn.log == ["insert 1"]  # nothing to roll back
    conn.refuse_rollback = None
    adapter.begin(conn, None, False)
    adapter.exec(conn, "insert 2", None)
    adapter.rollback(conn, False)
    assert conn.log == ["insert 1", "BEGIN TRANSACTION", "insert 2", "ROLLBACK"]


def test_autocommit_left_on_is_turned_off(fakedb: types.ModuleType) -> None:
    conn = make(fakedb)
    conn.autocommit = True
    dbapi.for_connection(conn).prepare(conn)
    assert conn.autocommit is False


def test_db_runs_a_statement_once_when_the_link_dies_under_it(
    fakedb: types.ModuleType,
) -> None:
    made: list[Conn] = []

    def connect() -> Conn:
        made.append(make(fakedb))
        return made[-1]

    db = sqlgate.open(connect, ping_idle=None)
    assert db.paramstyle == "named"
    made[0].fail = [InterfaceError("network error")]
    with pytest.raises(InterfaceError):
        db.exec("update t set x = 1")
    assert made[0].log.count("update t set x = 1") == 1
    s = db.stats()
    assert (s.broken_closed, s.dials) == (1, 1)
    assert db.exec("update t set x = 2").rows_affected == 1
    assert (len(made), db.stats().dials) == (2, 2)
    db.close()
    assert all(c.closed for c in made)
