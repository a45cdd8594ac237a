"""Pool: the threading shell that carries out the core's decisions."""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlgate._core import (
    BROKEN,
    CIRCUIT_AFTER,
    FAILED,
    IN_USE,
    MAX_CONNECTING,
    SERVED,
    WAITING,
    Close,
    Connect,
    Entry,
    Waiter,
    Wake,
    check_duration,
)
from sqlgate._reset import _rollbacks, rollback_for
from sqlgate._shell import (
    ShellBase,
    check_leaks,
    forget_after_fork,
    renew_after_fork,
    report_circuit,
    report_reclaimed,
    report_taken,
    take_in_use,
    timeout_error,
    track,
    waiter_error,
)
from sqlgate.errors import PoolTimeout

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate._core import Effect
    from sqlgate.observe import Observer
    from sqlgate.stats import Stats

__all__ = ["DEFAULT_MAX_CONNECTING", "Pool"]

C = TypeVar("C")

log = logging.getLogger("sqlgate")

#: Dials in flight at once, by default. See docs/design.md ("max_connecting").
DEFAULT_MAX_CONNECTING = MAX_CONNECTING

_new_gate = threading.Lock


class Pool(ShellBase[C]):
    """A thread-safe pool of DB-API connections, after Go's ``database/sql``.

    Connections are dialed by pool-owned threads (never in the waiting
    caller), handed to waiters first come first served, and reused most
    recently returned first. See ``PoolCore`` for the rules.

    Example::

        pool = Pool(lambda: sqlite3.connect("app.db"), max_open=8)
        with pool.connection() as conn:
            conn.execute("select 1")
    """

    def __init__(
        self,
        connect: Callable[[], C],
        *,
        max_open: int = 0,
        max_idle: int = 2,
        min_idle: int = 0,
        max_connecting: int = DEFAULT_MAX_CONNECTING,
        conn_max_lifetime: float | None = None,
        conn_max_idle_time: float | None = None,
        acquire_timeout: float | None = 30.0,
        max_waiting: int = 0,
        rollback_on_return: bool = True,
        reset: Callable[[C], object] | None = None,
        name: str | None = None,
        on_connect: Callable[[C], object] | None = None,
        on_acquire: Callable[[C], object] | None = None,
        on_release: Callable[[C], object] | None = None,
        on_close: Callable[[C], object] | None = None,
        observer: Observer | None = None,
        circuit_after: int = CIRCUIT_AFTER,
        leak_threshold: float | None = None,
    ) -> None:
        """Create a pool; it dials nothing until asked (or ``min_idle`` > 0).

        Args:
            connect: a callable returning a new DB-API connection.
            max_open: most connections open at once (dials in flight
                included); 0 means unlimited.
            max_idle: most connections kept idle (default 2, as Go); <= 0
                keeps none; capped at ``max_open``.
            min_idle: idle connections kept dialed in the background.
            max_connecting: most dials in flight at once; 0 means unlimited.
            conn_max_lifetime: seconds a connection may live (shortened by a
                random 0-5 %); None means forever.
            conn_max_idle_time: seconds a connection may sit idle; None
                means forever.
            acquire_timeout: default seconds ``acquire`` waits; None means
                forever.
            max_waiting: most callers queued at once; 0 means unbounded.
            rollback_on_return: roll back a transaction left open by the
                caller before anyone else gets the connection.
            reset: called with each returned connection after the rollback;
                if it raises, the connection is discarded.
            name: the pool's name in messages and metrics.
            on_connect: called with each new connection in the dialing thread,
                before anyone gets it; if it raises, the connection is closed
                and the dial fails with that error.
            on_acquire: called with each connection before ``acquire`` returns
                it; if it raises, the connection is discarded and ``acquire``
                raises the error.
            on_release: called with each connection given back (not when
                released broken), before the rollback and ``reset``; if it
                raises, the connection is discarded and ``release`` raises
                the error after giving it back.
            on_close: called with each connection just before it is closed;
                an error is logged and the close goes ahead.
            observer: receives per-event durations (see ``sqlgate.observe``);
                settable later through the ``observer`` attribute.
            circuit_after: consecutive failed dials that open the circuit
                breaker (default 3; 0 disables it): while it is open, an
                acquire that finds nothing idle fails at once with
                ``CircuitOpen`` and one probe redials with backoff.
            leak_threshold: seconds a connection may stay handed out before
                a warning with the acquirer's stack is logged (logger
                ``sqlgate``); None (the default) turns leak tracking off.
                While on, the pool keeps only a weak reference to connections
                in use, so one dropped without release is reclaimed when
                garbage-collected (drivers whose connections support weak
                references: psycopg, PyMySQL; not sqlite3).

        Raises:
            TypeError: ``connect`` is not callable, or a knob has the wrong type.
            ValueError: a knob is out of range; the message names it.
        """
        if not callable(connect):
            raise TypeError(f"connect must be callable, got {connect!r}")
        self._connect = connect
        self._setup(
            name=name if name is not None else f"pool-{id(self):x}",
            max_open=max_open,
            max_idle=max_idle,
            min_idle=min_idle,
            max_connecting=max_connecting,
            conn_max_lifetime=conn_max_lifetime,
            conn_max_idle_time=conn_max_idle_time,
            acquire_timeout=acquire_timeout,
            max_waiting=max_waiting,
            rollback_on_return=rollback_on_return,
            reset=reset,
            on_connect=on_connect,
            on_acquire=on_acquire,
            on_release=on_release,
            on_close=on_close,
            observer=observer,
            circuit_after=circuit_after,
            leak_threshold=leak_threshold,
        )
        #: Set when the pool is closed and nothing is in use any more.
        self._all_back = threading.Event()
        # Critical section: every core call, and nothing else, runs under it.
        self._lock = threading.Lock()
        # Wakes the maintenance thread when a knob changes or the pool closes.
        self._maintenance_wakeup = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._maybe_start_maintenance()
        forget_after_fork(self)

    def __repr__(self) -> str:
        s = self._core.stats()
        state = "closed" if self._core.is_closed else "open"
        return (
            f"<sqlgate.Pool {self.name!r} {state} open={s.open_connections} "
            f"in_use={s.in_use} idle={s.idle} waiting={s.waiting}>"
        )

    def __enter__(self) -> Pool[C]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- acquire / release ---------------------------------------------------

    def acquire(self, timeout: float | None = None) -> C:
        """Take a connection, waiting for one if none is idle.

        Args:
            timeout: seconds to wait; None uses the pool's ``acquire_timeout``;
                ``math.inf`` waits forever; 0 fails unless one is idle now.

        Returns:
            The driver's connection; give it back with ``release``.

        Raises:
            PoolClosed: the pool is closed, or was closed while waiting.
            PoolTimeout: nothing became available in time (the latest connect
                error, if the last dial failed, is chained).
            TooManyWaiters: ``max_waiting`` callers are already queued.
            ConnectError: the dial made for this caller failed (the driver's
                exception is chained).
            TypeError, ValueError: ``timeout`` is not a number of seconds >= 0
                (checked before queueing, so a bad one leaves no waiter behind).
        """
        if timeout is not None:
            check_duration("timeout", timeout, zero_ok=True)
        core = self._core
        try:
            with self._lock:
                got = core.acquire(monotonic())
                out = core.outbox
                if out:
                    core.outbox = []
                if type(got) is Entry:  # the common path: an idle one was there
                    if not out:
                        return got.conn
                else:
                    got.token = gate = _new_gate()  # type: ignore[union-attr]
                    gate.acquire()
        except BaseException:
            # Refused (closed, too many waiters) after closing expired idle
            # connections on the way: carry those closes out, then raise.
            self._call(_nothing)
            raise
        # Slow path: effects to carry out (outside the lock), or a wait.
        self._run(out)
        if isinstance(got, Waiter):
            return self._wait(got, timeout)
        return got.conn

    def release(self, conn: C, *, broken: bool = False) -> None:
        """Give back a connection that ``acquire`` returned.

        An open transaction is rolled back first and the ``reset`` hook runs;
        if either raises, the connection is discarded instead of reused.

        Args:
            conn: the connection.
            broken: the caller knows it is unusable; it is closed, not reused.

        Raises:
            ValueError: ``conn`` is not in use from this pool (released twice,
                or foreign); no count changes.
        """
        core = self._core
        # core.lookup() inlined for the common case; it raises the precise error.
        entry = core._registry.get(id(conn))
        if entry is None or entry.conn is not conn or entry.state != IN_USE:
            entry = self._lookup(conn)
            if entry is None:
                return
        if not broken and not core._closed:
            try:
                if self._rollback_on_return:
                    # rollback_open_transaction(conn), inlined: one call fewer.
                    cls = type(conn)
                    (_rollbacks.get(cls) or rollback_for(cls))(conn)
                if self._reset is not None:
                    self._reset(conn)
            except Exception as exc:
                log.info(
                    "%s: discarding a connection that failed reset: %s",
                    self.name,
                    repr(exc),
                )
                broken = True
        with self._lock:
            core.release(entry, monotonic(), broken)
            out = core.outbox
            if out:
                core.outbox = []
        if out:
            if core._closed:
                self._check_all_back()
            self._run(out)

    def connection(self, timeout: float | None = None) -> _Checkout[C]:
        """Acquire a connection for a ``with`` block; it is released after the block.

        Args:
            timeout: as for ``acquire``.

        Returns:
            A context manager whose ``__enter__`` acquires and returns the
            driver's connection, and whose ``__exit__`` releases it.
        """
        return _Checkout(self, timeout)

    # -- hooks and observer (off the plain path) ------------------------------

    def _acquire_hooked(self, timeout: float | None = None) -> C:
        """``acquire``, then leak tracking and the ``on_acquire`` hook."""
        if self._lost:
            self._drain_lost()
        conn = Pool.acquire(self, timeout)
        if self._leak_threshold is not None:
            track(self._core, conn, self._held, self._lost)
        hook = self._on_acquire
        if hook is not None:
            try:
                hook(conn)
            except BaseException:
                entry = self._lookup(conn)
                if entry is not None:
                    self._held.pop(entry, None)  # tracked above: forget it
                    Pool.release(self, conn, broken=True)
                raise
        return conn

    def _release_hooked(self, conn: C, *, broken: bool = False) -> None:
        """The ``on_release`` hook and the ``used`` event, then ``release``."""
        entry = self._lookup(conn)  # a foreign conn raises before any hook
        if entry is None:
            return
        if self._leak_threshold is not None:
            self._held.pop(entry, None)
        error: BaseException | None = None
        hook = self._on_release
        if hook is not None and not broken:
            try:
                hook(conn)
            except Exception as exc:
                log.info(
                    "%s: discarding a connection: on_release raised %s",
                    self.name,
                    repr(exc),
                )
                error = exc
                broken = True
        observer = self._observer
        if observer is not None:
            observer.used(monotonic() - entry.acquired_at)
        Pool.release(self, conn, broken=broken)
        if error is not None:
            raise error

    # -- leak tracking (only while leak_threshold is set) ----------------------

    def _drain_lost(self) -> None:
        """Reclaim the slots of connections collected while handed out."""
        while self._lost:
            entry = self._lost.popleft()
            with self._lock:
                reclaimed = self._core.reclaim(entry, monotonic())
                out = self._core.take_effects()
            held = self._held.pop(entry, None)
            if reclaimed:
                report_reclaimed(self.name, held)
            self._run(out)

    def _check_leaks(self, now: float) -> float | None:
        """Warn once about each connection held past ``leak_threshold``.

        Returns:
            When the next one would cross it (monotonic s), or None.
        """
        return check_leaks(self.name, self._held, self._leak_threshold, now)

    def _wait(self, waiter: Waiter[C], timeout: float | None) -> C:
        """Block until ``waiter`` is settled; report the wait to the observer."""
        observer = self._observer
        if observer is None:
            return self._wait_settled(waiter, timeout)
        try:
            return self._wait_settled(waiter, timeout)
        except PoolTimeout:
            observer.timed_out()
            raise
        finally:
            observer.waited(monotonic() - waiter.enqueued_at)

    def _wait_settled(self, waiter: Waiter[C], timeout: float | None) -> C:
        """Block until ``waiter`` is settled or the timeout passes."""
        if timeout is None:
            limit = self._timeout
        else:
            limit = check_duration("timeout", timeout, zero_ok=True)
        gate = waiter.token
        assert isinstance(gate, type(self._lock))
        try:
            if limit is None:
                woken = gate.acquire()
            else:
                woken = limit > 0 and gate.acquire(timeout=limit)
        except BaseException:
            # Interrupted (KeyboardInterrupt in the main thread): give up, and
            # give back anything handed over meanwhile.
            self._call(self._core.abandon, waiter, timed_out=False)
            raise
        if not woken:
            core = self._core
            with self._lock:
                if waiter.state == WAITING:
                    core.abandon(waiter, monotonic(), timed_out=True)
                    raise timeout_error(self.name, core, limit)
        if waiter.state == SERVED:
            # Woken, or the hand-off beat the timeout to the lock: keep it.
            assert waiter.entry is not None
            return waiter.entry.conn
        assert waiter.state == FAILED
        raise waiter_error(self.name, waiter)

    # -- carrying out effects -------------------------------------------------

    def _call(self, method: Callable[..., object], *args: object, **kw: object) -> None:
        """Run one core input under the lock (with ``now``), then its effects."""
        core = self._core
        with self._lock:
            try:
                method(*args, monotonic(), **kw)
            finally:
                out = core.take_effects()
        if out:
            self._run(out)

    def _run(self, effects: list[Effect[C]]) -> None:
        """Carry out effects, outside the lock, in order."""
        for effect in effects:
            kind = type(effect)
            if kind is Wake:
                effect.waiter.token.release()  # type: ignore[union-attr]
            elif kind is Connect:
                ticket = effect.ticket  # type: ignore[union-attr]
                try:
                    threading.Thread(
                        target=self._dial,
                        args=(ticket,),
                        name=f"sqlgate-dial {self.name}",
                        daemon=True,
                    ).start()
                except BaseException as exc:  # no thread: the ticket still settles
                    self._call(self._core.connect_failed, ticket, exc)
            else:
                assert isinstance(effect, Close)
                self._close_conn(effect.entry, effect.reason)

    def _dial(self, ticket: int) -> None:
        """Opener thread: dial once and settle ``ticket`` exactly once."""
        started = monotonic()
        try:
            conn = self._connect()
            if conn is None:
                raise TypeError(f"{self.name}: connect() returned None")
            if self._on_connect is not None:
                self._configure(conn)
        except BaseException as exc:  # settle the ticket whatever happened
            # Records carry text, never the error: a handler that keeps them
            # would keep its traceback and every frame that reaches.
            log.warning("%s: connect failed: %s", self.name, repr(exc))
            core = self._core
            with self._lock:
                was_open = core.circuit_open
                core.connect_failed(ticket, exc, monotonic())
                now_open = core.circuit_open
                out = core.take_effects()
            self._run(out)
            report_circuit(self.name, was_open, now_open, core)
            if now_open and not core.is_closed:
                self._maybe_start_maintenance()  # it wakes for the probe
            return
        core = self._core
        with self._lock:
            was_open = core.circuit_open
            if core.holds(conn):
                dup = ValueError(f"{self.name}: connect() returned a live connection")
                core.connect_failed(ticket, dup, monotonic())
            else:
                core.connected(ticket, conn, monotonic())
            now_open = core.circuit_open
            out = core.take_effects()
        if self._observer is not None:
            self._observer.created(monotonic() - started)
        self._run(out)
        report_circuit(self.name, was_open, now_open, core)

    def _configure(self, conn: C) -> None:
        """Run ``on_connect``; if it raises, close ``conn`` and let the error out."""
        assert self._on_connect is not None
        try:
            self._on_connect(conn)
        except BaseException:
            try:
                conn.close()  # type: ignore[attr-defined]
            except Exception as exc:
                log.info("%s: error closing a connection: %s", self.name, repr(exc))
            raise

    def _close_conn(self, entry: Entry[C], reason: str = "") -> None:
        """Close a driver connection, then settle it in the core, whatever happens."""
        if entry.conn is None:  # collected while loosened: nothing to close
            self._call(self._core.closed, entry)
            return
        if reason == BROKEN:
            log.info(
                "%s: discarding a broken connection %s", self.name, repr(entry.conn)
            )
        try:
            try:
                if self._on_close is not None:
                    self._on_close(entry.conn)
            finally:
                entry.conn.close()  # type: ignore[attr-defined]
        except Exception as exc:
            log.info("%s: error closing a connection: %s", self.name, repr(exc))
        finally:
            self._call(self._core.closed, entry)

    # -- maintenance ---------------------------------------------------------

    def _maybe_start_maintenance(self) -> None:
        """Start the sweeper thread if a knob needs it and none is running."""
        self._maintenance_wakeup.set()
        if self._needs_maintenance() and (
            self._maintenance is None or not self._maintenance.is_alive()
        ):
            self._maintenance = threading.Thread(
                target=_maintain,
                args=(weakref.ref(self), self._maintenance_wakeup),
                name=f"sqlgate-maintenance {self.name}",
                daemon=True,
            )
            self._maintenance.start()

    # -- knobs, stats, close ---------------------------------------------------

    def set_max_open_conns(self, n: int) -> None:
        """Set ``max_open`` (0 = unlimited); takes effect at once."""
        self._call(self._core.set_max_open, n)

    def set_max_idle_conns(self, n: int) -> None:
        """Set ``max_idle`` (<= 0 keeps none); surplus idle ones close now."""
        self._call(self._core.set_max_idle, n)

    def set_min_idle_conns(self, n: int) -> None:
        """Set the warm floor of idle connections (at most the idle cap)."""
        self._call(self._core.set_min_idle, n)
        self._maybe_start_maintenance()

    def set_max_connecting(self, n: int) -> None:
        """Set how many dials may be in flight at once (0 = unlimited)."""
        self._call(self._core.set_max_connecting, n)

    def set_conn_max_lifetime(self, seconds: float | None) -> None:
        """Set the lifetime (None = forever); expired idle ones close now."""
        self._call(self._core.set_conn_max_lifetime, seconds)
        self._maybe_start_maintenance()

    def set_conn_max_idle_time(self, seconds: float | None) -> None:
        """Set the idle time limit (None = forever); expired ones close now."""
        self._call(self._core.set_conn_max_idle_time, seconds)
        self._maybe_start_maintenance()

    def set_circuit_after(self, n: int) -> None:
        """Set how many failed dials in a row open the circuit (0 = never)."""
        self._call(self._core.set_circuit_after, n)

    def stats(self) -> Stats:
        """A consistent snapshot of the pool's figures (see ``Stats``)."""
        with self._lock:
            return self._core.stats()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._core.is_closed

    def close(self, timeout: float | None = 0) -> int:
        """Close the pool; idempotent.

        Idle connections are closed now; queued callers fail with PoolClosed;
        later acquires raise PoolClosed. Connections in use are closed when
        released, or, if ``timeout`` passes first, taken from their callers
        and closed (their late ``release`` is then a no-op).

        Args:
            timeout: seconds to wait for connections in use to come back; 0
                (the default) does not wait and leaves them to be closed on
                release; None waits for them however long it takes.

        Returns:
            How many connections in use were force-closed (0 if all came back
            in time, or when not waiting).

        Raises:
            TypeError: ``timeout`` is not a number or None.
            ValueError: ``timeout`` is negative or NaN.
        """
        limit = check_duration("timeout", timeout, zero_ok=True)
        self._call(self._core.close)
        self._maintenance_wakeup.set()
        if limit == 0:
            return 0
        self._check_all_back()
        deadline = None if limit is None else monotonic() + limit
        while not self._all_back.is_set():
            left = 1.0 if deadline is None else deadline - monotonic()
            if left <= 0:
                break
            # Releases set the event; the recheck also catches reclaimed leaks.
            self._all_back.wait(min(left, 0.05))
            if self._lost:
                self._drain_lost()
            self._check_all_back()
        with self._lock:
            taken = take_in_use(self, monotonic())
            out = self._core.take_effects()
        report_taken(self.name, taken, limit)
        self._run(out)
        return taken

    def _check_all_back(self) -> None:
        """Set ``_all_back`` once the pool is closed and nothing is in use."""
        with self._lock:
            if self._core.is_closed and self._core._in_use == 0:
                self._all_back.set()

    def _forked(self) -> None:
        """In a forked child: forget the parent's connections, never touch them.

        The inherited sockets belong to the parent's sessions: closing them,
        or letting a driver finalizer say goodbye on them, would end the
        parent's sessions. Each one's descriptor is pointed at /dev/null in
        this process and the objects are kept referenced until exit; the pool
        continues with a fresh core, the same knobs and no connections.
        """
        self._lock = threading.Lock()  # another thread may have held it
        self._core = renew_after_fork(self._core, monotonic())
        self._lost = deque()
        self._held = {}
        self._taken = set()
        self._all_back = threading.Event()
        self._maintenance_wakeup = threading.Event()
        self._maintenance = None
        self._maybe_start_maintenance()


class _Checkout(Generic[C]):
    """``with pool.connection() as conn``: a class, not a generator, for speed."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: Pool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    def __enter__(self) -> C:
        self._conn = conn = self._pool.acquire(self._timeout)
        return conn

    def __exit__(self, *exc_info: object) -> None:
        self._pool.release(self._conn)


def _nothing(now: float) -> None:
    """A core input that changes nothing: ``_call(_nothing)`` drains the outbox."""


def _maintain(pool_ref: weakref.ref[Pool[object]], wakeup: threading.Event) -> None:
    """Maintenance thread: expire idle connections and refill ``min_idle``.

    Holds the pool only weakly between ticks, so an abandoned pool can be
    collected; exits when the pool is closed or no knob needs it.
    """
    while True:
        pool = pool_ref()
        if pool is None or not pool._needs_maintenance():
            return
        core = pool._core
        wakeup.clear()  # a knob changed after this point wakes the next wait
        if pool._lost:
            pool._drain_lost()
        with pool._lock:
            due = core.expire(monotonic())
            out = core.take_effects()
        pool._run(out)
        leak_due = pool._check_leaks(monotonic())
        if leak_due is not None:
            due = leak_due if due is None else min(due, leak_due)
        del pool
        delay = 1.0 if due is None else min(1.0, max(0.005, due - monotonic()))
        wakeup.wait(delay)
