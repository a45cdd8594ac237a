"""``sqlgate stress`` against the embedded SQLite database (no server)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate.cli import main
from sqlgate.stats import Stats

if TYPE_CHECKING:
    from pathlib import Path

    from sqlgate.aiodb import AsyncDB
    from tests.cli.conftest import Stress

LATENCY_KEYS = {"count", "mean", "p50", "p90", "p99", "max"}


def test_requests_report_field_by_field(stress: Stress) -> None:
    rc, r = stress("--requests", "200", "--workers", "4", "--max-idle", "4")
    assert rc == 0
    assert r["schema"] == "sqlgate-stress/2"
    assert r["verdict"] == "PASS"
    assert r["target"]["kind"] == "sqlite"
    assert r["target"]["embedded"] is True
    assert r["target"]["query"] == "SELECT count(*), max(id) FROM sqlgate_stress_items"
    assert r["config"] == {
        "workers": 4,
        "max_open": 0,
        "max_idle": 4,
        "duration_s": None,
        "requests": 200,
        "hold_time_s": 0.0,
        "think_time_s": 0.0,
        "acquire_timeout_s": 30.0,
        "async": False,
        "max_error_rate": 0.01,
        "timeout_s": None,
    }
    assert r["interrupted"] is False
    assert r["requests"] == {
        "total": 200,
        "ok": 200,
        "failed": 0,
        "deadline_missed": 0,
        "error_rate": 0.0,
    }
    assert r["errors"] == {}
    assert r["throughput_rps"] == pytest.approx(200 / r["elapsed_s"])
    for key in ("acquire_wait", "query", "hold"):
        lat = r["latency_ms"][key]
        assert set(lat) == LATENCY_KEYS
        assert lat["count"] == 200
        assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    pool = r["pool"]
    assert set(pool) == {f.name for f in dataclasses.fields(Stats)}
    assert pool["acquires"] == 201  # 200 requests + the preflight
    assert pool["in_use"] == 0
    assert pool["waiting"] == 0
    assert pool["max_idle"] == 4
    assert pool["open_connections"] == pool["idle"]
    assert 1 <= pool["open_connections"] <= 4
    assert pool["dials"] == pool["open_connections"] + pool["closed"]
    leak = r["leak_check"]
    assert leak["method"] == "driver"
    assert leak["pass"] is True
    assert leak["after_run"] == {
        "pool_open": pool["open_connections"],
        "driver_open": pool["open_connections"],
        "server_open": None,
        "expected": pool["open_connections"],
        "pass": True,
    }
    assert leak["after_close"] == {
        "pool_open": 0,
        "driver_open": 0,
        "server_open": None,
        "expected": 0,
        "pass": True,
    }
    assert 1 <= r["peak"]["in_use"] <= 4
    sizing = r["sizing"]
    assert sizing["peak_in_use"] == r["peak"]["in_use"]
    # Never the worker count echoed back as advice (test_report_units.py
    # checks both branches exactly).
    if sizing["workers_bound"]:
        assert sizing["suggested_max_open"] is None
    else:
        assert 1 <= sizing["suggested_max_open"] < 4
    assert sizing["notes"]
    samples = r["samples"]
    assert samples, "the sampler takes at least the final sample"
    assert samples[-1]["completed"] == 200
    assert set(samples[-1]) == {
        "t",
        "completed",
        "errors",
        "in_use",
        "idle",
        "waiting",
        "open",
        "wait_ms",
        "query_ms",
        "throughput_rps",
    }


def test_duration_run(stress: Stress) -> None:
    rc, r = stress("--duration", "0.5", "--workers", "2", "--think-time", "0.001")
    assert rc == 0
    assert r["config"]["duration_s"] == 0.5
    assert r["config"]["requests"] is None
    assert r["elapsed_s"] >= 0.5
    assert r["requests"]["total"] > 0
    assert r["requests"]["failed"] == 0
    assert r["verdict"] == "PASS"


def test_async_requests_exact(stress: Stress) -> None:
    rc, r = stress("--async", "--requests", "60", "--workers", "5", "--max-open", "3")
    assert rc == 0
    assert r["config"]["async"] is True
    assert r["requests"] == {
        "total": 60,
        "ok": 60,
        "failed": 0,
        "deadline_missed": 0,
        "error_rate": 0.0,
    }
    assert r["latency_ms"]["query"]["count"] == 60
    assert r["pool"]["acquires"] == 61
    assert r["peak"]["in_use"] <= 3
    assert r["leak_check"]["pass"] is True
    assert r["leak_check"]["after_close"]["driver_open"] == 0


def test_leaking_connect_fails_the_check(stress: Stress) -> None:
    """A driver whose close() leaks: the pool says 0, the driver says otherwise."""
    rc, r = stress(
        "--connect",
        "tests.cli.helpers:sqlite_no_close",
        "--query",
        "SELECT 1",
        "--requests",
        "20",
        "--workers",
        "2",
        "--max-idle",
        "0",  # every release closes: each connection leaks at once
    )
    assert rc == 1
    assert r["verdict"] == "FAIL"
    pool = r["pool"]
    leak = r["leak_check"]
    assert leak["pass"] is False
    assert leak["after_run"]["pool_open"] == 0
    assert leak["after_run"]["driver_open"] == pool["dials"]  # every one leaked
    assert leak["after_run"]["pass"] is False
    assert leak["after_close"]["pool_open"] == 0
    assert leak["after_close"]["driver_open"] == pool["dials"]
    assert leak["after_close"]["pass"] is False


def test_leak_fail_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "stress",
            "--connect",
            "tests.cli.helpers:sqlite_no_close",
            "--query",
            "SELECT 1",
            "--requests",
            "5",
            "--workers",
            "1",
            "--max-idle",
            "0",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert out.count("\n") == 1
    assert "leak check FAIL" in out


def test_clean_connect_callable_passes(stress: Stress) -> None:
    rc, r = stress(
        "--connect", "tests.cli.helpers:sqlite_fine", "--query", "SELECT 1",
        "--requests", "10",
    )  # fmt: skip
    assert rc == 0
    assert r["requests"]["ok"] == 10


def test_query_errors_are_counted_by_kind(stress: Stress, tmp_path: Path) -> None:
    # A query that passes the preflight but fails later: a CHECK constraint.
    db = tmp_path / "e.db"
    import sqlite3

    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE sqlgate_stress_t (n INTEGER CHECK (n < 2))")
    c.close()
    rc, r = stress(
        f"sqlite:///{db}",
        "--query",
        "INSERT INTO sqlgate_stress_t (n) SELECT count(*) FROM sqlgate_stress_t",
        "--requests",
        "5",
        "--workers",
        "1",
    )
    # Errors are reported, not a leak: 4 of 5 failed, above the 1 % default.
    assert rc == 3
    assert r["verdict"] == "PASS"
    assert r["exit_code"] == 3
    assert r["outcome"] == "80.00 % of requests failed, above --max-error-rate 0.01"
    # preflight inserted 0, request 1 inserted 1, requests 2..5 violate the CHECK.
    assert r["requests"] == {
        "total": 5,
        "ok": 1,
        "failed": 4,
        "deadline_missed": 0,
        "error_rate": 0.8,
    }
    assert r["errors"] == {"IntegrityError": 4}
    assert r["leak_check"]["pass"] is True


def test_plot_is_a_png(tmp_path: Path) -> None:
    png = tmp_path / "run.png"
    rc = main(["stress", "--requests", "300", "--no-progress", "--plot", str(png)])
    assert rc == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


def test_plot_of_an_interrupted_run(stress: Stress, tmp_path: Path) -> None:
    from sqlgate.cli.plot import write_plot

    _, report = stress("--requests", "200", "--max-open", "2")
    report["interrupted"] = True
    png = tmp_path / "interrupted.png"
    write_plot(report, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["stress", "--requests", "50", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert err == ""
    for text in (
        "requests: 50 (50 ok, 0 failed, 0.00 %)",
        "internal errors: none",
        "exit 0: PASS",
        "latency (ms)",
        "acquire wait",
        "pool stats",
        "leak check (driver)",
        "no server can tell on SQLite",
        "sizing",
        "leak check PASS",
    ):
        assert text in out


def test_quiet_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["stress", "--requests", "30", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert err == ""
    assert out.startswith("30 requests (0 failed) in ")
    assert out.count("\n") == 1


def test_async_runs_over_open_async(
    stress: Stress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--async drives an AsyncDB's pool (the driver layer's dial and reset)."""
    import sqlgate.aiodb
    import sqlgate.cli.stress as stress_mod

    made: list[AsyncDB] = []
    real = sqlgate.aiodb.open_async

    def spy(*args: Any, **kwargs: Any) -> AsyncDB:
        db = real(*args, **kwargs)
        made.append(db)
        return db

    monkeypatch.setattr(stress_mod, "open_async", spy)
    rc, r = stress("--async", "--requests", "20", "--workers", "2", "--max-open", "2")
    assert rc == 0
    assert len(made) == 1
    db = made[0]
    assert db.closed
    assert db.pool.name == "sqlgate-stress"
    assert db.paramstyle == "qmark"  # the aiosqlite adapter dialed it
    assert r["requests"] == {
        "total": 20,
        "ok": 20,
        "failed": 0,
        "deadline_missed": 0,
        "error_rate": 0.0,
    }
    assert r["leak_check"]["pass"] is True
