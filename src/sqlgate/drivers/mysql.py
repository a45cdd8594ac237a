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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pymysql
from pymysql.constants import SERVER_STATUS

from sqlgate.drivers._base import SyncAdapter, parse_params

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate.drivers._dsn import DSN

__all__ = ["DEAD_ERRNOS", "SYNC", "PyMySQLAdapter"]

#: MySQL/MariaDB error numbers that mean the link is gone.
DEAD_ERRNOS = frozenset({2003, 2006, 2013, 2055, 1927, 1053, 4031})

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
