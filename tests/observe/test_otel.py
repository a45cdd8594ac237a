"""OpenTelemetry metrics: names, units, and exact values under threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.semconv._incubating.metrics import db_metrics

from sqlgate import Pool, PoolTimeout
from sqlgate.observe.otel import BUCKETS, instrument
from tests.fakes import FakeDriver, wait_until
from tests.observe.helpers import close_clean

POOL = "db.client.connection.pool.name"


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, Any] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "sqlgate"
            for metric in sm.metrics:
                out[metric.name] = metric
    return out


def points(metric: Any, pool: str) -> list[Any]:
    return [p for p in metric.data.data_points if p.attributes[POOL] == pool]


def value(metrics: dict[str, Any], name: str, pool: str, **attrs: str) -> Any:
    want = {POOL: pool, **{k.replace("_", "."): v for k, v in attrs.items()}}
    found = [p for p in metrics[name].data.data_points if dict(p.attributes) == want]
    assert len(found) == 1, (name, want, metrics[name].data.data_points)
    return found[0]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


def test_names_and_units_are_the_semantic_conventions(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, max_open=3, max_idle=2, name="p")
    instrument(pool, provider)
    with pool.connection(), pool.connection():
        pass
    held = [pool.acquire() for _ in range(3)]
    with pytest.raises(PoolTimeout):  # so the timeout counter has a point
        pool.acquire(timeout=0)
    for conn in held:
        pool.release(conn)
    metrics = collect(reader)
    expected = {
        db_metrics.DB_CLIENT_CONNECTION_COUNT: "{connection}",
        db_metrics.DB_CLIENT_CONNECTION_IDLE_MAX: "{connection}",
        db_metrics.DB_CLIENT_CONNECTION_IDLE_MIN: "{connection}",
        db_metrics.DB_CLIENT_CONNECTION_MAX: "{connection}",
        db_metrics.DB_CLIENT_CONNECTION_PENDING_REQUESTS: "{request}",
        db_metrics.DB_CLIENT_CONNECTION_TIMEOUTS: "{timeout}",
        db_metrics.DB_CLIENT_CONNECTION_CREATE_TIME: "s",
        db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME: "s",
        db_metrics.DB_CLIENT_CONNECTION_USE_TIME: "s",
    }
    assert {name: m.unit for name, m in metrics.items()} == expected
    assert value(metrics, "db.client.connection.idle.max", "p").value == 2
    assert value(metrics, "db.client.connection.idle.min", "p").value == 0
    assert value(metrics, "db.client.connection.max", "p").value == 3
    assert value(metrics, "db.client.connection.timeouts", "p").value == 1
    hist = value(metrics, "db.client.connection.wait_time", "p")
    assert tuple(hist.explicit_bounds) == BUCKETS
    close_clean(pool, driver)


def test_levels_idle_used_and_pending(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, max_open=2, name="levels")
    instrument(pool, provider)
    a = pool.acquire()
    b = pool.acquire()
    pool.release(b)
    metrics = collect(reader)
    count = "db.client.connection.count"
    state = "db.client.connection.state"
    assert value(metrics, count, "levels", **{state: "idle"}).value == 1
    assert value(metrics, count, "levels", **{state: "used"}).value == 1

    b = pool.acquire()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=10)))
    waiter.start()
    wait_until(lambda: pool.stats().waiting == 1, what="the waiter to queue")
    metrics = collect(reader)
    assert value(metrics, "db.client.connection.pending_requests", "levels").value == 1
    assert value(metrics, count, "levels", **{state: "used"}).value == 2
    pool.release(a)
    waiter.join()
    assert got == [a]
    pool.release(a)
    pool.release(b)
    metrics = collect(reader)
    assert value(metrics, "db.client.connection.pending_requests", "levels").value == 0
    close_clean(pool, driver)


def test_exact_counts_under_threads(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, max_open=3, max_idle=3, name="load")
    instrument(pool, provider)
    threads, rounds = 8, 60
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(rounds):
            with pool.connection(timeout=30):
                pass

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()

    # Deterministic timeouts: every connection held, each extra acquire fails.
    held = [pool.acquire() for _ in range(3)]
    timeouts = 0
    for _ in range(5):
        try:
            pool.acquire(timeout=0.001)
        except PoolTimeout:
            timeouts += 1
    for conn in held:
        pool.release(conn)

    s = pool.stats()
    metrics = collect(reader)
    use = value(metrics, "db.client.connection.use_time", "load")
    wait = value(metrics, "db.client.connection.wait_time", "load")
    create = value(metrics, "db.client.connection.create_time", "load")
    assert timeouts == 5
    assert value(metrics, "db.client.connection.timeouts", "load").value == 5
    assert s.timeouts == 5
    assert use.count == threads * rounds + 3 == s.acquires
    assert wait.count == s.wait_count
    assert wait.count >= 5  # every timed-out acquire queued first
    assert sum(wait.bucket_counts) == wait.count
    assert create.count == s.dials == 3
    assert use.sum <= s.use_duration  # measured just before the core does
    assert s.in_use == 0
    close_clean(pool, driver)


def test_two_pools_on_one_provider_and_uninstrument(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    driver, driver2 = FakeDriver(), FakeDriver()
    one = Pool(driver.connect, name="one", max_open=4)
    two = Pool(driver2.connect, name="two", max_open=5)
    handle_one = instrument(one, provider)
    instrument(two, provider, name="db.example:5432/orders")
    with one.connection(), two.connection():
        pass
    metrics = collect(reader)
    maxes = {
        p.attributes[POOL]: p.value
        for p in metrics["db.client.connection.max"].data.data_points
    }
    assert maxes == {"one": 4, "db.example:5432/orders": 5}
    assert value(metrics, "db.client.connection.use_time", "one").count == 1
    assert (
        value(metrics, "db.client.connection.use_time", "db.example:5432/orders").count
        == 1
    )

    handle_one.uninstrument()
    handle_one.uninstrument()  # idempotent
    assert one.observer is None
    with one.connection():
        pass
    metrics = collect(reader)
    maxes = {
        p.attributes[POOL]: p.value
        for p in metrics["db.client.connection.max"].data.data_points
    }
    assert maxes == {"db.example:5432/orders": 5}
    # Cumulative: the histogram point from before stays, with no new sample.
    assert value(metrics, "db.client.connection.use_time", "one").count == 1
    close_clean(one, driver)
    close_clean(two, driver2)


def test_unlimited_max_open_reports_no_max(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, name="unlimited")
    instrument(pool, provider)
    metrics = collect(reader)
    assert "db.client.connection.max" not in metrics or not points(
        metrics["db.client.connection.max"], "unlimited"
    )
    close_clean(pool, driver)


def test_shares_the_pool_with_another_observer(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    from tests.observe.helpers import Recorder

    driver = FakeDriver()
    mine = Recorder()
    pool = Pool(driver.connect, name="shared", observer=mine)
    handle = instrument(pool, provider)
    with pool.connection():
        pass
    assert mine.count("used") == 1
    assert value(collect(reader), "db.client.connection.use_time", "shared").count == 1
    handle.uninstrument()
    assert pool.observer is mine
    close_clean(pool, driver)


@pytest.mark.parametrize("name", ["", 42])
def test_bad_name_is_refused(name: object, provider: MeterProvider) -> None:
    pool = Pool(FakeDriver().connect)
    with pytest.raises(TypeError, match="name must be a non-empty str or None, got"):
        instrument(pool, provider, name=name)  # type: ignore[arg-type]
    pool.close()
