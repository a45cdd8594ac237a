"""What the two shells (``Pool``, ``AsyncPool``) share besides the core.

Pure helpers with no opinion on threads or asyncio: the core built from a
``PoolConfig`` and the hook validation (``ShellBase``), the choice between the
plain and the hooked acquire/release, the errors a waiter raises, and what
``close(timeout)`` takes back. Each shell keeps only what differs: how it
locks, waits and runs effects. Leak tracking is in ``_leaks``, the garbage
collector's hand-over in ``_courier``, fork safety in ``_fork``, the asyncio
shell's timer in ``_deadlines``.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sqlgate._core import (
    IN_USE,
    Entry,
    PoolConfig,
    PoolCore,
    is_programming_error,
)
from sqlgate.errors import ConnectError, PoolTimeout

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate._core import Waiter
    from sqlgate._leaks import Held
    from sqlgate.stats import Observer

__all__ = [
    "ShellBase",
    "choose_path",
    "lookup",
    "report_circuit",
    "report_taken",
    "take_in_use",
    "timeout_error",
    "validate_hooks",
    "waiter_error",
]

C = TypeVar("C")

log = logging.getLogger("sqlgate")


class _Shell(Protocol):
    """The fields of ``Pool`` and ``AsyncPool`` that the helpers below use."""

    _hooked: bool
    _taken: set[int]

    @property
    def _core(self) -> PoolCore[Any]: ...
    @property
    def _observer(self) -> object: ...
    @property
    def _on_acquire(self) -> object: ...
    @property
    def _on_release(self) -> object: ...
    @property
    def _leak_threshold(self) -> float | None: ...

    def _acquire_hooked(self, timeout: float | None = None) -> Any: ...

    def _release_hooked(self, conn: Any, *, broken: bool = False) -> Any: ...


class ShellBase(Generic[C]):
    """The state and knob validation ``Pool`` and ``AsyncPool`` share.

    Each shell's ``__init__`` validates its connect callable, calls ``_setup``
    with a ``PoolConfig`` of every knob and the hooks, then adds what is its
    own (a lock, an event loop).
    """

    _hooked: bool
    _observer: Observer | None

    def _setup(
        self,
        config: PoolConfig,
        *,
        reset: Callable[[C], object] | None,
        on_connect: Callable[[C], object] | None,
        on_acquire: Callable[[C], object] | None,
        on_release: Callable[[C], object] | None,
        on_close: Callable[[C], object] | None,
        observer: Observer | None,
    ) -> None:
        """Build the core from ``config`` and check the hooks.

        Raises:
            TypeError: a hook that is not callable, naming it.
        """
        self.name = config.name
        self._core: PoolCore[C] = PoolCore(config)
        # The shell's knobs, read where the shell needs them (see PoolConfig).
        self._timeout = config.acquire_timeout
        self._timeout_at_capacity_only = config.timeout_at_capacity_only
        self._leak_threshold = config.leak_threshold
        #: Entries whose connection was collected while in use, appended by a
        #: weakref callback (any thread, so it must not take a lock); taken
        #: by the shell's ``_reclaim_leaked``.
        self._leaked: deque[Entry[C]] = deque()
        #: Connections given back by ``_release_soon`` (from a finalizer or
        #: the garbage collector: any thread, no lock): (conn, broken), each
        #: released by the shell's ``_settle_late``.
        self._returns: deque[tuple[C, bool]] = deque()
        #: Connections in use (leak tracking only): entry -> acquirer's stack,
        #: and whether the threshold warning was logged.
        self._held: Held[C] = {}
        #: ids of connections ``close(timeout=...)`` took from their callers;
        #: their late release is a no-op.
        self._taken: set[int] = set()
        validate_hooks(
            reset=reset,
            on_connect=on_connect,
            on_acquire=on_acquire,
            on_release=on_release,
            on_close=on_close,
        )
        #: The return path: roll back an open transaction, then ``reset``.
        self._rollback_on_return = config.rollback_on_return
        self._reset = reset
        self._on_connect = on_connect
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._on_close = on_close
        self._observer = None
        self._hooked = False
        self.observer = observer  # picks the acquire/release path

    @property
    def observer(self) -> Observer | None:
        """The per-event observer (see ``sqlgate.observe``), or None."""
        return self._observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self._observer = observer
        choose_path(self)  # type: ignore[arg-type]  # the plain or hooked path

    def _lookup(self, conn: C) -> Entry[C] | None:
        """``lookup(self, conn)``: see there."""
        return lookup(self, conn)  # type: ignore[arg-type]

    def idle_for(self, conn: C) -> float:
        """How long ``conn`` sat idle before its current checkout.

        A pure read of the pool's bookkeeping (no lock, no I/O): cheap enough
        to call on every checkout, as ``DB`` does to decide whether to ping.

        Args:
            conn: a connection handed out by this pool and not yet released.

        Returns:
            Seconds from when it was last given back (or dialed) to when it
            was handed out; 0.0 if it went straight from a release or a dial
            to a waiting caller, or if ``close(timeout)`` took it since.

        Raises:
            ValueError: ``conn`` is not in use from this pool.
        """
        entry = self._lookup(conn)
        return 0.0 if entry is None else entry.acquired_at - entry.returned_at

    def _needs_maintenance(self) -> bool:
        """Whether a maintenance tick has anything to do (expiry, refill, probe)."""
        core = self._core
        config = core.config
        return not core.is_closed and (
            config.expiring
            or config.min_idle > 0
            or core.circuit_open
            or self._leak_threshold is not None
        )


def report_circuit(
    name: str, was_open: bool, now_open: bool, core: PoolCore[Any]
) -> None:
    """Log the circuit breaker opening or closing; nothing when it did neither.

    Called from the dial path only, never the fast path. Records carry text,
    never the error object (a handler that keeps records would keep its frames).
    """
    if was_open == now_open:
        return
    if now_open:
        log.warning(
            "%s: circuit open after %d failed dials in a row (last: %s): acquires "
            "that find nothing idle fail at once until a probe connects",
            name,
            core.config.circuit_after,
            repr(core.last_dial_error),
        )
    else:
        log.warning("%s: circuit closed: a dial succeeded, service resumes", name)


def choose_path(pool: _Shell) -> None:
    """Install the hooked ``acquire``/``release`` on ``pool`` only when needed.

    Without hooks, observer or leak tracking the class's plain methods run,
    so the fast path pays nothing for them. The instance dict is touched only
    on a change: touching it at all makes CPython drop its fast attribute
    access for the object (~90 ns a cycle).
    """
    hooked = not (
        pool._observer is None
        and pool._on_acquire is None
        and pool._on_release is None
        and pool._leak_threshold is None
    )
    if hooked == pool._hooked:
        return
    pool._hooked = hooked
    if hooked:
        pool.__dict__["acquire"] = pool._acquire_hooked
        pool.__dict__["release"] = pool._release_hooked
    else:
        del pool.__dict__["acquire"], pool.__dict__["release"]


def lookup(pool: _Shell, conn: object) -> Entry[Any] | None:
    """The in-use entry of ``conn``; None if ``close(timeout)`` took it.

    Raises:
        ValueError: as ``PoolCore.lookup`` (foreign, or released twice).
    """
    try:
        return pool._core.lookup(conn)
    except ValueError:
        if pool._core.is_closed and id(conn) in pool._taken:
            return None  # force-closed by close(timeout=...): nothing to do
        raise


def take_in_use(pool: _Shell, now: float) -> int:
    """Force-close what is still handed out (after ``close``); remember which.

    Returns:
        How many connections were taken from their callers.
    """
    core = pool._core
    for entry in core._registry.values():
        if entry.state == IN_USE:
            pool._taken.add(entry.key)
    return core.close_in_use(now)


def report_taken(name: str, taken: int, limit: float | None) -> None:
    """Log how many connections ``close(timeout)`` took from their callers."""
    if taken:
        log.warning(
            "%s: closed %d connection(s) still in use after %s",
            name,
            taken,
            "forever" if limit is None else f"{limit:.2f} s",
        )


def validate_hooks(**hooks: object) -> None:
    """Refuse a hook argument that is neither None nor callable.

    Raises:
        TypeError: naming the argument and the value.
    """
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable or None, got {hook!r}")


# -- what a waiter raises --------------------------------------------------------


def timeout_error(name: str, core: PoolCore[Any], limit: float | None) -> PoolTimeout:
    """The ``PoolTimeout`` of a waiter that gave up after ``limit`` seconds.

    The message gives the pool's numbers; the latest dial error is chained
    while dials are failing.
    """
    s = core.stats()
    waited = "forever" if limit is None else f"{limit:.2f} s"
    error = PoolTimeout(
        f"{name}: no connection after {waited} "
        f"(max_open={s.max_open_connections}, in_use={s.in_use}, "
        f"waiting={s.waiting})"
    )
    error.__cause__ = core.last_dial_error if core.failing else None
    return error


def waiter_error(name: str, waiter: Waiter[Any]) -> BaseException:
    """The exception a FAILED waiter raises.

    sqlgate's own errors and programming errors (``is_programming_error``)
    as they are; any other dial error as ``ConnectError``, the error chained.
    """
    error = waiter.error
    assert error is not None
    if type(error).__module__ == "sqlgate" or is_programming_error(error):
        # A programming error (a TypeError from the connect callable, say)
        # is the caller's to see as it is: it is no failed dial.
        return error
    # Anything else, even a KeyboardInterrupt or SystemExit raised by the
    # connect callable in a dial, reaches the caller as ConnectError.
    wrapped = ConnectError(f"{name}: connect failed: {error!r}")
    wrapped.__cause__ = error
    return wrapped
