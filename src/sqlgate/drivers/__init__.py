"""Driver adapters, one small module per driver, and the DSN parser.

``sync_adapter(family)`` and ``async_adapter(family)`` import the adapter
module on first use, so a missing driver package is reported only for the
database actually asked for, with the extra that installs it.

Blocking connections that no specific adapter claims (sqlite3, psycopg,
PyMySQL) go to the generic PEP 249 adapter (``drivers/dbapi.py``), as do the
DSN families it has a connect recipe for (pg8000, psycopg2,
mysql-connector-python).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlgate.drivers._dsn import DSN, parse

if TYPE_CHECKING:
    from sqlgate.drivers._base import AsyncAdapter, SyncAdapter

__all__ = [
    "DSN",
    "async_adapter",
    "detect_async",
    "detect_sync",
    "parse",
    "sync_adapter",
]


@dataclass(frozen=True, slots=True)
class _Face:
    """What the blocking or the asyncio face knows of its drivers."""

    #: The adapter's name in its module ("SYNC" or "ASYNC").
    attr: str
    #: family -> (adapter module, driver package, extra that installs it).
    families: dict[str, tuple[str, str, str | None]]
    #: A connection's top-level module -> its family (connect callables).
    roots: dict[str, str]
    #: The message for a family this face has no driver for.
    no_driver: str
    #: The opener and the drivers it knows, for a foreign connection's message.
    opener: str
    known: str
    pool: str


_SYNC = _Face(
    attr="SYNC",
    families={
        "sqlite": ("sqlgate.drivers.sqlite", "sqlite3", None),
        "postgresql": ("sqlgate.drivers.postgres", "psycopg", "postgres"),
        "mysql": ("sqlgate.drivers.mysql", "pymysql", "mysql"),
    },
    roots={"sqlite3": "sqlite", "psycopg": "postgresql", "pymysql": "mysql"},
    no_driver=(
        "{family} is asyncio-only: use sqlgate.open_async(), or "
        "postgresql:// (psycopg) with sqlgate.open()"
    ),
    opener="sqlgate.open",
    known="sqlite3, psycopg and PyMySQL",
    pool="sqlgate.Pool",
)
_ASYNC = _Face(
    attr="ASYNC",
    families={
        "sqlite": ("sqlgate.drivers.aiosqlite", "aiosqlite", "sqlite"),
        "postgresql": ("sqlgate.drivers.postgres", "psycopg", "postgres"),
        "asyncpg": ("sqlgate.drivers.asyncpg", "asyncpg", "asyncpg"),
    },
    roots={"aiosqlite": "sqlite", "psycopg": "postgresql", "asyncpg": "asyncpg"},
    no_driver=(
        "sqlgate has no asyncio driver for {family}: use sqlgate.open() "
        "(threads) for it"
    ),
    opener="sqlgate.open_async",
    known="aiosqlite, psycopg and asyncpg",
    pool="sqlgate.AsyncPool",
)


def _load(module: str, package: str, extra: str | None) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != package and exc.name is not None:
            raise
        hint = f": pip install 'sqlgate[{extra}]'" if extra else ""
        raise ImportError(
            f"the {package!r} driver package is not installed{hint}", name=package
        ) from exc


#: DSN families the generic DB-API adapter serves (blocking only).
_GENERIC = frozenset({"pg8000", "psycopg2", "mysqlconnector"})


def _adapter(face: _Face, family: str) -> Any:
    """The adapter of ``face`` for ``family``, its module imported on first use."""
    if face is _SYNC and family in _GENERIC:
        from sqlgate.drivers import dbapi

        return dbapi.for_family(family)
    spec = face.families.get(family)
    if spec is None:
        raise ValueError(face.no_driver.format(family=family))
    return getattr(_load(*spec), face.attr)


def _detect(face: _Face, conn: object) -> Any:
    """The adapter of ``face`` for a connection a user's callable made."""
    family = face.roots.get(type(conn).__module__.split(".")[0])
    if family is None and face is _SYNC:
        from sqlgate.drivers import dbapi

        return dbapi.for_connection(conn)
    if family is None:
        raise TypeError(
            f"connect returned a {type(conn).__module__}.{type(conn).__qualname__}; "
            f"{face.opener} knows {face.known} connections "
            f"(use {face.pool} for another driver)"
        )
    return _adapter(face, family)


def sync_adapter(family: str) -> SyncAdapter:
    """The blocking adapter for a driver family.

    Args:
        family: ``DSN.family`` ("sqlite", "postgresql", "mysql"; "pg8000",
            "psycopg2", "mysqlconnector" through the generic adapter).

    Returns:
        The adapter (one shared instance per driver).

    Raises:
        ValueError: the family has no blocking driver (asyncpg).
        ImportError: the driver package is missing; the message names the
            extra to install.
    """
    adapter: SyncAdapter = _adapter(_SYNC, family)
    return adapter


def async_adapter(family: str) -> AsyncAdapter:
    """The asyncio adapter for a driver family.

    Args:
        family: ``DSN.family`` ("sqlite", "postgresql", "asyncpg").

    Returns:
        The adapter (one shared instance per driver).

    Raises:
        ValueError: the family has no asyncio driver here (MySQL).
        ImportError: the driver package is missing; the message names the
            extra to install.
    """
    adapter: AsyncAdapter = _adapter(_ASYNC, family)
    return adapter


def detect_sync(conn: object) -> SyncAdapter:
    """The adapter for a connection made by a user's connect callable.

    Args:
        conn: the connection: sqlite3, psycopg or PyMySQL (their specific
            adapters), or any other PEP 249 driver's (the generic adapter).

    Returns:
        The adapter for its driver.

    Raises:
        TypeError: ``conn`` is not a PEP 249 connection.
        ImportError: as ``sync_adapter``.
    """
    adapter: SyncAdapter = _detect(_SYNC, conn)
    return adapter


def detect_async(conn: object) -> AsyncAdapter:
    """The asyncio adapter for a connection made by a user's connect callable.

    Args:
        conn: the connection (aiosqlite, psycopg ``AsyncConnection`` or
            asyncpg).

    Returns:
        The adapter for its driver.

    Raises:
        TypeError: the connection's driver is not one sqlgate knows.
        ImportError: as ``async_adapter``.
    """
    adapter: AsyncAdapter = _detect(_ASYNC, conn)
    return adapter
