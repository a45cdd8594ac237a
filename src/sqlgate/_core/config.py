"""The pool's knobs: ``PoolConfig``, their defaults and their validation; no I/O.

Every knob is described once, on ``PoolConfig``; the shells (``Pool``,
``AsyncPool``) keep explicit keyword arguments for users and IDEs and
forward them into one. Every check raises an error naming the knob and the
value it was given.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Final

__all__ = [
    "CIRCUIT_AFTER",
    "FOREVER",
    "MAX_CONNECTING",
    "PoolConfig",
    "validate_duration",
    "validate_int",
]

#: Dials in flight at once, by default: chosen by measurement (docs/design.md).
MAX_CONNECTING: Final = 4
#: Default ``circuit_after``: consecutive failed dials that open the circuit.
CIRCUIT_AFTER: Final = 3
#: The longest duration a thread can wait for (s; ``threading.TIMEOUT_MAX``,
#: about 292 years on Linux). A duration knob or timeout above it means "no
#: limit", as ``math.inf`` does: no wait could last that long anyway, and a
#: lock's timed acquire refuses anything longer with ``OverflowError``.
FOREVER: Final = threading.TIMEOUT_MAX


def validate_int(name: str, value: object, minimum: int) -> int:
    """Validate an int knob: an int (not a bool) of at least ``minimum``."""
    if type(value) is int and value >= minimum:  # the usual case, in one test
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def validate_duration(
    name: str, value: object, *, zero_ok: bool = False
) -> float | None:
    """Validate a duration knob: None, ``math.inf`` (or > ``FOREVER``) mean no limit.

    Args:
        name: the knob's name, for the error message.
        value: what the caller passed.
        zero_ok: whether 0 is allowed (a timeout of 0 is; a lifetime of 0 is not).

    Returns:
        The value as a float, or None for "no limit" (None, ``math.inf``, or
        more seconds than a thread can wait: ``sys.maxsize`` and ``1e10``
        included, which a timed lock acquire would refuse).

    Raises:
        TypeError: not a number.
        ValueError: NaN, negative, or zero where zero makes no sense.
    """
    if value is None or (type(value) is float and 0.0 < value <= FOREVER):
        return value  # the usual cases, in one test
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float: as far as infinity goes
        seconds = math.inf if value > 0 else -math.inf
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be {bound} seconds or None, got {value!r}")
    return None if seconds > FOREVER else seconds


@dataclasses.dataclass(frozen=True, slots=True)
class PoolConfig:
    """Every knob of a pool, validated when made (after HikariConfig).

    Frozen: a runtime setter makes a new one (``dataclasses.replace``, which
    validates again; see ``with_max_open`` and ``with_max_idle`` for the two
    that move the idle cap). Values are kept normalized: a duration of
    ``math.inf`` (or more than ``FOREVER``) is None, a ``max_idle`` below 0
    is 0, so two configs that behave alike compare equal.

    Attributes:
        max_open: most connections open at once, dials in flight and closes
            in progress included; 0 means unlimited.
        max_idle: most connections kept idle (default 2, as Go); <= 0 keeps
            none. Capped at ``max_open`` when that is set (``idle_cap``).
        min_idle: idle connections the pool keeps dialed in the background
            (a warm floor); must not exceed the idle cap.
        max_connecting: most dials in flight at once; 0 means unlimited.
        conn_max_lifetime: seconds a connection may live (shortened by a
            random 0-5 %); None means forever.
        conn_max_idle_time: seconds a connection may sit idle; None means
            forever.
        max_waiting: most callers queued at once; 0 means unbounded.
        circuit_after: consecutive failed dials that open the circuit breaker
            (default 3; 0 disables it): while it is open, an acquire that
            finds nothing idle fails at once with ``CircuitOpen`` and one
            probe redials with backoff.
        acquire_timeout: default seconds ``acquire`` waits; None means
            forever.
        timeout_at_capacity_only: when True, the timeout (the pool's or a
            call's) bounds only a wait that begins at ``max_open``; a caller
            queued below it waits for its dial however long that takes (the
            driver's connect timeout bounds it), as SQLAlchemy's
            ``pool_timeout`` does. False (the default): the timeout bounds
            the whole acquire, dial included, as Go's.
        rollback_on_return: roll back a transaction left open by the caller
            before anyone else gets the connection.
        leak_threshold: seconds a connection may stay handed out before a
            warning with the acquirer's stack is logged (logger ``sqlgate``);
            None (the default) turns leak tracking off. While on, the pool
            keeps only a weak reference to connections in use, so one dropped
            without release is reclaimed when garbage-collected (drivers
            whose connections support weak references: psycopg, PyMySQL; not
            sqlite3, whose dropped connection is reported but keeps its slot
            until ``close(timeout)``; logged once per connection class).
        name: the pool's name in messages and metrics.

    Raises:
        TypeError: a knob of the wrong type, naming it and the value.
        ValueError: a knob out of range, naming it and the value.
    """

    max_open: int = 0
    max_idle: int = 2
    min_idle: int = 0
    max_connecting: int = MAX_CONNECTING
    conn_max_lifetime: float | None = None
    conn_max_idle_time: float | None = None
    max_waiting: int = 0
    circuit_after: int = CIRCUIT_AFTER
    acquire_timeout: float | None = 30.0
    timeout_at_capacity_only: bool = False
    rollback_on_return: bool = True
    leak_threshold: float | None = None
    name: str = "pool"

    def __post_init__(self) -> None:
        # Normalized values are written with object.__setattr__, the frozen
        # dataclass's own way of setting its fields in __init__.
        put = object.__setattr__
        validate_int("max_open", self.max_open, 0)
        put(self, "max_idle", max(0, validate_int("max_idle", self.max_idle, -(2**63))))
        validate_int("min_idle", self.min_idle, 0)
        validate_int("max_connecting", self.max_connecting, 0)
        lifetime = validate_duration("conn_max_lifetime", self.conn_max_lifetime)
        put(self, "conn_max_lifetime", lifetime)
        idle_time = validate_duration("conn_max_idle_time", self.conn_max_idle_time)
        put(self, "conn_max_idle_time", idle_time)
        validate_int("max_waiting", self.max_waiting, 0)
        validate_int("circuit_after", self.circuit_after, 0)
        cap = self.idle_cap
        if self.min_idle > cap:
            raise ValueError(
                f"min_idle={self.min_idle} exceeds the idle cap {cap} "
                f"(max_idle={self.max_idle}, max_open={self.max_open})"
            )
        timeout = validate_duration(
            "acquire_timeout", self.acquire_timeout, zero_ok=True
        )
        put(self, "acquire_timeout", timeout)
        if not isinstance(self.timeout_at_capacity_only, bool):
            raise TypeError(
                "timeout_at_capacity_only must be a bool, "
                f"got {self.timeout_at_capacity_only!r}"
            )
        put(
            self,
            "leak_threshold",
            validate_duration("leak_threshold", self.leak_threshold),
        )
        if not isinstance(self.rollback_on_return, bool):
            raise TypeError(
                f"rollback_on_return must be a bool, got {self.rollback_on_return!r}"
            )

    @property
    def idle_cap(self) -> int:
        """The effective idle cap: ``max_idle`` capped at ``max_open`` (Go's rule)."""
        return _idle_cap(self.max_open, self.max_idle)

    @property
    def expiring(self) -> bool:
        """Whether connections can expire (a lifetime or idle-time limit is set)."""
        return self.conn_max_lifetime is not None or self.conn_max_idle_time is not None

    def with_max_open(self, n: int) -> PoolConfig:
        """A copy with ``max_open=n``, ``min_idle`` lowered to the new idle cap.

        A warm floor above the new cap is lowered rather than refused (Go
        lowers ``max_idle`` with ``max_open`` the same way).
        """
        n = validate_int("max_open", n, 0)
        cap = _idle_cap(n, self.max_idle)
        return dataclasses.replace(self, max_open=n, min_idle=min(self.min_idle, cap))

    def with_max_idle(self, n: int) -> PoolConfig:
        """A copy with ``max_idle=n``, ``min_idle`` lowered to the new idle cap."""
        n = max(0, validate_int("max_idle", n, -(2**63)))
        cap = _idle_cap(self.max_open, n)
        return dataclasses.replace(self, max_idle=n, min_idle=min(self.min_idle, cap))


def _idle_cap(max_open: int, max_idle: int) -> int:
    """``max_idle`` (>= 0) capped at ``max_open`` when that is set (> 0)."""
    return min(max_idle, max_open) if max_open > 0 else max_idle
