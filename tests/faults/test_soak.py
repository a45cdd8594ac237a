"""Soak: full load through the fault proxy with random faults, then nothing left.

32 threads run ``query_row`` through ``sqlgate.db.open`` against PostgreSQL
behind the proxy, while a schedule drawn from a fixed seed switches the proxy
between added latency, resets of every connection and brief refusals. A
sampler checks every invariant under the pool's lock throughout. At the end
the pool is closed and the process must be back where it started: memory
allocated by sqlgate (tracemalloc) no larger than after warm-up, and thread
and file-descriptor counts back to their baseline. The schedule is printed
when anything fails. The short form runs in CI; ``-m slow`` runs a minute.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from sqlgate import Error
from sqlgate.db import DB
from sqlgate.db import open as db_open
from tests.faults.load import SETTLE, CallLoad, wait_for

if TYPE_CHECKING:
    from tests.faults.proxy import FaultProxy, Mode

SEED = 20240917
MAX_OPEN = 8
#: Growth allowed in memory allocated from sqlgate's own files between the
#: snapshot after warm-up and the one at the end, both under load: a fixed
#: allowance plus 1 KiB per dial (the dial path's lines are charged for some
#: driver allocations; about 0.5 KiB per dial was measured). A leak per call
#: (hundreds of thousands of calls in the slow form) is far over it.
MEMORY_BOUND = 256 * 1024
MEMORY_PER_DIAL = 1024


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start
    mode: Mode
    hold: float  # seconds before the proxy goes back to pass
    latency: float = 0.0


def schedule(seed: int, duration: float) -> list[Fault]:
    """Faults from ``seed``: one every 0.2-0.6 s, after a 1 s warm-up."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    at = 1.0
    while at < duration - 1.0:
        kind = rng.choices(("latency", "reset", "refuse"), (4, 3, 2))[0]
        if kind == "latency":
            fault = Fault(
                at, "latency", rng.uniform(0.1, 0.4), rng.uniform(0.001, 0.01)
            )
        elif kind == "reset":
            fault = Fault(at, "reset", rng.uniform(0.0, 0.05))
        else:
            fault = Fault(at, "refuse", rng.uniform(0.05, 0.3))
        faults.append(fault)
        at += fault.hold + rng.uniform(0.2, 0.6)
    return faults


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _new_threads(baseline: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t not in baseline and t.name != "sqlgate-reaper"
    ]


def _sqlgate_bytes(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot
) -> tuple[int, str]:
    only = [tracemalloc.Filter(True, "*/sqlgate/*")]
    diff = after.filter_traces(only).compare_to(before.filter_traces(only), "lineno")
    top = "\n".join(str(d) for d in diff[:8])
    return sum(d.size_diff for d in diff), top


def _soak(proxy: FaultProxy, app_name: str, duration: float) -> None:
    import psycopg

    faults = schedule(SEED, duration)
    threads0, fds0 = set(threading.enumerate()), _fds()
    tracemalloc.start()
    db: DB = db_open(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        f"?application_name={app_name}&connect_timeout=2",
        max_open=MAX_OPEN,
        max_idle=MAX_OPEN,
        acquire_timeout=5.0,
        name="soak",
    )
    pool = db.pool
    broken: list[BaseException] = []
    samples = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal samples
        while not done.wait(0.02):
            try:
                with pool._lock:
                    pool._core.check()
                    assert pool._core.num_open <= MAX_OPEN
                samples += 1
            except BaseException as exc:
                broken.append(exc)
                return

    def echo(n: int) -> object:
        row = db.query_row("select %s::int", (n,))
        assert row is not None
        return row[0]

    load = CallLoad(
        call=echo,
        expected=(psycopg.OperationalError, psycopg.InterfaceError, Error),
        threads=32,
        keep_errors=False,
    )
    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    started = time.monotonic()
    growth, top = 0, ""
    try:
        sampler.start()
        load.start()
        wait_for(lambda: load.outcomes()["ok"] >= 200, 15, "warm-up")
        gc.collect()
        snap0 = tracemalloc.take_snapshot()
        for fault in faults:
            delay = started + fault.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the schedule's own clock, not a race
            proxy.set_mode(fault.mode, latency=fault.latency)
            time.sleep(fault.hold)
            proxy.set_mode("pass")
        t_last = time.monotonic()
        wait_for(lambda: load.outcomes(since=t_last)["ok"] >= 200, 15, "service")
        gc.collect()
        growth, top = _sqlgate_bytes(snap0, tracemalloc.take_snapshot())
    except BaseException:
        load.stop.set()
        raise
    finally:
        tracemalloc.stop()
        load.finish(bound=20)
        done.set()
        sampler.join(5)
        db.close()
    try:
        every = load.outcomes()
        errors = Counter(c.outcome for c in load.calls if c.outcome != "ok")
        s = pool.stats()
        print(
            f"\nsoak {duration:.0f} s: {len(faults)} faults "
            f"{dict(Counter(f.mode for f in faults))}, {sum(every.values())} calls, "
            f"errors by kind {dict(errors)}, dials {s.dials}, broken closed "
            f"{s.broken_closed}, circuit opens {s.circuit_opens}, {samples} "
            f"invariant samples, sqlgate memory growth {growth} B\n{top}"
        )
        assert not broken, broken
        assert samples > 0
        assert every["ok"] > 0
        assert growth <= MEMORY_BOUND + MEMORY_PER_DIAL * s.dials, top
        # Nothing left: connections, threads, descriptors.
        wait_for(lambda: pool.stats().open_connections == 0, SETTLE, "pool to close")
        with pool._lock:
            pool._core.check()
        s = pool.stats()
        assert s.dials == s.closed, s
        # Every thread the pool started ends (the DB module's one reaper
        # thread is per process, not per pool, and stays).
        wait_for(
            lambda: not _new_threads(threads0),
            SETTLE,
            f"threads back to baseline: {_new_threads(threads0)}",
        )
        wait_for(lambda: _fds() <= fds0, SETTLE, f"descriptors back to {fds0}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nseed {SEED}, schedule:\n{faults}") from exc


@pytest.mark.postgres
def test_soak_short(pg_proxy: FaultProxy, app_name: str) -> None:
    _soak(pg_proxy, app_name, 8.0)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_soak(pg_proxy: FaultProxy, app_name: str) -> None:
    _soak(pg_proxy, app_name, 60.0)
