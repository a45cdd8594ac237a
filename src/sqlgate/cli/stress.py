"""The ``sqlgate stress`` workload: workers, a sampler and the leak check.

Each worker loops: acquire a connection (timed: the acquire wait), run the
query and fetch its rows (timed: the query latency), keep the connection for
``hold_time`` more seconds, release it (acquire-to-release is the hold time),
then sleep ``think_time``. With ``timeout`` (``--timeout``), each request
goes through the handle with that deadline for the acquire and the query
together (``DB.conn(timeout=)``, then ``Conn.query(timeout=)`` with what is
left): a query still running at the deadline is cancelled on the server, and
the request counts as a deadline miss, apart from other errors.

Workers are threads over the pool of a ``sqlgate.open`` handle (so the
driver layer's reset runs on every release), or with ``--async`` asyncio
tasks over the pool of a ``sqlgate.open_async`` handle (``AsyncDB`` over
``AsyncPool``, the same driver layer).

A sampler reads the pool's :class:`~sqlgate.Stats` every ``SAMPLE_EVERY``
seconds for the live view and the plot. When the workers are done, the leak
check compares the pool's open count with the driver's own count (the ledger)
and, on a server, with the server's count; then the pool is closed and the
same three counts must all be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import math
import threading
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlgate.aiopool import AsyncPool
from sqlgate.cli._histogram import FLUSH_EVERY, Histogram
from sqlgate.cli._target import BadInput, first_line, mask_secret, settle
from sqlgate.db import DB
from sqlgate.db import open as open_db
from sqlgate.db_async import AsyncDB, open_async
from sqlgate.errors import DeadlineExceeded, Error, PoolClosed
from sqlgate.pool import Pool

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from sqlgate.cli._target import Target
    from sqlgate.stats import Stats

__all__ = [
    "MAX_SAMPLES",
    "SAMPLE_EVERY",
    "Config",
    "Failures",
    "InternalError",
    "LeakPoint",
    "RunResult",
    "Sample",
    "run",
]

#: Seconds between samples of the pool (live view, plot, peaks).
SAMPLE_EVERY = 0.1
#: The pool's name (its threads' names end with it).
POOL_NAME = "sqlgate-stress"
#: Samples kept for the report and plot (older ones thinned beyond this).
MAX_SAMPLES = 1200
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
        max_error_rate: the share of failed requests (0 to 1) above which
            the run exits 3 (deadline misses are not failures).
        timeout: each request's deadline in seconds (acquire and query
            together, through the handle), or None for none.
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
    max_error_rate: float = 0.01
    timeout: float | None = None


@dataclass
class Tally:
    """One worker's measurements (no lock: only its worker writes them).

    Durations are float seconds, kept in bounded histograms (see
    :mod:`sqlgate.cli._histogram`): memory stays flat however long the run.

    Attributes:
        waits: acquire waits of successful acquires.
        queries: query + fetch times of successful queries.
        holds: acquire-to-release times.
        wait_total: running sum of ``waits`` (read by the sampler).
        query_total: running sum of ``queries`` (read by the sampler).
        acquired: successful acquires.
        errors: failed requests by exception class name.
        done: successful requests.
        failed: failed requests.
        refused: failed requests whose acquire failed (timeout, connect error).
        missed: requests that missed their deadline (``DeadlineExceeded``):
            counted apart, neither done nor failed.
    """

    waits: Histogram = field(default_factory=Histogram)
    queries: Histogram = field(default_factory=Histogram)
    holds: Histogram = field(default_factory=Histogram)
    wait_total: float = 0.0
    query_total: float = 0.0
    acquired: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    done: int = 0
    failed: int = 0
    refused: int = 0
    missed: int = 0

    def fail(self, exc: BaseException, *, refused: bool = False) -> None:
        """Count one failed request under its exception's class name.

        A ``DeadlineExceeded`` is a deadline miss instead (``missed``).
        """
        if isinstance(exc, DeadlineExceeded):
            self.missed += 1
            return
        self.failed += 1
        self.refused += refused
        self.errors[type(exc).__name__] += 1

    def flush(self) -> None:
        """Move pending values into the histograms' buckets."""
        self.waits.flush()
        self.queries.flush()
        self.holds.flush()


@dataclass(frozen=True)
class InternalError:
    """A worker, dial or pool thread (or task) that died of an internal error.

    Not a failed request: a failed request is the database or the pool saying
    no (a driver error, a timeout). This is sqlgate or the tool breaking, and
    it fails the run (exit 1).

    Attributes:
        where: the thread's or task's name.
        error: ``Type: first line of the message``.
        traceback: the formatted traceback (for the JSON report).
    """

    where: str
    error: str
    traceback: str


class Failures:
    """Collects :class:`InternalError` s from any thread (and the event loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[InternalError] = []

    def add(self, where: str, exc: BaseException) -> None:
        """Record ``exc`` as an internal error of ``where``."""
        text = "".join(traceback.format_exception(exc)).rstrip()
        with self._lock:
            self.items.append(InternalError(where, first_line(exc), text))

    def __len__(self) -> int:
        return len(self.items)

    @contextmanager
    def watching_threads(self) -> Iterator[None]:
        """Record (instead of print) what kills any thread while inside.

        Covers the pool's dial and maintenance threads and drivers' own
        threads, which the stress tool does not start itself.
        """
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if args.exc_type is SystemExit:
                return
            name = args.thread.name if args.thread is not None else "a thread"
            exc = args.exc_value
            if exc is None:  # pragma: no cover - CPython always passes it
                exc = args.exc_type()
            self.add(name, exc)

        threading.excepthook = hook
        try:
            yield
        finally:
            threading.excepthook = previous

    def loop_handler(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        """An event-loop exception handler: a pool task that died."""
        exc = context.get("exception")
        if exc is None:
            exc = RuntimeError(str(context.get("message", "event loop error")))
        task = context.get("task") or context.get("future")
        where = task.get_name() if isinstance(task, asyncio.Task) else "event loop"
        self.add(where, exc)


@dataclass(frozen=True, slots=True)
class Sample:
    """The pool and the workload at one moment (``t``: seconds since start).

    ``wait_ms`` and ``query_ms`` are the mean acquire wait and query latency
    of the requests completed since the previous sample (None: none were).
    """

    t: float
    completed: int
    errors: int
    in_use: int
    idle: int
    waiting: int
    open: int
    wait_ms: float | None = None
    query_ms: float | None = None


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
    """Everything a run measured, before it is shaped into a report.

    Attributes:
        elapsed: the workers' wall time, seconds.
        tallies: one per worker.
        samples: the pool over time (at most ``MAX_SAMPLES``).
        stats: the pool's stats once the workers were done.
        after_run: the leak check with the pool still open.
        after_close: the leak check after close.
        peak_in_use: most connections held by workers at one moment (exact).
        internal: internal errors (workers, pool threads, tasks).
        interrupted: Ctrl-C stopped the run early.
    """

    elapsed: float
    tallies: list[Tally]
    samples: list[Sample]
    stats: Stats
    after_run: LeakPoint
    after_close: LeakPoint
    peak_in_use: int = 0
    internal: list[InternalError] = field(default_factory=list)
    interrupted: bool = False


class _Budget:
    """Hands out requests (a fixed number, or until a deadline) and stops them.

    ``pause`` is the workers' sleep (hold and think time): it returns early
    once the run stops, so a long ``--hold-time`` never delays the report.
    """

    def __init__(self, requests: int | None, duration: float | None) -> None:
        self._left = requests
        self._lock = threading.Lock()
        self._event = threading.Event()
        self.deadline = (
            time.monotonic() + duration if duration is not None else math.inf
        )
        self.stopped = False
        self.pause = self._event.wait

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

    def wait_for_deadline(self) -> None:
        """Block until the deadline (or ``stop``); then stop the workers."""
        if self.deadline < math.inf:
            self._event.wait(max(0.0, self.deadline - time.monotonic()))
            self.stop()

    def stop(self) -> None:
        self.stopped = True
        self._event.set()


class _Gauge:
    """Connections held by workers right now, and the most at one moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            if self.now > self.peak:
                self.peak = self.now

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


def _run_query(conn: Any, query: str) -> None:
    cur = conn.cursor()
    try:
        cur.execute(query)
        if cur.description is not None:
            cur.fetchall()
    finally:
        cur.close()


def _worker(
    pool: Pool[Any] | DB,
    query: str,
    budget: _Budget,
    tally: Tally,
    cfg: Config,
    gauge: _Gauge,
) -> None:
    """One worker thread's loop (see the module docstring).

    A failed acquire counts as a failed request only when sqlgate refused it
    (``sqlgate.Error``: timeout, connect error, circuit open). Anything else
    raised by the pool (on acquire or release) is an internal error: it
    propagates and kills the worker, and ``_guarded`` records it.
    """
    if cfg.timeout is not None:
        assert isinstance(pool, DB)  # _open_db: --timeout needs the handle
        return _deadline_worker(pool, query, budget, tally, cfg, gauge)
    assert isinstance(pool, Pool)
    clock, pause = time.perf_counter, budget.pause
    hold, think = cfg.hold_time, cfg.think_time
    add_wait = tally.waits.pending.append
    add_query = tally.queries.pending.append
    add_hold = tally.holds.pending.append
    pending = 0
    while budget.take():
        t0 = clock()
        try:
            conn = pool.acquire()
        except Error as exc:
            if not (budget.stopped and isinstance(exc, PoolClosed)):
                tally.fail(exc, refused=True)
        else:
            t1 = clock()
            gauge.enter()
            wait = t1 - t0
            add_wait(wait)
            tally.wait_total += wait
            tally.acquired += 1
            broken = False
            try:
                _run_query(conn, query)
            except Exception as exc:
                tally.fail(exc)
                broken = type(exc).__name__ in _BROKEN_KINDS
            else:
                spent = clock() - t1
                add_query(spent)
                tally.query_total += spent
                tally.done += 1
            if hold:
                pause(hold)
            gauge.leave()
            pool.release(conn, broken=broken)
            add_hold(clock() - t1)
            pending += 1
            if pending >= FLUSH_EVERY:
                tally.flush()
                pending = 0
        if think:
            pause(think)
    tally.flush()


def _deadline_worker(
    db: DB, query: str, budget: _Budget, tally: Tally, cfg: Config, gauge: _Gauge
) -> None:
    """``_worker`` with ``--timeout``: each request through the handle, one deadline."""
    clock, pause = time.perf_counter, budget.pause
    hold, think = cfg.hold_time, cfg.think_time
    timeout = cfg.timeout
    assert timeout is not None
    add_wait = tally.waits.pending.append
    add_query = tally.queries.pending.append
    add_hold = tally.holds.pending.append
    pending = 0
    while budget.take():
        t0 = clock()
        try:
            conn = db.conn(timeout=timeout)
        except Error as exc:
            if not (budget.stopped and isinstance(exc, PoolClosed)):
                tally.fail(exc, refused=not isinstance(exc, DeadlineExceeded))
        else:
            t1 = clock()
            gauge.enter()
            wait = t1 - t0
            add_wait(wait)
            tally.wait_total += wait
            tally.acquired += 1
            try:
                conn.query(query, timeout=max(0.0, timeout - wait)).all()
            except Exception as exc:
                tally.fail(exc)
            else:
                spent = clock() - t1
                add_query(spent)
                tally.query_total += spent
                tally.done += 1
            if hold:
                pause(hold)
            gauge.leave()
            conn.close()  # discards the connection when the handle judged it lost
            add_hold(clock() - t1)
            pending += 1
            if pending >= FLUSH_EVERY:
                tally.flush()
                pending = 0
        if think:
            pause(think)
    tally.flush()


def _guarded(failures: Failures, target: Callable[..., None], *args: Any) -> None:
    """Run a worker; record what kills it (an internal error) instead of dying."""
    try:
        target(*args)
    except BaseException as exc:
        failures.add(threading.current_thread().name, exc)


class _Sampler:
    """Samples the pool every ``SAMPLE_EVERY`` s; calls ``on_sample`` each time.

    It keeps at most ``MAX_SAMPLES``: when full, every other sample is
    dropped and from then on only every other one is kept (each sample holds
    running totals, so rates between kept samples stay exact). The live view
    still sees every sample.
    """

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
        self._stride = 1  # keep every _stride-th sample
        self._taken = 0
        self._last = (0, 0.0, 0, 0.0)  # acquired, wait_total, done, query_total
        self._stop = threading.Event()
        self.started = time.monotonic()
        self._thread = threading.Thread(
            target=self._loop, name="sqlgate-stress-sampler", daemon=True
        )

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def take(self, *, keep: bool = False) -> None:
        s = self._stats()
        tallies = self._tallies
        acquired = sum(t.acquired for t in tallies)
        wait_total = sum(t.wait_total for t in tallies)
        done = sum(t.done for t in tallies)
        query_total = sum(t.query_total for t in tallies)
        a0, w0, d0, q0 = self._last
        self._last = (acquired, wait_total, done, query_total)
        sample = Sample(
            t=time.monotonic() - self.started,
            completed=done,
            errors=sum(t.failed for t in tallies),
            in_use=s.in_use,
            idle=s.idle,
            waiting=s.waiting,
            open=s.open_connections,
            wait_ms=(wait_total - w0) / (acquired - a0) * 1000
            if acquired > a0
            else None,
            query_ms=(query_total - q0) / (done - d0) * 1000 if done > d0 else None,
        )
        self._taken += 1
        if keep or self._taken % self._stride == 0:
            self.samples.append(sample)
            if len(self.samples) >= MAX_SAMPLES:
                del self.samples[1::2]
                self._stride *= 2
        if self._on_sample is not None:
            self._on_sample(sample)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.take()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.take(keep=True)  # the final figures


def _knobs(cfg: Config) -> dict[str, Any]:
    """The pool knobs a run sets, for threads and asyncio alike."""
    return {
        "max_open": cfg.max_open,
        "max_idle": cfg.max_idle,
        "acquire_timeout": cfg.acquire_timeout,
        "name": POOL_NAME,
    }


def _open_db(cfg: Config, target: Target) -> DB | Pool[Any]:
    """The handle to drive: ``sqlgate.open`` over the target's connect callable.

    A user's ``--connect`` callable may return any DB-API connection, which
    the database handle's driver adapters may not know: it gets a plain
    :class:`sqlgate.Pool`.
    """
    if target.user_connect:
        _no_timeout_with_connect(cfg)
        return Pool(target.connect, **_knobs(cfg))
    return open_db(target.connect, **_knobs(cfg))


def _no_timeout_with_connect(cfg: Config) -> None:
    if cfg.timeout is not None:
        raise BadInput(
            "--timeout needs sqlgate's driver adapters (to cancel on the "
            "server): it cannot be combined with --connect"
        )


def _open_async_db(cfg: Config, target: Target) -> AsyncDB | AsyncPool[Any]:
    """``_open_db`` for ``--async``: ``sqlgate.open_async`` (or a bare AsyncPool)."""
    if target.user_connect:
        _no_timeout_with_connect(cfg)
        return AsyncPool(target.connect, **_knobs(cfg))
    return open_async(target.connect, **_knobs(cfg))


def _preflight(
    pool: Pool[Any] | DB,
    target: Target,
    password: str | None,
    timeout: float | None = None,
) -> None:
    """One request before the clock starts: a bad query or DSN fails here.

    With ``timeout`` (through the handle), a query that misses it passes:
    it ran, and the run will count its misses.

    Raises:
        BadInput: the connection or the query failed (the password masked).
    """
    if isinstance(pool, DB):
        try:
            pool.ping()
        except Exception as exc:
            raise _unreachable(exc, target, password) from None
        try:
            pool.query(target.query, timeout=timeout).all()
        except DeadlineExceeded:
            pass
        except Exception as exc:
            raise _bad_query(exc, target, password) from None
        return
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
    """The preflight's first connection failed: the driver's reason, password masked."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    message = mask_secret(first_line(cause), password)
    return BadInput(f"cannot connect to {target.shown}: {message}")


def _bad_query(exc: Exception, target: Target, password: str | None) -> BadInput:
    """The preflight's query failed: the driver's reason, password masked."""
    message = mask_secret(first_line(exc), password)
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
    on_interrupt: Callable[[], None] | None = None,
) -> RunResult:
    """Drive the pool, then check it for leaks before and after close.

    Ctrl-C during the run stops the workers and still checks and reports
    (``interrupted``); Ctrl-C before the run starts (while connecting) or a
    second one propagates as KeyboardInterrupt.

    Args:
        cfg: the run's settings.
        target: what to connect to, the query and the witnesses.
        password: a secret to mask in any error message.
        on_sample: called from the sampler thread with each sample.
        on_interrupt: called (in the main thread) when a Ctrl-C stops the
            run, before the wind-down.

    Returns:
        The measurements; the pool is closed.

    Raises:
        BadInput: the first connection or query failed.
    """
    failures = Failures()
    before = set(threading.enumerate())
    with failures.watching_threads():
        if cfg.use_async:
            result = _run_async(
                cfg, target, failures, password, on_sample, on_interrupt
            )
        else:
            result = _run_threads(
                cfg, target, failures, password, on_sample, on_interrupt
            )
        # A pool thread may die just after the pool is closed: it must not
        # slip past the report. (The pool's threads end with its close.)
        _join_new_threads(before, within=SETTLE_WITHIN)
    result.internal = list(failures.items)
    return result


def _join_new_threads(before: set[threading.Thread], within: float) -> None:
    """Wait up to ``within`` s for the run's threads to end.

    The run's: started since ``before``, and either the pool's own (dial and
    maintenance threads carry its name) or non-daemon (a driver's). Process
    -wide helpers (sqlgate's reaper) live on and are not waited for.
    """
    deadline = time.monotonic() + within
    me = threading.current_thread()
    for thread in threading.enumerate():
        if thread in before or thread is me:
            continue
        if thread.daemon and not thread.name.endswith(POOL_NAME):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))


def _run_threads(
    cfg: Config,
    target: Target,
    failures: Failures,
    password: str | None,
    on_sample: Callable[[Sample], None] | None,
    on_interrupt: Callable[[], None] | None,
) -> RunResult:
    db = _open_db(cfg, target)
    pool = db if isinstance(db, Pool) else db.pool
    try:
        _preflight(pool if cfg.timeout is None else db, target, password, cfg.timeout)
    except BaseException:
        db.close()
        raise
    tallies = [Tally() for _ in range(cfg.workers)]
    budget = _Budget(cfg.requests, cfg.duration)
    gauge = _Gauge()
    sampler = _Sampler(pool.stats, tallies, on_sample)
    threads = [
        threading.Thread(
            target=_guarded,
            args=(
                failures,
                _worker,
                pool if cfg.timeout is None else db,
                target.query,
                budget,
                tally,
                cfg,
                gauge,
            ),
            name=f"sqlgate-stress-{i}",
            daemon=True,
        )
        for i, tally in enumerate(tallies)
    ]
    started = time.monotonic()
    interrupted = False
    try:
        # Started inside the try: a Ctrl-C while they start is handled too.
        sampler.start()
        for thread in threads:
            thread.start()
        budget.wait_for_deadline()
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        # Stop, let every worker give its connection back, check, report.
        # A second Ctrl-C propagates from here (the caller exits 130).
        interrupted = True
        budget.stop()
        if on_interrupt is not None:
            on_interrupt()
        for thread in threads:
            if thread.is_alive():
                thread.join()
    elapsed = time.monotonic() - started
    sampler.stop()
    return _finish(db, target, tallies, sampler.samples, elapsed, interrupted, gauge)


def _finish(
    db: DB | Pool[Any],
    target: Target,
    tallies: list[Tally],
    samples: list[Sample],
    elapsed: float,
    interrupted: bool,
    gauge: _Gauge,
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
        peak_in_use=gauge.peak,
        interrupted=interrupted,
    )


def _run_async(
    cfg: Config,
    target: Target,
    failures: Failures,
    password: str | None,
    on_sample: Callable[[Sample], None] | None,
    on_interrupt: Callable[[], None] | None,
) -> RunResult:
    """``run`` with asyncio tasks over ``open_async``'s pool (a fresh event loop)."""
    return asyncio.run(_amain(cfg, target, failures, password, on_sample, on_interrupt))


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


async def _apause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if the run stops; always yields once."""
    if not seconds:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _aworker(
    pool: AsyncPool[Any] | AsyncDB,
    query: str,
    budget: _Budget,
    stop: asyncio.Event,
    tally: Tally,
    cfg: Config,
    gauge: _Gauge,
) -> None:
    """``_worker`` for asyncio (the same rules for failures and errors)."""
    if cfg.timeout is not None:
        assert isinstance(pool, AsyncDB)  # _open_async_db: --timeout needs it
        return await _adeadline_worker(pool, query, budget, stop, tally, cfg, gauge)
    assert isinstance(pool, AsyncPool)
    clock = time.perf_counter
    hold, think = cfg.hold_time, cfg.think_time
    add_wait = tally.waits.pending.append
    add_query = tally.queries.pending.append
    add_hold = tally.holds.pending.append
    pending = 0
    try:
        while budget.take():
            t0 = clock()
            try:
                conn = await pool.acquire()
            except Error as exc:
                if not (budget.stopped and isinstance(exc, PoolClosed)):
                    tally.fail(exc, refused=True)
            else:
                t1 = clock()
                gauge.now += 1  # one thread: no lock needed
                gauge.peak = max(gauge.peak, gauge.now)
                wait = t1 - t0
                add_wait(wait)
                tally.wait_total += wait
                tally.acquired += 1
                broken = False
                try:
                    await _arun_query(conn, query)
                except Exception as exc:
                    tally.fail(exc)
                    broken = type(exc).__name__ in _BROKEN_KINDS
                else:
                    spent = clock() - t1
                    add_query(spent)
                    tally.query_total += spent
                    tally.done += 1
                finally:
                    try:
                        # Always yield once, so a worker on a connection that
                        # never blocks cannot starve the others (and the sampler).
                        await _apause(stop, hold)
                    finally:  # even when cancelled (Ctrl-C): give it back
                        gauge.now -= 1
                        await pool.release(conn, broken=broken)
                add_hold(clock() - t1)
                pending += 1
                if pending >= FLUSH_EVERY:
                    tally.flush()
                    pending = 0
            if think:
                await _apause(stop, think)
    finally:
        tally.flush()


async def _adeadline_worker(
    db: AsyncDB,
    query: str,
    budget: _Budget,
    stop: asyncio.Event,
    tally: Tally,
    cfg: Config,
    gauge: _Gauge,
) -> None:
    """``_deadline_worker`` for asyncio."""
    clock = time.perf_counter
    hold, think = cfg.hold_time, cfg.think_time
    timeout = cfg.timeout
    assert timeout is not None
    add_wait = tally.waits.pending.append
    add_query = tally.queries.pending.append
    add_hold = tally.holds.pending.append
    pending = 0
    try:
        while budget.take():
            t0 = clock()
            try:
                conn = await db.conn(timeout=timeout)
            except Error as exc:
                if not (budget.stopped and isinstance(exc, PoolClosed)):
                    tally.fail(exc, refused=not isinstance(exc, DeadlineExceeded))
            else:
                t1 = clock()
                gauge.now += 1  # one thread: no lock needed
                gauge.peak = max(gauge.peak, gauge.now)
                wait = t1 - t0
                add_wait(wait)
                tally.wait_total += wait
                tally.acquired += 1
                try:
                    rows = await conn.query(query, timeout=max(0.0, timeout - wait))
                    await rows.all()
                except Exception as exc:
                    tally.fail(exc)
                else:
                    spent = clock() - t1
                    add_query(spent)
                    tally.query_total += spent
                    tally.done += 1
                finally:
                    try:
                        await _apause(stop, hold)
                    finally:  # even when cancelled (Ctrl-C): give it back
                        gauge.now -= 1
                        await conn.close()
                add_hold(clock() - t1)
                pending += 1
                if pending >= FLUSH_EVERY:
                    tally.flush()
                    pending = 0
            if think:
                await _apause(stop, think)
    finally:
        tally.flush()


async def _aguarded(failures: Failures, coro: Awaitable[None]) -> None:
    """``_guarded`` for a task (a cancel is not an error: it propagates)."""
    try:
        await coro
    except Exception as exc:
        task = asyncio.current_task()
        failures.add(task.get_name() if task is not None else "a task", exc)


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
    failures: Failures,
    password: str | None,
    on_sample: Callable[[Sample], None] | None,
    on_interrupt: Callable[[], None] | None,
) -> RunResult:
    asyncio.get_running_loop().set_exception_handler(failures.loop_handler)
    db = _open_async_db(cfg, target)
    pool = db if isinstance(db, AsyncPool) else db.pool
    try:
        await _apreflight(
            pool if cfg.timeout is None else db, target, password, cfg.timeout
        )
    except BaseException:
        await db.close()
        await _await_driver_threads()
        raise
    tallies = [Tally() for _ in range(cfg.workers)]
    budget = _Budget(cfg.requests, cfg.duration)
    stop = asyncio.Event()
    gauge = _Gauge()
    sampler = _Sampler(pool.stats, tallies, on_sample)
    started = time.monotonic()
    sampler.started = started

    async def sample_loop() -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            sampler.take()

    async def stop_at_deadline() -> None:
        if budget.deadline < math.inf:
            await asyncio.sleep(max(0.0, budget.deadline - time.monotonic()))
            budget.stop()
            stop.set()

    sampling = asyncio.create_task(sample_loop())
    stopper = asyncio.create_task(stop_at_deadline())
    workers = [
        asyncio.create_task(
            _aguarded(
                failures,
                _aworker(
                    pool if cfg.timeout is None else db,
                    target.query,
                    budget,
                    stop,
                    t,
                    cfg,
                    gauge,
                ),
            ),
            name=f"sqlgate-stress-{i}",
        )
        for i, t in enumerate(tallies)
    ]
    interrupted = False
    try:
        await asyncio.gather(*workers)
    except asyncio.CancelledError:  # Ctrl-C under asyncio.run
        interrupted = True
        budget.stop()
        stop.set()
        if on_interrupt is not None:
            on_interrupt()
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # handled here: report what was measured
        # gather cancelled the workers; each gives its connection back.
        await asyncio.gather(*workers, return_exceptions=True)
    elapsed = time.monotonic() - started
    stopper.cancel()
    sampling.cancel()
    sampler.take(keep=True)
    stats = await _aquiet_pool(db.stats)
    after_run = await _aleak_point(
        target, stats.open_connections, stats.open_connections
    )
    await db.close()
    closed = await _aquiet_pool(db.stats)
    after_close = await _aleak_point(target, closed.open_connections, 0)
    gc.collect()  # a pool task's exception nobody retrieved reaches the handler
    return RunResult(
        elapsed=elapsed,
        tallies=tallies,
        samples=sampler.samples,
        stats=stats,
        after_run=after_run,
        after_close=after_close,
        peak_in_use=gauge.peak,
        interrupted=interrupted,
    )


async def _await_driver_threads(within: float = SETTLE_WITHIN) -> None:
    """Let drivers' own threads started for this loop finish before it closes.

    aiosqlite answers from a thread; one still running when ``asyncio.run``
    closes the loop dies with "Event loop is closed" (a traceback on stderr).
    """
    deadline = time.monotonic() + within
    main = threading.main_thread()
    while time.monotonic() < deadline:
        busy = [
            t
            for t in threading.enumerate()
            if t is not main and not t.daemon and t.is_alive()
        ]
        if not busy:
            return
        await asyncio.sleep(0.01)


async def _apreflight(
    pool: AsyncPool[Any] | AsyncDB,
    target: Target,
    password: str | None,
    deadline: float | None = None,
) -> None:
    """``_preflight`` for ``--async``."""
    if isinstance(pool, AsyncDB):
        try:
            await pool.ping()
        except Exception as exc:
            raise _unreachable(exc, target, password) from None
        try:
            await (await pool.query(target.query, timeout=deadline)).all()
        except DeadlineExceeded:
            pass
        except Exception as exc:
            raise _bad_query(exc, target, password) from None
        return
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
