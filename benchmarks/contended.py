"""Scenario 2: 32 threads on 4 connections, each holding one for ~100 µs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from benchmarks import contenders as c
from benchmarks._common import Column, Settings, Table, interleaved, median, percentile
from benchmarks._threads import mean_sleep, timed_loop
from benchmarks.fakes import fake_dial

if TYPE_CHECKING:
    from collections.abc import Callable

FLOOR = "floor (FIFO hand-off)"
THREADS = 32
SIZE = 4
HOLD = 100e-6


def _hold(handle: Any) -> None:
    time.sleep(HOLD)


def _factories() -> dict[str, Callable[[], c.Contender]]:
    dial = fake_dial()
    return {
        FLOOR: lambda: c.floor_fifo(dial, SIZE),
        "sqlgate": lambda: c.sqlgate_pool(dial, SIZE),
        "psycopg_pool": lambda: c.psycopg_pool(dial, SIZE),
        "SQLAlchemy QueuePool": lambda: c.sqlalchemy_pool(dial, SIZE),
        "DBUtils PooledDB": lambda: c.dbutils_pool(dial, SIZE),
    }


def run(settings: Settings) -> Table:
    """Each round builds every pool afresh, warms it to 4 idle, and runs it."""
    by_name = _factories()
    names = list(by_name)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _, order in interleaved(names, settings.rounds, settings.seed):
        for name in order:
            contender = by_name[name]()
            try:
                c.warm(contender, SIZE)
                r = timed_loop(contender, THREADS, settings.seconds, _hold)
            finally:
                contender.close()
            results[name].append(
                {
                    "throughput": r.throughput,
                    "p50_us": percentile(r.waits_ns, 0.50) / 1e3,
                    "p99_us": percentile(r.waits_ns, 0.99) / 1e3,
                    "fairness": r.fairness,
                    "starved": sum(1 for n in r.counts if n == 0),
                }
            )
    held = mean_sleep(HOLD)
    table = Table(
        scenario="contended",
        title="2. Contended: 32 threads, 4 connections, 100 µs hold",
        setup=(
            f"{THREADS} threads loop acquire / hold / release for "
            f"{settings.seconds:g} s per run on a pool of {SIZE} do-nothing "
            f"connections (warmed to {SIZE} idle); the hold is `time.sleep(100e-6)`, "
            "which releases the GIL as a query would (it really lasts "
            f"{held * 1e6:.0f} µs on this machine, so the ideal is "
            f"{SIZE / held:,.0f} cycles/s). {settings.rounds} rounds, contenders "
            "interleaved; medians over rounds. The floor is a minimal fair pool "
            "(lock, idle deque, FIFO hand-off to waiters). Fairness = most cycles "
            "by one thread / fewest by one thread (target < 1.5); starved = "
            "threads that completed no cycle."
        ),
        columns=[
            Column("throughput", "cycles/s", "{:,.0f}"),
            Column("ratio", "x floor", "{:.2f}"),
            Column("p50_us", "p50 wait µs", "{:,.0f}"),
            Column("p99_us", "p99 wait µs", "{:,.0f}"),
            Column("fairness", "max/min per thread", "{:.2f}"),
            Column("starved", "starved threads", "{:.0f}"),
        ],
        chart=("ratio", "throughput / floor (higher is better)"),
    )
    floor = [r["throughput"] for r in results[FLOOR]]
    for name, runs in results.items():
        ratios = [r["throughput"] / f for r, f in zip(runs, floor, strict=True)]
        row: dict[str, Any] = {"contender": name, "ratio": median(ratios)}
        for key in ("throughput", "p50_us", "p99_us", "fairness", "starved"):
            row[key] = median([r[key] for r in runs])
        table.rows.append(row)
    sg = table.row("sqlgate")
    table.notes.append(
        f"sqlgate: {sg['ratio']:.2f}x the floor's throughput, fairness "
        f"{sg['fairness']:.2f} (target < 1.5)."
    )
    return table
