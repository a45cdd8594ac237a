"""DB test fixtures: DSNs and admin connections to the test servers.

``pg_up``/``my_up`` (the root conftest, ``tests.servers``) skip when a server
is absent, but fail under CI=true.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

from tests.servers import MY_URL, PG_CONNINFO, PG_URL


@pytest.fixture
def app_name() -> str:
    """An application_name unique to this test (for pg_terminate_backend)."""
    return f"sqlgate-dbtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_dsn(pg_up: None, app_name: str) -> str:
    return f"{PG_URL}?application_name={app_name}"


@pytest.fixture
def my_dsn(my_up: None) -> str:
    return MY_URL


@pytest.fixture
def pg_admin(pg_up: None) -> Iterator[Any]:
    """An autocommit psycopg connection outside any pool (to watch and kill)."""
    import psycopg

    conn = psycopg.connect(PG_CONNINFO, autocommit=True)
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


@pytest.fixture
def db() -> Iterator[sqlgate.DB]:
    """A ``:memory:`` SQLite DB with one idle connection: figures (0, 1, 0).

    ``test_db_sqlite.py`` has its own ``db`` (a file database with a table).
    """
    handle = sqlgate.open("sqlite:///:memory:")
    handle.exec("select 1")
    yield handle
    handle.close()
