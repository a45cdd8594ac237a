"""AsyncPool: the asyncio shell that carries out the core's decisions.

No lock: a synchronous core call is atomic on the event loop, so each public
method makes its core call(s) between two awaits and then carries the effects
out. Dials and closes run as tasks the pool owns (kept in a set so they are
not collected), never in a caller's task: a caller that is cancelled or times
out can never leave a dial unreported or skip the ``close_done`` report of a close.

A pool belongs to the event loop it is first used in. Futures and tasks are
made on first use, never in ``__init__``, so a pool may be created before the
loop runs (at import time, in a sync factory).

Hooks, the observer and leak tracking work as in ``Pool`` and share its code
(``_shell``, ``_leaks``). When none is set, ``acquire`` and ``release`` are the plain
methods below; setting one installs the hooked pair on the instance, so the
common path pays nothing for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import weakref
from asyncio import get_running_loop
from collections import deque
from functools import partial
from time import monotonic
from time import monotonic as _stock_loop_clock
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlgate._core import (
    ABANDONED,
    BROKEN,
    CIRCUIT_AFTER,
    IN_USE,
    MAX_CONNECTING,
    SERVED,
    WAITING,
    Close,
    Connect,
    Entry,
    PoolConfig,
    Waiter,
    Wake,
    validate_duration,
)
from sqlgate._deadlines import LoopDeadlines
from sqlgate._fork import forget_after_fork, keep, renew_after_fork
from sqlgate._leaks import check_leaks, report_reclaimed, track
from sqlgate._reset import (
    commit_open_transaction_async,
    rollback_open_transaction_async,
)
from sqlgate._reset import rollback_async as _rollback
from sqlgate._shell import (
    ShellBase,
    report_circuit,
    report_taken,
    take_in_use,
    timeout_error,
    waiter_error,
)
from sqlgate.drivers._probe import (
    CLEAN,
    ROLLBACK,
    STATE_PROBES,
    UNUSABLE,
    state_probe,
)
from sqlgate.errors import ConnectError, Error, PoolTimeout

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from types import TracebackType

    from sqlgate._core import Effect
    from sqlgate.stats import Observer, Stats

__all__ = ["AsyncPool"]

C = TypeVar("C")

log = logging.getLogger("sqlgate")

#: The critical section of this shell for ``_leaks.track``: none is needed, as
#: core calls run on the loop's thread and never await in between.
_NO_LOCK = contextlib.nullcontext()


async def _call_hook(hook: Callable[[Any], object], conn: object) -> None:
    """Call a hook that may be a plain function or a coroutine function."""
    result = hook(conn)
    if result is not None and inspect.isawaitable(result):
        await result


class AsyncPool(ShellBase[C]):
    """An asyncio pool of database connections, after Go's ``database/sql``.

    The same rules as ``Pool`` (one shared ``PoolCore``): dials run as
    pool-owned tasks, waiters are served first come first served, idle
    connections are reused most recently returned first.

    Example::

        async with AsyncPool(lambda: asyncpg.connect(dsn), max_open=8) as pool:
            async with pool.connection() as conn:
                await conn.fetchval("select 1")
    """

    # The knobs' docs live once, on PoolConfig: D417 would have them again here.
    def __init__(  # noqa: D417
        self,
        aconnect: Callable[[], Awaitable[C]],
        *,
        max_open: int = 0,
        max_idle: int = 2,
        min_idle: int = 0,
        max_connecting: int = MAX_CONNECTING,
        conn_max_lifetime: float | None = None,
        conn_max_idle_time: float | None = None,
        acquire_timeout: float | None = 30.0,
        timeout_at_capacity_only: bool = False,
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
        """Create a pool; it needs no running loop and dials nothing yet.

        The pool binds to the event loop it is first used in. With
        ``min_idle`` > 0, the warm floor is dialed from then on (or from
        ``async with``).

        Args:
            aconnect: an async callable (or one returning an awaitable) that
                opens a new connection.
            max_open, max_idle, min_idle, max_connecting, conn_max_lifetime,
            conn_max_idle_time, acquire_timeout, timeout_at_capacity_only,
            max_waiting, rollback_on_return, circuit_after, leak_threshold:
                the pool's knobs, described and validated once, on
                ``sqlgate._core.PoolConfig`` (the README's "Knobs" lists them too).
            reset: called with each returned connection after the rollback
                (a plain function or a coroutine function); if it raises, the
                connection is discarded.
            name: the pool's name in messages and metrics.
            on_connect: called with each new connection in the dialing task,
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

        Each hook may be a plain function or a coroutine function: a result
        that is awaitable is awaited (a plain function runs on the event loop
        and must not block). A hook awaited by ``acquire`` or ``release`` that
        is cancelled counts as a hook that raised: the connection is
        discarded, and the cancellation propagates.

        Raises:
            TypeError: ``aconnect``, ``reset`` or a hook is not callable, or a
                knob has the wrong type.
            ValueError: a knob is out of range; the message names it.
        """
        if not callable(aconnect):
            raise TypeError(f"aconnect must be callable, got {aconnect!r}")
        config = PoolConfig(
            max_open=max_open,
            max_idle=max_idle,
            min_idle=min_idle,
            max_connecting=max_connecting,
            conn_max_lifetime=conn_max_lifetime,
            conn_max_idle_time=conn_max_idle_time,
            max_waiting=max_waiting,
            circuit_after=circuit_after,
            acquire_timeout=acquire_timeout,
            timeout_at_capacity_only=timeout_at_capacity_only,
            rollback_on_return=rollback_on_return,
            leak_threshold=leak_threshold,
            name=name if name is not None else f"aiopool-{id(self):x}",
        )
        self._setup(
            config,
            reset=reset,
            on_connect=on_connect,
            on_acquire=on_acquire,
            on_release=on_release,
            on_close=on_close,
            observer=observer,
        )
        self._aconnect = aconnect
        #: Set when the pool is shut and nothing is in use any more; made
        #: by ``close(timeout=...)``.
        self._all_back: asyncio.Event | None = None
        #: The loop this pool is bound to; None until first use.
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Pool-owned tasks (dials, closes, maintenance): strong references,
        #: so none is collected while it runs; close() waits for them.
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        #: Wakes the maintenance task when a knob changes or the pool closes.
        self._maintenance_wakeup: asyncio.Event | None = None
        #: The loop's clock and future factory, set by ``_bind_loop``: the
        #: loop's own methods, or for asyncio's stock loops the C functions
        #: those call (one Python frame fewer per wait).
        self._clock: Callable[[], float] = _stock_loop_clock
        self._new_future: Callable[[], asyncio.Future[None]] = _no_loop_yet
        #: Waiters' deadlines (loop clock), served by one timer for the pool.
        self._deadlines = self._new_deadlines()
        #: Has the loop run ``_settle_late`` soon: safe in a finalizer, from
        #: any thread, inside a core call.
        self._wake_late = partial(_settle_on_loop, weakref.ref(self))
        forget_after_fork(self)

    def __repr__(self) -> str:
        s = self._core.stats()
        state = "closed" if self._core.is_closed else "open"
        return (
            f"<sqlgate.AsyncPool {self.name!r} {state} open={s.open_connections} "
            f"in_use={s.in_use} idle={s.idle} waiting={s.waiting}>"
        )

    async def __aenter__(self) -> AsyncPool[C]:
        self._bind_loop()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the loop this pool belongs to -----------------------------------------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
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
        self._clock, self._new_future = _loop_primitives(loop)
        self._deadlines.bind(loop, self._clock)
        self._maybe_start_maintenance()
        return loop

    # -- acquire / release ---------------------------------------------------

    # The pool's own timeout is not a cancellation, so it can raise
    # PoolTimeout with the numbers and the last dial error. One timer serves
    # every waiter (``_deadlines``): a wait costs no timer of its own.
    async def acquire(self, timeout: float | None = None) -> C:  # noqa: ASYNC109
        """Take a connection, waiting for one if none is idle.

        As ``Pool.acquire`` (its arguments, result and errors hold here).

        Raises:
            Error: the pool is bound to another event loop.

        Cancellation:
            A cancellation point only when no connection is idle. A cancel (or
            an ``asyncio.timeout``/``wait_for`` around the call) leaves the
            queue; a connection handed over just before the cancel arrived
            goes to the next waiter, back to idle, or is closed. The dial made
            for the caller runs on and its connection is kept or passed on.
        """
        if get_running_loop() is not self._loop:
            self._bind_loop()
        if timeout is None:
            limit = self._timeout
        else:  # checked before queueing: a bad one leaves no waiter behind
            limit = validate_duration("timeout", timeout, zero_ok=True)
        core = self._core
        try:
            got = core.acquire(monotonic())
        except BaseException:
            # Refused (shut, too many waiters) after closing expired idle
            # connections on the way: carry those closes out, then raise.
            self._carry_out()
            raise
        if type(got) is Entry:  # the common path: an idle one was there
            if core.outbox:
                self._carry_out()
            if core.config.min_idle:
                # The core leaves refilling the warm floor to maintenance.
                self._wake_maintenance()
            return got.conn
        assert isinstance(got, Waiter)
        # The token must exist before any effect runs: a Wake may follow.
        got.token = fut = self._new_future()
        if core.outbox:
            self._carry_out()
        if self._timeout_at_capacity_only and not got.at_capacity:
            limit = None  # waiting for a dial below max_open: not timed
        if self._observer is not None:
            return await self._wait_observed(got, limit)
        # _wait() inlined: one coroutine fewer on every wait and every wake.
        if limit:
            deadline = self._clock() + limit
            deadlines = self._deadlines
            records = deadlines.records
            if records and records[-1][0] <= deadline and deadlines.timer is not None:
                # deadlines.add() inlined for its common case: an append.
                records.append((deadline, got))
                if len(records) > deadlines.cap:
                    deadlines.trim()
            else:
                deadlines.add(got, deadline)
        elif limit is not None:
            self._time_out(got)
        if not fut.done():
            try:
                await fut
            except BaseException:
                # Cancelled (or interrupted): leave the queue; if the hand-off
                # won the race, the core passes that connection on (I6).
                self._call(core.abandon, got, timed_out=False)
                raise
        if got.state == SERVED:
            return got.entry.conn  # type: ignore[union-attr]
        raise self._wait_error(got, limit)

    async def _wait_observed(self, waiter: Waiter[C], limit: float | None) -> C:
        """``_wait``, reporting the wait (and a timeout) to the observer."""
        observer = self._observer
        assert observer is not None
        try:
            return await self._wait(waiter, limit)
        except PoolTimeout:
            observer.timed_out()
            raise
        finally:
            observer.waited(monotonic() - waiter.enqueued_at)

    async def _wait(self, waiter: Waiter[C], limit: float | None) -> C:
        """Wait until ``waiter`` is settled or ``limit`` seconds pass.

        The plain ``acquire`` runs the same steps inline.
        """
        fut: asyncio.Future[None] = waiter.token  # type: ignore[assignment]
        if limit:
            self._deadlines.add(waiter, self._clock() + limit)
        elif limit is not None:
            self._time_out(waiter)
        if not fut.done():
            try:
                await fut
            except BaseException:
                self._call(self._core.abandon, waiter, timed_out=False)
                raise
        if waiter.state == SERVED:
            entry = waiter.entry
            assert entry is not None
            return entry.conn
        raise self._wait_error(waiter, limit)

    def _wait_error(self, waiter: Waiter[C], limit: float | None) -> BaseException:
        """What a waiter that was not served raises."""
        if waiter.state == ABANDONED:  # the pool's timer gave up on it
            return timeout_error(self.name, self._core, limit)
        return waiter_error(self.name, waiter)

    # -- the waiters' deadlines: one timer for the pool (``_deadlines``) -------

    def _new_deadlines(self) -> LoopDeadlines[Waiter[C]]:
        """The record of waiters' deadlines; ``_time_out`` gives each up."""
        core = self._core
        return LoopDeadlines(_is_waiting, lambda: len(core._waiters), self._time_out)

    def _time_out(self, waiter: Waiter[C]) -> None:
        """Give up on a waiter nobody has served yet (its deadline passed)."""
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
                or foreign); no count changes. A connection that
                ``close(timeout=...)`` took back is not an error: its late
                release does nothing.
            Error: the pool is bound to another event loop.

        Cancellation:
            A cancellation point only while the ``on_release`` hook, the
            rollback or the ``reset`` hook runs. A cancel there discards the
            connection (its state is unknown): it is closed by the pool, never
            left in use.
        """
        if get_running_loop() is not self._loop:
            self._bind_loop()
        core = self._core
        # core.lookup() inlined for the common case; it raises the precise error.
        entry = core._registry.get(id(conn))
        if entry is None or entry.conn is not conn or entry.state != IN_USE:
            found = self._lookup(conn)
            if found is None:
                return
            entry = found
        if not broken and not core._shut_down:
            hook = self._reset
            try:
                if self._rollback_on_return:
                    # What the connection needs; the probe lookup inlined.
                    probe = STATE_PROBES.get(type(conn)) or state_probe(conn)
                    state = probe(conn)
                else:
                    state = CLEAN
                if state == ROLLBACK:
                    await _rollback(conn)
                if hook is not None and state != UNUSABLE:
                    result = hook(conn)
                    if inspect.isawaitable(result):
                        await result
                broken = state == UNUSABLE
            except Exception as exc:
                log.info(
                    "%s: discarding a connection that failed reset: %s",
                    self.name,
                    repr(exc),
                )
                broken = True
            except BaseException:
                # Cancelled mid-rollback: the link is in an unknown state, so
                # settle it as broken (the pool closes it) before the cancel
                # propagates; never leave it IN_USE.
                self._settle(entry, broken=True)
                raise
            if entry.state != IN_USE:
                return  # close(timeout=...) took it meanwhile
        core.release(entry, monotonic(), broken)
        out = core.outbox
        if out:  # _carry_out() inlined, and its common effect: one waiter served
            core.outbox = []
            if core._shut_down:
                # The connection is closed before release returns: left to a
                # task alone, a loop ending now would cut the close short.
                self._signal_if_all_back()
                await self._run_and_wait(out)
            elif len(out) == 1 and type(wake := out[0]) is Wake:
                fut: asyncio.Future[None] = wake.waiter.token  # type: ignore[assignment]
                if not fut.done():
                    fut.set_result(None)
            else:
                self._run(out)

    async def _run_and_wait(self, effects: list[Effect[C]]) -> None:
        """Carry out effects, then wait for the closes among them.

        Cancellation: a cancel stops only the waiting; the closes run on as
        pool tasks (``close()`` waits for them).
        """
        closes = []
        for effect in effects:
            if type(effect) is Close:
                close = self._close_conn(effect.entry, effect.reason)
                closes.append(self._spawn(close))
            else:
                self._run([effect])
        if closes:
            await asyncio.wait(closes)

    def _settle(self, entry: Entry[C], *, broken: bool) -> None:
        """Give ``entry`` back now, unless ``close(timeout)`` took it already."""
        if entry.state == IN_USE:
            self._call(self._core.release, entry, broken=broken)
            self._signal_if_all_back()

    def connection(self, timeout: float | None = None) -> _AsyncCheckout[C]:
        """Acquire a connection for an ``async with`` block; released after it.

        As psycopg_pool's ``connection()``: a transaction the block leaves
        open is committed when the block ends normally and rolled back when
        it raises; then the connection goes back. (A bare ``release`` rolls
        back whatever is open.)

        Args:
            timeout: as for ``acquire``.

        Returns:
            An async context manager whose ``__aenter__`` acquires and returns
            the driver's connection and whose ``__aexit__`` commits or rolls
            back, then releases it.

        Raises:
            TransactionAborted: on leaving the block normally, the transaction
                was already aborted (PostgreSQL, after an error the block
                caught); it was rolled back.
            The driver's error: the COMMIT failed (the connection is given
                back all the same).

        Cancellation:
            A cancel during the commit or rollback discards the connection
            (whether the commit happened is unknown).
        """
        return _AsyncCheckout(self, timeout)

    # -- hooks and observer (off the plain path) ------------------------------

    async def _acquire_hooked(self, timeout: float | None = None) -> C:  # noqa: ASYNC109
        """As ``Pool._acquire_hooked``, awaiting the hook."""
        if self._leaked or self._returns:
            self._settle_late()
        conn = await AsyncPool.acquire(self, timeout)
        if self._leak_threshold is not None:
            track(self._core, _NO_LOCK, conn, self._held, self._leaked, self._wake_late)
        hook = self._on_acquire
        if hook is not None:
            try:
                # _call_hook inlined: a plain hook costs no coroutine.
                result = hook(conn)
                if result is not None and inspect.isawaitable(result):
                    await result
            except BaseException:
                # The hook raised, or the caller was cancelled while it ran:
                # either way the connection's state is unknown; discard it.
                entry = self._lookup(conn)
                if entry is not None:
                    self._held.pop(entry, None)
                    self._settle(entry, broken=True)
                raise
        return conn

    async def _release_hooked(self, conn: C, *, broken: bool = False) -> None:
        """As ``Pool._release_hooked``, awaiting the hook."""
        entry = self._lookup(conn)  # a foreign conn raises before any hook
        if entry is None:
            return
        if self._leak_threshold is not None:
            self._held.pop(entry, None)
        error: BaseException | None = None
        hook = self._on_release
        if hook is not None and not broken:
            try:
                result = hook(conn)  # _call_hook inlined, as in _acquire_hooked
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.info(
                    "%s: discarding a connection: on_release raised %s",
                    self.name,
                    repr(exc),
                )
                error = exc
                broken = True
            except BaseException:
                # Cancelled while the hook ran: as if it had raised.
                if entry.state == IN_USE:
                    self._observe_used(entry)
                    self._settle(entry, broken=True)
                raise
            if entry.state != IN_USE:
                return  # close(timeout=...) took it meanwhile
        self._observe_used(entry)
        await AsyncPool.release(self, conn, broken=broken)
        if error is not None:
            raise error

    def _observe_used(self, entry: Entry[C]) -> None:
        observer = self._observer
        if observer is not None:
            observer.used(monotonic() - entry.acquired_at)

    # -- leak tracking (only while leak_threshold is set) ----------------------

    def _reclaim_leaked(self) -> None:
        """As ``Pool._reclaim_leaked``, on the loop (no hold to keep)."""
        core = self._core
        while self._leaked:
            entry = self._leaked.popleft()
            reclaimed = core.reclaim(entry, monotonic())
            held = self._held.pop(entry, None)
            if reclaimed:
                report_reclaimed(self.name, held)
            self._carry_out()
        self._signal_if_all_back()

    # -- work queued where nothing may block (finalizers, the collector) -------

    def _release_soon(self, conn: C, *, broken: bool = False) -> None:
        """``release``, for code that may run in any thread or in a finalizer.

        Never calls the core here (a collection may have interrupted a core
        call on the loop thread): queues ``conn`` and has the pool's loop
        release it soon, as a pool task (``close()`` waits for it). Once that
        loop is closed, nothing can run on it any more: the connection is
        settled right away, as broken (see ``_settle_without_loop``).
        """
        self._returns.append((conn, broken))
        self._wake_late()

    def _settle_late(self) -> None:
        """On the loop: release what ``_release_soon`` queued, reclaim leaks."""
        if self._leaked:
            self._reclaim_leaked()
        returns = self._returns
        while returns:
            conn, broken = returns.popleft()
            self._spawn(self._release_late(conn, broken))

    async def _release_late(self, conn: C, broken: bool) -> None:
        """Pool task: release a connection queued by ``_release_soon``."""
        try:
            await self.release(conn, broken=broken)
        except Exception as exc:
            log.warning("%s: a late release failed: %s", self.name, repr(exc))

    def _settle_without_loop(self) -> None:
        """Settle queued late work when the pool's loop is closed.

        No pool task or caller can run any more, so nothing else is in a core
        call (but a read such as ``stats()`` the collector interrupted). Each
        returned connection is discarded (no rollback without a loop), each
        collected one reclaimed; closes run their synchronous part only.
        """
        core = self._core
        while self._leaked:
            entry = self._leaked.popleft()
            if core.reclaim(entry, monotonic()):
                report_reclaimed(self.name, self._held.pop(entry, None))
        while self._returns:
            conn, _ = self._returns.popleft()
            try:
                found = self._lookup(conn)
            except ValueError as exc:
                log.warning("%s: a late release failed: %s", self.name, repr(exc))
                continue
            if found is not None:
                core.release(found, monotonic(), True)
        effects = core.take_effects()
        while effects:
            for effect in effects:
                if type(effect) is Close:
                    self._close_without_loop(effect.entry)
                elif type(effect) is Connect:
                    error = Error(f"{self.name}: its event loop is closed")
                    core.connect_failed(effect.ticket, error, monotonic())
                else:
                    assert isinstance(effect, Wake)
                    fut: asyncio.Future[None] = effect.waiter.token  # type: ignore[assignment]
                    # On a closed loop its callbacks cannot be scheduled
                    # (RuntimeError): nobody waits on it any more.
                    if not fut.done():
                        with contextlib.suppress(RuntimeError):
                            fut.set_result(None)
            effects = core.take_effects()

    def _close_without_loop(self, entry: Entry[C]) -> None:
        """Close a connection as far as can be done without a loop; settle it."""
        conn = entry.conn
        if conn is not None:
            for step in (self._on_close, _close):
                if step is None:
                    continue
                try:
                    result = step(conn)
                except Exception as exc:
                    log.info("%s: error closing a connection: %s", self.name, repr(exc))
                    continue
                if inspect.isawaitable(result):
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()  # never awaited: no loop to await it on
                    if step is _close:
                        log.warning(
                            "%s: a connection could not be closed: its event "
                            "loop is closed",
                            self.name,
                        )
        self._core.close_done(entry, monotonic())

    # -- carrying out effects -------------------------------------------------

    def _carry_out(self) -> None:
        """Carry out whatever the core left in its outbox."""
        core = self._core
        if core.outbox:
            self._run(core.take_effects())

    def _call(self, method: Callable[..., object], *args: object, **kw: object) -> None:
        """Run one core input (with ``now``), then its effects, even if it raised."""
        try:
            method(*args, monotonic(), **kw)
        finally:
            self._carry_out()

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
                self._spawn(self._close_conn(effect.entry, effect.reason))

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
        started = monotonic()
        try:
            conn = await self._aconnect()
            if conn is None:
                raise TypeError(f"{self.name}: aconnect() returned None")
            if self._on_connect is not None:
                await self._configure(conn)
        except BaseException as exc:  # settle the ticket whatever happened
            error: BaseException = exc
            if not isinstance(exc, Exception):
                # Cancelled (the loop is shutting down): a waiter must not see
                # a CancelledError it did not ask for.
                error = ConnectError(f"{self.name}: dial interrupted: {exc!r}")
                error.__cause__ = exc
            # Records carry text, never the error: a handler that keeps them
            # would keep its traceback and every frame that reaches.
            log.warning("%s: connect failed: %s", self.name, repr(exc))
            was_open = core.circuit_open
            self._call(core.connect_failed, ticket, error)
            report_circuit(self.name, was_open, core.circuit_open, core)
            if core.circuit_open and not core.is_closed:
                self._maybe_start_maintenance()  # it wakes for the probe
            if error is not exc:
                raise
            return
        try:
            was_open = core.circuit_open
            if core.holds(conn):
                dup = ValueError(f"{self.name}: aconnect() returned a live connection")
                core.connect_failed(ticket, dup, monotonic())
            else:
                core.connected(ticket, conn, monotonic())
            report_circuit(self.name, was_open, core.circuit_open, core)
            if self._observer is not None:
                self._observer.created(monotonic() - started)
        finally:
            self._carry_out()

    async def _configure(self, conn: C) -> None:
        """As ``Pool._configure``; the hook and the close may be coroutines."""
        assert self._on_connect is not None
        try:
            await _call_hook(self._on_connect, conn)
        except BaseException:
            try:
                await _call_hook(_close, conn)
            except Exception as exc:
                log.info("%s: error closing a connection: %s", self.name, repr(exc))
            raise

    async def _close_conn(self, entry: Entry[C], reason: str = "") -> None:
        """Pool task: close a driver connection, then settle it, whatever happens."""
        conn = entry.conn
        if conn is None:  # collected while loosened: nothing to close
            self._call(self._core.close_done, entry)
            return
        if reason == BROKEN:
            log.info("%s: discarding a broken connection %s", self.name, repr(conn))
        try:
            try:
                if self._on_close is not None:
                    await _call_hook(self._on_close, conn)
            finally:
                await _call_hook(_close, conn)
        except Exception as exc:
            log.info("%s: error closing a connection: %s", self.name, repr(exc))
        finally:
            # Even when cancelled mid-close (loop shutdown): the slot is freed.
            self._call(self._core.close_done, entry)

    # -- maintenance ---------------------------------------------------------

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
        """Pool task: expire idle connections, refill ``min_idle``, probe, leaks.

        Runs only while the pool is open and a lifetime, idle-time or
        ``min_idle`` knob is set, the circuit is open (for the probe dial) or
        leaks are tracked; sleeps until the next deadline, or less, so that
        connections returned or handed out meanwhile are looked at in time.
        """
        core = self._core
        while self._needs_maintenance():
            wakeup.clear()  # a knob changed after this point wakes the wait
            if self._leaked or self._returns:
                self._settle_late()
            due = core.expire(monotonic())
            self._carry_out()
            leak_due = check_leaks(
                self.name, self._held, self._leak_threshold, monotonic()
            )
            if leak_due is not None:
                due = leak_due if due is None else min(due, leak_due)
            # A connection returned (or handed out) meanwhile expires (or
            # leaks) no sooner than one knob from now: never sleep longer than
            # that (nor than 1 s).
            cap = min(
                1.0,
                core.config.conn_max_idle_time or math.inf,
                core.config.conn_max_lifetime or math.inf,
                self._leak_threshold or math.inf,
            )
            delay = cap if due is None else min(cap, max(0.005, due - monotonic()))
            try:
                async with asyncio.timeout(delay):
                    await wakeup.wait()
            except TimeoutError:
                pass

    # -- knobs, stats, close ---------------------------------------------------

    async def set_max_open_conns(self, n: int) -> None:
        """As ``Pool.set_max_open_conns``, on the pool's event loop."""
        self._bind_loop()
        self._call(self._core.set_max_open, n)

    async def set_max_idle_conns(self, n: int) -> None:
        """As ``Pool.set_max_idle_conns``, on the pool's event loop."""
        self._bind_loop()
        self._call(self._core.set_max_idle, n)

    async def set_min_idle_conns(self, n: int) -> None:
        """As ``Pool.set_min_idle_conns``, on the pool's event loop."""
        self._bind_loop()
        self._call(self._core.set_min_idle, n)
        self._maybe_start_maintenance()

    async def set_max_connecting(self, n: int) -> None:
        """As ``Pool.set_max_connecting``, on the pool's event loop."""
        self._bind_loop()
        self._call(self._core.set_max_connecting, n)

    async def set_conn_max_lifetime(self, seconds: float | None) -> None:
        """As ``Pool.set_conn_max_lifetime``, on the pool's event loop."""
        self._bind_loop()
        self._call(self._core.set_conn_max_lifetime, seconds)
        self._maybe_start_maintenance()

    async def set_conn_max_idle_time(self, seconds: float | None) -> None:
        """As ``Pool.set_conn_max_idle_time``, on the pool's event loop."""
        self._bind_loop()
        self._call(self._core.set_conn_max_idle_time, seconds)
        self._maybe_start_maintenance()

    async def set_circuit_after(self, n: int) -> None:
        """As ``Pool.set_circuit_after``, on the pool's event loop."""
        self._bind_loop()
        self._call(self._core.set_circuit_after, n)

    def stats(self) -> Stats:
        """As ``Pool.stats``."""
        return self._core.stats()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._core.is_closed

    async def close(self, timeout: float | None = 0) -> int:  # noqa: ASYNC109
        """Close the pool and wait for its own work to finish; idempotent.

        As ``Pool.close`` (its arguments, result and errors hold here; a bad
        ``timeout`` leaves the pool open), and it returns once every dial in
        flight has landed (and been closed) and every close has finished.

        Raises:
            Error: the pool is bound to another event loop.

        Cancellation:
            A cancellation point while waiting for connections in use and for
            the pool's tasks. A cancel stops only the waiting: the pool is
            closed already, connections still in use are closed when released,
            and its tasks run on and settle every count; call ``close()``
            again to wait.
        """
        limit = validate_duration("timeout", timeout, zero_ok=True)
        self._bind_loop()
        if self._leaked or self._returns:
            self._settle_late()  # their release tasks are waited for below
        self._call(self._core.close)
        self._deadlines.clear()  # every waiter failed with PoolClosed
        self._wake_maintenance()
        taken = 0 if limit == 0 else await self._take_back(limit)
        # Closing may spawn more tasks (a dial landing is closed): loop.
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        return taken

    async def _take_back(self, limit: float | None) -> int:
        """Wait up to ``limit`` s for connections in use, then force-close the rest."""
        if self._all_back is None:
            self._all_back = asyncio.Event()
        all_back = self._all_back
        self._signal_if_all_back()
        deadline = None if limit is None else monotonic() + limit
        while not all_back.is_set():
            left = 1.0 if deadline is None else deadline - monotonic()
            if left <= 0:
                break
            # Releases set the event; the recheck also catches reclaimed leaks.
            try:
                async with asyncio.timeout(min(left, 0.05)):
                    await all_back.wait()
            except TimeoutError:
                pass
            if self._leaked or self._returns:
                self._settle_late()
        taken = take_in_use(self, monotonic())
        report_taken(self.name, taken, limit)
        self._carry_out()
        return taken

    def _signal_if_all_back(self) -> None:
        """As ``Pool._signal_if_all_back``."""
        core = self._core
        if self._all_back is not None and core._shut_down and core._in_use == 0:
            self._all_back.set()

    def _forked(self) -> None:
        """As ``Pool._forked``; the inherited tasks and loop are left too.

        The child's pool has no loop: it binds to the child's on first use.
        """
        old = self._core
        self._core = renew_after_fork(old, monotonic())
        keep((old, self._tasks, self._maintenance, self._all_back, self._loop))
        keep(self._deadlines)
        self._loop = None
        self._clock = _stock_loop_clock
        self._new_future = _no_loop_yet
        self._deadlines = self._new_deadlines()
        self._tasks = set()
        self._maintenance = None
        self._maintenance_wakeup = None
        self._leaked = deque()
        self._returns = deque()
        self._held = {}
        self._taken = set()
        self._all_back = None


class _AsyncCheckout(Generic[C]):
    """``async with pool.connection() as conn``: a class, not a generator, for speed."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: AsyncPool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    async def __aenter__(self) -> C:
        self._conn = conn = await self._pool.acquire(self._timeout)
        return conn

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        conn = self._conn
        probe = STATE_PROBES.get(type(conn)) or state_probe(conn)
        if probe(conn) != ROLLBACK:
            # Nothing to commit or roll back (or unusable: release discards
            # it): release()'s own coroutine is the awaitable, no frame here.
            return self._pool.release(conn)
        return self._end(conn, failed=exc_type is not None)

    async def _end(self, conn: C, *, failed: bool) -> None:
        """Commit (or, after an error, roll back) what the block left open."""
        pool = self._pool
        try:
            if failed:
                await rollback_open_transaction_async(conn)
            else:
                await commit_open_transaction_async(conn)
        except Exception as error:
            await pool.release(conn, broken=failed)
            if not failed:
                raise
            log.info("%s: rollback after an error failed: %r", pool.name, error)
            return
        except BaseException:
            await pool.release(conn, broken=True)  # cancelled: state unknown
            raise
        await pool.release(conn)


def _settle_on_loop(ref: weakref.ref[AsyncPool[Any]]) -> None:
    """Have the pool's loop run ``_settle_late`` soon; safe anywhere.

    ``call_soon_threadsafe`` appends to the loop's queue and writes a byte to
    its wake-up socket: neither can block, in any thread, even inside a core
    call the collector interrupted. If the loop is closed (or the pool never
    bound one), the work is settled here (``_settle_without_loop``).
    """
    pool = ref()
    if pool is None:
        return
    loop = pool._loop
    if loop is not None and not loop.is_closed():
        try:
            loop.call_soon_threadsafe(pool._settle_late)
        except RuntimeError:  # closed meanwhile
            pass
        else:
            return
    pool._settle_without_loop()


def _is_waiting(waiter: Waiter[Any]) -> bool:
    return waiter.state == WAITING


def _no_loop_yet() -> asyncio.Future[None]:
    raise AssertionError("AsyncPool used before binding to a loop")


def _loop_primitives(
    loop: asyncio.AbstractEventLoop,
) -> tuple[Callable[[], float], Callable[[], asyncio.Future[None]]]:
    """The loop's clock and future factory, as cheap to call as they can be.

    For asyncio's own loops, ``time()`` is ``time.monotonic()`` and
    ``create_future()`` is ``asyncio.Future(loop=loop)``: those are called
    directly. A loop that overrides either (uvloop, a test's fake clock set
    on the instance) keeps its own.
    """
    base = asyncio.BaseEventLoop
    clock: Callable[[], float] = loop.time
    if getattr(clock, "__func__", None) is base.time:
        clock = _stock_loop_clock
    new_future: Callable[[], asyncio.Future[None]] = loop.create_future
    if getattr(new_future, "__func__", None) is base.create_future:
        new_future = partial(asyncio.Future, loop=loop)
    return clock, new_future


def _close(conn: Any) -> object:
    """Close a driver connection (the result may be awaitable)."""
    return conn.close()
