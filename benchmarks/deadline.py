"""Scenarios 8 and 9: what a per-call deadline (``timeout=``) costs the handle.

``deadline``: one thread, ``DB.exec`` on a do-nothing driver, with and without
``timeout=`` (the handle's bookkeeping alone: the deadline thread's entry is
armed and disarmed on every call). ``deadline-pg``: 16 threads, 8
connections, ``DB.query_row("SELECT 1")`` on the local PostgreSQL, with and
without ``timeout=``. The deadline never passes: what is measured is the
arming and disarming. Ratio = the time (or throughput) with a deadline / the
same without, in the same round; target <= 1.10 (at most 10 % dearer).
"""

from __future__ import annotations

import gc
from time import perf_counter_ns
from typing import Any

from benchmarks import contenders as c
from benchmarks._common import (
    PG_DSN,
    Column,
    Settings,
    Table,
    interleaved,
    median,
    pg_available,
)
from benchmarks._threads import timed_loop
from sqlgate.db import DB
from sqlgate.drivers._base import SyncAdapter

PLAIN = "exec, no timeout"
TIMED = "exec, timeout=30"
PG_PLAIN = "query_row, no timeout"
PG_TIMED = "query_row, timeout=30"
#: The deadline the timed contenders pass (never reached).
TIMEOUT = 30.0
THREADS = 16
SIZE = 8


class _NullConn:
    closed = False

    def close(self) -> None:
        pass


class _NullAdapter(SyncAdapter):
    """A driver adapter whose statements return at once (and never need a cancel)."""

    name = "null"

    def exec(self, conn: Any, sql: str, params: Any) -> tuple[int, int | None]:
        return 1, None

    def reset(self, conn: Any) -> None:
        pass


def null_db() -> DB:
    """A handle over ``_NullAdapter``: one connection, never pinged."""
    return DB(_NullConn, _NullAdapter(), None, None, None, "bench", {"max_open": 1})


def calls(db: DB, n: int, timeout: float | None) -> None:
    """``n`` calls of ``db.exec``, with ``timeout`` (None: the plain call)."""
    exec_ = db.exec
    if timeout is None:
        for _ in range(n):
            exec_("x")
    else:
        for _ in range(n):
            exec_("x", timeout=timeout)


def run(settings: Settings) -> Table:
    """Both forms interleaved in rounds; medians of ns per call and of ratios."""
    db = null_db()
    calls(db, 500, None)
    calls(db, 500, TIMEOUT)
    forms = {PLAIN: None, TIMED: TIMEOUT}
    samples: dict[str, list[float]] = {name: [] for name in forms}
    n = settings.cycles
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _, order in interleaved(list(forms), settings.rounds, settings.seed):
            for name in order:
                t0 = perf_counter_ns()
                calls(db, n, forms[name])
                samples[name].append((perf_counter_ns() - t0) / n)
    finally:
        if gc_was:
            gc.enable()
    db.close()
    table = Table(
        scenario="deadline",
        title="8. A call's deadline: DB.exec with and without timeout= (no I/O)",
        setup=(
            "One thread calls `DB.exec` on a do-nothing driver adapter (one "
            f"connection, never pinged), {n} calls per form per round, "
            f"{settings.rounds} rounds, the two forms interleaved, GC off while "
            f"timing. `timeout={TIMEOUT:g}` never passes: it costs a deadline "
            "computed once, the acquire bounded by it, and one entry armed and "
            "disarmed on the process-wide deadline thread. Ratio = ns per call "
            "/ the plain call's in the same round (target <= 1.10)."
        ),
        columns=[
            Column("ns", "ns/call"),
            Column("ratio", "x no timeout", "{:.2f}"),
        ],
        chart=("ratio", "time per call / without timeout (lower is better)"),
    )
    for name, values in samples.items():
        ratios = [v / b for v, b in zip(values, samples[PLAIN], strict=True)]
        table.rows.append(
            {"contender": name, "ns": median(values), "ratio": median(ratios)}
        )
    timed = table.row(TIMED)
    table.notes.append(
        f"timeout= costs {timed['ratio']:.2f}x the plain call "
        f"({timed['ns'] - table.row(PLAIN)['ns']:.0f} ns more; target <= 1.10x)."
    )
    return table


def _handle_contender(db: DB, name: str) -> c.Contender:
    """The handle as a "pool" for ``timed_loop``: the work is the whole call."""
    return c.Contender(
        name=name, acquire=lambda: db, release=lambda _: None, close=db.close
    )


def _select_one(timeout: float | None) -> Any:
    if timeout is None:
        return lambda db: db.query_row("SELECT 1")
    return lambda db: db.query_row("SELECT 1", timeout=timeout)


def run_pg(settings: Settings) -> Table:
    """Skip when PostgreSQL is absent; else both forms, interleaved rounds."""
    table = Table(
        scenario="deadline-pg",
        title="9. A call's deadline on PostgreSQL: 16 threads, 8 connections",
        setup=(
            f"{THREADS} threads loop `DB.query_row('SELECT 1')` (psycopg) for "
            f"{settings.seconds:g} s per run through one handle of at most "
            f"{SIZE} connections, warmed, with and without `timeout={TIMEOUT:g}` "
            f"(never reached). {settings.rounds} rounds, interleaved; medians. "
            "Ratio = throughput with a deadline / without, same round "
            "(target >= 0.91, i.e. at most 10 % dearer)."
        ),
        columns=[
            Column("throughput", "queries/s", "{:,.0f}"),
            Column("ratio", "x no timeout", "{:.2f}"),
        ],
        chart=("ratio", "throughput / without timeout (higher is better)"),
    )
    why = pg_available()
    if why is not None:
        table.skipped = why
        return table
    import sqlgate

    forms = {PG_PLAIN: None, PG_TIMED: TIMEOUT}
    results: dict[str, list[float]] = {name: [] for name in forms}
    for _, order in interleaved(list(forms), settings.rounds, settings.seed):
        for name in order:
            db = sqlgate.open(PG_DSN, max_open=SIZE, max_idle=SIZE)
            contender = _handle_contender(db, name)
            try:
                work = _select_one(forms[name])
                for _ in range(SIZE):
                    work(db)
                r = timed_loop(contender, THREADS, settings.seconds, work)
            finally:
                db.close()
            results[name].append(r.throughput)
    base = results[PG_PLAIN]
    for name, runs in results.items():
        ratios = [v / b for v, b in zip(runs, base, strict=True)]
        table.rows.append(
            {"contender": name, "throughput": median(runs), "ratio": median(ratios)}
        )
    table.notes.append(
        f"timeout= keeps {table.row(PG_TIMED)['ratio']:.2f}x the throughput "
        "(target >= 0.91)."
    )
    return table
