"""Observability: the per-event observer interface, exporters, and helpers.

A pool reports four kinds of event to an *observer*, and only when one is set
(a pool without one runs the same code as if this module did not exist):

    created(seconds)   a dial succeeded; how long ``connect`` (and the
                       ``on_connect`` hook) took.
    waited(seconds)    an acquire that had to queue ended (served, timed out,
                       or failed); how long it was queued.
    used(seconds)      a connection was given back; how long it was held.
    timed_out()        an acquire gave up with ``PoolTimeout``.

Levels (idle, in use, pending requests, limits) are not events: exporters read
them from ``Pool.stats()`` when they are scraped. Durations are float seconds
from ``time.monotonic``.

``sqlgate.observe.otel`` exports OpenTelemetry metrics and
``sqlgate.observe.prometheus`` a Prometheus collector; both attach an observer
with ``attach`` so that they can share one pool. Both take a ``Pool``, an
``AsyncPool``, or SQLAlchemy's ``engine.pool`` when it is sqlgate's
(``SqlgatePool``/``AsyncSqlgatePool``): ``observed`` reads that one through the
sqlgate pool underneath, the current one after a ``dispose()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sqlgate.stats import Observer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlgate.stats import Stats

__all__ = ["Fanout", "ObservedPool", "Observer", "attach", "detach", "observed"]


class ObservedPool(Protocol):
    """The part of a pool (``Pool`` or ``AsyncPool``) that ``attach`` needs."""

    observer: Observer | None


class Fanout:
    """An observer that passes every event on to several others, in order."""

    __slots__ = ("observers",)

    def __init__(self, observers: Iterable[Observer]) -> None:
        """Combine ``observers``; events reach each of them in the given order.

        Args:
            observers: the observers to call.
        """
        self.observers: tuple[Observer, ...] = tuple(observers)

    def created(self, seconds: float) -> None:
        """Pass ``created`` on."""
        for o in self.observers:
            o.created(seconds)

    def waited(self, seconds: float) -> None:
        """Pass ``waited`` on."""
        for o in self.observers:
            o.waited(seconds)

    def used(self, seconds: float) -> None:
        """Pass ``used`` on."""
        for o in self.observers:
            o.used(seconds)

    def timed_out(self) -> None:
        """Pass ``timed_out`` on."""
        for o in self.observers:
            o.timed_out()


def attach(pool: ObservedPool, observer: Observer) -> None:
    """Add ``observer`` to ``pool``, keeping any observer it already has.

    Args:
        pool: a ``Pool`` or ``AsyncPool``.
        observer: the observer to add.
    """
    current = pool.observer
    if current is None:
        pool.observer = observer
    elif isinstance(current, Fanout):
        pool.observer = Fanout((*current.observers, observer))
    else:
        pool.observer = Fanout((current, observer))


def detach(pool: ObservedPool, observer: Observer) -> None:
    """Remove ``observer`` from ``pool``; a no-op if it is not attached.

    Args:
        pool: a ``Pool`` or ``AsyncPool``.
        observer: the observer to remove.
    """
    current = pool.observer
    if current is observer:
        pool.observer = None
    elif isinstance(current, Fanout):
        rest = [o for o in current.observers if o is not observer]
        pool.observer = rest[0] if len(rest) == 1 else Fanout(rest) if rest else None


class MeteredPool(Protocol):
    """What the exporters read: a name, the observer slot, and ``stats()``."""

    observer: Observer | None

    @property
    def name(self) -> str:
        """The pool's name (its metrics label)."""

    def stats(self) -> Stats: ...


class _Underneath:
    """SQLAlchemy's ``engine.pool`` (sqlgate's) seen as the sqlgate pool it runs on.

    Every read goes to the current sqlgate pool (``sqlgate_pool``), which a
    ``dispose()`` replaces; the integration hands the observer over then.
    """

    def __init__(self, outer: object) -> None:
        self._outer = outer

    def _gate(self) -> MeteredPool:
        gate: MeteredPool = self._outer.sqlgate_pool  # type: ignore[attr-defined]
        return gate

    @property
    def name(self) -> str:
        return self._gate().name

    @property
    def observer(self) -> Observer | None:
        return self._gate().observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self._gate().observer = observer

    def stats(self) -> Stats:
        return self._gate().stats()


def observed(pool: object) -> MeteredPool:
    """The pool the exporters read for ``pool``.

    Args:
        pool: a ``Pool``, an ``AsyncPool``, or SQLAlchemy's ``engine.pool``
            when it is a ``SqlgatePool`` or ``AsyncSqlgatePool``.

    Returns:
        ``pool`` itself, or for ``engine.pool`` a view of the sqlgate pool
        underneath (one per ``engine.pool``, kept on it, so it lives as long).

    Raises:
        TypeError: ``pool`` is neither; the message names what it got.
    """
    if hasattr(type(pool), "sqlgate_pool"):
        view = getattr(pool, "_sqlgate_observed", None)
        if view is None:
            view = _Underneath(pool)
            pool._sqlgate_observed = view  # type: ignore[attr-defined]
        assert isinstance(view, _Underneath)
        return view
    if not callable(getattr(pool, "stats", None)) or not hasattr(pool, "observer"):
        raise TypeError(
            "pool must be a sqlgate Pool or AsyncPool, or SQLAlchemy's engine.pool "
            f"when it is SqlgatePool/AsyncSqlgatePool, got {pool!r}"
        )
    return pool  # type: ignore[return-value]
