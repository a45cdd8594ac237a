"""Any PEP 249 (DB-API 2.0) driver: the generic adapter.

``sqlgate.open`` uses it for every connection no specific adapter claims: a
connect callable returning, say, a pg8000, psycopg2, mysql-connector or duckdb
connection, and the DSN schemes ``postgresql+pg8000://``,
``postgresql+psycopg2://`` and ``mysql+mysqlconnector://`` (also
``mariadb+mysqlconnector://``), spelled as SQLAlchemy spells them. The
drivers with a specific adapter (sqlite3, psycopg, PyMySQL) keep it: it
knows more.

What it learns from PEP 249 alone:

- **Paramstyle**: the driver module's ``paramstyle``, looked up from the
  connection's module and, failing that, each parent package (``pg8000.legacy``
  -> ``pg8000``). SQL and parameters pass through unchanged in it.
- **Transactions**: DB-API connections start in manual-commit mode and stay
  there (an ``autocommit`` attribute set True is put back to False). A
  statement outside a transaction is committed right after it ran (Go's
  semantics: it commits by itself), and rolled back if it failed, so no
  implicit transaction is left open. ``begin`` marks the connection; its
  statements are not committed until ``commit``. A driver that instead
  autocommits and opens a transaction only on ``BEGIN`` (duckdb) is told by
  its refusing a ``rollback()`` on a new connection; it is then driven in
  *explicit* mode: ``begin`` sends ``BEGIN TRANSACTION``, statements outside
  it are left to the driver's autocommit, and they run on the connection's
  own ``execute`` where it has one (duckdb's ``cursor()`` is another session).
- **Results are buffered**: every row of a statement is fetched before it
  returns (so the commit can follow, and no unread result blocks the next
  statement). Fetch large results in pages.
- **Dead link or SQL error**: the driver's ``InterfaceError`` (and any
  ``OSError``) means the link is gone. An ``OperationalError`` may be either
  (a killed backend, or a statement timeout), so a cheap probe (``SELECT 1``)
  decides: if the probe raises an ``InterfaceError``/``OperationalError``/
  ``OSError`` too, the connection is discarded; if it runs (or fails with a
  SQL error, as in an aborted PostgreSQL transaction), it is kept. A truthy
  ``closed`` attribute (psycopg2) counts as closed without I/O.
- **Ping**: ``SELECT 1``, then ``rollback()`` outside a transaction; run at
  checkout for a connection idle longer than ``ping_idle``.
- **Reset on return**: ``rollback()`` every time (one round trip): the
  adapter cannot see whether the caller left a transaction open.
- **An aborted transaction is never reported committed**: PostgreSQL aborts
  a transaction at its first error (caught or not) and answers a later
  COMMIT with ROLLBACK, which some drivers report as success (psycopg2).
  ``commit`` therefore raises ``TransactionAborted`` (after a rollback; the
  connection is kept) when the driver's local status says so (psycopg2's
  ``info.transaction_status`` INERROR, pg8000's ``E``), and, for any other
  driver, when a statement of the transaction failed and a ``SELECT 1``
  probe is then refused with a SQL error (the database no longer runs
  statements in it). A database that keeps the transaction going after an
  error (MySQL/MariaDB) answers the probe and commits as asked.
- **Isolation and read-only**: ``begin`` sends the SQL standard's
  ``SET TRANSACTION ISOLATION LEVEL x, READ ONLY`` before the transaction's
  first statement. PostgreSQL and MySQL/MariaDB take it; a database that
  does not (duckdb) is refused clearly: ``ValueError`` naming the driver,
  the statement and the database's answer.

- **Cancel** (the statement another thread runs now), where the driver
  offers one that is safe from another thread: duckdb's ``interrupt()``
  (stops what runs at the call, nothing later; the connection stays usable),
  psycopg2's ``cancel()`` (libpq's cancel request, which names the backend,
  not a statement, and which an idle backend ignores; it is bounded by the
  server's answer only). mysql-connector opened from a DSN: as PyMySQL's
  adapter, a side connection (dialed from the DSN, bounded by
  ``CANCEL_TIMEOUT``) sends ``KILL QUERY ID`` for the statement the
  connection's thread runs (MariaDB; MySQL: ``KILL QUERY <thread>``), nothing
  when it is idle. pg8000, and mysql-connector from a connect callable, offer
  none that is safe while the connection is busy (nor a DSN for a side
  connection): ``cancel`` returns False and the caller discards the
  connection. A stopped statement's error (duckdb's ``InterruptException``,
  SQLSTATE 57014, MySQL's 1317/1969/3024) is a SQL error, not a dead link.

What it cannot tell, and a specific adapter can: whether a transaction is
open (so every return costs a rollback), the driver's own liveness flags
(most have none in PEP 249), server-side cursors (results are buffered), the
id an INSERT generated where the driver has no ``lastrowid``, and whether a
connection was left in a state other than the one it was dialed with.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import sys
import threading
from typing import TYPE_CHECKING, Any

from sqlgate.drivers._base import CANCEL_TIMEOUT, Cursor, SyncAdapter, log, parse_params
from sqlgate.drivers._probe import PG_IDLE, PG_INERROR, libpq_aborted, pg8000_aborted
from sqlgate.errors import TransactionAborted

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from sqlgate.drivers._dsn import DSN

__all__ = [
    "DBAPIAdapter",
    "DBAPIResult",
    "for_connection",
    "for_family",
]

#: DSN family -> (the driver's module, the pip package that installs it).
FAMILIES = {
    "pg8000": ("pg8000.dbapi", "pg8000"),
    "psycopg2": ("psycopg2", "psycopg2-binary"),
    "mysqlconnector": ("mysql.connector", "mysql-connector-python"),
}

#: The probe that tells a dead link from a SQL error; also the ping.
PROBE = "SELECT 1"


class DBAPIResult(Cursor):
    """A statement's buffered result: what ``Rows`` and ``Result`` read.

    A ``Cursor`` whose rows are already fetched: its driver cursor is closed.

    Attributes:
        description: the cursor's ``description`` (None for no rows).
        columns: the column names; empty for a statement returning no rows.
        rowcount: the driver's ``rowcount`` (-1 when unknown).
        lastrowid: the driver's ``lastrowid``, or None.
    """

    __slots__ = ("_at", "_rows", "description", "lastrowid", "rowcount")

    def __init__(
        self,
        description: Any,
        rows: list[tuple[Any, ...]],
        rowcount: int,
        lastrowid: Any,
    ) -> None:
        self.description = description
        self.columns = tuple(d[0] for d in description) if description else ()
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row, or None at the end."""
        if self._at >= len(self._rows):
            return None
        row = self._rows[self._at]
        self._at += 1
        return row

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        """Up to ``n`` more rows; an empty list at the end.

        Args:
            n: most rows to return.

        Returns:
            The rows, in order.
        """
        at = self._at
        self._at = min(len(self._rows), at + n)
        return self._rows[at : self._at]

    def close(self) -> None:
        """Drop the rows (no I/O: the driver's cursor is already closed)."""
        self._rows = []
        self._at = 0


def _find(module_name: str, attr: str) -> tuple[str, Any]:
    """(the module, ``attr``) of ``module_name`` or its nearest parent that has it."""
    parts = module_name.split(".")
    while parts:
        name = ".".join(parts)
        module = sys.modules.get(name)
        if module is not None and hasattr(module, attr):
            return name, getattr(module, attr)
        parts.pop()
    return module_name, None


def _lookup(module_name: str, attr: str) -> Any:
    """``attr`` of ``module_name`` or of its nearest parent package that has it."""
    return _find(module_name, attr)[1]


def _classes(module_name: str, *names: str) -> tuple[type[BaseException], ...]:
    found = (_lookup(module_name, name) for name in names)
    return tuple(
        c for c in found if isinstance(c, type) and issubclass(c, BaseException)
    )


_METHODS = ("cursor", "commit", "rollback", "close")


class DBAPIAdapter(SyncAdapter):
    """The generic adapter for one DB-API driver (see the module docstring).

    One instance per driver module, shared by its connections; it keeps the
    set of connections inside a ``begin`` (keyed by ``id``, checked by
    identity, so a reused id is never mistaken for an open transaction).

    Attributes:
        name: the driver module that holds its paramstyle ("pg8000",
            "mysql.connector", "duckdb"...).
        paramstyle: the driver's DB-API paramstyle.
    """

    def __init__(self, module_name: str, side: Callable[[], Any] | None = None) -> None:
        self._module_name = module_name
        #: Dials ``cancel``'s side connection (mysql-connector from a DSN).
        self._side = side
        home, paramstyle = _find(module_name, "paramstyle")
        if not isinstance(paramstyle, str):
            raise TypeError(
                f"{module_name} has no DB-API paramstyle (looked in the module "
                "and its parent packages): not a PEP 249 driver"
            )
        # The driver's name: where its paramstyle lives ("_duckdb" -> "duckdb").
        self.name = home.lstrip("_")
        self.paramstyle = paramstyle
        #: Errors that mean the link is gone, and those a probe must confirm.
        self._dead: tuple[type[BaseException], ...] = (
            *_classes(module_name, "InterfaceError"),
            OSError,
            EOFError,
        )
        self._maybe_dead = _classes(module_name, "OperationalError")
        #: id(conn) -> conn, for connections inside a transaction ``begin``
        #: started (the value guards against a reused id).
        self._in_tx: dict[int, Any] = {}
        #: id(conn) -> conn, for transactions in which a statement failed.
        self._failed: dict[int, Any] = {}
        #: How to read the driver's local "transaction aborted" flag, if any.
        self._aborted_flag = _ABORTED_FLAGS.get(module_name.split(".")[0])
        #: The driver's own cancel (see the module docstring), or None.
        self._cancel = _CANCELS.get(module_name.split(".")[0])
        #: The driver's mode, learnt by ``prepare``: False for PEP 249's
        #: manual commit (a transaction opens implicitly); True for a driver
        #: that autocommits and opens one only on ``BEGIN``; None: not known.
        self._explicit: bool | None = None

    def for_dsn(self, dsn: DSN) -> DBAPIAdapter:
        """See ``SyncAdapter.for_dsn``: mysql-connector's keeps a side dial.

        Args:
            dsn: the parsed DSN.

        Returns:
            For ``mysql+mysqlconnector://``, an adapter of its own whose
            ``cancel`` dials a side connection from the DSN; else ``self``.

        Raises:
            ValueError: an unknown parameter or a bad value.
        """
        if dsn.family != "mysqlconnector":
            return self
        return DBAPIAdapter(self._module_name, side=_mysqlconnector_side(dsn))

    def __repr__(self) -> str:
        return f"<sqlgate.drivers.dbapi.DBAPIAdapter {self.name} {self.paramstyle}>"

    # -- dialing ---------------------------------------------------------------

    def connector(
        self, dsn: DSN
    ) -> tuple[Callable[[], Any], Callable[[], None] | None]:
        """See ``SyncAdapter.connector``: the driver's ``connect`` for the DSN.

        Args:
            dsn: a parsed ``postgresql+pg8000://``, ``postgresql+psycopg2://``
                or ``mysql+mysqlconnector://`` DSN.

        Returns:
            (a callable dialing one connection in manual-commit mode, None).

        Raises:
            ValueError: an unknown parameter or a bad value (password masked);
                a scheme with no connect recipe.
        """
        recipe = _RECIPES.get(dsn.family)
        if recipe is None:
            raise ValueError(
                f"{dsn.redacted()}: the generic DB-API adapter has no DSN form "
                f"for {dsn.scheme}; pass a connect callable to sqlgate.open"
            )
        return recipe(dsn), None

    def prepare(self, conn: Any) -> None:
        """See ``SyncAdapter.prepare``: manual-commit mode, and learn the driver's.

        A connection whose ``autocommit`` attribute is True (psycopg2, pg8000,
        mysql-connector set that way by the connect callable) is switched
        back to manual commit. Until the driver's mode is known, a
        ``rollback()`` is sent: PEP 249 drivers accept it; a driver that
        autocommits and opens transactions only on ``BEGIN`` (duckdb) refuses
        it, and is then driven in explicit mode (see the module docstring).

        Args:
            conn: the driver's connection, just dialed.

        Raises:
            The driver's error for a dead link; the dial fails.
        """
        if getattr(conn, "autocommit", None) is True:
            conn.autocommit = False
        if self._explicit is not None:
            return
        try:
            conn.rollback()
        except Exception as exc:
            if isinstance(exc, self._dead):
                raise
            # "No transaction is active", if the link answers a probe:
            # transactions start only on BEGIN. Else the probe's error goes up.
            self._run(conn, PROBE, None)
            self._explicit = True
        else:
            self._explicit = False

    def is_closed(self, conn: Any) -> bool:
        """See ``SyncAdapter.is_closed``: a truthy ``closed`` attribute, if any.

        Args:
            conn: the driver's connection.

        Returns:
            True when the connection says it is closed (psycopg2's ``closed``);
            False when it does not know.
        """
        closed = getattr(conn, "closed", False)
        return isinstance(closed, bool | int) and bool(closed)

    def ping(self, conn: Any) -> None:
        """See ``SyncAdapter.ping``: ``SELECT 1``, then rollback outside a Tx."""
        self._run(conn, PROBE, None)
        if not self._explicit and not self._inside(conn):
            conn.rollback()

    def is_dead(self, conn: Any, exc: BaseException) -> bool:
        """See ``SyncAdapter.is_dead``: by the driver's classes, then a probe.

        Args:
            conn: the connection the failing call was made on.
            exc: what the call raised.

        Returns:
            True when the connection is closed, ``exc`` is the driver's
            ``InterfaceError`` or an ``OSError``/``EOFError``, or it is an
            ``OperationalError`` and a ``SELECT 1`` probe fails the same way;
            False for any other error (the connection is kept).
        """
        if self.is_closed(conn) or isinstance(exc, self._dead):
            return True
        if not isinstance(exc, self._maybe_dead) or self.is_cancelled(exc):
            return False
        return not self._answers(conn)

    # -- cancel ----------------------------------------------------------------

    def cancel(self, conn: Any) -> bool:
        """See ``SyncAdapter.cancel``: the driver's own, where it has one.

        Args:
            conn: the driver's connection, maybe busy in another thread.

        Returns:
            True when duckdb's ``interrupt()`` or psycopg2's ``cancel()`` was
            called without error, or mysql-connector's side connection
            killed the running statement (or found none); False for another
            driver, or when it failed (logged).
        """
        if self._side is not None:
            return self._kill_on_side(conn)
        if self._cancel is None:
            return False
        try:
            self._cancel(conn)
        except Exception as exc:
            log.warning("cancel failed (%s): %r", self.name, exc)
            return False
        return True

    def _kill_on_side(self, conn: Any) -> bool:
        """mysql-connector: ``KILL QUERY ID`` for ``conn``'s running statement."""
        assert self._side is not None
        try:
            thread_id = int(conn.connection_id)
            mariadb = "mariadb" in str(conn.server_info).lower()
            side = self._side()
        except Exception as exc:
            log.warning("cancel: no side connection: %r", exc)
            return False
        try:
            cur = side.cursor()
            try:
                cur.execute(_RUNNING, (thread_id,))
                row = cur.fetchone()
                if row is not None:  # idle: nothing to stop
                    kill = f"KILL QUERY ID {int(row[0])}" if mariadb else None
                    try:
                        cur.execute(kill or f"KILL QUERY {thread_id}")
                    except Exception as exc:
                        # The statement ended meanwhile: a later one is spared.
                        if getattr(exc, "errno", None) != _UNKNOWN_QUERY_ID:
                            raise
            finally:
                _close_quietly(cur)
        except Exception as exc:
            log.warning("cancel: KILL QUERY failed: %r", exc)
            return False
        finally:
            with contextlib.suppress(Exception):
                side.close()
        return True

    def is_cancelled(self, exc: BaseException) -> bool:
        """See ``SyncAdapter.is_cancelled``: by class, SQLSTATE or error number.

        Args:
            exc: what a call raised.

        Returns:
            True for duckdb's ``InterruptException``, a PostgreSQL error with
            SQLSTATE 57014 (psycopg2's ``pgcode``, pg8000's ``C`` field) or a
            MySQL error numbered 1317, 1969 or 3024 (mysql-connector's
            ``errno``).
        """
        if type(exc).__name__ == "InterruptException":  # duckdb
            return True
        if getattr(exc, "pgcode", None) == _QUERY_CANCELED:  # psycopg2
            return True
        if getattr(exc, "errno", None) in _MYSQL_CANCELLED:  # mysql-connector
            return True
        first = exc.args[0] if exc.args else None
        return isinstance(first, dict) and first.get("C") == _QUERY_CANCELED

    def reusable_after_cancel(self, conn: Any, in_transaction: bool) -> bool:
        """See ``SyncAdapter.reusable_after_cancel``: duckdb and psycopg2 only.

        Outside a transaction ``query`` has already rolled back the implicit
        one the statement began.

        Args:
            conn: the driver's connection, its statement's error read.
            in_transaction: the statement ran in a ``begin`` transaction.

        Returns:
            duckdb, and mysql-connector from a DSN (after ``KILL QUERY`` it
            waits for the next command): True unless closed. psycopg2: True
            when libpq's status is IDLE (inside a transaction also INTRANS or
            INERROR, which the caller's rollback cleans). Any other driver:
            False.
        """
        if (self._cancel is None and self._side is None) or self.is_closed(conn):
            return False
        status = getattr(getattr(conn, "info", None), "transaction_status", None)
        if status is None:  # duckdb, mysql-connector
            return True
        return status in (_PG_IDLE_IN_ERROR if in_transaction else (PG_IDLE,))

    def _answers(self, conn: Any) -> bool:
        """The probe: whether the server still answers on ``conn``."""
        try:
            self.ping(conn)
        except Exception as exc:
            # A SQL error (e.g. an aborted transaction) is an answer too.
            return not isinstance(exc, (*self._dead, *self._maybe_dead))
        return True

    # -- transactions ----------------------------------------------------------

    def _inside(self, conn: Any) -> bool:
        return self._in_tx.get(id(conn)) is conn

    def _leave(self, conn: Any) -> None:
        if self._inside(conn):
            del self._in_tx[id(conn)]
        if self._failed.get(id(conn)) is conn:
            del self._failed[id(conn)]

    def _note_failure(self, conn: Any) -> None:
        """Remember that a statement of ``conn``'s transaction failed."""
        if self._inside(conn):
            self._failed[id(conn)] = conn

    def _is_aborted(self, conn: Any) -> bool:
        """Whether the database aborted ``conn``'s transaction (see the module)."""
        if self._aborted_flag is not None:
            return self._aborted_flag(conn)
        if self._failed.get(id(conn)) is not conn:
            return False
        try:
            self._run(conn, PROBE, None)
        except Exception as exc:
            if isinstance(exc, (*self._dead, *self._maybe_dead)):
                raise
            return True
        return False

    def reset(self, conn: Any) -> None:
        """See ``SyncAdapter.reset``: ``rollback()``, always (one round trip).

        Args:
            conn: the driver's connection.

        Raises:
            The driver's error; the pool discards the connection.
        """
        inside = self._inside(conn)
        self._leave(conn)
        if inside or not self._explicit:
            conn.rollback()

    def begin(self, conn: Any, isolation: str | None, read_only: bool) -> None:
        """See ``SyncAdapter.begin``: mark the connection; set its modes in SQL.

        The driver opens the transaction itself with the first statement
        (manual-commit mode). A level or read-only is set first with
        ``SET TRANSACTION ISOLATION LEVEL x, READ ONLY``.

        Args:
            conn: the driver's connection, with no transaction open.
            isolation: a level from ``validate_isolation``, or None.
            read_only: start it READ ONLY.

        Raises:
            ValueError: the database refused the SET TRANSACTION (it lacks
                the level or the mode); the message names the driver, the
                statement and the database's answer, which is chained.
            The driver's error for a dead link.
        """
        if self._explicit:
            self._run(conn, "BEGIN TRANSACTION", None)
        if isolation is not None or read_only:
            modes = [f"ISOLATION LEVEL {isolation.upper()}"] if isolation else []
            if read_only:
                modes.append("READ ONLY")
            sql = "SET TRANSACTION " + ", ".join(modes)
            try:
                self._run(conn, sql, None)
            except Exception as exc:
                if self.is_dead(conn, exc):
                    raise
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise ValueError(
                    f"{self.name} (generic DB-API adapter) cannot begin a "
                    f"transaction with isolation={isolation!r}, "
                    f"read_only={read_only}: the database refused {sql!r}: {exc}"
                ) from exc
        self._in_tx[id(conn)] = conn

    def commit(self, conn: Any, read_only: bool) -> None:
        """See ``SyncAdapter.commit``: ``commit()``; the mark is cleared.

        A transaction the database already aborted (see the module
        docstring) is rolled back instead and ``TransactionAborted`` raised:
        nothing was committed, and the connection is kept.

        Args:
            conn: the driver's connection.
            read_only: unused.

        Raises:
            TransactionAborted: the database had aborted the transaction at
                an earlier error; it was rolled back.
            The driver's error.
        """
        try:
            aborted = self._is_aborted(conn)
        finally:
            self._leave(conn)
        if aborted:
            conn.rollback()
            raise TransactionAborted(
                "the transaction was already aborted by an earlier error: it "
                f"was rolled back, nothing was committed ({self.name})"
            )
        conn.commit()

    def rollback(self, conn: Any, read_only: bool) -> None:
        """See ``SyncAdapter.rollback``: ``rollback()``; the mark is cleared.

        Arguments as ``commit``.

        Raises:
            The driver's error.
        """
        self._leave(conn)
        conn.rollback()

    # -- statements ------------------------------------------------------------

    def exec(self, conn: Any, sql: str, params: Any) -> tuple[int, int | None]:
        """See ``SyncAdapter.exec``; committed at once outside a transaction.

        Returns:
            (the driver's ``rowcount``, its ``lastrowid`` when a positive int
            or None).

        Raises:
            As ``query``.
        """
        result = self.query(conn, sql, params)
        return result.rowcount, self.last_insert_id(result)

    def query(self, conn: Any, sql: str, params: Any) -> DBAPIResult:
        """See ``SyncAdapter.query``: run, buffer every row, commit outside a Tx.

        Returns:
            The buffered result (``columns``, rows, ``rowcount``,
            ``lastrowid``); closing it does no I/O.

        Raises:
            The driver's error. Outside a transaction the implicit one the
            statement began is rolled back first (quietly; a dead link is the
            caller's to judge), so the connection is left clean.
        """
        # A driver in explicit mode commits a statement outside BEGIN itself.
        manual = not self._explicit and not self._inside(conn)
        try:
            result = self._run(conn, sql, params)
            if manual:
                conn.commit()
        except Exception:
            if manual:
                with contextlib.suppress(Exception):
                    conn.rollback()
            else:
                self._note_failure(conn)
            raise
        return result

    def exec_many(
        self, conn: Any, sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        """See ``SyncAdapter.exec_many``; committed at once outside a transaction.

        Args:
            conn: the driver's connection.
            sql: the statement, in the driver's dialect.
            seq_of_params: parameter sets in the driver's paramstyle.

        Returns:
            (the driver's ``rowcount``, None).

        Raises:
            As ``query`` (a failure outside a transaction is rolled back:
            none of the sets took effect).
        """
        manual = not self._explicit and not self._inside(conn)
        own = self._explicit and callable(getattr(conn, "executemany", None))
        try:
            cur = conn if own else conn.cursor()
            try:
                cur.executemany(sql, seq_of_params)
                count = cur.rowcount
            finally:
                if cur is not conn:
                    _close_quietly(cur)
            if manual:
                conn.commit()
        except Exception:
            if manual:
                with contextlib.suppress(Exception):
                    conn.rollback()
            else:
                self._note_failure(conn)
            raise
        return count if isinstance(count, int) else -1, None

    def _run(self, conn: Any, sql: str, params: Any) -> DBAPIResult:
        """Run ``sql`` on ``conn``'s session and buffer its result.

        PEP 249's ``cursor()`` normally. In explicit mode a connection with
        an ``execute`` of its own runs it there: such a driver's cursor may be
        a session of its own (duckdb's is), outside the connection's BEGIN.
        """
        own = self._explicit and callable(getattr(conn, "execute", None))
        cur = conn if own else conn.cursor()
        try:
            args = (sql,) if params is None else (sql, params)
            got = cur.execute(*args)
            if own and got is not None:
                cur = got
            desc = cur.description
            rows = cur.fetchall() if desc else []
            if rows and type(rows[0]) is not tuple:  # pg8000 gives lists
                rows = [tuple(r) for r in rows]
            return DBAPIResult(
                desc, rows, cur.rowcount, getattr(cur, "lastrowid", None)
            )
        finally:
            if cur is not conn:
                _close_quietly(cur)


#: libpq's IDLE, INTRANS and INERROR.
_PG_IDLE_IN_ERROR = (PG_IDLE, 2, PG_INERROR)
#: PostgreSQL's query_canceled.
_QUERY_CANCELED = "57014"
#: As ``sqlgate.drivers.mysql.CANCELLED_ERRNOS`` (that module needs PyMySQL).
_MYSQL_CANCELLED = frozenset({1317, 1969, 3024})
#: As in ``sqlgate.drivers.mysql``: MariaDB's "Unknown query id", and the
#: look-up of the statement a server thread runs.
_UNKNOWN_QUERY_ID = 1957
_RUNNING = (
    "SELECT QUERY_ID FROM information_schema.PROCESSLIST "
    "WHERE ID = %s AND COMMAND = 'Query'"
)


def _interrupt(conn: Any) -> None:
    conn.interrupt()


def _pg_cancel(conn: Any) -> None:
    conn.cancel()


#: Driver package -> its cancel, safe from another thread.
_CANCELS: dict[str, Callable[[Any], None]] = {
    "duckdb": _interrupt,
    "_duckdb": _interrupt,
    "psycopg2": _pg_cancel,
}

#: Driver package -> its local "the transaction is aborted" flag.
_ABORTED_FLAGS: dict[str, Callable[[Any], bool]] = {
    "psycopg2": libpq_aborted,
    "pg8000": pg8000_aborted,
}


def _close_quietly(cur: Any) -> None:
    # The statement's error, if any, is the one that matters.
    with contextlib.suppress(Exception):
        cur.close()


# -- one adapter per driver module ---------------------------------------------

_adapters: dict[str, DBAPIAdapter] = {}
_adapters_lock = threading.Lock()


def _adapter_for_module(module_name: str) -> DBAPIAdapter:
    adapter = _adapters.get(module_name)
    if adapter is None:
        with _adapters_lock:
            adapter = _adapters.get(module_name)
            if adapter is None:
                adapter = _adapters[module_name] = DBAPIAdapter(module_name)
    return adapter


def for_connection(conn: object) -> DBAPIAdapter:
    """The generic adapter for a connection a user's connect callable made.

    Args:
        conn: a PEP 249 connection of a driver no specific adapter claims.

    Returns:
        The adapter for its driver module (one per module).

    Raises:
        TypeError: ``conn`` is not a PEP 249 connection (no ``cursor``,
            ``commit``, ``rollback`` or ``close``, or no ``paramstyle`` in
            its module or a parent package).
    """
    kind = type(conn)
    name = f"{kind.__module__}.{kind.__qualname__}"
    missing = [m for m in _METHODS if not callable(getattr(kind, m, None))]
    if missing:
        raise TypeError(
            f"connect returned a {name}, which is not a DB-API 2.0 connection "
            f"(no {', '.join(missing)}); sqlgate.open needs one (use "
            "sqlgate.Pool for other objects)"
        )
    return _adapter_for_module(kind.__module__)


def for_family(family: str) -> DBAPIAdapter:
    """The generic adapter for a DSN family (``FAMILIES``), its driver imported.

    Args:
        family: "pg8000", "psycopg2" or "mysqlconnector".

    Returns:
        The adapter, with the connect recipe for that family.

    Raises:
        ImportError: the driver is not installed; the message names the
            package to install.
        KeyError: not a family of this module.
    """
    module_name, package = FAMILIES[family]
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        root = module_name.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != root:
            raise
        raise ImportError(
            f"the {root!r} driver package is not installed: pip install {package}",
            name=root,
        ) from exc
    return _adapter_for_module(module_name)


# -- DSN -> connect call, per driver ---------------------------------------------


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


_PG8000_PARAMS: dict[str, Callable[[str], object]] = {
    "application_name": str,
    "timeout": float,
    "connect_timeout": float,
    "unix_sock": str,
    "tcp_keepalive": _bool,
}


def _pg8000(dsn: DSN) -> Callable[[], Any]:
    """pg8000.dbapi.connect; ``connect_timeout`` is pg8000's ``timeout``."""
    opts = parse_params(dsn, _PG8000_PARAMS)
    if "connect_timeout" in opts:
        opts.setdefault("timeout", opts.pop("connect_timeout"))
    kwargs: dict[str, Any] = {
        "user": dsn.user or "postgres",
        "host": dsn.host or "localhost",
        "port": dsn.port or 5432,
        "database": dsn.database or None,
        "password": dsn.password,
        **opts,
    }
    module: ModuleType = importlib.import_module("pg8000.dbapi")

    def connect() -> Any:
        return module.connect(**kwargs)

    return connect


#: libpq keywords psycopg2 passes through (all strings, as libpq takes them).
_PSYCOPG2_PARAMS: dict[str, Callable[[str], object]] = dict.fromkeys(
    (
        "application_name",
        "connect_timeout",
        "sslmode",
        "sslrootcert",
        "options",
        "target_session_attrs",
        "keepalives",
        "keepalives_idle",
    ),
    str,
)


def _psycopg2(dsn: DSN) -> Callable[[], Any]:
    """psycopg2.connect with libpq keywords."""
    opts = parse_params(dsn, _PSYCOPG2_PARAMS)
    given = {
        "user": dsn.user,
        "password": dsn.password,
        "host": dsn.host,
        "port": dsn.port,
    }
    kwargs: dict[str, Any] = {"dbname": dsn.database or None, **opts}
    kwargs.update({k: v for k, v in given.items() if v is not None})
    module: ModuleType = importlib.import_module("psycopg2")

    def connect() -> Any:
        return module.connect(**kwargs)

    return connect


_MYSQLCONNECTOR_PARAMS: dict[str, Callable[[str], object]] = {
    "charset": str,
    "collation": str,
    "connect_timeout": float,
    "unix_socket": str,
    "program_name": str,
    "use_pure": _bool,
}


#: mysql-connector's connect timeout (s) when the DSN gives none.
CONNECT_TIMEOUT = 10.0


def _mysqlconnector(dsn: DSN) -> Callable[[], Any]:
    """mysql.connector.connect; ``program_name`` becomes a connect attribute.

    ``connect_timeout`` (default ``CONNECT_TIMEOUT``) is its
    ``connection_timeout``, which bounds the dial only.
    """
    kwargs = _mysqlconnector_kwargs(dsn)
    module: ModuleType = importlib.import_module("mysql.connector")

    def connect() -> Any:
        return module.connect(**kwargs)

    return connect


def _mysqlconnector_side(dsn: DSN) -> Callable[[], Any]:
    """``cancel``'s side dial: the DSN's, autocommit, bounded by ``CANCEL_TIMEOUT``."""
    kwargs = _mysqlconnector_kwargs(dsn)
    dial = float(kwargs["connection_timeout"])
    kwargs.update(
        connection_timeout=min(dial, CANCEL_TIMEOUT),
        # Whole seconds: mysql-connector takes no other.
        read_timeout=math.ceil(CANCEL_TIMEOUT),
        write_timeout=math.ceil(CANCEL_TIMEOUT),
        autocommit=True,
        database=None,
        conn_attrs={"program_name": "sqlgate-cancel"},
    )
    module: ModuleType = importlib.import_module("mysql.connector")

    def connect() -> Any:
        return module.connect(**kwargs)

    return connect


def _mysqlconnector_kwargs(dsn: DSN) -> dict[str, Any]:
    opts = parse_params(dsn, _MYSQLCONNECTOR_PARAMS)
    kwargs: dict[str, Any] = {
        "host": dsn.host or "localhost",
        "port": dsn.port or 3306,
        "user": dsn.user,
        "password": dsn.password or "",
        "database": dsn.database or None,
        "autocommit": False,
    }
    # Bounded by default (as PyMySQL's 10 s): a port that accepts and never
    # answers (a non-MySQL service) would otherwise hang the dial.
    kwargs["connection_timeout"] = opts.pop("connect_timeout", CONNECT_TIMEOUT)
    if "program_name" in opts:
        kwargs["conn_attrs"] = {"program_name": opts.pop("program_name")}
    kwargs.update(opts)
    return kwargs


_RECIPES: dict[str, Callable[[DSN], Callable[[], Any]]] = {
    "pg8000": _pg8000,
    "psycopg2": _psycopg2,
    "mysqlconnector": _mysqlconnector,
}
