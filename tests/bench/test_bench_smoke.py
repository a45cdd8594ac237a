"""A tiny run of the benchmark harness, so CI exercises it (no timing asserts)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from benchmarks import contenders, cycle
from benchmarks._common import percentile
from benchmarks.cli import SCENARIOS, main
from benchmarks.fakes import fake_dial
from sqlgate.pool import DEFAULT_MAX_CONNECTING
from tests.servers import require_postgres

if TYPE_CHECKING:
    from pathlib import Path

TINY = ["--quick", "--rounds", "1", "--seconds", "0.05"]


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "results.json"
    assert main([*TINY, "--json", str(out), *args]) == 0
    payload: dict[str, Any] = json.loads(out.read_text())
    return payload


def _rows(payload: dict[str, Any], scenario: str) -> dict[str, dict[str, Any]]:
    (table,) = [t for t in payload["tables"] if t["scenario"] == scenario]
    assert table["skipped"] is None
    return {r["contender"]: r for r in table["rows"]}


def test_cycle_and_memory_report_every_contender(tmp_path: Path) -> None:
    payload = _run(tmp_path, "--only", "cycle,memory")
    assert [t["scenario"] for t in payload["tables"]] == ["cycle", "memory"]
    rows = _rows(payload, "cycle")
    assert set(rows) == {
        "floor (Lock+deque)",
        "sqlgate",
        "sqlgate (with)",
        "psycopg_pool",
        "SQLAlchemy QueuePool",
        "DBUtils PooledDB",
    }
    assert rows["floor (Lock+deque)"]["ratio"] == 1.0
    # The floor's acquire and release are one Python function each.
    assert rows["floor (Lock+deque)"]["py_calls"] == 2
    assert rows["floor (Lock+deque)"]["calls"] == {
        "contenders.py:floor_lock_deque.<locals>.acquire": 1,
        "contenders.py:floor_lock_deque.<locals>.release": 1,
    }
    # Pool's acquire is Python in the pure build; compiled, it makes no
    # Python-level call at all (only the fake connection's rollback is one).
    if sqlgate.compiled:
        assert rows["sqlgate"]["calls"] == {"fakes.py:FakeConnection.rollback": 1}
    else:
        assert "_handoff.py:PlainPath.acquire" in rows["sqlgate"]["calls"]
    assert all(r["ns"] > 0 for r in rows.values())
    mem = _rows(payload, "memory")
    assert set(mem) == {
        "floor (FIFO hand-off)",
        "floor (Lock+deque)",
        "sqlgate",
        "psycopg_pool",
        "SQLAlchemy QueuePool",
        "DBUtils PooledDB",
    }
    # Per idle connection for every pool but the FIFO floor; per waiter for
    # every pool but the Lock+deque floor (it has no waiting).
    assert {k for k, r in mem.items() if "bytes" in r} == set(mem) - {
        "floor (FIFO hand-off)"
    }
    assert {k for k, r in mem.items() if "waiter" in r} == set(mem) - {
        "floor (Lock+deque)"
    }
    assert mem["sqlgate"]["waiter"] > 0
    assert payload["machine"]["cores"] == os.cpu_count()


def test_markdown_writes_doc_and_chart(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    assert (
        main(
            [*TINY, "--only", "contended,spike", "--markdown", "--docs-dir", str(docs)]
        )
        == 0
    )
    md = (docs / "benchmarks.md").read_text(encoding="utf-8")
    assert "## 2. Contended: 32 threads, 4 connections, 100 µs hold" in md
    assert "## 3. Spike: 64 requests at once onto an empty pool, 20 ms dial" in md
    assert "| **sqlgate** |" in md
    assert "![Ratios per scenario](benchmarks.png)" in md
    assert (docs / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.postgres
def test_postgres_scenarios(tmp_path: Path) -> None:
    require_postgres()
    payload = _run(tmp_path, "--only", "pg,async,connecting")
    assert set(_rows(payload, "pg")) == {
        "limit (dedicated)",
        "8 threads, dedicated",
        "floor (FIFO hand-off)",
        "sqlgate",
        "psycopg_pool",
        "SQLAlchemy QueuePool",
        "DBUtils PooledDB",
    }
    assert {"limit (10 asyncpg + Queue)", "asyncpg Pool", "sqlgate AsyncPool"} <= set(
        _rows(payload, "async")
    )
    variants = _rows(payload, "connecting")
    assert [r["max_connecting"] for r in variants.values()] == [1, 2, 4, 8, 0]
    assert f"max_connecting={DEFAULT_MAX_CONNECTING} (default)" in variants
    # Never more dials than max_open=16 for 64 requests held 1 ms each.
    assert all(1 <= r["dials"] <= 16 for r in variants.values())


def test_only_rejects_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--only", "cycle,nope"])
    assert info.value.code == 2
    assert "--only: unknown scenario 'nope'; choose from " + ", ".join(SCENARIOS) in (
        capsys.readouterr().err
    )


def test_count_calls_sees_each_python_function_once_per_cycle() -> None:
    contender = contenders.floor_lock_deque(fake_dial(), 1)
    py, _, calls = cycle.count_calls(contender, n=5)
    assert py == 2
    assert sum(calls.values()) == 2


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7], 0.99) == 7


def test_deadline_reports_both_forms(tmp_path: Path) -> None:
    payload = _run(tmp_path, "--only", "deadline")
    rows = _rows(payload, "deadline")
    assert set(rows) == {"exec, no timeout", "exec, timeout=30"}
    assert rows["exec, no timeout"]["ratio"] == 1.0
    assert rows["exec, timeout=30"]["ns"] > 0
