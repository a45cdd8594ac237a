"""Pool: the threading shell that carries out the core's decisions."""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections import deque
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, TypeVar

from sqlgate._core import (
    BROKEN,
    CIRCUIT_AFTER,
    CLOSING,
    FAILED,
    IN_USE,
    MAX_CONNECTING,
    SERVED,
    WAITING,
    Connect,
    Entry,
    PoolConfig,
    Waiter,
    Wake,
    validate_duration,
)
from sqlgate._courier import send_courier, start_courier
from sqlgate._fork import forget_after_fork, renew_after_fork
from sqlgate._handoff import PlainPath
from sqlgate._leaks import check_leaks, report_reclaimed, track
from sqlgate._reset import (
    _rollbacks,
    rollback_for,
)
from sqlgate._shell import (
    ShellBase,
    report_circuit,
    report_taken,
    take_in_use,
    timeout_error,
    waiter_error,
)
from sqlgate.errors import PoolTimeout

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager

    from sqlgate._core import Effect
    from sqlgate.stats import Observer, Stats

__all__ = ["DEFAULT_MAX_CONNECTING", "Pool"]

C = TypeVar("C")

log = logging.getLogger("sqlgate")

#: Dials in flight at once, by default. See docs/design.md ("max_connecting").
DEFAULT_MAX_CONNECTING = MAX_CONNECTING

_new_gate = threading.Lock

#: "Nothing to carry out": one shared empty tuple, so no path allocates for it.
_NO_EFFECTS: tuple[()] = ()


class Pool(ShellBase[C], PlainPath):
    """A thread-safe pool of DB-API connections, after Go's ``database/sql``.

    Connections are dialed by pool-owned threads (never in the waiting
    caller), handed to waiters first come first served, and reused most
    recently returned first. See ``PoolCore`` for the rules.

    Example::

        pool = Pool(lambda: sqlite3.connect("app.db"), max_open=8)
        with pool.connection() as conn:
            conn.execute("select 1")
    """

    # The knobs' docs live once, on PoolConfig: D417 would have them again here.
    def __init__(  # noqa: D417
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
        dial_in_caller: bool = False,
    ) -> None:
        """Create a pool; it dials nothing until asked (or ``min_idle`` > 0).

        Args:
            connect: a callable returning a new DB-API connection.
            max_open, max_idle, min_idle, max_connecting, conn_max_lifetime,
            conn_max_idle_time, acquire_timeout, timeout_at_capacity_only,
            max_waiting, rollback_on_return, circuit_after, leak_threshold:
                the pool's knobs, described and validated once, on
                ``sqlgate._core.PoolConfig`` (the README's "Knobs" lists them too).
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
            dial_in_caller: for drivers whose connections work only in the
                thread that made them (sqlite3 with ``check_same_thread``):
                each dial runs in the thread that carries out the pool's
                decision, which for an acquire below ``max_open`` is the
                caller itself, as Go dials in the caller, instead of a pool
                thread. Connections are still handed out first come, first
                served, so such a driver suits a pool used by one thread (as
                with any pool); a dial for another thread's queued acquire
                runs in the releasing thread, a ``min_idle`` refill in the
                maintenance thread. Settable later as ``dial_in_caller``.

        Raises:
            TypeError: ``connect`` is not callable, or a knob has the wrong type.
            ValueError: a knob is out of range; the message names it.
        """
        if not callable(connect):
            raise TypeError(f"connect must be callable, got {connect!r}")
        self._connect = connect
        if not isinstance(dial_in_caller, bool):
            raise TypeError(f"dial_in_caller must be a bool, got {dial_in_caller!r}")
        #: Dial in the thread that carries out a Connect, not a pool thread.
        self.dial_in_caller = dial_in_caller
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
            name=name if name is not None else f"pool-{id(self):x}",
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
        #: Set when the pool is shut and nothing is in use any more.
        self._all_back = threading.Event()
        #: Tickets whose dial a thread has claimed and not yet settled: a dial
        #: started again after an interrupt (``_redo``) finds it here and stops.
        self._dialing: set[int] = set()
        #: CLOSING entries whose driver ``close()`` was called (and did or did
        #: not raise): an interrupted Close carried out again never closes the
        #: driver connection twice. Emptied as each is settled.
        self._driver_closed: dict[Entry[C], object] = {}
        # Critical section: every core call, and nothing else, runs under it.
        self._lock = threading.Lock()
        # Wakes the maintenance thread when a knob changes or the pool closes.
        self._maintenance_wakeup = threading.Event()
        self._maintenance: threading.Thread | None = None
        #: Held to start the maintenance thread, or for it to decide to exit.
        self._maintenance_lock = threading.Lock()
        #: Has the courier thread run ``_settle_late``; safe in a finalizer.
        self._wake_late = partial(send_courier, weakref.ref(self))
        if self._leak_threshold is not None:
            start_courier()  # collected leaks reach waiting callers through it
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

    # acquire and release: ``PlainPath`` (sqlgate/_handoff.py, compiled in the
    # compiled build). Declared here for the type checker, with ``C`` and the
    # public argument types (the body takes any ``timeout`` to refuse a bad
    # one by name, and release a keyword private to ``Checkout``, hence the
    # narrower overrides).
    if TYPE_CHECKING:

        def acquire(self, timeout: float | None = None) -> C:  # type: ignore[override]
            """Take a connection (see ``PlainPath.acquire``)."""

        def release(self, conn: C, *, broken: bool = False) -> None:  # type: ignore[override]
            """Give back a connection (see ``PlainPath.release``)."""

        def connection(  # type: ignore[override]
            self, timeout: float | None = None
        ) -> AbstractContextManager[C]:
            """A ``with`` block's connection (see ``PlainPath.connection``)."""

    # -- hooks and observer (off the plain path) ------------------------------

    def _acquire_hooked(self, timeout: float | None = None) -> C:
        """``acquire``, then leak tracking and the ``on_acquire`` hook."""
        if self._leaked or self._returns:
            self._settle_late()
        conn: C | None = None
        try:
            conn = Pool.acquire(self, timeout)
            if self._leak_threshold is not None:
                track(
                    self._core,
                    self._lock,
                    conn,
                    self._held,
                    self._leaked,
                    self._wake_late,
                )
            hook = self._on_acquire
            if hook is not None:
                hook(conn)
            return conn
        except BaseException:
            # The hook raised, or an interrupt came after the connection was
            # handed over: the caller never gets it, so it is discarded.
            if conn is not None:
                entry = self._lookup(conn)
                if entry is not None:
                    self._held.pop(entry, None)  # tracked above: forget it
                    Pool.release(self, conn, broken=True)
            raise

    def _release_hooked(self, conn: C, *, broken: bool = False) -> None:
        """The ``on_release`` hook and the ``used`` event, then ``release``.

        Written out in full rather than calling ``release``: an interrupt
        between the two would leave nobody responsible for the connection.
        """
        core = self._core
        entry = self._lookup(conn)  # a foreign conn raises before any hook
        if entry is None:
            return
        error: BaseException | None = None
        out: Sequence[Effect[C]] | None = None  # as in ``release``
        try:
            if self._leak_threshold is not None:
                self._held.pop(entry, None)
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
            if not broken and not core._shut_down:
                broken = self._clean(conn)
            with self._lock:
                try:
                    core.release(entry, monotonic(), broken)
                    out = core.take_effects()
                except BaseException as exc:
                    out = self._release_cut_locked(entry)
                    if not (type(exc) is ValueError and entry.key in self._taken):
                        raise
            if core._shut_down:
                self._signal_if_all_back()
            self._run(out)
        except BaseException:
            self._release_failed(entry, out)
            raise
        if error is not None:
            raise error

    def _clean(self, conn: C) -> bool:
        """Roll back and reset ``conn`` for reuse; whether it must be discarded.

        An ``Exception`` is logged and means discard; anything else (an
        interrupt) propagates, and the caller gives the connection back as
        broken before re-raising it.
        """
        try:
            if self._rollback_on_return:
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
            return True
        return False

    def _release_cut_locked(self, entry: Entry[C]) -> list[Effect[C]]:
        """Under the lock, after a release's critical section raised.

        Called in the same hold as the ``core.release`` that may or may not
        have run, so nobody else has touched ``entry`` since: if the core did
        not take it back (still in use, and not handed straight to a waiter,
        whose Wake would be in the outbox), it is given back now, as broken.

        Returns:
            The effects to carry out.
        """
        core = self._core
        if entry.state == IN_USE and not any(
            type(e) is Wake and e.waiter.entry is entry for e in core.outbox
        ):
            core.release(entry, monotonic(), True)
        return core.take_effects()

    def _acquire_failed(
        self, got: Entry[C] | Waiter[C] | None, out: Sequence[Effect[C]]
    ) -> None:
        """``acquire`` is raising: undo what the core decided for it, run effects.

        Args:
            got: what ``core.acquire`` returned, or None if it did not return.
                An entry not returned to the caller goes back (it was never
                used: no rollback needed); a waiter gives up (if it was served
                meanwhile, that connection goes on to the next waiter or idle).
            out: the effects this call took and may not have carried out.
        """
        core = self._core
        with self._lock:
            if type(got) is Entry:
                if got.state == IN_USE:  # else close(timeout) took it
                    core.release(got, monotonic())
            elif got is not None:
                core.abandon(got, monotonic(), timed_out=False)  # type: ignore[arg-type]
        self._recover(out)

    def _release_failed(self, entry: Entry[C], out: Sequence[Effect[C]] | None) -> None:
        """``release`` is raising: the connection must still go back, once.

        Args:
            entry: the connection's entry.
            out: None if the core had not taken it back yet (an interrupt in
                the rollback, ``reset`` or a hook: ``AsyncPool`` settles that
                case as broken, and so does this); else the effects taken.
        """
        if out is None:
            with self._lock:
                # Not taken back by this call, so still this caller's (or
                # force-closed by close(timeout), then CLOSING: nothing to do).
                if entry.state == IN_USE:
                    self._core.release(entry, monotonic(), True)
            out = _NO_EFFECTS
        self._recover(out)

    # -- leak tracking (only while leak_threshold is set) ----------------------

    def _reclaim_leaked(self) -> None:
        """Reclaim the slots of connections collected while handed out.

        Each entry leaves ``_leaked`` only after ``reclaim`` (idempotent) ran on
        it, in the same hold: an interrupt never drops one.
        """
        leaked = self._leaked
        core = self._core
        while leaked:
            out: Sequence[Effect[C]] = _NO_EFFECTS
            try:
                with self._lock:
                    if not leaked:
                        return
                    entry = leaked[0]
                    reclaimed = core.reclaim(entry, monotonic())
                    leaked.popleft()
                    out = core.take_effects()
                held = self._held.pop(entry, None)
                if reclaimed:
                    report_reclaimed(self.name, held)
                self._run(out)
            except BaseException:
                self._recover(out)
                raise

    # -- work queued where nothing may block (finalizers, the collector) -------

    def _release_soon(self, conn: C, *, broken: bool = False) -> None:
        """``release``, for code that may run inside a garbage collection.

        Never takes the lock (this thread may hold it: the collector runs at
        any allocation, the critical section's included): queues ``conn`` for
        the courier thread, which releases it at once; the next hooked
        acquire, maintenance tick or ``close(timeout)`` wait would too. The
        caller must have started the courier (``start_courier``).
        """
        self._returns.append((conn, broken))
        self._wake_late()

    def _settle_late(self) -> None:
        """Release what ``_release_soon`` queued and reclaim collected leaks."""
        if self._leaked:
            self._reclaim_leaked()
        returns = self._returns
        while returns:
            try:
                conn, broken = returns.popleft()
            except IndexError:  # another thread took it meanwhile
                break
            try:
                self.release(conn, broken=broken)
            except Exception as exc:
                log.warning("%s: a late release failed: %s", self.name, repr(exc))

    def _check_leaks(self, now: float) -> float | None:
        """``_leaks.check_leaks`` over this pool's connections in use."""
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
        """Block until ``waiter`` is settled or the timeout passes.

        If anything is raised here (an interrupt in the wait), ``acquire``
        abandons the waiter: a connection handed over meanwhile goes back.
        """
        if timeout is None:
            limit = self._timeout
        else:
            limit = validate_duration("timeout", timeout, zero_ok=True)
        if self._timeout_at_capacity_only and not waiter.at_capacity:
            limit = None  # waiting for a dial below max_open: not timed
        gate = waiter.token
        assert isinstance(gate, type(self._lock))
        if limit is None:
            woken = gate.acquire()
        else:
            woken = limit > 0 and gate.acquire(timeout=limit)
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
        """Run one core input under the lock (with ``now``), then its effects.

        Whatever is raised (by the input, an effect, or an interrupt at any
        point), every effect the input made is carried out before it
        propagates.
        """
        core = self._core
        out: Sequence[Effect[C]] = _NO_EFFECTS
        try:
            with self._lock:
                method(*args, monotonic(), **kw)
                if core.outbox:
                    out = core.take_effects()
            self._run(out)
        except BaseException:
            self._recover(out)
            raise

    def _run(self, effects: Sequence[Effect[C]]) -> None:
        """Carry out effects, outside the lock, in order, and all of them.

        ``effects`` must be this thread's own: taken from the outbox in the
        same hold as the input that made them. If one raises (a hook or the
        driver, or an interrupt anywhere), the rest are still carried out
        (``_recover``), then the error propagates.
        """
        try:
            for effect in effects:
                kind = type(effect)
                if kind is Wake:
                    gate = effect.waiter.token  # type: ignore[union-attr]
                    # None: its acquire was cut short before it could wait;
                    # that acquire gives the connection back itself.
                    if gate is not None:
                        gate.release()  # type: ignore[union-attr]
                elif kind is Connect:
                    self._start_dial(effect.ticket)  # type: ignore[union-attr]
                else:
                    self._close_conn(effect.entry, effect.reason)  # type: ignore[union-attr]
        except BaseException:
            self._recover(effects)
            raise

    def _recover(self, effects: Sequence[Effect[C]]) -> None:
        """Finish a call cut short: carry out what was not carried out yet.

        Each of ``effects`` is done again only as far as it was not done
        (``_redo``), then whatever an interrupted input left in the outbox is
        taken and done too. Errors here are logged, never raised: the caller
        re-raises the one that cut it short.
        """
        while True:
            for effect in effects:
                try:
                    self._redo(effect)
                except BaseException as exc:  # a hook raising again: go on
                    log.warning(
                        "%s: error finishing %r: %s", self.name, effect, repr(exc)
                    )
            with self._lock:
                effects = self._core.take_effects()
            if not effects:
                return

    def _redo(self, effect: Effect[C]) -> None:
        """Carry out ``effect`` unless it was already: idempotent, unlike ``_run``.

        A Wake releases its gate unless released; a Connect starts a dial
        unless its ticket was claimed by a dial thread or settled; a Close
        finishes whichever of closing the driver connection and settling it
        is not done yet.
        """
        kind = type(effect)
        if kind is Wake:
            gate = effect.waiter.token  # type: ignore[union-attr]
            if gate is not None:
                with contextlib.suppress(RuntimeError):  # released already
                    gate.release()  # type: ignore[union-attr]
        elif kind is Connect:
            ticket = effect.ticket  # type: ignore[union-attr]
            with self._lock:
                pending = ticket in self._core._tickets and ticket not in self._dialing
            if pending:
                # Maybe the first thread started and has not claimed it yet:
                # whichever claims it second stops (see ``_dial``).
                self._start_dial(ticket)
        else:
            entry = effect.entry  # type: ignore[union-attr]
            if entry.state == CLOSING:
                self._close_conn(entry, effect.reason)  # type: ignore[union-attr]
            else:
                self._driver_closed.pop(entry, None)

    def _start_dial(self, ticket: int) -> None:
        """Start the opener thread for ``ticket`` (or dial here: dial_in_caller)."""
        if self.dial_in_caller:
            # A thread-bound driver: the connection must be made by the
            # thread that will use it, the caller (see __init__). The ticket
            # is settled either way; an interrupt then reaches the caller.
            self._dial(ticket, interrupts=True)
            return
        try:
            threading.Thread(
                target=self._dial,
                args=(ticket,),
                name=f"sqlgate-dial {self.name}",
                daemon=True,
            ).start()
        except RuntimeError as exc:  # no thread: the ticket still settles
            core = self._core
            with self._lock:
                if ticket in core._tickets and ticket not in self._dialing:
                    core.connect_failed(ticket, exc, monotonic())
                out = core.take_effects()
            self._run(out)

    def _dial(self, ticket: int, interrupts: bool = False) -> None:
        """Opener thread (or caller): dial once and settle ``ticket`` exactly once.

        A dial that raised is settled as failed; with ``interrupts`` (a dial
        in the caller's thread) a KeyboardInterrupt or SystemExit is then
        raised again, so that it reaches the caller.
        """
        core = self._core
        with self._lock:
            if ticket not in core._tickets or ticket in self._dialing:
                return  # started again after an interrupt: carried out already
            self._dialing.add(ticket)  # claimed: settled below, whatever happens
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
            with self._lock:
                self._dialing.discard(ticket)
                was_open = core.circuit_open
                core.connect_failed(ticket, exc, monotonic())
                now_open = core.circuit_open
                out = core.take_effects()
            # Logged before anyone is woken: the opening always precedes the
            # closing a probe may log next.
            report_circuit(self.name, was_open, now_open, core)
            self._run(out)
            if now_open and not core.is_closed:
                self._maybe_start_maintenance()  # it wakes for the probe
            if interrupts and not isinstance(exc, Exception):
                raise
            return
        with self._lock:
            self._dialing.discard(ticket)
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
        report_circuit(self.name, was_open, now_open, core)
        self._run(out)

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
        """Close a driver connection, then settle it in the core, whatever happens.

        ``on_close`` errors are logged and the close goes ahead; the driver's
        ``close()`` is called at most once (``_driver_closed``), and an error from it
        counts as closed. If an interrupt cuts this short, ``_redo`` finishes
        what is left.
        """
        conn = entry.conn
        try:
            if conn is not None and entry not in self._driver_closed:
                if reason == BROKEN:
                    log.info(
                        "%s: discarding a broken connection %s", self.name, repr(conn)
                    )
                try:
                    if self._on_close is not None:
                        self._on_close(conn)
                except Exception as exc:
                    log.info("%s: error closing a connection: %s", self.name, repr(exc))
                finally:
                    self._close_driver(entry, conn)
        finally:
            # Settled only once the driver connection is closed (or was
            # collected while loosened: nothing to close).
            if conn is None or entry in self._driver_closed:
                self._call(self._core.close_done, entry)
                self._driver_closed.pop(entry, None)

    def _close_driver(self, entry: Entry[C], conn: C) -> None:
        """Call the driver's ``close()`` once and mark it done in ``_driver_closed``."""
        try:
            # One statement, so the mark lands with the close: a Close done
            # again after an interrupt never closes twice.
            self._driver_closed[entry] = conn.close()  # type: ignore[attr-defined]
        except Exception as exc:
            self._driver_closed[entry] = None  # it was tried: counts as closed
            log.info("%s: error closing a connection: %s", self.name, repr(exc))
        except BaseException:
            # Interrupted inside the driver's close (how far it got is the
            # driver's business) or right after it returned: counts as done.
            self._driver_closed[entry] = None
            raise

    # -- maintenance ---------------------------------------------------------

    def _maybe_start_maintenance(self) -> None:
        """Start the sweeper thread if a knob needs it and none is running.

        Under ``_maintenance_lock``: callers at once (setters, dial threads
        that saw the circuit open) start one thread, never the same one twice,
        and the thread's own decision to exit (``_maintain``) comes wholly
        before or after this check.
        """
        self._maintenance_wakeup.set()
        with self._maintenance_lock:
            running = self._maintenance
            if self._needs_maintenance() and (
                running is None or not running.is_alive()
            ):
                # Kept before it starts: if interrupted in between, the next
                # call finds it not alive and starts another.
                self._maintenance = thread = threading.Thread(
                    target=_maintain,
                    args=(weakref.ref(self), self._maintenance_wakeup),
                    name=f"sqlgate-maintenance {self.name}",
                    daemon=True,
                )
                thread.start()

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
        limit = validate_duration("timeout", timeout, zero_ok=True)
        self._call(self._core.close)
        self._maintenance_wakeup.set()
        if limit == 0:
            return 0
        self._signal_if_all_back()
        deadline = None if limit is None else monotonic() + limit
        while not self._all_back.is_set():
            left = 1.0 if deadline is None else deadline - monotonic()
            if left <= 0:
                break
            # Releases set the event; the recheck also catches reclaimed leaks.
            self._all_back.wait(min(left, 0.05))
            if self._leaked or self._returns:
                self._settle_late()
            self._signal_if_all_back()
        out: Sequence[Effect[C]] = _NO_EFFECTS
        try:
            with self._lock:
                taken = take_in_use(self, monotonic())
                out = self._core.take_effects()
            report_taken(self.name, taken, limit)
            self._run(out)
        except BaseException:
            self._recover(out)
            raise
        return taken

    def _signal_if_all_back(self) -> None:
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
        self._leaked = deque()
        self._returns = deque()
        self._held = {}
        self._taken = set()
        self._dialing = set()
        self._driver_closed = {}
        self._all_back = threading.Event()
        self._maintenance_wakeup = threading.Event()
        self._maintenance = None
        self._maintenance_lock = threading.Lock()
        self._maybe_start_maintenance()


def _maintain(pool_ref: weakref.ref[Pool[object]], wakeup: threading.Event) -> None:
    """Maintenance thread: expire idle connections and refill ``min_idle``.

    Holds the pool only weakly between ticks, so an abandoned pool can be
    collected; exits when the pool is shut or no knob needs it.
    """
    while True:
        pool = pool_ref()
        if pool is None:
            return
        with pool._maintenance_lock:
            if not pool._needs_maintenance():
                # Under the lock: a knob set now finds no thread and starts one.
                if pool._maintenance is threading.current_thread():
                    pool._maintenance = None
                return
        core = pool._core
        wakeup.clear()  # a knob changed after this point wakes the next wait
        if pool._leaked or pool._returns:
            pool._settle_late()
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
