"""The both-builds report: targets read from each run, median and spread."""

from __future__ import annotations

from typing import Any

from benchmarks import builds


def _payload(cycle_ratio: float, with_ns: float, load: float) -> dict[str, Any]:
    rows = [
        {"contender": "floor (Lock+deque)", "ns": 500.0, "ratio": 1.0},
        {"contender": "sqlgate", "ns": 500.0 * cycle_ratio, "ratio": cycle_ratio},
        {"contender": "sqlgate (with)", "ns": with_ns, "ratio": with_ns / 500.0},
        {"contender": "psycopg_pool", "ns": 3000.0, "ratio": 6.0},
        {"contender": "DBUtils PooledDB", "ns": 2500.0, "ratio": 5.0},
    ]
    return {
        "machine": {"load_average": [load, load, load], "sqlgate_build": "x"},
        "tables": [{"scenario": "cycle", "rows": rows, "skipped": None}],
    }


def test_summary_gives_median_spread_and_verdict_per_build() -> None:
    runs = {
        "pure": [_payload(2.8, 1800.0, 0.1), _payload(2.6, 1700.0, 0.2)],
        "compiled": [
            _payload(1.5, 900.0, 0.3),
            _payload(1.3, 700.0, 0.1),
            _payload(1.35, 800.0, 0.2),
        ],
    }
    lines = builds.summary(runs)
    assert lines[0].startswith("Runs per build: pure: 2, compiled: 3.")
    cycle = next(line for line in lines if line.startswith("| cycle: sqlgate / Lock"))
    # Pure: median of 2.8 and 2.6; compiled: median of three, spread low-high.
    assert "| 2.70 [2.60 - 2.80] NOT met |" in cycle
    assert "| 1.35 [1.30 - 1.50] met |" in cycle
    peer = next(line for line in lines if line.startswith("| cycle: sqlgate / fastest"))
    # Fastest peer: DBUtils at 2500 ns; no goal for the pure build.
    assert "| 0.54 [0.52 - 0.56] |" in peer
    assert peer.endswith("| 0.27 [0.26 - 0.30] met |")
    with_line = next(line for line in lines if line.startswith("| `with"))
    assert "| 1.30 [1.29 - 1.31] NOT met |" in with_line
    assert with_line.endswith("| 1.19 [1.08 - 1.20] met |")
    unmeasured = next(line for line in lines if line.startswith("| contended: sqlgate"))
    assert unmeasured.endswith("| not measured | not measured |")
    assert "compiled run 3: 0.2 / 0.2 / 0.2" in lines[-1]
    assert builds._median_run(runs["compiled"]) == 2


def test_floor_ratio_is_of_median_throughputs() -> None:
    rows = [
        {"contender": "limit (dedicated)", "throughput": 7000.0, "ratio": 1.0},
        {"contender": "floor (FIFO hand-off)", "throughput": 6600.0, "ratio": 0.95},
        {"contender": "sqlgate", "throughput": 6270.0, "ratio": 0.85},
    ]
    payload = {"tables": [{"scenario": "pg", "rows": rows, "skipped": None}]}
    read = builds._versus("pg", "sqlgate", "floor (FIFO hand-off)")
    assert read(payload) == 6270.0 / 6600.0
