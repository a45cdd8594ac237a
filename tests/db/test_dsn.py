"""DSN parsing, bad input at open(), redaction and scrubbing: no server needed."""

from __future__ import annotations

import os
import sys
import traceback

import pytest

import sqlgate.db
from sqlgate.drivers import async_adapter, parse, sync_adapter
from sqlgate.drivers._base import scrub, validate_isolation


def test_postgres_dsn_parts() -> None:
    dsn = parse("postgresql://al%40ice:p%40ss@db.example:6543/app?sslmode=disable")
    assert (dsn.family, dsn.user, dsn.password, dsn.host, dsn.port, dsn.database) == (
        "postgresql",
        "al@ice",
        "p@ss",
        "db.example",
        6543,
        "app",
    )
    assert dsn.params == {"sslmode": "disable"}
    assert (
        dsn.redacted() == "postgresql://al@ice:***@db.example:6543/app?sslmode=disable"
    )
    assert "p@ss" not in repr(dsn)


@pytest.mark.parametrize(
    ("target", "family"),
    [
        ("postgres://u@h/d", "postgresql"),
        ("postgresql+psycopg://u@h/d", "postgresql"),
        ("postgresql+asyncpg://u@h/d", "asyncpg"),
        ("mysql://u@h/d", "mysql"),
        ("MariaDB://u@h/d", "mysql"),
        ("mysql+pymysql://u@h/d", "mysql"),
    ],
)
def test_scheme_families(target: str, family: str) -> None:
    assert parse(target).family == family


def test_sqlite_paths() -> None:
    assert parse("sqlite:///rel/app.db").database == "rel/app.db"
    assert parse("sqlite:////abs/app.db").database == "/abs/app.db"
    assert parse("sqlite:///:memory:").database == ":memory:"
    assert parse("sqlite:///a.db?timeout=2").params == {"timeout": "2"}


def test_ipv6_host_redacted() -> None:
    dsn = parse("postgresql://u:pw@[::1]:5432/d")
    assert dsn.host == "::1"
    assert dsn.redacted() == "postgresql://u:***@[::1]:5432/d"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("oracle://u:Zq9secret@h/d", "unknown scheme 'oracle'"),
        ("no-scheme-here", "target must look like scheme://"),
        ("postgresql://u:Zq9secret@h:99999/d", "bad port"),
        ("postgresql://u:Zq9secret@h:0/d", "bad port"),
        ("postgresql://u:Zq9secret@h:abc/d", "bad port"),
        ("postgresql://u:Zq9secret@h/d/e", "bad database name 'd/e'"),
        ("postgresql://u:Zq9secret@h/d#frag", "fragment"),
        ("postgresql://u:Zq9secret@h/d?=x", "malformed query string"),
        ("sqlite://host/x.db", "a sqlite target takes no host"),
        ("sqlite:///", "a sqlite target needs a file path"),
        ("sqlite:///dir/", "a sqlite target needs a file path"),
    ],
)
def test_bad_targets(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        sqlgate.db.open(target)
    assert "Zq9secret" not in str(info.value)


def test_target_wrong_type() -> None:
    with pytest.raises(
        TypeError, match="target must be a DSN string or a callable, got 42"
    ):
        sqlgate.db.open(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "sqlite:///x.db?journal=wal",
            r"unknown parameter 'journal' .*known for sqlite: timeout, txlock",
        ),
        ("sqlite:///x.db?timeout=soon", "bad value for parameter 'timeout'.*'soon'"),
        ("sqlite:///x.db?txlock=later", "bad value for parameter 'txlock'.*'later'"),
        ("mysql://u:Zq9secret@h/d?colour=red", "unknown parameter 'colour'"),
        (
            "mysql://u:Zq9secret@h/d?connect_timeout=x",
            "bad value for parameter 'connect_timeout'",
        ),
    ],
)
def test_bad_parameters(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        sqlgate.db.open(target)
    assert "Zq9secret" not in str(info.value)
    assert "***" in str(info.value) or "sqlite" in target


@pytest.mark.parametrize(
    ("value", "exc", "message"),
    [
        (-1, ValueError, "ping_idle must be >= 0 and finite, got -1"),
        (float("nan"), ValueError, "ping_idle must be >= 0 and finite, got nan"),
        (float("inf"), ValueError, "ping_idle must be >= 0 and finite, got inf"),
        ("1", TypeError, "ping_idle must be seconds"),
        (True, TypeError, "ping_idle must be seconds"),
    ],
)
def test_bad_ping_idle(value: object, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        sqlgate.db.open("sqlite:///:memory:", ping_idle=value)  # type: ignore[arg-type]


def test_bad_pool_knob_is_the_pools_error() -> None:
    with pytest.raises(ValueError, match="max_open"):
        sqlgate.db.open("sqlite:///:memory:", max_open=-1)
    with pytest.raises(TypeError, match="colour"):
        sqlgate.db.open("sqlite:///:memory:", colour=1)
    with pytest.raises(TypeError, match="reset must be callable or None, got 3"):
        sqlgate.db.open("sqlite:///:memory:", reset=3)
    with pytest.raises(TypeError, match="rollback_on_return must be a bool, got 'y'"):
        sqlgate.db.open("sqlite:///:memory:", rollback_on_return="y")


def test_async_only_and_sync_only_families() -> None:
    with pytest.raises(
        ValueError, match=r"asyncpg is asyncio-only: use sqlgate\.open_async"
    ):
        sqlgate.db.open("postgresql+asyncpg://u@h/d")
    with pytest.raises(ValueError, match="no asyncio driver for mysql"):
        async_adapter("mysql")


@pytest.mark.parametrize(
    ("module", "package", "extra", "target"),
    [
        (
            "sqlgate.drivers.postgres",
            "psycopg",
            "postgres",
            "postgresql://u:Zq9secret@h/d",
        ),
        ("sqlgate.drivers.mysql", "pymysql", "mysql", "mariadb://u:Zq9secret@h/d"),
    ],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, package: str, extra: str, target: str
) -> None:
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=rf"pip install 'sqlgate\[{extra}\]'") as info:
        sqlgate.db.open(target)
    assert f"{package!r} driver package is not installed" in str(info.value)
    assert "Zq9secret" not in str(info.value)


def test_missing_async_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sqlgate.drivers.aiosqlite", raising=False)
    monkeypatch.setitem(sys.modules, "aiosqlite", None)
    with pytest.raises(ImportError, match=r"pip install 'sqlgate\[sqlite\]'"):
        async_adapter("sqlite")


@pytest.mark.parametrize(
    ("given", "level"),
    [
        (None, None),
        ("Repeatable_Read", "repeatable read"),
        ("read-committed", "read committed"),
        (" SERIALIZABLE ", "serializable"),
    ],
)
def test_isolation_names(given: str | None, level: str | None) -> None:
    assert validate_isolation(given) == level


def test_bad_isolation() -> None:
    with pytest.raises(ValueError, match=r"isolation must be one of .* got 'snapshot'"):
        validate_isolation("snapshot")
    with pytest.raises(TypeError, match="isolation must be a str or None, got 3"):
        validate_isolation(3)  # type: ignore[arg-type]


def test_scrub_masks_args_chain_and_notes() -> None:
    secret = "".join(["Zq9", "secret"])  # not spelled out: tracebacks show source
    try:
        try:
            raise OSError(f"inner: password={secret}")
        except OSError as inner:
            outer = RuntimeError(f"connect to u:{secret}@h failed", secret.encode())
            outer.add_note(f"dsn had {secret}")
            raise outer from inner
    except RuntimeError as exc:
        caught = exc
    assert scrub(caught, [secret, ""]) is caught
    text = "".join(traceback.format_exception(caught))
    assert secret not in text
    assert "connect to u:***@h failed" in text
    assert "dsn had ***" in text
    assert caught.args[1] == b"***"


def test_sqlite_adapter_is_stdlib_and_relative_path_is_resolved_at_open(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sync_adapter("sqlite").paramstyle == "qmark"
    monkeypatch.chdir(str(tmp_path))
    db = sqlgate.db.open("sqlite:///rel.db")
    monkeypatch.chdir("/")
    db.exec("create table t(a)")
    db.close()
    assert os.path.exists(os.path.join(str(tmp_path), "rel.db"))


def test_absent_server_skips_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.servers import absent as _absent

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true"):
        _absent("PostgreSQL", OSError("refused"))
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL not reachable"):
        _absent("PostgreSQL", OSError("refused"))


def test_mysql_parameters_reach_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    import pymysql

    seen: dict[str, object] = {}

    def fake_connect(**kwargs: object) -> object:
        seen.update(kwargs)
        raise pymysql.err.OperationalError(2003, "nope")

    monkeypatch.setattr(pymysql, "connect", fake_connect)
    db = sqlgate.db.open(
        "mariadb://u:pw@h:3307/d?connect_timeout=2.5&program_name=app",
        acquire_timeout=5,
    )
    with pytest.raises(sqlgate.ConnectError):
        db.ping()
    db.close()
    assert seen == {
        "host": "h",
        "port": 3307,
        "user": "u",
        "password": "pw",
        "database": "d",
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": 2.5,
        "program_name": "app",
    }
