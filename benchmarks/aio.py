"""Scenario 5: 200 asyncio tasks, 10 connections, ``SELECT 1`` on PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib.util
from collections import deque
from dataclasses import dataclass
from time import perf_counter, perf_counter_ns
from typing import TYPE_CHECKING, Any

from benchmarks._common import (
    PG_DSN,
    Column,
    Settings,
    Table,
    interleaved,
    median,
    percentile,
    pg_available,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

LIMIT = "limit (10 asyncpg + Queue)"
FIFO = "floor (FIFO hand-off)"
TASKS = 200
SIZE = 10


@dataclass
class AsyncContender:
    """An async pool under test: awaitable acquire/release, the query, close."""

    name: str
    acquire: Callable[[], Awaitable[Any]]
    release: Callable[[Any], Awaitable[object]]
    work: Callable[[Any], Awaitable[object]]
    close: Callable[[], Awaitable[object]]


def asyncpg_params() -> dict[str, Any]:
    """PG_DSN (libpq conninfo) as asyncpg.connect keyword arguments."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(PG_DSN)
    params: dict[str, Any] = {
        "host": info.get("host", "127.0.0.1"),
        "port": int(str(info.get("port", 5432))),
        "user": info.get("user", "postgres"),
        "database": info.get("dbname", "postgres"),
    }
    if "password" in info:
        params["password"] = info["password"]
    return params


async def _fetch_one(conn: Any) -> None:
    await conn.fetchval("SELECT 1")


async def _psycopg_one(conn: Any) -> None:
    cur = await conn.execute("SELECT 1")
    await cur.fetchone()


async def make_sqlgate() -> AsyncContender:
    import asyncpg

    from sqlgate.aiopool import AsyncPool

    params = asyncpg_params()

    async def connect() -> Any:
        return await asyncpg.connect(**params)

    pool: Any = AsyncPool(connect, max_open=SIZE, max_idle=SIZE)
    return AsyncContender(
        "sqlgate AsyncPool", pool.acquire, pool.release, _fetch_one, pool.close
    )


async def make_asyncpg() -> AsyncContender:
    import asyncpg

    pool = await asyncpg.create_pool(min_size=SIZE, max_size=SIZE, **asyncpg_params())

    def acquire() -> Awaitable[Any]:
        return pool.acquire()  # type: ignore[no-any-return]

    return AsyncContender("asyncpg Pool", acquire, pool.release, _fetch_one, pool.close)


async def make_psycopg_pool() -> AsyncContender:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        PG_DSN,
        connection_class=AsyncConnection,
        kwargs={"autocommit": True},
        min_size=SIZE,
        max_size=SIZE,
        open=False,
    )
    await pool.open(wait=True)
    return AsyncContender(
        "psycopg_pool (async)", pool.getconn, pool.putconn, _psycopg_one, pool.close
    )


async def make_limit() -> AsyncContender:
    import asyncpg

    params = asyncpg_params()
    conns = [await asyncpg.connect(**params) for _ in range(SIZE)]
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for conn in conns:
        queue.put_nowait(conn)

    async def release(conn: Any) -> None:
        queue.put_nowait(conn)

    async def close() -> None:
        for conn in conns:
            await conn.close()

    return AsyncContender(LIMIT, queue.get, release, _fetch_one, close)


async def make_fifo() -> AsyncContender:
    """A minimal fair asyncio pool: idle deque, FIFO hand-off through futures."""
    import asyncpg

    params = asyncpg_params()
    conns = [await asyncpg.connect(**params) for _ in range(SIZE)]
    idle: deque[Any] = deque(conns)
    waiters: deque[asyncio.Future[Any]] = deque()

    async def acquire() -> Any:
        if idle:
            return idle.pop()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        return await fut

    async def release(conn: Any) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        idle.append(conn)

    async def close() -> None:
        for conn in conns:
            await conn.close()

    return AsyncContender(FIFO, acquire, release, _fetch_one, close)


async def warm(contender: AsyncContender, n: int) -> None:
    """Make ``n`` connections idle before timing."""
    conns = [await contender.acquire() for _ in range(n)]
    for conn in conns:
        await contender.work(conn)
        await contender.release(conn)


async def timed_tasks(
    contender: AsyncContender, tasks: int, seconds: float
) -> tuple[list[int], list[int], float]:
    """``tasks`` tasks loop acquire / work / release until ``seconds`` pass."""
    acquire, release, work = contender.acquire, contender.release, contender.work
    stop = False
    start = asyncio.Event()
    counts = [0] * tasks
    waits: list[int] = []
    note = waits.append

    async def body(i: int) -> None:
        await start.wait()
        n = 0
        while not stop:
            t0 = perf_counter_ns()
            conn = await acquire()
            note(perf_counter_ns() - t0)
            try:
                await work(conn)
            finally:
                await release(conn)
            n += 1
        counts[i] = n

    running = [asyncio.create_task(body(i)) for i in range(tasks)]
    await asyncio.sleep(0)
    t0 = perf_counter()
    start.set()
    await asyncio.sleep(seconds)
    stop = True
    elapsed = perf_counter() - t0
    await asyncio.gather(*running)
    return counts, waits, elapsed


def _makers() -> dict[str, Callable[[], Awaitable[AsyncContender]]]:
    makers: dict[str, Callable[[], Awaitable[AsyncContender]]] = {
        LIMIT: make_limit,
        FIFO: make_fifo,
        "asyncpg Pool": make_asyncpg,
        "psycopg_pool (async)": make_psycopg_pool,
    }
    if importlib.util.find_spec("sqlgate.aiopool") is not None:
        makers["sqlgate AsyncPool"] = make_sqlgate
    return makers


async def _run(settings: Settings, table: Table) -> None:
    makers = _makers()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in makers}
    for _, order in interleaved(list(makers), settings.rounds, settings.seed):
        for name in order:
            contender = await makers[name]()
            try:
                await warm(contender, SIZE)
                counts, waits, elapsed = await timed_tasks(
                    contender, TASKS, settings.seconds
                )
            finally:
                await contender.close()
            low = min(counts)
            results[name].append(
                {
                    "throughput": sum(counts) / elapsed,
                    "p50_ms": percentile(waits, 0.50) / 1e6,
                    "p99_ms": percentile(waits, 0.99) / 1e6,
                    "fairness": max(counts) / low if low else float("inf"),
                }
            )
    limit = [r["throughput"] for r in results[LIMIT]]
    for name, runs in results.items():
        ratios = [r["throughput"] / b for r, b in zip(runs, limit, strict=True)]
        row: dict[str, Any] = {"contender": name, "ratio": median(ratios)}
        for key in ("throughput", "p50_ms", "p99_ms", "fairness"):
            row[key] = median([r[key] for r in runs])
        table.rows.append(row)
    if "sqlgate AsyncPool" not in makers:
        table.notes.append("sqlgate.aiopool is not available yet: peers only.")
    else:
        sg = table.row("sqlgate AsyncPool")
        ap = table.row("asyncpg Pool")
        fifo = table.row(FIFO)
        table.notes.append(
            f"sqlgate AsyncPool: {sg['ratio']:.2f}x the limit (target >= 0.90), "
            f"{sg['throughput'] / ap['throughput']:.2f}x asyncpg's pool "
            f"(target >= 1), {sg['throughput'] / fifo['throughput']:.2f}x the "
            "minimal fair pool."
        )


def run(settings: Settings) -> Table:
    """Skip, saying why, when PostgreSQL is absent."""
    table = Table(
        scenario="async",
        title="5. asyncio: 200 tasks, 10 connections, SELECT 1",
        setup=(
            f"{TASKS} tasks on one event loop (the default asyncio loop) loop "
            f"acquire / `SELECT 1` / release for {settings.seconds:g} s per run "
            f"against the local PostgreSQL, through at most {SIZE} connections, "
            "warmed before timing: sqlgate.AsyncPool over asyncpg connections, "
            "asyncpg's own pool (default reset on release), psycopg_pool's "
            "AsyncConnectionPool over autocommit psycopg AsyncConnections, "
            f"the limit: {SIZE} dedicated asyncpg connections passed round through "
            "an asyncio.Queue (whose get() lets a releasing task take its "
            "connection straight back), and a minimal fair pool over the same "
            "asyncpg connections (idle deque, FIFO hand-off through futures). "
            f"{settings.rounds} rounds, interleaved; medians. "
            "Ratio = throughput / the limit's in the same round."
        ),
        columns=[
            Column("throughput", "queries/s", "{:,.0f}"),
            Column("ratio", "x limit", "{:.2f}"),
            Column("p50_ms", "p50 wait ms", "{:.2f}"),
            Column("p99_ms", "p99 wait ms", "{:.2f}"),
            Column("fairness", "max/min per task", "{:.2f}"),
        ],
        chart=("ratio", "throughput / limit (higher is better)"),
    )
    why = pg_available()
    if why is not None:
        table.skipped = why
        return table
    asyncio.run(_run(settings, table))
    return table
