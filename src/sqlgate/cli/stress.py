"""The ``sqlgate stress`` workload: workers, a sampler and the leak check.

Each worker loops: acquire a connection (timed: the acquire wait), run the
query and fetch its rows (timed: the query latency), keep the connection for
``hold_time`` more seconds, release it (acquire-to-release is the hold time),
then sleep ``think_time``. Workers are threads over the pool of a
``sqlgate.open`` handle (so the driver layer's reset runs on every release), or
with ``--async`` asyncio tasks over the pool of a ``sqlgate.open_async``
handle (``AsyncDB`` over ``AsyncPool``, the same driver layer).

A sampler reads the pool's :class:`~sqlgate.Stats` every ``SAMPLE_EVERY``
seconds for the live view and the plot. When the workers are done, the leak
check compares the pool's open count with the driver's own count (the ledger)
and, on a server, with the server's count; then the pool is closed and the
same three counts must all be 0.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlgate.aiopool import AsyncPool
from sqlgate.cli._target import BadInput, first_line, scrub, settle
from sqlgate.db import open as open_db
from sqlgate.db_async import open_async
from sqlgate.pool import Pool

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate.cli._target import Target
    from sqlgate.db import DB
    from sqlgate.db_async import AsyncDB
    from sqlgate.stats import Stats

__all__ = [
    "SAMPLE_EVERY",
    "Config",
    "LeakPoint",
    "RunResult",
    "Sample",
    "run",
]

#: Seconds between samples of the pool (live view, plot, peaks).
SAMPLE_EVERY = 0.1
#: Seconds to wait for dials/closes in flight to land before counting.
SETTLE_WITHIN = 3.0
#: DB-API exception class names that mean the link itself is unusable.
_BROKEN_KINDS = frozenset({"OperationalError", "InterfaceError"})


@dataclass(frozen=True)
class Config:
    """A stress run's settings, validated by the command line.

    Attributes:
        workers: concurrent workers (threads, or tasks with ``use_async``).
        max_open: the pool's ``max_open`` (0 = unlimited).
        max_idle: the pool's ``max_idle``.
        duration: seconds to run, or None when ``requests`` is set.
        requests: total requests across all workers, or None.
        hold_time: seconds a worker keeps the connection after its query.
        think_time: seconds a worker sleeps between requests.
        acquire_timeout: seconds an acquire may wait before PoolTimeout.
        use_async: run asyncio tasks over ``AsyncPool``.
    """

    workers: int = 8
    max_open: int = 0
    max_idle: int = 2
    duration: float | None = 5.0
    requests: int | None = None
    hold_time: float = 0.0
    think_time: float = 0.0
    acquire_timeout: float = 30.0
    use_async: bool = False


@dataclass
class Tally:
    """One worker's measurements (no lock: only its worker writes them).

    Durations are float seconds.
    """

    waits: list[float] = field(default_factory=list)
    queries: list[float] = field(default_factory=list)
    holds: list[float] = field(default_factory=list)
    #: perf_counter() when each hold began (pairs with ``holds``).
    held_at: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    done: int = 0
    failed: int = 0

    def fail(self, exc: BaseException) -> None:
        """Count one failed request under its exception's class name."""
        self.failed += 1
        self.errors[type(exc).__name__] += 1


@dataclass(frozen=True, slots=True)
class Sample:
    """The pool and the workload at one moment (``t``: seconds since start)."""

    t: float
    completed: int
    errors: int
    in_use: int
    idle: int
    waiting: int
    open: int


@dataclass(frozen=True)
class LeakPoint:
    """One leak check: three independent counts that must agree.

    Attributes:
        pool_open: what the pool counts as open.
        driver_open: connections the connect callable returned that the
            driver says are still open.
        server_open: the server's count of the run's connections (None on
            SQLite, where no server can tell).
        expected: what every count must equal (the pool's count after the
            run; 0 after close).
    """

    pool_open: int
    driver_open: int
    server_open: int | None
    expected: int

    @property
    def ok(self) -> bool:
        """True when every count equals ``expected``."""
        counts = [self.pool_open, self.driver_open]
        if self.server_open is not None:
            counts.append(self.server_open)
        return all(c == self.expected for c in counts)


@dataclass
class RunResult:
    """Everything a run measured, before it is shaped into a report."""

    elapsed: float
    tallies: list[Tally]
    samples: list[Sample]
    stats: Stats
    after_run: LeakPoint
    after_close: LeakPoint
    interrupted: bool = False


class _Budget:
    """Hands out requests: a fixed number, or until a deadline."""

    def __init__(self, requests: int | None, duration: float | None) -> None:
        self._left = requests
        self._lock = threading.Lock()
        self.deadline = (
            time.monotonic() + duration if duration is not None else float("inf")
        )
        self.stopped = False

    def take(self) -> bool:
        if self.stopped:
            return False
        if self._left is None:
            return time.monotonic() < self.deadline
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def stop(self) -> None:
        self.stopped = True


def _run_query(conn: Any, query: str) -> None:
    cur = conn.cursor()
    try:
        cur.execute(query)
        if cur.description is not None:
            cur.fetchall()
    finally:
        cur.close()


def _worker(
    pool: Pool[Any], query: str, budget: _Budget, tally: Tally, cfg: Config
) -> None:
    clock, sleep = time.perf_counter, time.sleep
    hold, think = cfg.hold_time, cfg.think_time
    while budget.take():
        t0 = clock()
        try:
            conn = pool.acquire()
        except Exception as exc:
            tally.fail(exc)
        else:
            t1 = clock()
            tally.waits.append(t1 - t0)
            broken = False
            try:
                _run_query(conn, query)
            except Exception as exc:
                tally.fail(exc)
                broken = type(exc).__name__ in _BROKEN_KINDS
            else:
                tally.queries.append(clock() - t1)
                tally.done += 1
            if hold:
                sleep(hold)
            pool.release(conn, broken=broken)
            tally.held_at.append(t1)
            tally.holds.append(clock() - t1)
        if think:
            sleep(think)


class _Sampler:
    """Samples the pool every ``SAMPLE_EVERY`` s; calls ``on_sample`` each time."""

    def __init__(
        self,
        stats: Callable[[], Stats],
        tallies: list[Tally],
        on_sample: Callable[[Sample], None] | None,
    ) -> None:
        self._stats = stats
        self._tallies = tallies
        self._on_sample = on_sample
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self.started = time.monotonic()
        self._thread = threading.Thread(
            target=self._loop, name="sqlgate-stress-sampler", daemon=True
        )

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def take(self) -> None:
        s = self._stats()
        sample = Sample(
            t=time.monotonic() - self.started,
            completed=sum(t.done for t in self._tallies),
            errors=sum(t.failed for t in self._tallies),
            in_use=s.in_use,
            idle=s.idle,
            waiting=s.waiting,
            open=s.open_connections,
        )
        self.samples.append(sample)
        if self._on_sample is not None:
            self._on_sample(sample)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.take()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.take()  # the final figures


def _knobs(cfg: Config) -> dict[str, Any]:
    """The pool knobs a run sets, for threads and asyncio alike."""
    return {
        "max_open": cfg.max_open,
        "max_idle": cfg.max_idle,
        "acquire_timeout": cfg.acquire_timeout,
        "name": "sqlgate-stress",
    }


def _open_db(cfg: Config, target: Target) -> DB | Pool[Any]:
    """The handle to drive: ``sqlgate.open`` over the target's connect callable.

    A user's ``--connect`` callable may return any DB-API connection, which
    the database handle's driver adapters may not know: it gets a plain
    :class:`sqlgate.Pool`.
    """
    if target.user_connect:
        return Pool(target.connect, **_knobs(cfg))
    return open_db(target.connect, **_knobs(cfg))


def _open_async_db(cfg: Config, target: Target) -> AsyncDB | AsyncPool[Any]:
    """``_open_db`` for ``--async``: ``sqlgate.open_async`` (or a bare AsyncPool)."""
    if target.user_connect:
        return AsyncPool(target.connect, **_knobs(cfg))
    return open_async(target.connect, **_knobs(cfg))


def _preflight(pool: Pool[Any], target: Target, password: str | None) -> None:
    """One request before the clock starts: a bad query or DSN fails here.

    Raises:
        BadInput: the connection or the query failed (message scrubbed).
    """
    try:
        conn = pool.acquire()
    except Exception as exc:
        raise _unreachable(exc, target, password) from None
    try:
        _run_query(conn, target.query)
    except Exception as exc:
        pool.release(conn, broken=True)
        raise _bad_query(exc, target, password) from None
    pool.release(conn)


def _unreachable(exc: Exception, target: Target, password: str | None) -> BadInput:
    """The preflight's first connection failed: the driver's reason, scrubbed."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    message = scrub(first_line(cause), password)
    return BadInput(f"cannot connect to {target.shown}: {message}")


def _bad_query(exc: Exception, target: Target, password: str | None) -> BadInput:
    """The preflight's query failed: the driver's reason, scrubbed."""
    message = scrub(first_line(exc), password)
    return BadInput(f"--query {target.query!r} failed: {message}")


def _quiet_pool(stats: Callable[[], Stats]) -> Stats:
    """Wait (briefly) until no dial, close or hand-out is in flight."""
    deadline = time.monotonic() + SETTLE_WITHIN
    s = stats()
    while (s.dialing or s.closing or s.in_use) and time.monotonic() < deadline:
        time.sleep(0.01)
        s = stats()
    return s


def _leak_point(target: Target, pool_open: int, expected: int) -> LeakPoint:
    ledger, server = target.ledger, target.server
    # The driver's count needs no settling: a close has returned or not.
    driver_open = ledger.still_open()
    server_open = None
    if server is not None:
        server_open = settle(
            lambda: server.count(ledger), expected, within=SETTLE_WITHIN
        )
    return LeakPoint(pool_open, driver_open, server_open, expected)


def run(
    cfg: Config,
    target: Target,
    *,
    password: str | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> RunResult:
    """Drive the pool, then check it for leaks before and after close.

    Args:
        cfg: the run's settings.
        target: what to connect to, the query and the witnesses.
        password: a secret to mask in any error message.
        on_sample: called from the sampler thread with each sample.

    Returns:
        The measurements; the pool is closed.

    Raises:
        BadInput: the first connection or query failed.
    """
    if cfg.use_async:
        return _run_async(cfg, target, password=password, on_sample=on_sample)
    db = _open_db(cfg, target)
    pool = db if isinstance(db, Pool) else db.pool
    try:
        _preflight(pool, target, password)
    except BaseException:
        db.close()
        raise
    tallies = [Tally() for _ in range(cfg.workers)]
    budget = _Budget(cfg.requests, cfg.duration)
    sampler = _Sampler(pool.stats, tallies, on_sample)
    threads = [
        threading.Thread(
            target=_worker,
            args=(pool, target.query, budget, tally, cfg),
            name=f"sqlgate-stress-{i}",
            daemon=True,
        )
        for i, tally in enumerate(tallies)
    ]
    started = time.monotonic()
    sampler.start()
    for thread in threads:
        thread.start()
    interrupted = False
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        interrupted = True
        budget.stop()
        for thread in threads:
            thread.join()
    elapsed = time.monotonic() - started
    sampler.stop()
    return _finish(db, target, tallies, sampler.samples, elapsed, interrupted)


def _finish(
    db: DB | Pool[Any],
    target: Target,
    tallies: list[Tally],
    samples: list[Sample],
    elapsed: float,
    interrupted: bool,
) -> RunResult:
    stats = _quiet_pool(db.stats)
    after_run = _leak_point(target, stats.open_connections, stats.open_connections)
    db.close()
    closed = _quiet_pool(db.stats)
    after_close = _leak_point(target, closed.open_connections, 0)
    return RunResult(
        elapsed=elapsed,
        tallies=tallies,
        samples=samples,
        stats=stats,
        after_run=after_run,
        after_close=after_close,
        interrupted=interrupted,
    )


def _run_async(
    cfg: Config,
    target: Target,
    *,
    password: str | None,
    on_sample: Callable[[Sample], None] | None,
) -> RunResult:
    """``run`` with asyncio tasks over ``open_async``'s pool (a fresh event loop)."""
    return asyncio.run(_amain(cfg, target, password, on_sample))


async def _arun_query(conn: Any, query: str) -> None:
    fetch = getattr(conn, "fetch", None)
    if fetch is not None:  # asyncpg: no cursors
        await fetch(query)
        return
    cur = await conn.execute(query)
    try:
        if cur.description is not None:
            await cur.fetchall()
    finally:
        closed = cur.close()
        if inspect.isawaitable(closed):
            await closed


async def _aworker(
    pool: AsyncPool[Any], query: str, budget: _Budget, tally: Tally, cfg: Config
) -> None:
    clock = time.perf_counter
    hold, think = cfg.hold_time, cfg.think_time
    while budget.take():
        t0 = clock()
        try:
            conn = await pool.acquire()
        except Exception as exc:
            tally.fail(exc)
        else:
            t1 = clock()
            tally.waits.append(t1 - t0)
            broken = False
            try:
                await _arun_query(conn, query)
            except Exception as exc:
                tally.fail(exc)
                broken = type(exc).__name__ in _BROKEN_KINDS
            else:
                tally.queries.append(clock() - t1)
                tally.done += 1
            finally:
                try:
                    # Always yield once, so a worker on a connection that
                    # never blocks cannot starve the others (and the sampler).
                    await asyncio.sleep(hold)
                finally:  # even when cancelled (Ctrl-C): give it back
                    await pool.release(conn, broken=broken)
            tally.held_at.append(t1)
            tally.holds.append(clock() - t1)
        if think:
            await asyncio.sleep(think)


async def _asettle(
    probe: Callable[[], int], want: int, within: float = SETTLE_WITHIN
) -> int:
    deadline = time.monotonic() + within
    got = probe()
    while got != want and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        got = probe()
    return got


async def _aquiet_pool(stats: Callable[[], Stats]) -> Stats:
    deadline = time.monotonic() + SETTLE_WITHIN
    s = stats()
    while (s.dialing or s.closing or s.in_use) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        s = stats()
    return s


async def _aleak_point(target: Target, pool_open: int, expected: int) -> LeakPoint:
    ledger, server = target.ledger, target.server
    driver_open = ledger.still_open()
    server_open = None
    if server is not None:
        server_open = await _asettle(lambda: server.count(ledger), expected)
    return LeakPoint(pool_open, driver_open, server_open, expected)


async def _amain(
    cfg: Config,
    target: Target,
    password: str | None,
    on_sample: Callable[[Sample], None] | None,
) -> RunResult:
    db = _open_async_db(cfg, target)
    pool = db if isinstance(db, AsyncPool) else db.pool
    try:
        await _apreflight(pool, target, password)
    except BaseException:
        await db.close()
        raise
    tallies = [Tally() for _ in range(cfg.workers)]
    budget = _Budget(cfg.requests, cfg.duration)
    sampler = _Sampler(pool.stats, tallies, on_sample)
    started = time.monotonic()
    sampler.started = started

    async def sample_loop() -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            sampler.take()

    sampling = asyncio.create_task(sample_loop())
    interrupted = False
    try:
        await asyncio.gather(
            *(_aworker(pool, target.query, budget, t, cfg) for t in tallies)
        )
    except asyncio.CancelledError:  # Ctrl-C under asyncio.run
        interrupted = True
        budget.stop()
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # handled here: report what was measured
    elapsed = time.monotonic() - started
    sampling.cancel()
    sampler.take()
    stats = await _aquiet_pool(db.stats)
    after_run = await _aleak_point(
        target, stats.open_connections, stats.open_connections
    )
    await db.close()
    closed = await _aquiet_pool(db.stats)
    after_close = await _aleak_point(target, closed.open_connections, 0)
    return RunResult(
        elapsed=elapsed,
        tallies=tallies,
        samples=sampler.samples,
        stats=stats,
        after_run=after_run,
        after_close=after_close,
        interrupted=interrupted,
    )


async def _apreflight(
    pool: AsyncPool[Any], target: Target, password: str | None
) -> None:
    """``_preflight`` for ``--async``."""
    try:
        conn = await pool.acquire()
    except Exception as exc:
        raise _unreachable(exc, target, password) from None
    try:
        await _arun_query(conn, target.query)
    except Exception as exc:
        await pool.release(conn, broken=True)
        raise _bad_query(exc, target, password) from None
    await pool.release(conn)
