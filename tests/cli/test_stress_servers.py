"""``sqlgate stress`` against PostgreSQL and MariaDB: the server's own count."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from sqlgate.cli import main

if TYPE_CHECKING:
    from tests.cli.conftest import Stress


def _check_server_pass(r: dict[str, object], requests: int) -> None:
    assert r["verdict"] == "PASS"
    assert r["requests"] == {
        "total": requests,
        "ok": requests,
        "failed": 0,
        "deadline_missed": 0,
        "error_rate": 0.0,
    }
    assert r["internal_errors"] == []
    assert r["exit_code"] == 0
    assert r["errors"] == {}
    pool = r["pool"]
    assert isinstance(pool, dict)
    assert pool["acquires"] == requests + 1  # + the preflight
    leak = r["leak_check"]
    assert isinstance(leak, dict)
    assert leak["method"] == "server"
    n = pool["open_connections"]
    assert n >= 1
    assert leak["after_run"] == {
        "pool_open": n,
        "driver_open": n,
        "server_open": n,
        "expected": n,
        "pass": True,
    }
    assert leak["after_close"] == {
        "pool_open": 0,
        "driver_open": 0,
        "server_open": 0,
        "expected": 0,
        "pass": True,
    }


@pytest.mark.postgres
def test_postgres_requests(stress: Stress, pg: str) -> None:
    rc, r = stress(pg, "--requests", "150", "--workers", "4", "--max-open", "3")
    assert rc == 0
    _check_server_pass(r, 150)
    assert r["target"] == {
        "kind": "postgresql",
        "dsn": pg,
        "embedded": False,
        "query": "SELECT 1",
    }
    assert r["leak_check"]["source"].startswith(
        "pg_stat_activity where application_name = 'sqlgate-stress-"
    )
    assert r["peak"]["in_use"] <= 3


@pytest.mark.postgres
def test_postgres_async(stress: Stress, pg: str) -> None:
    rc, r = stress(
        pg, "--async", "--requests", "80", "--workers", "6", "--max-idle", "3"
    )
    assert rc == 0
    _check_server_pass(r, 80)


@pytest.mark.postgres
def test_postgres_hidden_connection_fails(stress: Stress, pg: str) -> None:
    """The callable opens one connection more than it returns: the server sees it."""
    rc, r = stress(
        pg, "--connect", "tests.cli.helpers:pg_extra", "--requests", "10",
        "--workers", "1", "--max-idle", "1",
    )  # fmt: skip
    assert rc == 1
    leak = r["leak_check"]
    dials = r["pool"]["dials"]
    after_run, after_close = leak["after_run"], leak["after_close"]
    assert after_run["pool_open"] == after_run["driver_open"] == 1
    assert after_run["server_open"] == 1 + dials  # each dial hid one
    assert after_run["pass"] is False
    assert after_close["pool_open"] == after_close["driver_open"] == 0
    assert after_close["server_open"] == dials
    assert after_close["pass"] is False


@pytest.mark.postgres
def test_postgres_bad_query(capsys: pytest.CaptureFixture[str], pg: str) -> None:
    rc = main(["stress", pg, "--query", "SELECT nope FROM sqlgate_stress_none"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err == (
        "sqlgate: error: --query 'SELECT nope FROM sqlgate_stress_none' failed: "
        'UndefinedTable: relation "sqlgate_stress_none" does not exist\n'
    )


@pytest.mark.mysql
def test_mysql_requests(stress: Stress, mysql: str) -> None:
    rc, r = stress(mysql, "--requests", "150", "--workers", "4", "--max-idle", "4")
    assert rc == 0
    _check_server_pass(r, 150)
    assert r["target"]["kind"] == "mysql"
    assert r["leak_check"]["source"] == (
        "information_schema.processlist, by the connection ids seen at connect"
    )


@pytest.mark.mysql
def test_mysql_close_that_leaks_fails(stress: Stress, mysql: str) -> None:
    rc, r = stress(
        mysql, "--connect", "tests.cli.helpers:mysql_no_close", "--requests", "8",
        "--workers", "2", "--max-idle", "0",
    )  # fmt: skip
    assert rc == 1
    dials = r["pool"]["dials"]
    after_close = r["leak_check"]["after_close"]
    assert after_close["pool_open"] == 0
    assert after_close["driver_open"] == dials
    assert after_close["server_open"] == dials
    assert after_close["pass"] is False


@pytest.mark.mysql
def test_mysql_wrong_password(capsys: pytest.CaptureFixture[str], mysql: str) -> None:
    dsn = "mysql://root:Wrong-Pw-42@127.0.0.1:3306/test"
    rc = main(["stress", dsn])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err.startswith(
        "sqlgate: error: cannot connect to mysql://root:***@127.0.0.1:3306/test: "
        "OperationalError: (1045, \"Access denied for user 'root'@"
    )
    assert err.count("\n") == 1
    assert "Wrong-Pw-42" not in err
