"""OpenTelemetry metrics for sqlgate pools, by the semantic-convention names.

``instrument(pool)`` reports, for each pool, on the meter ``sqlgate``:

========================================  ===============  ================
name                                      instrument       unit
========================================  ===============  ================
db.client.connection.count                UpDownCounter    {connection}
  (attribute db.client.connection.state = idle | used)
db.client.connection.idle.max             UpDownCounter    {connection}
db.client.connection.idle.min             UpDownCounter    {connection}
db.client.connection.max                  UpDownCounter    {connection}
db.client.connection.pending_requests     UpDownCounter    {request}
db.client.connection.timeouts             Counter          {timeout}
db.client.connection.create_time          Histogram        s
db.client.connection.wait_time            Histogram        s
db.client.connection.use_time             Histogram        s
========================================  ===============  ================

Every point carries ``db.client.connection.pool.name``: the ``name`` passed to
``instrument``, else the pool's ``name`` knob. ``sqlgate.open(dsn)`` and
``sqlgate.open_async(dsn)`` name their pool as the semantic conventions
suggest, ``server.address:server.port/db.namespace`` (for example
``"db.example.com:5432/orders"``; ``sqlite:<absolute path>`` or
``sqlite::memory:`` for SQLite), never with a user name or password; pass
``name=`` to make it unique when two handles reach the same database.

The levels (count, idle.max, idle.min, max, pending_requests) are observable
instruments read from ``pool.stats()`` at collection time, so they cost nothing
between collections; ``max`` is not reported while ``max_open`` is 0
(unlimited). The histograms and the timeout counter are fed by an observer
(see ``sqlgate.observe``): ``wait_time`` records every acquire that had to
queue, whatever its outcome (its count equals ``Stats.wait_count``); an
acquire served at once from the idle set records nothing, so the share of
acquires that waited is ``wait_count / acquires``.

Requires the ``otel`` extra (``opentelemetry-api``); bring your own SDK.
"""

from __future__ import annotations

import threading
import weakref
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Protocol

from opentelemetry.metrics import CallbackOptions, Observation, get_meter

from sqlgate.observe import Observer, attach, detach, observed

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.util.types import Attributes

    from sqlgate.stats import Stats

__all__ = ["BUCKETS", "Instrumentation", "instrument"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

#: Histogram bucket boundaries (seconds), as the conventions advise.
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


class _Pool(Protocol):
    """What ``instrument`` needs of a ``Pool`` or ``AsyncPool``."""

    observer: Observer | None

    @property
    def name(self) -> str: ...

    def stats(self) -> Stats: ...


class _Instruments:
    """One set of instruments per meter, shared by every pool reported on it."""

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        #: id(pool) -> (weak pool, attributes of its points).
        self._pools: dict[int, tuple[weakref.ref[_Pool], dict[str, str]]] = {}
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            callbacks=[self._count],
            unit="{connection}",
            description="The number of connections that are currently in state "
            "described by the `state` attribute.",
        )
        for name, field, description in (
            ("idle.max", "max_idle", "The maximum number of idle open connections "),
            ("idle.min", "min_idle", "The minimum number of idle open connections "),
            ("max", "max_open_connections", "The maximum number of open connections "),
        ):
            meter.create_observable_up_down_counter(
                f"db.client.connection.{name}",
                callbacks=[self._level(field)],
                unit="{connection}",
                description=description + "allowed.",
            )
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests",
            callbacks=[self._level("waiting")],
            unit="{request}",
            description="The number of current pending requests for an open "
            "connection.",
        )
        self.timeouts = meter.create_counter(
            "db.client.connection.timeouts",
            unit="{timeout}",
            description="The number of connection timeouts that have occurred "
            "trying to obtain a connection from the pool.",
        )
        self.create_time, self.wait_time, self.use_time = (
            meter.create_histogram(
                f"db.client.connection.{name}",
                unit="s",
                description=description,
                explicit_bucket_boundaries_advisory=BUCKETS,
            )
            for name, description in (
                ("create_time", "The time it took to create a new connection."),
                (
                    "wait_time",
                    "The time it took to obtain an open connection from the pool.",
                ),
                (
                    "use_time",
                    "The time between borrowing a connection and returning it "
                    "to the pool.",
                ),
            )
        )

    def add(self, pool: _Pool, attributes: dict[str, str]) -> None:
        with self._lock:
            self._pools[id(pool)] = (weakref.ref(pool), attributes)

    def remove(self, pool: object) -> None:
        with self._lock:
            self._pools.pop(id(pool), None)

    def _each(self) -> Iterator[tuple[Stats, dict[str, str]]]:
        with self._lock:
            pools = list(self._pools.items())
        for key, (ref, attributes) in pools:
            pool = ref()
            if pool is None:
                with self._lock:
                    self._pools.pop(key, None)
                continue
            yield pool.stats(), attributes

    def _count(self, options: CallbackOptions) -> Iterable[Observation]:
        for s, attributes in self._each():
            yield Observation(s.idle, {**attributes, STATE: "idle"})
            yield Observation(s.in_use, {**attributes, STATE: "used"})

    def _level(self, field: str) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            for s, attributes in self._each():
                value = getattr(s, field)
                if field == "max_open_connections" and value == 0:
                    continue  # unlimited: no meaningful maximum to report
                yield Observation(value, attributes)

        return callback


class _Callback(Protocol):
    def __call__(self, options: CallbackOptions) -> Iterable[Observation]: ...


class _Recorder:
    """The observer ``instrument`` attaches: events to histograms and a counter."""

    __slots__ = ("_attributes", "_instruments")

    def __init__(self, instruments: _Instruments, attributes: Attributes) -> None:
        self._instruments = instruments
        self._attributes = attributes

    def created(self, seconds: float) -> None:
        """Record ``create_time``."""
        self._instruments.create_time.record(seconds, self._attributes)

    def waited(self, seconds: float) -> None:
        """Record ``wait_time``."""
        self._instruments.wait_time.record(seconds, self._attributes)

    def used(self, seconds: float) -> None:
        """Record ``use_time``."""
        self._instruments.use_time.record(seconds, self._attributes)

    def timed_out(self) -> None:
        """Count a timeout."""
        self._instruments.timeouts.add(1, self._attributes)


_by_meter: weakref.WeakKeyDictionary[Meter, _Instruments] = weakref.WeakKeyDictionary()
_by_meter_lock = threading.Lock()


def _version() -> str:
    try:
        return version("sqlgate")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


class Instrumentation:
    """The handle ``instrument`` returns; ``uninstrument()`` stops reporting."""

    def __init__(self, pool: _Pool, instruments: _Instruments, name: str) -> None:
        self._pool = pool
        self._instruments = instruments
        #: The ``db.client.connection.pool.name`` on every point.
        self.pool_name = name
        self._observer = _Recorder(instruments, {POOL_NAME: name})
        instruments.add(pool, {POOL_NAME: name})
        attach(pool, self._observer)

    def uninstrument(self) -> None:
        """Stop reporting this pool; idempotent."""
        self._instruments.remove(self._pool)
        detach(self._pool, self._observer)


def instrument(
    pool: object,
    meter_provider: MeterProvider | None = None,
    name: str | None = None,
) -> Instrumentation:
    """Report ``pool``'s metrics through OpenTelemetry.

    Args:
        pool: a ``Pool``, an ``AsyncPool``, or SQLAlchemy's ``engine.pool``
            when it is sqlgate's (``SqlgatePool``, ``AsyncSqlgatePool``).
        meter_provider: where to report; None uses the global provider.
        name: the ``db.client.connection.pool.name`` attribute; None uses
            ``pool.name``.

    Returns:
        A handle whose ``uninstrument()`` stops the reporting.

    Raises:
        TypeError: ``name`` is not a string, or ``pool`` is none of those.
    """
    pool = observed(pool)
    chosen: object = pool.name if name is None else name
    if not isinstance(chosen, str) or not chosen:
        raise TypeError(f"name must be a non-empty str or None, got {chosen!r}")
    meter = get_meter("sqlgate", _version(), meter_provider)
    with _by_meter_lock:
        instruments = _by_meter.get(meter)
        if instruments is None:
            instruments = _by_meter[meter] = _Instruments(meter)
    return Instrumentation(pool, instruments, chosen)
