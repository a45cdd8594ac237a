"""The test servers, in one place: where they are and whether they answer.

PostgreSQL (127.0.0.1:5432, trust, user postgres, database test) and MariaDB
(127.0.0.1:3306, root, empty password, database test). A test that needs one
skips with the reason when it is absent, except under ``CI=true``, where it
fails: CI must run every server test. Each server is probed once per session
(the root conftest's ``pg_up``/``my_up`` fixtures, or ``require_*``).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = [
    "MY_URL",
    "PG_CONNINFO",
    "PG_URL",
    "absent",
    "require_mysql",
    "require_postgres",
]

#: The PostgreSQL test database as a URL (psycopg, asyncpg and sqlgate's DSN).
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: The same as a libpq conninfo string.
PG_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=test"
#: The MariaDB test database as sqlgate's DSN.
MY_URL = "mysql://root@127.0.0.1:3306/test"

#: Server name -> the probe's error (None when it answered), once probed.
_probed: dict[str, BaseException | None] = {}


def absent(what: str, exc: BaseException) -> NoReturn:
    """Skip because ``what`` is unreachable; fail instead under ``CI=true``.

    Args:
        what: the server, as the message names it.
        exc: why the probe failed.
    """
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true but unreachable: {exc!r}")
    pytest.skip(f"{what} not reachable: {exc!r}")


def require_postgres() -> None:
    """Return when the test PostgreSQL answers; else skip (fail when CI=true)."""
    if "postgres" not in _probed:
        psycopg = pytest.importorskip("psycopg")
        try:
            psycopg.connect(PG_CONNINFO + " connect_timeout=3").close()
        except Exception as exc:
            _probed["postgres"] = exc
        else:
            _probed["postgres"] = None
    error = _probed["postgres"]
    if error is not None:
        absent("PostgreSQL at 127.0.0.1:5432", error)


def require_mysql() -> None:
    """Return when the test MariaDB answers; else skip (fail when CI=true)."""
    if "mysql" not in _probed:
        pymysql = pytest.importorskip("pymysql")
        try:
            pymysql.connect(
                host="127.0.0.1",
                port=3306,
                user="root",
                password="",
                database="test",
                connect_timeout=3,
            ).close()
        except Exception as exc:
            _probed["mysql"] = exc
        else:
            _probed["mysql"] = None
    error = _probed["mysql"]
    if error is not None:
        absent("MariaDB at 127.0.0.1:3306", error)
