"""``sqlgate stress --timeout``: each request's deadline, misses counted apart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from sqlgate.cli import main
from sqlgate.cli.report import render_plain, summary_line

if TYPE_CHECKING:
    from tests.cli.conftest import Stress

#: Never ends by itself: only the deadline's interrupt stops it.
ENDLESS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "SELECT count(*) FROM c"
)


@pytest.mark.parametrize("mode", [[], ["--async"]])
def test_every_request_misses(stress: Stress, mode: list[str]) -> None:
    rc, r = stress(
        "--query", ENDLESS, "--timeout", "0.1", "--requests", "4", "--workers", "2",
        *mode,
    )  # fmt: skip
    assert rc == 0  # misses are no errors: within --max-error-rate
    assert r["config"]["timeout_s"] == 0.1
    assert r["requests"] == {
        "total": 4,
        "ok": 0,
        "failed": 0,
        "deadline_missed": 4,
        "error_rate": 0.0,
    }
    assert r["errors"] == {}
    assert r["pool"]["in_use"] == 0
    assert r["leak_check"]["after_close"]["pass"] is True
    text = render_plain(r)
    assert "4 missed the deadline" in text
    assert "timeout=0.1s" in text
    assert "4 missed the deadline" in summary_line(r)


@pytest.mark.parametrize("mode", [[], ["--async"]])
def test_no_miss_when_fast(stress: Stress, mode: list[str]) -> None:
    rc, r = stress("--timeout", "5", "--requests", "50", "--workers", "2", *mode)
    assert rc == 0
    assert r["requests"] == {
        "total": 50,
        "ok": 50,
        "failed": 0,
        "deadline_missed": 0,
        "error_rate": 0.0,
    }
    assert r["latency_ms"]["query"]["count"] == 50


def test_without_timeout_no_miss_shown(stress: Stress) -> None:
    rc, r = stress("--requests", "5")
    assert rc == 0
    assert r["config"]["timeout_s"] is None
    assert r["requests"]["deadline_missed"] == 0
    assert "missed" not in render_plain(r)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_bad_timeout(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["stress", "--timeout", value, "--requests", "1", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--timeout" in err
    assert repr(value) in err


@pytest.mark.postgres
def test_pg_sleep_misses(stress: Stress, pg: str) -> None:
    rc, r = stress(
        pg, "--query", "select pg_sleep(5)", "--timeout", "0.2",
        "--requests", "3", "--workers", "3",
    )  # fmt: skip
    assert rc == 0
    assert r["requests"]["deadline_missed"] == 3
    assert r["requests"]["failed"] == 0
    assert r["leak_check"]["after_run"]["pass"] is True
    assert r["leak_check"]["after_close"]["pass"] is True
