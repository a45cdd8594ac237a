"""Stats: a pool's figures (Go's DBStats and more) and the Observer of its events.

Both live here, at the bottom of the layers, so that the pool shells need nothing
above them; ``sqlgate.observe`` builds its exporters on the ``Observer`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Observer", "Stats"]


@dataclass(frozen=True, slots=True)
class Stats:
    """A consistent snapshot of a pool, taken under its lock.

    The first nine fields are Go's ``sql.DBStats``; durations are float seconds.
    The rest are what OpenTelemetry's pool metrics and capacity planning need.

    Attributes:
        max_open_connections: the ``max_open`` knob; 0 means unlimited.
        open_connections: connections counted against ``max_open``: in use,
            idle, being dialed and being closed.
        in_use: connections handed out to callers now.
        idle: connections kept idle now.
        wait_count: acquires that had to queue (for a release or a dial).
        wait_duration: total seconds spent queued, over every finished wait.
        max_idle_closed: connections closed because the idle set was full.
        max_idle_time_closed: connections closed by ``conn_max_idle_time``.
        max_lifetime_closed: connections closed by ``conn_max_lifetime``.
        max_idle: the effective idle cap (``max_idle`` capped at ``max_open``).
        min_idle: the effective warm floor of idle connections.
        waiting: callers queued now.
        dialing: connection attempts in flight now.
        closing: connections being closed now (still counted as open).
        acquires: connections handed out, in total.
        timeouts: acquires that gave up with PoolTimeout.
        dials: connection attempts that succeeded.
        dial_failures: connection attempts that failed.
        broken_closed: connections closed because they were released broken.
        closed: connections closed, for any reason.
        dial_duration: total seconds spent in successful dials.
        use_duration: total seconds connections were held, over every release.
        circuit_open: whether the circuit breaker is open now: the database
            looks unreachable, so acquires that find nothing idle fail at once.
        circuit_opens: how many times the circuit opened, in total.
        leaks_reclaimed: connections garbage-collected while handed out, whose
            slots the pool took back (leak tracking only).
    """

    max_open_connections: int
    open_connections: int
    in_use: int
    idle: int
    wait_count: int
    wait_duration: float
    max_idle_closed: int
    max_idle_time_closed: int
    max_lifetime_closed: int
    max_idle: int
    min_idle: int
    waiting: int
    dialing: int
    closing: int
    acquires: int
    timeouts: int
    dials: int
    dial_failures: int
    broken_closed: int
    closed: int
    dial_duration: float
    use_duration: float
    circuit_open: bool = False
    circuit_opens: int = 0
    leaks_reclaimed: int = 0


class Observer(Protocol):
    """What a pool calls on each event; every method must be cheap and not raise."""

    def created(self, seconds: float) -> None:
        """A connection was dialed (and configured) in ``seconds``."""

    def waited(self, seconds: float) -> None:
        """A queued acquire ended after ``seconds`` in the queue."""

    def used(self, seconds: float) -> None:
        """A connection was held for ``seconds`` before it was given back."""

    def timed_out(self) -> None:
        """An acquire raised ``PoolTimeout``."""
