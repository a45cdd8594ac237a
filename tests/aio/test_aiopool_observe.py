"""Exporters over an AsyncPool: OpenTelemetry metrics and the Prometheus
collector, with exact figures under 200 tasks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.metrics")
pytest.importorskip("prometheus_client")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sqlgate import PoolTimeout
from sqlgate.aiopool import AsyncPool
from sqlgate.observe.otel import instrument
from sqlgate.observe.prometheus import PoolCollector
from tests.aio.fakes import AsyncFakeConn, AsyncFakeDriver, close_clean, until

POOL = "db.client.connection.pool.name"
TASKS, ROUNDS, MAX_OPEN = 200, 5, 10


def otel_value(reader: InMemoryMetricReader, name: str, **attrs: str) -> Any:
    data = reader.get_metrics_data()
    assert data is not None
    found = [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
        if dict(point.attributes or {}) == {POOL: "aload", **attrs}
    ]
    assert len(found) == 1, (name, attrs, found)
    return found[0]


async def load(pool: AsyncPool[AsyncFakeConn]) -> None:
    """200 tasks, each taking a connection 5 times and yielding while it holds it."""
    start = asyncio.Event()

    async def work() -> None:
        await start.wait()
        for _ in range(ROUNDS):
            async with pool.connection(timeout=30):
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(work()) for _ in range(TASKS)]
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*tasks)


async def timeouts_and_cancels(pool: AsyncPool[AsyncFakeConn]) -> tuple[int, int]:
    """With every connection held: 4 acquires time out, 3 queued ones are cancelled."""
    held = [await pool.acquire() for _ in range(MAX_OPEN)]
    timeouts = 0
    for limit in (0, 0, 0.001, 0.001):
        try:
            await pool.acquire(timeout=limit)
        except PoolTimeout:
            timeouts += 1
    queued = [asyncio.create_task(pool.acquire(timeout=30)) for _ in range(3)]
    await until(lambda: pool.stats().waiting == 3, "three waiters")
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    for conn in held:
        await pool.release(conn)
    return timeouts, len(queued)


async def test_otel_histograms_and_timeouts_are_exact_under_200_tasks() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    driver = AsyncFakeDriver()
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_open=MAX_OPEN, max_idle=MAX_OPEN, name="aload"
    )
    handle = instrument(pool, provider)
    assert "acquire" in vars(pool)  # the observer put the pool on the hooked path
    await load(pool)
    timeouts, cancels = await timeouts_and_cancels(pool)

    # Levels are read at collection time.
    held = [await pool.acquire() for _ in range(MAX_OPEN)]
    queued = [asyncio.create_task(pool.acquire(timeout=30)) for _ in range(4)]
    await until(lambda: pool.stats().waiting == 4, "four waiters")
    count = "db.client.connection.count"
    state = "db.client.connection.state"
    assert otel_value(reader, "db.client.connection.pending_requests").value == 4
    assert otel_value(reader, count, **{state: "used"}).value == 10
    assert otel_value(reader, "db.client.connection.max").value == MAX_OPEN
    for conn in held:
        await pool.release(conn)  # each goes straight to a queued task
    for conn in await asyncio.gather(*queued):
        await pool.release(conn)

    s = pool.stats()
    use = otel_value(reader, "db.client.connection.use_time")
    wait = otel_value(reader, "db.client.connection.wait_time")
    create = otel_value(reader, "db.client.connection.create_time")
    assert timeouts == 4
    assert otel_value(reader, "db.client.connection.timeouts").value == 4 == s.timeouts
    acquires = TASKS * ROUNDS + 2 * MAX_OPEN + 4
    assert use.count == acquires == s.acquires
    assert wait.count == s.wait_count
    assert wait.count >= timeouts + cancels + 4  # each of those queued first
    assert sum(wait.bucket_counts) == wait.count
    assert create.count == s.dials == MAX_OPEN == driver.opened
    assert use.sum <= s.use_duration  # measured just before the core does
    assert otel_value(reader, count, **{state: "idle"}).value == 10
    assert otel_value(reader, "db.client.connection.pending_requests").value == 0

    handle.uninstrument()
    assert pool.observer is None
    assert "acquire" not in vars(pool)  # back on the plain path
    await close_clean(pool, driver)


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            assert sample.labels.get("pool") == "aprom", sample
            if "le" not in sample.labels:
                out[sample.name] = sample.value
    return out


async def test_prometheus_collector_reports_an_async_pool_exactly() -> None:
    driver = AsyncFakeDriver()
    pool: AsyncPool[AsyncFakeConn] = AsyncPool(
        driver.aconnect, max_open=MAX_OPEN, max_idle=MAX_OPEN, name="aprom"
    )
    collector = PoolCollector(pool)
    registry = CollectorRegistry()
    registry.register(collector)
    await load(pool)
    timeouts, _ = await timeouts_and_cancels(pool)
    s = pool.stats()
    got = scrape(registry)
    assert timeouts == 4
    assert got["sqlgate_timeouts_total"] == 4
    assert got["sqlgate_acquires_total"] == s.acquires == TASKS * ROUNDS + MAX_OPEN
    assert got["sqlgate_use_time_seconds_count"] == s.acquires
    assert got["sqlgate_wait_time_seconds_count"] == s.wait_count
    assert got["sqlgate_wait_count_total"] == s.wait_count
    assert got["sqlgate_create_time_seconds_count"] == MAX_OPEN == s.dials
    assert got["sqlgate_in_use_connections"] == 0
    assert got["sqlgate_idle_connections"] == MAX_OPEN
    assert got["sqlgate_max_open_connections"] == MAX_OPEN
    collector.remove(pool)
    assert pool.observer is None
    await close_clean(pool, driver)
