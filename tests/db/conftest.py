"""DB test fixtures: servers skip when absent, but fail under CI=true."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
MY_BASE = "mysql://root@127.0.0.1:3306/test"


def _absent(what: str, exc: BaseException) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true but unreachable: {exc!r}")
    pytest.skip(f"{what} not reachable: {exc!r}")


@pytest.fixture(scope="session")
def pg_up() -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
        ).close()
    except Exception as exc:
        _absent("PostgreSQL at 127.0.0.1:5432", exc)


@pytest.fixture(scope="session")
def my_up() -> None:
    pymysql = pytest.importorskip("pymysql")
    try:
        pymysql.connect(
            host="127.0.0.1",
            user="root",
            password="",
            database="test",
            connect_timeout=3,
        ).close()
    except Exception as exc:
        _absent("MariaDB at 127.0.0.1:3306", exc)


@pytest.fixture
def app_name() -> str:
    """An application_name unique to this test (for pg_terminate_backend)."""
    return f"sqlgate-dbtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_dsn(pg_up: None, app_name: str) -> str:
    return f"{PG_BASE}?application_name={app_name}"


@pytest.fixture
def my_dsn(my_up: None) -> str:
    return MY_BASE


@pytest.fixture
def pg_admin(pg_up: None) -> Iterator[Any]:
    """An autocommit psycopg connection outside any pool (to watch and kill)."""
    import psycopg

    conn = psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True
    )
    yield conn
    conn.close()


@pytest.fixture
def my_admin(my_up: None) -> Iterator[Any]:
    """An autocommit PyMySQL connection outside any pool (to watch and kill)."""
    import pymysql

    conn = pymysql.connect(
        host="127.0.0.1", user="root", password="", database="test", autocommit=True
    )
    yield conn
    conn.close()


@pytest.fixture
def table() -> str:
    """A table name unique to this test, in this area's ``dbt_`` namespace."""
    return f"dbt_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cleanup() -> Iterator[Callable[[Callable[[], object]], None]]:
    """Register teardown callables, run last-in first-out."""
    todo: list[Callable[[], object]] = []
    yield todo.append
    for fn in reversed(todo):
        fn()
