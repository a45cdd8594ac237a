"""Scenario 1: uncontended acquire+release of a do-nothing connection."""

from __future__ import annotations

import gc
import os
import sys
from collections import Counter
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from benchmarks import contenders as c
from benchmarks._common import Column, Settings, Table, interleaved, median
from benchmarks.fakes import fake_dial

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

FLOOR = "floor (Lock+deque)"
SIZE = 4


def _factories() -> list[Callable[[], c.Contender]]:
    dial = fake_dial()
    return [
        lambda: c.floor_lock_deque(dial, SIZE),
        lambda: c.sqlgate_pool(dial, SIZE),
        lambda: c.sqlgate_with(dial, SIZE),
        lambda: c.psycopg_pool(dial, SIZE),
        lambda: c.sqlalchemy_pool(dial, SIZE),
        lambda: c.dbutils_pool(dial, SIZE),
    ]


def run_cycles(contender: c.Contender, n: int) -> None:
    """``n`` acquire+release cycles, the contender's own way."""
    if contender.cycles is not None:
        contender.cycles(n)
        return
    acquire, release = contender.acquire, contender.release
    for _ in range(n):
        release(acquire())


def count_calls(
    contender: c.Contender, n: int = 10
) -> tuple[float, float, Counter[str]]:
    """Python-level and C-level calls per cycle, and which Python functions ran.

    Counts ``call`` events (Python frames, generator resumptions included) and
    ``c_call`` events under ``sys.setprofile`` over ``n`` warm cycles; the frame
    of the driving loop itself is not counted.
    """
    py = 0
    cc = 0
    names: Counter[str] = Counter()

    def profiler(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal py, cc
        if event == "call":
            py += 1
            code = frame.f_code
            names[f"{os.path.basename(code.co_filename)}:{code.co_qualname}"] += 1
        elif event == "c_call":
            cc += 1

    run_cycles(contender, 2)
    sys.setprofile(profiler)
    try:
        run_cycles(contender, n)
    finally:
        sys.setprofile(None)
    # The run_cycles frame (and the contender's cycles() frame) are the loop.
    loop = 1 + (contender.cycles is not None)
    py -= loop
    for key in ("__init__.py:run_cycles", "cycle.py:run_cycles"):
        names.pop(key, None)
    if contender.cycles is not None:
        names.pop("contenders.py:sqlgate_with.<locals>.cycles", None)
    calls = Counter({k: v // n for k, v in names.items() if v // n})
    # The cycle.py:count_calls.<locals>.profiler cannot appear (profile is off).
    return py / n, cc / n, calls


def run(settings: Settings) -> Table:
    """Time every contender in interleaved rounds; report medians and ratios."""
    pools = {}
    for make in _factories():
        contender = make()
        c.warm(contender, 1)
        run_cycles(contender, 200)
        pools[contender.name] = contender
    samples: dict[str, list[float]] = {name: [] for name in pools}
    n = settings.cycles
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _, order in interleaved(list(pools), settings.rounds, settings.seed):
            for name in order:
                contender = pools[name]
                t0 = perf_counter_ns()
                run_cycles(contender, n)
                samples[name].append((perf_counter_ns() - t0) / n)
    finally:
        if gc_was:
            gc.enable()
    table = Table(
        scenario="cycle",
        title="1. Uncontended acquire + release",
        setup=(
            "One thread takes a do-nothing connection and gives it back, "
            f"{n} cycles per contender per round, {settings.rounds} rounds, "
            "contenders interleaved in a shuffled order each round, GC off while "
            "timing. Each pool calls its own acquire/release pair (sqlgate "
            "acquire/release, psycopg_pool getconn/putconn, QueuePool connect/"
            "close, PooledDB connection/close); `sqlgate (with)` uses "
            "`with pool.connection():`. Ratio = the contender's time / the floor's "
            "time in the same round, median over rounds. Calls = Python-level "
            "function calls per cycle (sys.setprofile), C calls beside them."
        ),
        columns=[
            Column("ns", "ns/cycle"),
            Column("ratio", "x floor", "{:.2f}"),
            Column("py_calls", "Python calls", "{:.0f}"),
            Column("c_calls", "C calls", "{:.0f}"),
        ],
        chart=("ratio", "time per cycle / floor (lower is better)"),
    )
    for name, values in samples.items():
        ratios = [v / f for v, f in zip(values, samples[FLOOR], strict=True)]
        py, cc, calls = count_calls(pools[name])
        table.rows.append(
            {
                "contender": name,
                "ns": median(values),
                "ratio": median(ratios),
                "py_calls": py,
                "c_calls": cc,
                "calls": dict(calls.most_common()),
            }
        )
    for contender in pools.values():
        contender.close()
    _verdict(table)
    return table


def _verdict(table: Table) -> None:
    sg = table.row("sqlgate")
    peers = [
        r
        for r in table.rows
        if r["contender"] not in {FLOOR} and "sqlgate" not in r["contender"]
    ]
    fastest = min(peers, key=lambda r: r["ns"])
    speedup = fastest["ns"] / sg["ns"]
    table.notes.append(
        f"sqlgate: {sg['ratio']:.2f}x the floor (target <= 3x); "
        f"{speedup:.2f}x faster than the fastest peer, {fastest['contender']} "
        "(target >= 3x)."
    )
