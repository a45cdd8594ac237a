"""A DSN's password never shows: repr, errors and their chains, tracebacks, logs.

Real logins against real accounts with passwords: a PostgreSQL role (the
server trusts 127.0.0.1, so the failing login is a database that does not
exist) and a MariaDB user (a wrong password: error 1045). Each test drops its
account at the end.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate

if TYPE_CHECKING:
    from collections.abc import Iterator

PG_ROLE = "sqlgate_pw_test"
MY_USER = "sqlgate_pw"
#: Built at run time so that no test source line holds a password literal.
MY_PASSWORD = "-".join(["S3cr3t", "pw", "xyz"])


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception in its ``__cause__``/``__context__`` chain."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


def _assert_hidden(
    secrets: tuple[str, ...],
    db: sqlgate.DB | sqlgate.AsyncDB,
    error: BaseException,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No secret in any place a password could leak to."""
    chain = _chain(error)
    assert len(chain) >= 2  # sqlgate's error and the driver's, chained
    assert caplog.records  # the failed dial was logged: the check below bites
    places = {
        "repr(db)": repr(db),
        "pool name": db.pool.name,
        "db.name": db.name,
        "stats()": repr(db.stats()),
        "traceback": "".join(traceback.format_exception(error)),
        "log records": "\n".join(
            f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
        ),
    }
    for i, e in enumerate(chain):
        places[f"str(chain[{i}])"] = str(e)
        places[f"repr(chain[{i}])"] = repr(e)
        places[f"args(chain[{i}])"] = repr(e.args)
    for secret in secrets:
        assert [where for where, text in places.items() if secret in text] == []


@pytest.fixture
def pg_role(pg_admin: Any) -> Iterator[str]:
    """A login role with a password (unique per test); dropped at the end."""
    password = f"Pg-{uuid.uuid4().hex[:16]}"
    pg_admin.execute(f"DROP ROLE IF EXISTS {PG_ROLE}")
    pg_admin.execute(f"CREATE ROLE {PG_ROLE} LOGIN PASSWORD '{password}'")
    yield password
    pg_admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE usename = %s",
        (PG_ROLE,),
    )
    pg_admin.execute(f"DROP ROLE IF EXISTS {PG_ROLE}")


@pytest.fixture
def my_account(my_admin: Any) -> Iterator[str]:
    """A MariaDB user with a password; dropped at the end."""
    with my_admin.cursor() as cur:
        cur.execute(
            f"CREATE USER IF NOT EXISTS '{MY_USER}'@'%' IDENTIFIED BY '{MY_PASSWORD}'"
        )
        cur.execute(f"GRANT SELECT ON test.* TO '{MY_USER}'@'%'")
    yield MY_PASSWORD
    with my_admin.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{MY_USER}'@'%'")


@pytest.mark.postgres
def test_pg_role_password_never_shown(
    pg_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sqlgate")
    good = sqlgate.open(f"postgresql://{PG_ROLE}:{pg_role}@127.0.0.1:5432/test")
    try:
        assert good.query_row("select current_user") == (PG_ROLE,)
    finally:
        good.close()
    db = sqlgate.open(
        f"postgresql://{PG_ROLE}:{pg_role}@127.0.0.1:5432/sqlgate_pw_nodb",
        acquire_timeout=10,
    )
    try:
        assert repr(db) == "<sqlgate.DB '127.0.0.1:5432/sqlgate_pw_nodb' open>"
        with pytest.raises(sqlgate.ConnectError) as info:
            db.exec("select 1")
        assert 'database "sqlgate_pw_nodb" does not exist' in str(info.value)
        _assert_hidden((pg_role,), db, info.value, caplog)
        _assert_hidden((pg_role,), good, info.value, caplog)
    finally:
        db.close()


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+asyncpg"])
def test_pg_role_password_never_shown_async(
    pg_role: str, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        good = sqlgate.open_async(f"{scheme}://{PG_ROLE}:{pg_role}@127.0.0.1:5432/test")
        try:
            assert await good.query_row("select current_user") == (PG_ROLE,)
        finally:
            await good.close()
        db = sqlgate.open_async(
            f"{scheme}://{PG_ROLE}:{pg_role}@127.0.0.1:5432/sqlgate_pw_nodb",
            acquire_timeout=10,
        )
        try:
            with pytest.raises(sqlgate.ConnectError) as info:
                await db.exec("select 1")
            assert "sqlgate_pw_nodb" in str(info.value)
            _assert_hidden((pg_role,), db, info.value, caplog)
            _assert_hidden((pg_role,), good, info.value, caplog)
        finally:
            await db.close()

    caplog.set_level(logging.DEBUG, logger="sqlgate")
    asyncio.run(run())


@pytest.mark.mysql
def test_mariadb_user_password_never_shown(
    my_account: str, caplog: pytest.LogCaptureFixture
) -> None:
    import pymysql

    caplog.set_level(logging.DEBUG, logger="sqlgate")
    good = sqlgate.open(f"mysql://{MY_USER}:{my_account}@127.0.0.1:3306/test")
    try:
        (who,) = good.query_row("select current_user()") or ("",)
        assert who == f"{MY_USER}@%"
    finally:
        good.close()
    wrong = "-".join(["Wr0ng", "pw", "xyz"])
    db = sqlgate.open(
        f"mysql://{MY_USER}:{wrong}@127.0.0.1:3306/test", acquire_timeout=10
    )
    try:
        with pytest.raises(sqlgate.ConnectError) as info:
            db.exec("select 1")
        driver_error = info.value.__cause__
        assert isinstance(driver_error, pymysql.err.OperationalError)
        assert driver_error.args[0] == 1045
        _assert_hidden((wrong, my_account), db, info.value, caplog)
        _assert_hidden((wrong, my_account), good, info.value, caplog)
    finally:
        db.close()
