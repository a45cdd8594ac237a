"""AsyncPool: the asyncio shell that carries out the core's decisions.

No lock: a synchronous core call is atomic on the event loop, so each public
method makes its core call(s) between two awaits and then carries the effects
out. Dials and closes run as tasks the pool owns (kept in a set so they are
not collected), never in a caller's task: a caller that is cancelled or times
out can never orphan a dial or skip the ``closed`` report of a close.

A pool belongs to the event loop it is first used in. Futures and tasks are
made on first use, never in ``__init__``, so a pool may be created before the
loop runs (at import time, in a sync factory).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from asyncio import get_running_loop
from time import monotonic
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlgate._core import (
    ABANDONED,
    CIRCUIT_AFTER,
    IN_USE,
    SERVED,
    WAITING,
    Close,
    Connect,
    Entry,
    PoolCore,
    Waiter,
    Wake,
    check_duration,
)
from sqlgate._shell import waiter_error as _waiter_error
from sqlgate.errors import ConnectError, Error, PoolTimeout
from sqlgate.pool import DEFAULT_MAX_CONNECTING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from types import TracebackType

    from sqlgate._core import Effect
    from sqlgate.stats import Stats

__all__ = ["AsyncPool"]

C = TypeVar("C")

log = logging.getLogger("sqlgate")

#: What a returned connection needs, from ``_return_state``.
_CLEAN = 0
_ROLLBACK = 1
_UNUSABLE = 2

#: psycopg's ``TransactionStatus``: IDLE needs nothing, INTRANS and INERROR a
#: rollback; ACTIVE (a query still running) and UNKNOWN (link lost) cannot be
#: trusted again. Plain ints, so psycopg need not be imported.
_PSYCOPG_STATUS = {0: _CLEAN, 2: _ROLLBACK, 3: _ROLLBACK}


def _asyncpg_state(conn: Any) -> int:
    if conn.is_closed():
        return _UNUSABLE
    return _ROLLBACK if conn.is_in_transaction() else _CLEAN


def _psycopg_state(conn: Any) -> int:
    return _PSYCOPG_STATUS.get(int(conn.info.transaction_status), _UNUSABLE)


def _flag_state(conn: Any) -> int:
    return _ROLLBACK if conn.in_transaction else _CLEAN


def _unknown_state(conn: object) -> int:
    return _ROLLBACK


#: Connection class -> how to ask it (``_return_state``), worked out once.
_STATE_PROBES: dict[type, Callable[[Any], int]] = {}


def _return_state(conn: object) -> int:
    """What ``conn`` needs before reuse, asking the driver as cheaply as it allows.

    asyncpg has ``is_in_transaction()``, psycopg's ``AsyncConnection`` has
    ``info.transaction_status``, aiosqlite and sqlite3 have ``in_transaction``.
    A driver that says nothing is rolled back every time. Which question to
    ask is worked out once per connection class.
    """
    probe = _STATE_PROBES.get(type(conn))
    if probe is None:
        if hasattr(conn, "is_in_transaction"):
            probe = _asyncpg_state
        elif hasattr(getattr(conn, "info", None), "transaction_status"):
            probe = _psycopg_state
        elif hasattr(conn, "in_transaction"):
            probe = _flag_state
        else:
            probe = _unknown_state
        _STATE_PROBES[type(conn)] = probe
    return probe(conn)


async def _rollback(conn: object) -> None:
    """Roll back the open transaction.

    asyncpg has no ``rollback()``: its public ``reset()`` rolls back and also
    forgets the ``Transaction`` object the caller left started (a bare
    ``ROLLBACK`` would not, and its next transaction would be a savepoint).
    """
    rollback = getattr(conn, "rollback", None)
    result = rollback() if rollback is not None else conn.reset()  # type: ignore[attr-defined]
    if inspect.isawaitable(result):
        await result


class AsyncPool(Generic[C]):
    """An asyncio pool of database connections, after Go's ``database/sql``.

    The same rules as ``Pool`` (one shared ``PoolCore``): dials run as
    pool-owned tasks, waiters are served first come first served, idle
    connections are reused most recently returned first.

    Example::

        async with AsyncPool(lambda: asyncpg.connect(dsn), max_open=8) as pool:
            async with pool.connection() as conn:
                await conn.fetchval("select 1")
    """

    def __init__(
        self,
        aconnect: Callable[[], Awaitable[C]],
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
        circuit_after: int = CIRCUIT_AFTER,
    ) -> None:
        """Create a pool; it needs no running loop and dials nothing yet.

        The pool binds to the event loop it is first used in. With
        ``min_idle`` > 0, the warm floor is dialed from then on (or from
        ``async with``).

        Args:
            aconnect: an async callable (or one returning an awaitable) that
                opens a new connection.
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
            reset: called with each returned connection after the rollback
                (a plain function or a coroutine function); if it raises, the
                connection is discarded.
            name: the pool's name in messages and metrics.
            circuit_after: consecutive failed dials that open the circuit
                breaker (default 3; 0 disables it): while it is open, an
                acquire that finds nothing idle fails at once with
                ``CircuitOpen`` and one probe redials with backoff.

        Raises:
            TypeError: ``aconnect`` or ``reset`` is not callable, or a knob
                has the wrong type.
            ValueError: a knob is out of range; the message names it.
        """
        if not callable(aconnect):
            raise TypeError(f"aconnect must be callable, got {aconnect!r}")
        if reset is not None and not callable(reset):
            raise TypeError(f"reset must be callable or None, got {reset!r}")
        self.name = name if name is not None else f"aiopool-{id(self):x}"
        self._aconnect = aconnect
        self._core: PoolCore[C] = PoolCore(
            max_open=max_open,
            max_idle=max_idle,
            min_idle=min_idle,
            max_connecting=max_connecting,
            conn_max_lifetime=conn_max_lifetime,
            conn_max_idle_time=conn_max_idle_time,
            max_waiting=max_waiting,
            circuit_after=circuit_after,
            name=self.name,
        )
        self._timeout = check_duration("acquire_timeout", acquire_timeout, zero_ok=True)
        if not isinstance(rollback_on_return, bool):
            raise TypeError(
                f"rollback_on_return must be a bool, got {rollback_on_return!r}"
            )
        self._rollback_on_return = rollback_on_return
        self._reset = reset
        #: The loop this pool is bound to; None until first use.
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Pool-owned tasks (dials, closes, maintenance): strong references,
        #: so none is collected while it runs; close() waits for them.
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        #: Wakes the maintenance task when a knob changes or the pool closes.
        self._maintenance_wakeup: asyncio.Event | None = None

    def __repr__(self) -> str:
        s = self._core.stats()
        state = "closed" if self._core.is_closed else "open"
        return (
            f"<sqlgate.AsyncPool {self.name!r} {state} open={s.open_connections} "
            f"in_use={s.in_use} idle={s.idle} waiting={s.waiting}>"
        )

    async def __aenter__(self) -> AsyncPool[C]:
        self._check_loop()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the loop this pool belongs to -----------------------------------------

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        """Bind to the running loop on first use; refuse any other loop after."""
        loop = get_running_loop()
        if loop is self._loop:
            return loop
        if self._loop is not None:
            raise Error(
                f"AsyncPool {self.name!r} is bound to a different event loop "
                "(the one it was first used in); use one AsyncPool per loop "
                "and per thread"
            )
        self._loop = loop
        self._maybe_start_maintenance()
        return loop

    # -- acquire / release ---------------------------------------------------

    # The pool's own timeout is a timer on the waiter, not a cancellation, so
    # it can raise PoolTimeout with the numbers and the last dial error.
    async def acquire(self, timeout: float | None = None) -> C:  # noqa: ASYNC109
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
            Error: the pool is bound to another event loop.

        Cancellation:
            A cancellation point only when no connection is idle. A cancel (or
            an ``asyncio.timeout``/``wait_for`` around the call) leaves the
            queue; a connection handed over just before the cancel arrived
            goes to the next waiter, back to idle, or is closed. The dial made
            for the caller runs on and its connection is kept or passed on.
        """
        if get_running_loop() is not self._loop:
            self._check_loop()
        if timeout is None:
            limit = self._timeout
        else:
            limit = check_duration("timeout", timeout, zero_ok=True)
        core = self._core
        try:
            got = core.acquire(monotonic())
        except BaseException:
            # Refused (closed, too many waiters) after closing expired idle
            # connections on the way: carry those closes out, then raise.
            self._drain()
            raise
        if type(got) is Entry:  # the common path: an idle one was there
            if core.outbox:
                self._drain()
            if core.min_idle:
                # The core leaves refilling the warm floor to maintenance.
                self._wake_maintenance()
            return got.conn
        assert isinstance(got, Waiter)
        loop = self._loop
        assert loop is not None
        # The token must exist before any effect runs: a Wake may follow.
        got.token = loop.create_future()
        self._drain()
        return await self._wait(got, limit)

    async def _wait(self, waiter: Waiter[C], limit: float | None) -> C:
        """Wait until ``waiter`` is settled or ``limit`` seconds pass (a timer)."""
        fut: asyncio.Future[None] = waiter.token  # type: ignore[assignment]
        timer = None
        if limit == 0:
            self._time_out(waiter)
        elif limit is not None:
            loop = self._loop
            assert loop is not None
            timer = loop.call_later(limit, self._time_out, waiter)
        if not fut.done():
            try:
                await fut
            except BaseException:
                # Cancelled (or interrupted): leave the queue; if the hand-off
                # won the race, the core passes that connection on (I6).
                if timer is not None:
                    timer.cancel()
                self._call(self._core.abandon, waiter, timed_out=False)
                raise
        if timer is not None:
            timer.cancel()
        state = waiter.state
        if state == SERVED:
            entry = waiter.entry
            assert entry is not None
            return entry.conn
        if state == ABANDONED:  # our own timer gave up on it
            core = self._core
            s = core.stats()
            cause = core.last_dial_error if core.failing else None
            waited = "forever" if limit is None else f"{limit:.2f} s"
            raise PoolTimeout(
                f"{self.name}: no connection after {waited} "
                f"(max_open={s.max_open_connections}, in_use={s.in_use}, "
                f"waiting={s.waiting})"
            ) from cause
        raise _waiter_error(self.name, waiter)

    def _time_out(self, waiter: Waiter[C]) -> None:
        """Timer callback: give up on a waiter nobody has served yet."""
        if waiter.state != WAITING:
            return  # the hand-off (or a failure) came first; it stands
        self._call(self._core.abandon, waiter, timed_out=True)
        fut: asyncio.Future[None] = waiter.token  # type: ignore[assignment]
        if not fut.done():
            fut.set_result(None)

    async def release(self, conn: C, *, broken: bool = False) -> None:
        """Give back a connection that ``acquire`` returned.

        A transaction left open is rolled back first (when the driver says
        one may be open), then the ``reset`` hook runs; if either raises, or
        the driver reports the connection unusable, it is discarded.

        Args:
            conn: the connection.
            broken: the caller knows it is unusable; it is closed, not reused.

        Raises:
            ValueError: ``conn`` is not in use from this pool (released twice,
                or foreign); no count changes.
            Error: the pool is bound to another event loop.

        Cancellation:
            A cancellation point only while the rollback or the ``reset`` hook
            runs. A cancel there discards the connection (its state is
            unknown): it is closed by the pool, never left in use.
        """
        if get_running_loop() is not self._loop:
            self._check_loop()
        core = self._core
        entry = core.lookup(conn)
        if not broken and not core.is_closed:
            hook = self._reset
            try:
                state = _return_state(conn) if self._rollback_on_return else _CLEAN
                if state == _ROLLBACK:
                    await _rollback(conn)
                if hook is not None and state != _UNUSABLE:
                    result = hook(conn)
                    if inspect.isawaitable(result):
                        await result
                broken = state == _UNUSABLE
            except Exception as exc:
                log.info(
                    "%s: discarding a connection that failed reset: %r", self.name, exc
                )
                broken = True
            except BaseException:
                # Cancelled mid-rollback: the link is in an unknown state, so
                # settle it as broken (the pool closes it) before the cancel
                # propagates; never leave it IN_USE.
                if entry.state == IN_USE:
                    self._call(core.release, entry, broken=True)
                raise
        core.release(entry, monotonic(), broken=broken)
        if core.outbox:
            self._drain()

    def connection(self, timeout: float | None = None) -> _AsyncCheckout[C]:
        """Acquire a connection for an ``async with`` block; released after it.

        Args:
            timeout: as for ``acquire``.

        Returns:
            An async context manager whose ``__aenter__`` acquires and returns
            the driver's connection and whose ``__aexit__`` releases it.
        """
        return _AsyncCheckout(self, timeout)

    # -- carrying out effects -------------------------------------------------

    def _drain(self) -> None:
        """Carry out whatever the core left in its outbox."""
        core = self._core
        if core.outbox:
            self._run(core.take_effects())

    def _call(self, method: Callable[..., object], *args: object, **kw: object) -> None:
        """Run one core input (with ``now``), then its effects, even if it raised."""
        try:
            method(*args, monotonic(), **kw)
        finally:
            self._drain()

    def _run(self, effects: list[Effect[C]]) -> None:
        """Carry out effects in order; dials and closes become pool tasks."""
        for effect in effects:
            if type(effect) is Wake:
                fut: asyncio.Future[None] = effect.waiter.token  # type: ignore[assignment]
                # Done already if its task was cancelled: abandon() settles it.
                if not fut.done():
                    fut.set_result(None)
            elif type(effect) is Connect:
                self._spawn(self._dial(effect.ticket))
            else:
                assert isinstance(effect, Close)
                self._spawn(self._close_conn(effect.entry))

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        loop = self._loop
        assert loop is not None
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dial(self, ticket: int) -> None:
        """Pool task: dial once and settle ``ticket`` exactly once."""
        core = self._core
        try:
            conn = await self._aconnect()
            if conn is None:
                raise TypeError(f"{self.name}: aconnect() returned None")
        except BaseException as exc:  # settle the ticket whatever happened
            error: BaseException = exc
            if not isinstance(exc, Exception):
                # Cancelled (the loop is shutting down): a waiter must not see
                # a CancelledError it did not ask for.
                error = ConnectError(f"{self.name}: dial interrupted: {exc!r}")
                error.__cause__ = exc
            log.warning("%s: connect failed: %r", self.name, exc)
            self._call(core.connect_failed, ticket, error)
            if error is not exc:
                raise
            return
        if core.holds(conn):
            dup = ValueError(f"{self.name}: aconnect() returned a live connection")
            self._call(core.connect_failed, ticket, dup)
        else:
            self._call(core.connected, ticket, conn)

    async def _close_conn(self, entry: Entry[C]) -> None:
        """Pool task: close a driver connection, then settle it, whatever happens."""
        try:
            result = entry.conn.close()  # type: ignore[attr-defined]
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.info("%s: error closing a connection: %r", self.name, exc)
        finally:
            # Even when cancelled mid-close (loop shutdown): the slot is freed.
            self._call(self._core.closed, entry)

    # -- maintenance ---------------------------------------------------------

    def _needs_maintenance(self) -> bool:
        core = self._core
        return not core.is_closed and (
            core.conn_max_lifetime is not None
            or core.conn_max_idle_time is not None
            or core.min_idle > 0
        )

    def _wake_maintenance(self) -> None:
        if self._maintenance_wakeup is not None:
            self._maintenance_wakeup.set()

    def _maybe_start_maintenance(self) -> None:
        """Wake the maintenance task, or start it if a knob needs one."""
        self._wake_maintenance()
        if self._needs_maintenance() and (
            self._maintenance is None or self._maintenance.done()
        ):
            self._maintenance_wakeup = asyncio.Event()
            self._maintenance = self._spawn(self._maintain(self._maintenance_wakeup))

    async def _maintain(self, wakeup: asyncio.Event) -> None:
        """Pool task: expire idle connections and refill ``min_idle``.

        Runs only while a lifetime, idle-time or ``min_idle`` knob is set and
        the pool is open; sleeps until the core's next deadline, or less, so
        that connections returned meanwhile are looked at in time too.
        """
        core = self._core
        while self._needs_maintenance():
            wakeup.clear()  # a knob changed after this point wakes the wait
            due = core.expire(monotonic())
            self._drain()
            # A connection returned meanwhile expires no sooner than one knob
            # from now: never sleep longer than that (nor than 1 s).
            cap = min(
                1.0,
                core.conn_max_idle_time or math.inf,
                core.conn_max_lifetime or math.inf,
            )
            delay = cap if due is None else min(cap, max(0.005, due - monotonic()))
            try:
                async with asyncio.timeout(delay):
                    await wakeup.wait()
            except TimeoutError:
                pass

    # -- knobs, stats, close ---------------------------------------------------

    async def set_max_open_conns(self, n: int) -> None:
        """Set ``max_open`` (0 = unlimited); takes effect at once."""
        self._check_loop()
        self._call(self._core.set_max_open, n)

    async def set_max_idle_conns(self, n: int) -> None:
        """Set ``max_idle`` (<= 0 keeps none); surplus idle ones close now."""
        self._check_loop()
        self._call(self._core.set_max_idle, n)

    async def set_min_idle_conns(self, n: int) -> None:
        """Set the warm floor of idle connections (at most the idle cap)."""
        self._check_loop()
        self._call(self._core.set_min_idle, n)
        self._maybe_start_maintenance()

    async def set_max_connecting(self, n: int) -> None:
        """Set how many dials may be in flight at once (0 = unlimited)."""
        self._check_loop()
        self._call(self._core.set_max_connecting, n)

    async def set_conn_max_lifetime(self, seconds: float | None) -> None:
        """Set the lifetime (None = forever); expired idle ones close now."""
        self._check_loop()
        self._call(self._core.set_conn_max_lifetime, seconds)
        self._maybe_start_maintenance()

    async def set_conn_max_idle_time(self, seconds: float | None) -> None:
        """Set the idle time limit (None = forever); expired ones close now."""
        self._check_loop()
        self._call(self._core.set_conn_max_idle_time, seconds)
        self._maybe_start_maintenance()

    def stats(self) -> Stats:
        """A consistent snapshot of the pool's figures (see ``Stats``)."""
        return self._core.stats()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._core.is_closed

    async def close(self) -> None:
        """Close the pool and wait for its own work to finish; idempotent.

        Idle connections are closed; queued callers fail with PoolClosed;
        connections in use are closed when released; later acquires raise
        PoolClosed. Returns once every dial in flight has landed (and been
        closed) and every close has finished.

        Raises:
            Error: the pool is bound to another event loop.

        Cancellation:
            A cancellation point while waiting for the pool's tasks. A cancel
            stops only the waiting: the pool is closed already and its tasks
            run on and settle every count; call ``close()`` again to wait.
        """
        self._check_loop()
        self._call(self._core.close)
        self._wake_maintenance()
        # Closing may spawn more tasks (a dial landing is closed): loop.
        while self._tasks:
            await asyncio.wait(list(self._tasks))


class _AsyncCheckout(Generic[C]):
    """``async with pool.connection() as conn``: a class, not a generator, for speed."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: AsyncPool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    async def __aenter__(self) -> C:
        self._conn = conn = await self._pool.acquire(self._timeout)
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pool.release(self._conn)
