"""MariaDB and MySQL through PyMySQL.

Target: ``mysql://user:pw@host:port/db`` (also ``mariadb://``,
``mysql+pymysql://``). Parameters: ``charset`` (default utf8mb4),
``connect_timeout``, ``read_timeout``, ``write_timeout`` (seconds),
``unix_socket``, ``init_command``, ``program_name`` (shown in the server's
``performance_schema.session_connect_attrs``). Paramstyle: ``%s`` /
``%(name)s`` ("pyformat").

Connections run in autocommit; ``DB.begin`` sends
``SET TRANSACTION ISOLATION LEVEL x`` (only when a level is asked for) and
``START TRANSACTION [READ ONLY]``.

Reset on return: the server reports, in every OK packet, whether a
transaction is open (``SERVER_STATUS_IN_TRANS``); PyMySQL keeps the last one as
``server_status``. Only a connection left inside a transaction is rolled back,
so the common return costs no round trip. Autocommit is put back if the caller
turned it off through ``Conn.raw`` (also read from ``server_status``).

Ping: ``conn.ping(reconnect=False)``, the protocol's COM_PING: one round trip,
no statement, and never a silent reconnect (which would lose session state).

Dead link: client errors 2006 (server has gone away), 2013 (lost connection
during query), 2055 (lost connection, system error), 2003 (cannot connect);
server errors 1927 (connection killed), 1053 (server shutdown), 4031
(disconnected for inactivity, MySQL 8); and any error after which PyMySQL
closed its socket (``conn.open`` is False). ``KILL QUERY`` (1317) and other
server errors are SQL errors: the connection is kept.

Cancel: a side connection (same host, port, user, password, socket and TLS
context as ``conn``; each of its steps bounded by ``CANCEL_TIMEOUT``) looks up
``conn``'s server thread in ``information_schema.PROCESSLIST``. If it is
running a statement (``COMMAND = 'Query'``), MariaDB gets ``KILL QUERY ID
<that statement's QUERY_ID>``, which stops that statement only: if it ended
meanwhile the server answers "Unknown query id" (1957) and a statement started
since is left alone. MySQL has no query ids and gets ``KILL QUERY
<thread id>``, which would also stop a statement started between the look-up
and the kill. Nothing is sent when the thread is idle (a ``KILL QUERY`` on an
idle thread is harmless on MariaDB 10.11 anyway: the next statement runs).
Either way the caller must start no further statement on ``conn`` before
``cancel`` returned. The stopped statement raises ``OperationalError`` 1317
("Query execution was interrupted"); the connection stays in step with the
server, in autocommit, and a transaction it was in stays open for the
caller's ROLLBACK. ``max_statement_time`` (MariaDB, 1969) and
``max_execution_time`` (MySQL, 3024) stop a statement with errors of their
own, which count as cancelled too.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pymysql
from pymysql.constants import SERVER_STATUS

from sqlgate.drivers._base import CANCEL_TIMEOUT, SyncAdapter, log, parse_params

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate.drivers._dsn import DSN

__all__ = ["CANCELLED_ERRNOS", "DEAD_ERRNOS", "SYNC", "PyMySQLAdapter"]

#: MySQL/MariaDB error numbers that mean the link is gone.
DEAD_ERRNOS = frozenset({2003, 2006, 2013, 2055, 1927, 1053, 4031})

#: Error numbers of a statement stopped before its end: KILL QUERY (1317),
#: MariaDB's max_statement_time (1969), MySQL's max_execution_time (3024).
CANCELLED_ERRNOS = frozenset({1317, 1969, 3024})

#: MariaDB's "Unknown query id": the statement to kill already ended.
_UNKNOWN_QUERY_ID = 1957

_RUNNING = (
    "SELECT QUERY_ID FROM information_schema.PROCESSLIST "
    "WHERE ID = %s AND COMMAND = 'Query'"
)


def _side_connection(conn: pymysql.Connection[Any]) -> pymysql.Connection[Any]:
    """A new connection to ``conn``'s server as ``conn``'s user, briefly bounded."""
    secure = bool(getattr(conn, "_secure", False))
    return pymysql.connect(
        host=conn.host,
        port=conn.port,
        user=conn.user,
        password=conn.password,
        unix_socket=conn.unix_socket,
        bind_address=conn.bind_address,
        # TLS exactly when conn uses it, with its context: PyMySQL's
        # "preferred" default would build a context (~70 ms) to learn the same.
        ssl=conn.ctx if secure else None,
        ssl_disabled=not secure,
        server_public_key=conn.server_public_key,
        connect_timeout=min(float(conn.connect_timeout), CANCEL_TIMEOUT),
        read_timeout=CANCEL_TIMEOUT,
        write_timeout=CANCEL_TIMEOUT,
        autocommit=True,
        program_name="sqlgate-cancel",
    )


def _kill_running(side: pymysql.Connection[Any], thread_id: int, mariadb: bool) -> None:
    """Stop the statement ``thread_id`` runs now, if any (see the module)."""
    with side.cursor() as cur:
        cur.execute(_RUNNING, (thread_id,))
        row = cur.fetchone()
        if row is None:
            return  # idle: nothing to stop
        if not mariadb:
            cur.execute(f"KILL QUERY {int(thread_id)}")
            return
        try:
            cur.execute(f"KILL QUERY ID {int(row[0])}")
        except pymysql.err.OperationalError as exc:
            if not exc.args or exc.args[0] != _UNKNOWN_QUERY_ID:
                raise


_IN_TRANS = SERVER_STATUS.SERVER_STATUS_IN_TRANS
_AUTOCOMMIT = SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT

_PARAMS: dict[str, Callable[[str], object]] = {
    "charset": str,
    "connect_timeout": float,
    "read_timeout": float,
    "write_timeout": float,
    "unix_socket": str,
    "init_command": str,
    "program_name": str,
}


class PyMySQLAdapter(SyncAdapter):
    """PyMySQL ``Connection``."""

    name = "mysql"
    paramstyle = pymysql.paramstyle

    def connector(
        self, dsn: DSN
    ) -> tuple[Callable[[], pymysql.Connection[Any]], Callable[[], None] | None]:
        """See ``SyncAdapter.connector``; ``pymysql.connect``, autocommit on.

        Defaults: host ``localhost``, port 3306, empty password, charset
        utf8mb4; the DSN's parameters override them.

        Args:
            dsn: a parsed ``mysql://`` / ``mariadb://`` DSN.

        Returns:
            (a callable dialing one PyMySQL connection, None).

        Raises:
            ValueError: an unknown parameter or a bad timeout value; the
                message names it.
        """
        opts = parse_params(dsn, _PARAMS)
        kwargs: dict[str, Any] = {
            "host": dsn.host or "localhost",
            "port": dsn.port or 3306,
            "user": dsn.user,
            "password": dsn.password or "",
            "database": dsn.database or None,
            "charset": "utf8mb4",
            "autocommit": True,
        }
        kwargs.update(opts)

        def connect() -> pymysql.Connection[Any]:
            return pymysql.connect(**kwargs)

        return connect, None

    def prepare(self, conn: pymysql.Connection[Any]) -> None:
        """See ``SyncAdapter.prepare``; ``autocommit(True)`` only when it is off.

        The server's last status (``server_status``) is read first, so a
        connection dialed with autocommit on costs no round trip.

        Args:
            conn: the PyMySQL connection.

        Raises:
            pymysql.err.MySQLError: the ``SET autocommit`` failed.
        """
        if not conn.server_status & _AUTOCOMMIT:
            conn.autocommit(True)

    def is_closed(self, conn: pymysql.Connection[Any]) -> bool:
        """See ``SyncAdapter.is_closed``; PyMySQL's ``open`` flag.

        Args:
            conn: the PyMySQL connection.

        Returns:
            True once PyMySQL dropped its socket (a fatal error or close()).
        """
        return not conn.open

    def ping(self, conn: pymysql.Connection[Any]) -> None:
        """See ``SyncAdapter.ping``; COM_PING, never a silent reconnect.

        Args:
            conn: the PyMySQL connection.

        Raises:
            pymysql.err.OperationalError: the link is gone (e.g. 2006, 2013).
            pymysql.err.Error: the socket was already closed.
        """
        conn.ping(reconnect=False)

    def is_dead(self, conn: pymysql.Connection[Any], exc: BaseException) -> bool:
        """See ``SyncAdapter.is_dead``; by error number, socket state and OSError.

        Args:
            conn: the PyMySQL connection.
            exc: what the call raised.

        Returns:
            True when PyMySQL closed its socket, when ``exc`` is a
            ``MySQLError`` whose first argument is in ``DEAD_ERRNOS`` (2003,
            2006, 2013, 2055, 1927, 1053, 4031), or when it is an ``OSError``;
            False for any other error (``KILL QUERY``'s 1317 included).
        """
        if not conn.open:
            return True
        if isinstance(exc, pymysql.err.MySQLError) and exc.args:
            return exc.args[0] in DEAD_ERRNOS
        return isinstance(exc, OSError)

    def cancel(self, conn: pymysql.Connection[Any]) -> bool:
        """See ``SyncAdapter.cancel``; ``KILL QUERY [ID]`` on a side connection.

        ``conn`` is only read (its dial settings and server thread id), never
        used for I/O, so another thread may be blocked in a call on it.

        Args:
            conn: the PyMySQL connection.

        Returns:
            True when its running statement was killed, or none was running;
            False when the side connection or the kill failed (logged).
        """
        try:
            thread_id = int(conn.server_thread_id[0])
            mariadb = "mariadb" in str(conn.server_version).lower()
            side = _side_connection(conn)
        except Exception as exc:
            log.warning("cancel: no side connection: %r", exc)
            return False
        try:
            _kill_running(side, thread_id, mariadb)
        except Exception as exc:
            log.warning("cancel: KILL QUERY failed: %r", exc)
            return False
        finally:
            with contextlib.suppress(Exception):  # close() drops the socket anyway
                side.close()
        return True

    def is_cancelled(self, exc: BaseException) -> bool:
        """See ``SyncAdapter.is_cancelled``; 1317, 1969 or 3024.

        Args:
            exc: what a call raised.

        Returns:
            True for a ``MySQLError`` whose number is in ``CANCELLED_ERRNOS``.
        """
        return (
            isinstance(exc, pymysql.err.MySQLError)
            and bool(exc.args)
            and exc.args[0] in CANCELLED_ERRNOS
        )

    def reusable_after_cancel(
        self, conn: pymysql.Connection[Any], in_transaction: bool
    ) -> bool:
        """See ``SyncAdapter.reusable_after_cancel``; yes while the link is open.

        After ``KILL QUERY`` the server sends the error and waits for the
        next command; autocommit and an open transaction are kept (the
        caller rolls the latter back).

        Args:
            conn: the PyMySQL connection, its statement's error read.
            in_transaction: unused; both cases are clean.

        Returns:
            True unless PyMySQL dropped its socket.
        """
        return bool(conn.open)

    def reset(self, conn: pymysql.Connection[Any]) -> None:
        """See ``SyncAdapter.reset``; no round trip unless something was left on.

        Reads ``server_status``: ROLLBACK only when SERVER_STATUS_IN_TRANS
        is set; ``autocommit(True)`` only when SERVER_STATUS_AUTOCOMMIT is
        clear.

        Args:
            conn: the PyMySQL connection.

        Raises:
            pymysql.err.MySQLError: the ROLLBACK or SET failed; the pool
                discards the connection.
        """
        status = conn.server_status
        if status & _IN_TRANS:
            conn.rollback()
        if not conn.server_status & _AUTOCOMMIT:
            conn.autocommit(True)

    def begin(
        self, conn: pymysql.Connection[Any], isolation: str | None, read_only: bool
    ) -> None:
        """See ``SyncAdapter.begin``; ``START TRANSACTION [READ ONLY]``.

        A level is set first with ``SET TRANSACTION ISOLATION LEVEL x``,
        which applies to the next transaction only (the session's default is
        left alone).

        Args:
            conn: the PyMySQL connection.
            isolation: any of the four SQL levels, or None for the
                session's default (REPEATABLE READ unless configured).
            read_only: start it READ ONLY.

        Raises:
            pymysql.err.MySQLError: the SET or START TRANSACTION failed.
        """
        with conn.cursor() as cur:
            if isolation is not None:
                cur.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation.upper()}")
            cur.execute("START TRANSACTION" + (" READ ONLY" if read_only else ""))


SYNC = PyMySQLAdapter()
