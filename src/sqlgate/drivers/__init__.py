"""Driver adapters, one small module per driver, and the DSN parser.

``sync_adapter(family)`` and ``async_adapter(family)`` import the adapter
module on first use, so a missing driver package is reported only for the
database actually asked for, with the extra that installs it.
"""

from __future__ import annotations

import importlib
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

# family -> (module, driver package, extra) for open() and open_async().
_SYNC = {
    "sqlite": ("sqlgate.drivers.sqlite", "sqlite3", None),
    "postgresql": ("sqlgate.drivers.postgres", "psycopg", "postgres"),
    "mysql": ("sqlgate.drivers.mysql", "pymysql", "mysql"),
}
_ASYNC = {
    "sqlite": ("sqlgate.drivers.aiosqlite", "aiosqlite", "sqlite"),
    "postgresql": ("sqlgate.drivers.postgres", "psycopg", "postgres"),
    "asyncpg": ("sqlgate.drivers.asyncpg", "asyncpg", "asyncpg"),
}


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


def sync_adapter(family: str) -> SyncAdapter:
    """The blocking adapter for a driver family.

    Raises:
        ValueError: the family has no blocking driver (asyncpg).
        ImportError: the driver package is missing; the message names the
            extra to install.
    """
    spec = _SYNC.get(family)
    if spec is None:
        raise ValueError(
            f"{family} is asyncio-only: use sqlgate.open_async(), or "
            "postgresql:// (psycopg) with sqlgate.open()"
        )
    adapter: SyncAdapter = _load(*spec).SYNC
    return adapter


def async_adapter(family: str) -> AsyncAdapter:
    """The asyncio adapter for a driver family.

    Raises:
        ValueError: the family has no asyncio driver here (MySQL).
        ImportError: the driver package is missing; the message names the
            extra to install.
    """
    spec = _ASYNC.get(family)
    if spec is None:
        raise ValueError(
            f"sqlgate has no asyncio driver for {family}: use sqlgate.open() "
            "(threads) for it"
        )
    adapter: AsyncAdapter = _load(*spec).ASYNC
    return adapter


def detect_sync(conn: object) -> SyncAdapter:
    """The adapter for a connection made by a user's connect callable.

    Raises:
        TypeError: the connection's driver is not one sqlgate knows.
    """
    root = type(conn).__module__.split(".")[0]
    family = {"sqlite3": "sqlite", "psycopg": "postgresql", "pymysql": "mysql"}.get(
        root
    )
    if family is None:
        raise TypeError(
            f"connect returned a {type(conn).__module__}.{type(conn).__qualname__}; "
            "sqlgate.open knows sqlite3, psycopg and PyMySQL connections "
            "(use sqlgate.Pool for another driver)"
        )
    return sync_adapter(family)


def detect_async(conn: object) -> AsyncAdapter:
    """The asyncio adapter for a connection made by a user's connect callable.

    Raises:
        TypeError: the connection's driver is not one sqlgate knows.
    """
    root = type(conn).__module__.split(".")[0]
    family = {"aiosqlite": "sqlite", "psycopg": "postgresql", "asyncpg": "asyncpg"}.get(
        root
    )
    if family is None:
        raise TypeError(
            f"connect returned a {type(conn).__module__}.{type(conn).__qualname__}; "
            "sqlgate.open_async knows aiosqlite, psycopg and asyncpg connections "
            "(use sqlgate.AsyncPool for another driver)"
        )
    return async_adapter(family)
