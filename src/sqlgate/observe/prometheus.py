"""A Prometheus collector for one or more sqlgate pools.

``PoolCollector`` exposes, with a ``pool`` label on every sample, the figures
of ``Pool.stats()`` (Go's ``DBStats`` and the rest) read at scrape time, and
three histograms fed by an observer (see ``sqlgate.observe``)::

    sqlgate_max_open_connections        gauge    max_open (0 = unlimited)
    sqlgate_open_connections            gauge    in use + idle + dialing + closing
    sqlgate_in_use_connections          gauge
    sqlgate_idle_connections            gauge
    sqlgate_max_idle_connections        gauge    the effective idle cap
    sqlgate_min_idle_connections        gauge    the effective warm floor
    sqlgate_pending_requests            gauge    callers queued now
    sqlgate_dialing_connections         gauge
    sqlgate_closing_connections         gauge
    sqlgate_circuit_open                gauge    1 while the breaker is open
    sqlgate_wait_count_total            counter  acquires that queued
    sqlgate_wait_duration_seconds_total counter
    sqlgate_max_idle_closed_total       counter  (and max_idle_time, max_lifetime,
                                                 broken: one counter each)
    sqlgate_closed_total                counter  connections closed, any reason
    sqlgate_acquires_total              counter
    sqlgate_timeouts_total              counter
    sqlgate_dials_total                 counter
    sqlgate_dial_failures_total         counter
    sqlgate_circuit_opens_total         counter
    sqlgate_leaks_reclaimed_total       counter
    sqlgate_dial_duration_seconds_total counter
    sqlgate_use_duration_seconds_total  counter
    sqlgate_create_time_seconds         histogram  per dial
    sqlgate_wait_time_seconds           histogram  per queued acquire
    sqlgate_use_time_seconds            histogram  per release

Example::

    from prometheus_client import REGISTRY
    REGISTRY.register(PoolCollector(pool))

Requires the ``prometheus`` extra (``prometheus-client``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sqlgate.observe import Observer, attach, detach, observed

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client import Metric

    from sqlgate.stats import Stats

__all__ = ["BUCKETS", "PoolCollector"]

#: Histogram bucket boundaries (seconds).
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

#: (Stats field, metric name without prefix, help) for gauges.
_GAUGES = (
    (
        "max_open_connections",
        "max_open_connections",
        "Most connections open (0 = unlimited).",
    ),
    ("open_connections", "open_connections", "In use + idle + dialing + closing."),
    ("in_use", "in_use_connections", "Connections handed out now."),
    ("idle", "idle_connections", "Connections idle now."),
    ("max_idle", "max_idle_connections", "The effective idle cap."),
    ("min_idle", "min_idle_connections", "The effective warm floor."),
    ("waiting", "pending_requests", "Callers queued for a connection now."),
    ("dialing", "dialing_connections", "Connection attempts in flight now."),
    ("closing", "closing_connections", "Connections being closed now."),
    ("circuit_open", "circuit_open", "1 while the circuit breaker is open."),
)
#: (Stats field, metric name without prefix and _total, help) for counters.
_COUNTERS = (
    ("wait_count", "wait_count", "Acquires that had to queue."),
    ("wait_duration", "wait_duration_seconds", "Total seconds spent queued."),
    ("max_idle_closed", "max_idle_closed", "Closed because the idle set was full."),
    ("max_idle_time_closed", "max_idle_time_closed", "Closed by conn_max_idle_time."),
    ("max_lifetime_closed", "max_lifetime_closed", "Closed by conn_max_lifetime."),
    ("broken_closed", "broken_closed", "Closed because released broken."),
    ("closed", "closed", "Connections closed, for any reason."),
    ("acquires", "acquires", "Connections handed out."),
    ("timeouts", "timeouts", "Acquires that gave up with PoolTimeout."),
    ("dials", "dials", "Connection attempts that succeeded."),
    ("dial_failures", "dial_failures", "Connection attempts that failed."),
    ("circuit_opens", "circuit_opens", "Times the circuit breaker opened."),
    ("leaks_reclaimed", "leaks_reclaimed", "Unreleased connections reclaimed."),
    ("dial_duration", "dial_duration_seconds", "Total seconds spent dialing."),
    ("use_duration", "use_duration_seconds", "Total seconds connections were held."),
)


class _Pool(Protocol):
    """What the collector needs of a ``Pool`` or ``AsyncPool``."""

    observer: Observer | None

    @property
    def name(self) -> str: ...

    def stats(self) -> Stats: ...


class _Feed:
    """The observer attached to one pool: events into the labelled histograms."""

    __slots__ = ("_create", "_use", "_wait")

    def __init__(self, collector: PoolCollector, name: str) -> None:
        self._create = collector._create.labels(pool=name)
        self._wait = collector._wait.labels(pool=name)
        self._use = collector._use.labels(pool=name)

    def created(self, seconds: float) -> None:
        """Observe a dial time."""
        self._create.observe(seconds)

    def waited(self, seconds: float) -> None:
        """Observe a wait time."""
        self._wait.observe(seconds)

    def used(self, seconds: float) -> None:
        """Observe a use time."""
        self._use.observe(seconds)

    def timed_out(self) -> None:
        """Timeouts are read from the pool's stats; nothing to do."""


class PoolCollector(Collector):
    """Exposes the figures of one or more pools; register it with a registry."""

    def __init__(self, *pools: object, prefix: str = "sqlgate") -> None:
        """Create a collector, reporting ``pools`` under their ``name``.

        Args:
            pools: pools to report (more can be added with ``add``).
            prefix: the metric name prefix.
        """
        self._prefix = prefix
        self._lock = threading.Lock()
        #: label -> (pool, its observer).
        self._pools: dict[str, tuple[_Pool, _Feed]] = {}
        self._create, self._wait, self._use = (
            Histogram(
                f"{prefix}_{name}_seconds",
                description,
                ["pool"],
                registry=None,
                buckets=BUCKETS,
            )
            for name, description in (
                ("create_time", "Seconds each new connection took to dial."),
                ("wait_time", "Seconds each queued acquire waited."),
                ("use_time", "Seconds each connection was held."),
            )
        )
        for pool in pools:
            self.add(pool)

    def add(self, pool: object, name: str | None = None) -> None:
        """Report ``pool`` with ``pool=name`` (default: the pool's ``name``).

        Args:
            pool: a ``Pool``, an ``AsyncPool``, or SQLAlchemy's
                ``engine.pool`` when it is sqlgate's.
            name: the ``pool`` label; None uses the pool's ``name``.

        Raises:
            TypeError: ``pool`` is none of those.
            ValueError: another pool is already reported under that name.
        """
        pool = observed(pool)
        label = pool.name if name is None else name
        with self._lock:
            if label in self._pools:
                raise ValueError(f"name {label!r} is already used by another pool")
            feed = _Feed(self, label)
            self._pools[label] = (pool, feed)
        attach(pool, feed)

    def remove(self, pool: object) -> None:
        """Stop reporting ``pool``; a no-op if it is not reported."""
        pool = observed(pool)
        with self._lock:
            for label, (known, feed) in list(self._pools.items()):
                if known is pool:
                    del self._pools[label]
                    detach(pool, feed)
                    for hist in (self._create, self._wait, self._use):
                        hist.remove(label)

    def _snapshots(self) -> Iterator[tuple[str, Stats]]:
        with self._lock:
            pools = [(label, pool) for label, (pool, _) in self._pools.items()]
        for label, pool in pools:
            yield label, pool.stats()

    def collect(self) -> Iterable[Metric]:
        """Yield every metric family, one sample per pool (scrape time)."""
        snaps = list(self._snapshots())
        p = self._prefix
        for field, name, doc in _GAUGES:
            gauge = GaugeMetricFamily(f"{p}_{name}", doc, labels=["pool"])
            for label, s in snaps:
                gauge.add_metric([label], float(getattr(s, field)))
            yield gauge
        for field, name, doc in _COUNTERS:
            counter = CounterMetricFamily(f"{p}_{name}", doc, labels=["pool"])
            for label, s in snaps:
                counter.add_metric([label], float(getattr(s, field)))
            yield counter
        for hist in (self._create, self._wait, self._use):
            yield from hist.collect()
