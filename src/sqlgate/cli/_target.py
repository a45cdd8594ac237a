"""What ``sqlgate stress`` runs against: a connect callable, and who counts.

A :class:`Target` bundles the connect callable the pool dials with, the query
to run, and the independent witnesses the leak check asks:

* a :class:`Ledger` that wraps the connect callable and keeps every
  connection it returned, so it can ask the driver which are still open
  (opened minus closed, whatever the pool believes);
* for a server, a :class:`ServerCount` on a separate monitor connection that
  asks the server itself how many of the run's connections it still has:
  PostgreSQL (psycopg or asyncpg) by ``pg_stat_activity``: rows carrying the
  run's unique ``application_name`` marker or a backend pid recorded at
  connect time (so a ``--connect`` callable's connections count even when
  they carry no marker); MariaDB/MySQL by the connection ids recorded at
  connect time, looked up in ``information_schema.processlist``.

Every dial is bounded: ``connect_timeout`` (``CONNECT_TIMEOUT`` seconds unless
the DSN names one) covers PostgreSQL's whole connection start-up; PyMySQL's
covers only the TCP connect, so MySQL also gets ``read_timeout``
(``MYSQL_READ_TIMEOUT``), which bounds the handshake of a server that accepts
the connection and never answers.

DSNs are parsed and dialed by the driver layer (``sqlgate.drivers``); the
pool comes from ``sqlgate.open`` (or ``sqlgate.open_async`` with ``--async``)
over the wrapped connect callable.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlgate.drivers import DSN, async_adapter, parse, sync_adapter
from sqlgate.drivers._dsn import with_quoted

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BadInput",
    "Ledger",
    "ServerCount",
    "Target",
    "is_open",
    "load_callable",
    "make_target",
    "password_of",
]

#: The table the embedded SQLite database is given (prefixed: shared servers).
EMBEDDED_TABLE = "sqlgate_stress_items"
EMBEDDED_ROWS = 100
EMBEDDED_QUERY = f"SELECT count(*), max(id) FROM {EMBEDDED_TABLE}"
SERVER_QUERY = "SELECT 1"
#: Seconds a connect may take before it counts as unreachable (DSN parameter
#: ``connect_timeout`` overrides it).
CONNECT_TIMEOUT = 5
#: MySQL: seconds any one read may wait, the handshake's included (DSN
#: parameter ``read_timeout`` overrides it). The monitor connection, made
#: before the run, waits at most ``CONNECT_TIMEOUT``.
MYSQL_READ_TIMEOUT = 60


class BadInput(Exception):
    """The user's input cannot be used; the message is one line for stderr."""


def mask_secret(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (as given and percent-encoded) masked out."""
    for word in with_quoted([secret or ""]):
        text = text.replace(word, "***")
    return text


def password_of(dsn: str) -> str | None:
    """The password a DSN gives (in its user information or ``password=``).

    None when it gives none or does not parse (``make_target`` then reports
    the DSN, redacted).
    """
    try:
        return parse(dsn).password
    except (TypeError, ValueError):
        return None


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, with its type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def is_open(conn: object) -> bool:
    """Ask the driver whether ``conn`` is still open.

    Knows psycopg (``closed``), asyncpg (``is_closed()``), PyMySQL (``open``),
    sqlite3 (a closed one refuses ``total_changes``) and aiosqlite; anything
    else is taken as open until proven closed by one of those.
    """
    closed = getattr(conn, "closed", None)
    if isinstance(closed, bool | int):
        return not closed
    is_closed = getattr(conn, "is_closed", None)
    if callable(is_closed):
        return not is_closed()
    opened = getattr(conn, "open", None)
    if isinstance(opened, bool):
        return opened
    if hasattr(conn, "_tx") and hasattr(conn, "_connection"):  # aiosqlite
        return getattr(conn, "_connection", None) is not None
    try:
        conn.total_changes  # type: ignore[attr-defined]  # noqa: B018
    except sqlite3.ProgrammingError:
        return False
    except AttributeError:
        pass
    return True


def server_id(conn: object) -> int | None:
    """The server's id for ``conn``, read locally (no round trip), or None.

    PyMySQL ``thread_id()``, psycopg ``info.backend_pid``, asyncpg
    ``get_server_pid()``.
    """
    for getter in ("thread_id", "get_server_pid"):
        method = getattr(conn, getter, None)
        if callable(method):
            sid = method()
            return sid if isinstance(sid, int) else None
    pid = getattr(getattr(conn, "info", None), "backend_pid", None)
    return pid if isinstance(pid, int) else None


@dataclass
class Ledger:
    """Wraps a connect callable and remembers every connection it returned.

    Attributes:
        opened: connections returned by the callable, in total.
        server_ids: server-side ids seen at connect (MariaDB connection ids,
            PostgreSQL backend pids).
    """

    connect: Callable[[], Any]
    opened: int = 0
    server_ids: list[int] = field(default_factory=list)
    _live: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> Any:
        """Dial through the wrapped callable and record the connection."""
        return self._record(self.connect())

    async def acall(self) -> Any:
        """Async twin of ``__call__`` for an async connect callable."""
        conn = self.connect()
        if inspect.isawaitable(conn):
            conn = await conn
        return self._record(conn)

    def _record(self, conn: Any) -> Any:
        sid = server_id(conn)
        with self._lock:
            self.opened += 1
            self._live.append(conn)
            if sid is not None:
                self.server_ids.append(sid)
        return conn

    def still_open(self) -> int:
        """How many recorded connections the driver says are open now."""
        with self._lock:
            self._live = [c for c in self._live if is_open(c)]
            return len(self._live)


class ServerCount:
    """Asks the server how many of the run's connections it still holds."""

    #: Where the count comes from, for the report.
    source: str = ""

    def count(self, ledger: Ledger) -> int:
        """The server's count of the run's connections."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the monitor connection."""


class _PgCount(ServerCount):
    def __init__(self, monitor: Any, marker: str) -> None:
        self._monitor = monitor
        self._marker = marker
        self.source = (
            f"pg_stat_activity where application_name = '{marker}' or the "
            "backend pid is one seen at connect"
        )

    def count(self, ledger: Ledger) -> int:
        with ledger._lock:
            pids = list(ledger.server_ids)
        row = self._monitor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s OR pid = ANY(%s)",
            (self._marker, pids),
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._monitor.close()


class _MySQLCount(ServerCount):
    source = "information_schema.processlist, by the connection ids seen at connect"

    def __init__(self, monitor: Any) -> None:
        self._monitor = monitor

    def count(self, ledger: Ledger) -> int:
        with self._monitor.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist")
            alive = {int(row[0]) for row in cur.fetchall()}
        with ledger._lock:
            ours = set(ledger.server_ids)
        return len(alive & ours)

    def close(self) -> None:
        self._monitor.close()


@dataclass
class Target:
    """A database to stress, with its witnesses.

    Attributes:
        kind: ``sqlite``, ``postgresql``, ``asyncpg`` or ``mysql``.
        shown: the DSN as it may be printed (password masked).
        query: the query each request runs.
        connect: the pool's connect callable (already wrapped by ``ledger``).
        ledger: the driver-level witness.
        server: the server-side witness, or None (SQLite).
        marker: the run's unique tag (PostgreSQL ``application_name``).
        embedded: True for the temporary SQLite database made with no DSN.
        user_connect: ``connect`` wraps the user's ``--connect`` callable.
    """

    kind: str
    shown: str
    query: str
    connect: Callable[[], Any]
    ledger: Ledger
    server: ServerCount | None
    marker: str
    embedded: bool = False
    user_connect: bool = False
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Close the monitor connection and remove temporary files."""
        if self.server is not None:
            self.server.close()
        for cleanup in reversed(self._cleanups):
            cleanup()
        self._cleanups.clear()


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``module:attr`` (from the working directory too); it must be callable.

    Raises:
        BadInput: malformed, not importable, or not callable.
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise BadInput(f"--connect must be 'module:callable', got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")  # the working directory, as ``python -m`` has it
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"--connect {spec!r}: {first_line(exc)}") from None
    if not callable(obj):
        raise BadInput(f"--connect {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _embedded(cleanups: list[Callable[[], None]]) -> str:
    """Make a temporary SQLite database with a small table; return its path."""
    tmp = tempfile.TemporaryDirectory(prefix="sqlgate-stress-")
    cleanups.append(tmp.cleanup)
    path = os.path.join(tmp.name, "stress.db")
    with sqlite3.connect(path) as setup:
        setup.execute(
            f"CREATE TABLE {EMBEDDED_TABLE} (id INTEGER PRIMARY KEY, name TEXT)"
        )
        setup.executemany(
            f"INSERT INTO {EMBEDDED_TABLE} (id, name) VALUES (?, ?)",
            [(i, f"item {i}") for i in range(1, EMBEDDED_ROWS + 1)],
        )
    setup.close()
    return path


def _with_params(dsn: DSN, **params: str) -> DSN:
    """``dsn`` with extra query parameters (the user's own take precedence)."""
    return dataclasses.replace(dsn, params={**params, **dsn.params})


def _dial(
    dsn: DSN, cleanups: list[Callable[[], None]], *, use_async: bool = False
) -> Callable[[], Any]:
    """The driver layer's connect callable for ``dsn`` (async with ``use_async``).

    Raises:
        BadInput: the family has no driver of that kind (asyncio MySQL), or
            its package is missing.
    """
    if use_async and dsn.family == "mysql":
        raise BadInput(
            "--async supports sqlite and postgresql DSNs, not mysql "
            "(sqlgate has no asyncio MySQL driver; run without --async)"
        )
    adapter_for = async_adapter if use_async else sync_adapter
    try:
        connect, on_close = adapter_for(dsn.family).for_dsn(dsn).connector(dsn)
    except (ImportError, ValueError) as exc:
        raise BadInput(f"DSN {dsn.redacted()!r}: {exc}") from None
    if on_close is not None:
        cleanups.append(on_close)
    return connect


def _open_monitor(
    dsn: DSN, marker: str, cleanups: list[Callable[[], None]]
) -> ServerCount:
    """Connect the monitor (this also checks the server is reachable).

    It is always a synchronous connection (psycopg for asyncpg DSNs too), made
    before the run with every wait bounded by the connect timeout.
    """
    if dsn.family in ("postgresql", "asyncpg"):
        pg = DSN(
            scheme="postgresql",
            family="postgresql",
            host=dsn.host,
            port=dsn.port,
            user=dsn.user,
            password=dsn.password,
            database=dsn.database,
            # asyncpg's parameters are not libpq's: keep only the timeout.
            params={
                **(
                    dsn.params
                    if dsn.family == "postgresql"
                    else {"connect_timeout": dsn.params["connect_timeout"]}
                ),
                "application_name": f"{marker}-monitor",
            },
        )
        return _PgCount(_dial(pg, cleanups)(), marker)
    bounded = dataclasses.replace(
        dsn, params={**dsn.params, "read_timeout": dsn.params["connect_timeout"]}
    )
    return _MySQLCount(_dial(bounded, cleanups)())


def make_target(
    dsn: str | None,
    *,
    query: str | None = None,
    connect: Callable[[], Any] | None = None,
    use_async: bool = False,
) -> Target:
    """Build the target for ``dsn`` (None: an embedded SQLite database).

    Args:
        dsn: the database URL, or None.
        query: the query to run; None picks one for the target.
        connect: a user connect callable (``--connect``) that replaces the
            DSN's; the DSN still names the server for the leak check.
        use_async: dial with the driver layer's asyncio adapter (aiosqlite,
            psycopg async); ``connect`` is then an async callable.

    Raises:
        BadInput: the DSN is malformed, or the server cannot be reached.
    """
    marker = f"sqlgate-stress-{os.getpid()}-{secrets.token_hex(4)}"
    cleanups: list[Callable[[], None]] = []
    if dsn is None:
        parsed = DSN(scheme="sqlite", family="sqlite", database=_embedded(cleanups))
        shown = f"embedded SQLite ({parsed.database})"
        default_query = EMBEDDED_QUERY
    else:
        try:
            parsed = parse(dsn)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"bad DSN: {exc}") from None
        if parsed.family not in ("sqlite", "postgresql", "asyncpg", "mysql"):
            raise BadInput(
                f"DSN {parsed.redacted()!r}: use sqlite://, postgresql://, "
                "postgresql+asyncpg:// (with --async) or mysql:// here"
            )
        shown = parsed.redacted()
        default_query = SERVER_QUERY
        if parsed.family == "asyncpg" and not use_async and connect is None:
            raise BadInput(
                f"DSN {shown!r}: asyncpg is an asyncio driver; add --async "
                "(or use postgresql:// for psycopg)"
            )
    if parsed.family != "sqlite":
        parsed = _with_params(parsed, connect_timeout=str(CONNECT_TIMEOUT))
    if parsed.family == "mysql":
        parsed = _with_params(parsed, read_timeout=str(MYSQL_READ_TIMEOUT))
    # PostgreSQL: every pooled connection carries the run's unique marker.
    tagged = (
        _with_params(parsed, application_name=marker)
        if parsed.family in ("postgresql", "asyncpg")
        else parsed
    )
    server: ServerCount | None = None
    try:
        if connect is not None:
            dial = connect
            if parsed.family in ("postgresql", "asyncpg"):
                # Tag whatever libpq connections the user's callable opens
                # (unless it names its own application_name).
                _set_env("PGAPPNAME", marker, cleanups)
        else:
            dial = _dial(tagged, cleanups, use_async=use_async)
        if parsed.family != "sqlite":
            try:
                server = _open_monitor(parsed, marker, cleanups)
            except BadInput:
                raise
            except Exception as exc:
                message = mask_secret(first_line(exc), parsed.password)
                raise BadInput(f"cannot connect to {shown}: {message}") from None
    except BaseException:
        for cleanup in reversed(cleanups):
            cleanup()
        raise
    ledger = Ledger(dial)
    return Target(
        kind=parsed.family,
        shown=shown,
        query=query if query is not None else default_query,
        connect=ledger.acall if use_async else ledger,
        ledger=ledger,
        server=server,
        marker=marker,
        embedded=dsn is None,
        user_connect=connect is not None,
        _cleanups=cleanups,
    )


def _set_env(name: str, value: str, cleanups: list[Callable[[], None]]) -> None:
    old = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

    cleanups.append(restore)


def settle(
    probe: Callable[[], int], want: int, *, within: float = 3.0, step: float = 0.05
) -> int:
    """Poll ``probe`` until it returns ``want`` or ``within`` seconds pass.

    A server drops a closed session asynchronously, so its count may lag a
    close by a few milliseconds; the last value seen is returned.
    """
    deadline = time.monotonic() + within
    got = probe()
    while got != want and time.monotonic() < deadline:
        time.sleep(step)
        got = probe()
    return got
