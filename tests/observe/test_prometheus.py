"""The Prometheus collector: scrape the text exposition, check exact values."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sqlgate import Pool, PoolTimeout
from sqlgate.observe.prometheus import PoolCollector
from tests.fakes import FakeDriver, wait_until
from tests.observe.helpers import close_clean

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_exact_figures_for_two_pools() -> None:
    d1, d2 = FakeDriver(), FakeDriver()
    a = Pool(d1.connect, name="a", max_open=2)
    b = Pool(d2.connect, name="b", max_open=7, max_idle=3)
    registry = CollectorRegistry()
    registry.register(PoolCollector(a, b))

    x = a.acquire()  # each of the first two queues for its dial
    y = a.acquire()
    a.release(y)
    s = scrape(registry)
    for name, want in {
        "sqlgate_max_open_connections": 2,
        "sqlgate_open_connections": 2,
        "sqlgate_in_use_connections": 1,
        "sqlgate_idle_connections": 1,
        "sqlgate_max_idle_connections": 2,
        "sqlgate_min_idle_connections": 0,
        "sqlgate_pending_requests": 0,
        "sqlgate_dials_total": 2,
        "sqlgate_wait_count_total": 2,
        "sqlgate_acquires_total": 2,
        "sqlgate_timeouts_total": 0,
        "sqlgate_closed_total": 0,
        "sqlgate_create_time_seconds_count": 2,
        "sqlgate_wait_time_seconds_count": 2,
        "sqlgate_use_time_seconds_count": 1,
    }.items():
        assert get(s, name, pool="a") == want, name
    assert get(s, "sqlgate_max_open_connections", pool="b") == 7
    assert get(s, "sqlgate_max_idle_connections", pool="b") == 3
    assert get(s, "sqlgate_open_connections", pool="b") == 0
    assert get(s, "sqlgate_wait_time_seconds_bucket", pool="a", le="+Inf") == 2

    y = a.acquire()  # from the idle set: no wait
    with pytest.raises(PoolTimeout):
        a.acquire(timeout=0)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(a.acquire(timeout=10)))
    t.start()
    wait_until(lambda: a.stats().waiting == 1, what="the thread to queue")
    s = scrape(registry)
    assert get(s, "sqlgate_pending_requests", pool="a") == 1
    assert get(s, "sqlgate_timeouts_total", pool="a") == 1
    a.release(x)
    t.join()
    a.release(x)
    a.release(y, broken=True)
    close_clean(a, d1)
    s = scrape(registry)
    stats = a.stats()
    assert get(s, "sqlgate_wait_count_total", pool="a") == 4 == stats.wait_count
    assert get(s, "sqlgate_wait_time_seconds_count", pool="a") == 4
    assert get(s, "sqlgate_use_time_seconds_count", pool="a") == 4
    assert get(s, "sqlgate_acquires_total", pool="a") == 4
    assert get(s, "sqlgate_broken_closed_total", pool="a") == 1
    assert get(s, "sqlgate_closed_total", pool="a") == 2
    assert get(s, "sqlgate_open_connections", pool="a") == 0
    assert get(s, "sqlgate_wait_duration_seconds_total", pool="a") == pytest.approx(
        stats.wait_duration
    )
    close_clean(b, d2)


def test_names_are_unique_and_remove_detaches() -> None:
    driver = FakeDriver()
    pool = Pool(driver.connect, name="p")
    collector = PoolCollector(pool)
    with pytest.raises(ValueError, match="name 'p' is already used by another pool"):
        collector.add(Pool(driver.connect, name="p"))
    collector.add(pool, name="p-again")
    registry = CollectorRegistry()
    registry.register(collector)
    with pool.connection():
        pass
    s = scrape(registry)
    assert get(s, "sqlgate_use_time_seconds_count", pool="p") == 1
    assert get(s, "sqlgate_use_time_seconds_count", pool="p-again") == 1
    collector.remove(pool)
    assert pool.observer is None
    s = scrape(registry)
    assert not [key for key in s if dict(key[1]).get("pool") in {"p", "p-again"}]
    close_clean(pool, driver)
