"""Issue 13, item 13: ``otel.instrument`` and ``PoolCollector`` take
SQLAlchemy's ``engine.pool`` (``SqlgatePool``/``AsyncSqlgatePool``).

Real engines on SQLite, PostgreSQL and MariaDB (sync) and on aiosqlite,
psycopg and asyncpg (async): the figures exported are the sqlgate pool's, the
events (created, used) reach both exporters, and they keep coming after
``engine.pool.dispose()`` (which puts a new sqlgate pool underneath).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from sqlgate.integrations.sqlalchemy import AsyncSqlgatePool, SqlgatePool
from sqlgate.observe.otel import instrument
from sqlgate.observe.prometheus import PoolCollector
from tests.observe.test_otel import collect, value
from tests.observe.test_prometheus import get, scrape

if TYPE_CHECKING:
    from pathlib import Path

SYNC = {
    "sqlite": None,
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
ASYNC = {
    "sqlite": None,
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "asyncpg": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
}


def _server(url: str | None) -> None:
    if url is None:
        return
    port = 3306 if "mysql" in url else 5432
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"server on {port} required under CI=true: {exc!r}")
        pytest.skip(f"no server on 127.0.0.1:{port}")


def _params(names: dict[str, str | None]) -> list[Any]:
    marks = {"postgresql": pytest.mark.postgres, "asyncpg": pytest.mark.postgres}
    marks["mysql"] = pytest.mark.mysql
    return [
        pytest.param(n, marks=marks[n]) if n in marks else pytest.param(n)
        for n in names
    ]


def _check(
    reader: InMemoryMetricReader, registry: CollectorRegistry, uses: int
) -> None:
    metrics = collect(reader)
    assert value(metrics, "db.client.connection.max", "eng").value == 2
    count, state = "db.client.connection.count", "db.client.connection.state"
    assert value(metrics, count, "eng", **{state: "idle"}).value == 1
    assert value(metrics, "db.client.connection.use_time", "eng").count == uses
    samples = scrape(registry)
    assert get(samples, "sqlgate_max_open_connections", pool="eng") == 2
    assert get(samples, "sqlgate_idle_connections", pool="eng") == 1
    assert get(samples, "sqlgate_use_time_seconds_count", pool="eng") == uses


@pytest.mark.parametrize("backend", _params(SYNC))
def test_engine_pool_metrics_sync_issue13_item13(backend: str, tmp_path: Path) -> None:
    url = SYNC[backend]
    _server(url)
    engine = create_engine(
        url or f"sqlite:///{tmp_path / 'm.db'}",
        poolclass=SqlgatePool,
        max_open=2,
        max_idle=1,
        name="eng",
    )
    reader = InMemoryMetricReader()
    handle = instrument(engine.pool, MeterProvider(metric_readers=[reader]))
    registry = CollectorRegistry()
    collector = PoolCollector(engine.pool)
    registry.register(collector)
    try:
        assert handle.pool_name == "eng"
        for _ in range(3):
            with engine.connect() as c:
                assert c.execute(text("select 1")).scalar() == 1
        _check(reader, registry, uses=3)
        engine.pool.dispose()  # a new sqlgate pool underneath: still reported
        with engine.connect() as c:
            c.execute(text("select 1"))
        samples = scrape(registry)
        assert get(samples, "sqlgate_use_time_seconds_count", pool="eng") == 4
        assert get(samples, "sqlgate_dials_total", pool="eng") == 1  # the new one's
        handle.uninstrument()
        collector.remove(engine.pool)
        pool = engine.pool
        assert isinstance(pool, SqlgatePool)
        assert pool.sqlgate_pool.observer is None
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", _params(ASYNC))
def test_engine_pool_metrics_async_issue13_item13(backend: str, tmp_path: Path) -> None:
    url = ASYNC[backend]
    _server(url)

    async def run() -> None:
        engine = create_async_engine(
            url or f"sqlite+aiosqlite:///{tmp_path / 'm.db'}",
            poolclass=AsyncSqlgatePool,
            max_open=2,
            max_idle=1,
            name="eng",
        )
        reader = InMemoryMetricReader()
        handle = instrument(engine.pool, MeterProvider(metric_readers=[reader]))
        registry = CollectorRegistry()
        registry.register(PoolCollector(engine.pool))
        try:
            for _ in range(3):
                async with engine.connect() as c:
                    assert (await c.execute(text("select 1"))).scalar() == 1
            _check(reader, registry, uses=3)
            handle.uninstrument()
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_not_a_pool_is_refused_issue13_item13() -> None:
    with pytest.raises(TypeError, match="pool must be a sqlgate Pool or AsyncPool"):
        instrument(object())
    with pytest.raises(TypeError, match="pool must be a sqlgate Pool or AsyncPool"):
        PoolCollector(object())
