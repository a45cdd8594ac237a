"""AsyncDB: Go's ``database/sql`` handle over a pool (``AsyncPool``).

The handle is written once, for asyncio, in ``db_async.py``; ``db.py``, its
face for threads, is generated from it by ``tools/async_to_sync.py``
(``await`` dropped, the asyncio names mapped to the blocking ones, and the
few places marked ``if True:  # ASYNC`` reduced to their ``else:`` branch).

``open_async(target)`` parses the DSN, picks the driver adapter
(``sqlgate.drivers``) and builds the pool, whose dial puts connections in
autocommit mode and whose return path is the adapter's reset. ``AsyncDB``
then borrows a connection per call:

- ``exec`` / ``query_row`` / ``ping``: acquire, run, release, in the same call.
- ``query``: the rows (``AsyncRows``) own the connection until exhausted or
  closed.
- ``begin``: the transaction (``AsyncTx``) owns it until commit or rollback.
- ``conn``: the reserved connection (``AsyncConn``) owns it until closed.

Checkout and the retry rule (``sqlgate._core.retry``): a connection idle longer
than ``ping_idle`` seconds is pinged before use; a dead one is discarded
(``release(broken=True)``, counted in ``Stats.broken_closed``) and the call
goes on with another: two pooled tries, then a fresh one. Once a statement
was handed to the driver, an error goes to the caller (a dead link also
discards the connection), never a second execution; nothing is retried inside
a transaction. A SQL error never discards a connection.

Idle age is the pool's own bookkeeping (``idle_for``): how long the
connection sat idle before this checkout, counted from its last release or,
for one never used (a ``min_idle`` warm one), from its dial. A connection
handed straight from a release or a dial to a waiting caller was never idle
and is not pinged, whatever ``ping_idle`` is.

Forgotten objects: rows, a transaction or a reserved connection dropped
without being closed still give their connection back, at once, and the
DB's next call raises a ``ResourceWarning`` naming what was forgotten (see
``sqlgate._reaper``).

The pool is named after where it connects (``DSN.pool_name()``:
``host:port/database``, ``sqlite:<path>``, ``sqlite::memory:``), the
OpenTelemetry default for ``db.client.connection.pool.name``; ``name=``
overrides it. The name never holds a user name or a password.

Cancellation: every method is a cancellation point where it awaits the pool
or the driver. A cancel while a statement runs discards the connection (its
protocol state is unknown), so no half-read result is handed to the next
user; a cancel while waiting for a connection leaves nothing behind (the
pool's guarantee).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from sqlgate import _reaper, _watchdog
from sqlgate._core import FOREVER
from sqlgate._core import retry as _retry
from sqlgate._fork import forget_after_fork, keep
from sqlgate._handle import (
    BATCH,
    ConnState,
    HandleBase,
    Result,
    TxState,
    build,
    close_quietly,
    dead,
    row_maker,
    validate_begin,
    validate_ping_idle,
    validate_row_factory,
    validate_seq_of_params,
)
from sqlgate._watchdog import armed as _armed
from sqlgate.aiopool import AsyncPool
from sqlgate.drivers import async_adapter, detect_async
from sqlgate.drivers._base import scrub
from sqlgate.errors import ConnectError, DeadlineExceeded, Error, PoolTimeout

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator
    from types import TracebackType

    from sqlgate._handle import RowFactory
    from sqlgate.drivers._base import AsyncAdapter, AsyncCursor
    from sqlgate.drivers._dsn import DSN
    from sqlgate.stats import Stats

    _T = TypeVar("_T")

__all__ = [
    "AsyncConn",
    "AsyncDB",
    "AsyncRows",
    "AsyncTx",
    "Result",
    "open_async",
    "validate_ping_idle",
]

log = logging.getLogger("sqlgate")


def open_async(
    target: str | Callable[[], Awaitable[Any]],
    *,
    ping_idle: float | None = 1.0,
    name: str | None = None,
    row_factory: RowFactory | None = None,
    statement_timeout: float | None = None,
    **pool_knobs: Any,
) -> AsyncDB:
    """Open a database handle; no connection is made until one is needed.

    Args:
        target: a DSN: ``sqlite:///app.db`` or ``sqlite:///:memory:``
            (sqlite3 for threads, aiosqlite for asyncio),
            ``postgresql://user:pw@host/db`` (psycopg),
            ``postgresql+asyncpg://...`` (asyncpg, asyncio only),
            ``mysql://...`` or ``mariadb://...`` (PyMySQL, threads only);
            ``postgresql+pg8000://``, ``postgresql+psycopg2://``,
            ``mysql+mysqlconnector://`` (the generic DB-API adapter, threads
            only). Or a callable returning one of those drivers' connections
            (a coroutine function for asyncio), switched to autocommit; for
            threads, any other PEP 249 driver's connection too (the generic
            adapter, in manual commit). A callable raising a programming
            error (TypeError, ValueError...) gets it back as it is, never
            counted as a failed dial.
        ping_idle: a connection idle longer than this many seconds is pinged
            at checkout (default 1.0, as pgx); 0 pings each one that sat idle
            at all (not one handed straight to a waiting caller); None never.
        name: the pool's name in messages and metrics
            (``db.client.connection.pool.name``); None names it after the
            DSN's ``host:port/database`` (``sqlite:<path>``,
            ``sqlite::memory:``), never with a user name or password.
        row_factory: how rows are built when a call names none: None (or
            ``sqlgate.tuple_row``) for tuples, ``sqlgate.dict_row``,
            ``sqlgate.namedtuple_row``, or a callable taking the column
            names and returning a function from a row tuple to the row.
        statement_timeout: the deadline, in seconds, of every call made
            without a ``timeout=`` of its own (``exec``, ``query``...; see
            ``AsyncDB.exec``): the wait for a connection and the statement
            together, the statement cancelled on the server when it passes
            (``DeadlineExceeded``). None (the default): no deadline. Unlike
            the server's own ``statement_timeout`` setting (PostgreSQL's,
            MariaDB's ``max_statement_time``), it bounds the wait for a
            connection too, works on every driver, and the caller gets
            ``DeadlineExceeded``; the server's setting still protects the
            server from callers that set none.
        **pool_knobs: the pool's keyword arguments (``max_open``,
            ``max_idle``, ``acquire_timeout``, ``reset``...). A ``reset``
            hook runs after the driver's own reset;
            ``rollback_on_return=False`` turns the driver's reset off.

    Returns:
        The ``AsyncDB``.

    Raises:
        TypeError: ``target`` is neither a string nor callable; a knob has
            the wrong type (``row_factory`` not callable).
        ValueError: unknown scheme, malformed DSN, unknown DSN parameter, bad
            knob value, a scheme this face has no driver for; the message
            names it (the password masked).
        ImportError: the driver package is missing; the message names the
            extra to install (``pip install 'sqlgate[postgres]'``).
    """
    pool_knobs["row_factory"] = validate_row_factory(row_factory)
    pool_knobs["statement_timeout"] = statement_timeout
    return build(AsyncDB, target, ping_idle, name, pool_knobs, async_adapter)


# -- deadlines -------------------------------------------------------------------
#
# A call with a deadline (``timeout=``, or the handle's ``statement_timeout``)
# computes ``when`` once (``time.monotonic()`` seconds) and hands what is left
# of it to each step: the pool's acquire, the checkout ping, each retry and
# the statement. While a statement runs, a ``_Watch`` is armed: when ``when``
# passes, it asks the adapter to cancel the statement on the server
# (``adapter.cancel``). The statement then fails with the driver's "cancelled"
# error, which the call raises as ``DeadlineExceeded`` (chained), keeping the
# connection only when the adapter says it is clean
# (``reusable_after_cancel``). A statement that completes anyway (it finished
# before the cancel took effect, or no cancel was available) returns its
# result: its effects are real, and an adapter's cancel never stops a later
# statement. Under asyncio, when no cancel could be sent, the call stops
# waiting (its task is cancelled, as ``asyncio.timeout`` does) and the
# connection is discarded. A call without a deadline pays one ``if``.

if True:  # ASYNC

    class _AsyncWatch:
        """One statement's deadline on one connection: a timer on the loop.

        When it fires, a task awaits the adapter's cancel; when none could be
        sent, the statement's task is cancelled (``_cut``) so that the caller
        stops waiting.
        """

        __slots__ = ("_adapter", "_conn", "_cut", "_done", "_owner", "_task", "_timer")

        def __init__(self, adapter: AsyncAdapter, conn: Any, when: float) -> None:
            loop = asyncio.get_running_loop()
            self._adapter = adapter
            self._conn = conn
            self._owner = asyncio.current_task()
            #: The statement's task was cancelled by this watch.
            self._cut = False
            #: The statement returned or raised: never cancel its task now.
            self._done = False
            self._task: asyncio.Task[bool] | None = None
            self._timer = loop.call_later(when - time.monotonic(), self._fire)

        def _fire(self) -> None:
            self._task = asyncio.get_running_loop().create_task(self._cancel())

        async def _cancel(self) -> bool:
            try:
                # A driver that cancels with the task: nothing to send first.
                if self._adapter.cancels_by_task:
                    sent = False
                else:
                    sent = await self._adapter.cancel(self._conn)
            except Exception as exc:  # an adapter's bug: as if none was sent
                log.warning("cancelling a statement failed: %r", exc)
                sent = False
            if not sent and not self._done and self._owner is not None:
                self._cut = True
                self._owner.cancel()
            return sent

        async def disarm(self) -> bool | None:
            """After the statement: None if it did not fire, else if a cancel was sent.

            The cancel is awaited first, to its end: a cancel from outside
            meanwhile is raised after it (the request must not outlive the
            call, or it could stop the connection's next statement).
            """
            self._done = True
            self._timer.cancel()
            task = self._task
            if task is None:
                return None
            outside: asyncio.CancelledError | None = None
            while not task.done():
                try:
                    await asyncio.wait((task,))
                except asyncio.CancelledError as exc:
                    outside = exc
            if outside is not None:
                raise outside
            if task.cancelled() or task.exception() is not None:
                return False
            return task.result()

        def uncut(self, exc: BaseException) -> bool:
            """Whether the CancelledError ``exc`` came from this watch alone."""
            if not self._cut or self._owner is None:
                return False
            return self._owner.uncancel() == 0

else:
    # The blocking side: an entry of the process-wide deadline thread
    # (``sqlgate._watchdog``), two lists and a tuple per call. When it
    # fires, a thread of its own sends the adapter's cancel (the deadline
    # thread must stay quick); the caller waits for that thread before it
    # goes on (``_wait_cancel``). ``box`` is [the cancel thread, whether a
    # cancel was sent].

    def _fire(adapter: AsyncAdapter, conn: Any, box: list[Any]) -> None:
        """On the deadline thread: start the cancel."""
        thread = threading.Thread(
            target=_send_cancel, args=(adapter, conn, box), name="sqlgate-cancel"
        )
        thread.daemon = True
        try:
            thread.start()
        finally:  # not started (no thread left): the caller must not wait
            box[0] = thread

    def _send_cancel(adapter: AsyncAdapter, conn: Any, box: list[Any]) -> None:
        try:
            box[1] = bool(adapter.cancel(conn))
        except Exception as exc:  # an adapter's bug: as if none was sent
            log.warning("cancelling a statement failed: %r", exc)

    def _wait_cancel(box: list[Any]) -> bool:
        """After a fired entry: wait for its cancel; whether one was sent."""
        # The deadline thread fills box[0] a few instructions after it fired.
        while box[0] is None:
            time.sleep(0.0001)
        thread: threading.Thread = box[0]
        if thread.ident is None:  # never started: nothing was sent
            return False
        thread.join()
        return bool(box[1])


def _missed(
    adapter: AsyncAdapter,
    conn: Any,
    in_tx: bool,
    exc: BaseException,
    sent: bool,
    name: str,
) -> DeadlineExceeded:
    """The error of a statement the deadline caught (``exc``: what it raised).

    The connection is kept (``_discard`` False) only when a cancel was sent,
    the statement raised the driver's "cancelled" and the adapter calls the
    connection clean.
    """
    discard = not (
        sent
        and adapter.is_cancelled(exc)
        and adapter.reusable_after_cancel(conn, in_tx)
    )
    how = (
        "it was cancelled on the server"
        if sent
        else "the driver could not cancel it; its connection was discarded"
    )
    error = DeadlineExceeded(
        f"{name}: the call's deadline passed while its statement ran: {how}"
    )
    error._discard = discard
    return error


def _too_late(name: str) -> DeadlineExceeded:
    error = DeadlineExceeded(
        f"{name}: the call's deadline passed before its statement was sent "
        "(nothing was sent)"
    )
    return error


async def _watched(
    adapter: AsyncAdapter,
    conn: Any,
    when: float,
    in_tx: bool,
    run: Callable[[Any], Awaitable[_T]],
    name: str,
) -> _T:
    """``run(conn)`` under the deadline ``when`` (see the section's comment).

    Raises:
        DeadlineExceeded: the deadline passed first (``_discard`` says what
            to do with ``conn``), the driver's error chained.
        What ``run`` raises otherwise.
    """
    if when <= time.monotonic():
        raise _too_late(name)
    if True:  # ASYNC
        watch = _AsyncWatch(adapter, conn, when)
    else:
        box: list[Any] = [None, False]
        entry = _watchdog.arm(when, _fire, adapter, conn, box)
    try:
        result = await run(conn)
    except BaseException as exc:
        if True:  # ASYNC
            sent = await watch.disarm()
        else:
            sent = None if _watchdog.disarm(entry) else _wait_cancel(box)
        if sent is None:
            raise  # the deadline had not passed: not a miss
        if True:  # ASYNC
            if isinstance(exc, asyncio.CancelledError):
                if not watch.uncut(exc):
                    raise  # cancelled from outside as well: the caller's cancel wins
                if adapter.cancels_by_task:  # its cancel went out with the task's
                    sent = await adapter.cancel(conn)
                    error = _missed(adapter, conn, in_tx, exc, sent, name)
                    error._discard = not (
                        sent and adapter.reusable_after_cancel(conn, in_tx)
                    )
                    raise error from exc
            elif not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: never a deadline miss
        else:
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: never a deadline miss
        raise _missed(adapter, conn, in_tx, exc, sent, name) from exc
    if True:  # ASYNC
        await watch.disarm()
    else:
        try:
            entry.pop(1)  # disarmed (``_watchdog.disarm``, inlined: the hot path)
        except IndexError:  # fired: its cancel must end before the next statement
            _wait_cancel(box)
    return result


if True:  # ASYNC

    async def _after_cancel(adapter: AsyncAdapter, conn: Any, in_tx: bool) -> bool:
        """After a cancel from outside interrupted a statement on ``conn``: stop it.

        The statement is cancelled on the server too (the driver's own
        reaction to the cancel may not reach the server, as aiosqlite's).

        Returns:
            Whether to discard the connection (no cancel sent, or the adapter
            does not call it clean).
        """
        try:
            sent = await adapter.cancel(conn)
        except BaseException as exc:  # cancelled again, or an adapter's bug
            log.debug("cancelling an interrupted statement failed: %r", exc)
            return True
        return not (sent and adapter.reusable_after_cancel(conn, in_tx))


class AsyncDB(HandleBase):
    """A pool of connections to one database, with Go's ``database/sql`` API.

    Safe for concurrent use by many threads; under asyncio, by the tasks of
    the one event loop it is first used in. Create it with ``open_async``.
    SQL and parameters pass to the driver unchanged, in its paramstyle
    (``db.paramstyle``).

    Attributes:
        name: the pool's name (as ``pool.name``; never holds a password).

    Cancellation:
        The ``set_*`` methods leave nothing behind: each change is made
        without awaiting, so a cancel cannot interrupt it.
    """

    _adapter: AsyncAdapter | None

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        adapter: AsyncAdapter | None,
        dsn: DSN | None,
        on_close: Callable[[], None] | None,
        ping_idle: float | None,
        name: str | None,
        pool_knobs: dict[str, Any],
    ) -> None:
        self._adapter = adapter
        rollback, user_reset = self._setup(dsn, ping_idle, name, pool_knobs)
        # Connections of forgotten rows/transactions/reserved connections:
        # (conn, cursor or None, what).
        self._forgotten: deque[tuple[Any, Any, str]] = deque()
        # Set while a thread drains; whoever then finds the deque empty still
        # waits for the drain (the lock). Never set under asyncio, where a
        # drain runs on the loop.
        self._draining = False
        if True:  # ASYNC
            # The drain task started by a finalizer's wake-up, while it runs.
            self._reaping: asyncio.Task[None] | None = None
        else:
            self._drain_lock = threading.RLock()
            self._ref = weakref.ref(self)
        self._pool: AsyncPool[Any] = AsyncPool(
            self._dialer(connect),
            rollback_on_return=False,
            reset=self._make_reset(rollback, user_reset),
            **pool_knobs,
        )
        self._closer = weakref.finalize(self, on_close) if on_close else None
        self.name = self._pool.name
        forget_after_fork(self)
        if False:  # ASYNC
            _reaper.start()

    def _forked(self) -> None:
        """In a forked child (``sqlgate._fork``'s registry): start clean.

        A drain task belongs to the parent's loop, and the pool binds to the
        child's loop on first use; a drain lock may have been held by the
        parent's reaper, which does not exist here.
        """
        self._forget_parent()
        if True:  # ASYNC
            keep(self._reaping)
            self._reaping = None
        else:
            self._drain_lock = threading.RLock()
            self._draining = False

    # -- plumbing ------------------------------------------------------------

    def _dialer(self, connect: Callable[[], Awaitable[Any]]) -> Callable[[], Any]:
        secrets = self._secrets

        async def dial() -> Any:
            try:
                conn = await connect()
            except BaseException as exc:
                raise scrub(exc, secrets) from None
            try:
                adapter = self._adapter
                if adapter is None:
                    adapter = self._adapter = detect_async(conn)
                await adapter.prepare(conn)
            except BaseException:
                await conn.close()
                raise
            return conn

        return dial

    def _make_reset(
        self, rollback: bool, user_reset: Callable[[Any], object] | None
    ) -> Callable[[Any], Awaitable[None]] | None:
        if not rollback and user_reset is None:
            return None

        async def reset(conn: Any) -> None:
            if rollback:
                await self._drv.reset(conn)
            if user_reset is not None:
                if True:  # ASYNC
                    result = user_reset(conn)
                    if hasattr(result, "__await__"):
                        await result
                else:
                    user_reset(conn)

        return reset

    @property
    def _drv(self) -> AsyncAdapter:
        adapter = self._adapter
        assert adapter is not None  # set by the first dial
        return adapter

    def _watch_forgotten(
        self, obj: object, conn: Any, cursor: Any, what: str
    ) -> weakref.finalize[Any, Any]:
        """The finalizer that gives ``conn`` back if ``obj`` is forgotten."""
        if True:  # ASYNC
            # The cursor would need awaiting to close: the reset cleans up.
            loop = asyncio.get_running_loop()
            item = (conn, None, what)
            gen = _reaper.generation()
            return weakref.finalize(
                obj, _reaper.on_forgotten_async, self, item, loop, gen
            )
        else:
            item = (conn, cursor, what)
            gen = _reaper.generation()
            return weakref.finalize(obj, _reaper.on_forgotten, self, item, gen)

    if True:  # ASYNC

        def _wake(self) -> None:
            """On the loop, after a finalizer: start a drain task unless one runs."""
            if self._forgotten and (self._reaping is None or self._reaping.done()):
                self._reaping = asyncio.get_running_loop().create_task(self._reap())

        async def _reap(self) -> None:
            try:
                await self._drain(warn=False)
            except Exception as exc:  # a task's error would reach no one
                log.warning("reaping a forgotten connection failed: %r", exc)

    async def _tidy(self) -> None:
        """Settle forgotten objects before a call: drained, warned about."""
        if self._forgotten or self._draining:
            await self._drain(warn=True)
        if self._owed:
            self._pay_owed()

    async def _acquire(self, retry: bool, when: float | None = None) -> Any:
        """Check out a connection judged alive, per the retry plan.

        Args:
            retry: follow the retry plan; False: one try.
            when: the call's deadline (``time.monotonic()`` seconds), or None.

        Raises:
            The pool's errors; the dead link's error when every try met one
            (or the first, with ``retry=False``); nothing was sent.
            DeadlineExceeded: ``when`` passed first.
        """
        if self._forgotten or self._draining or self._owed:
            await self._tidy()
        pool = self._pool
        error: BaseException | None = None
        for always in self._tries(retry):
            if when is None:
                conn = await pool.acquire()
            else:
                # _acquire_by's common case inlined (the hot path).
                left = when - time.monotonic()
                limit: float | None = pool._timeout
                if left > 0 and (limit is None or left <= limit):
                    try:
                        conn = await pool.acquire(left)
                    except PoolTimeout as exc:
                        raise self._waited_too_long(exc) from exc
                else:
                    conn = await self._acquire_by(when)
            error = await self._checkout_test(conn, always=always, when=when)
            if error is None:
                return conn
            await pool.release(conn, broken=True)
            self._discarded(error)
        assert error is not None
        raise error

    async def _acquire_by(self, when: float) -> Any:
        """The pool's acquire, bounded by the call's deadline too.

        Raises:
            DeadlineExceeded: ``when`` passed before a connection was free
                (the pool's ``PoolTimeout`` chained): the waiter is gone, as
                after any acquire timeout.
            The pool's errors (its own ``acquire_timeout`` when shorter).
        """
        pool = self._pool
        left = when - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(
                f"{self.name}: the call's deadline passed before it had a "
                "connection (nothing was sent)"
            )
        limit: float | None = pool._timeout
        if limit is not None and limit < left:
            return await pool.acquire(limit)
        try:
            return await pool.acquire(left)
        except PoolTimeout as exc:
            raise self._waited_too_long(exc) from exc

    def _waited_too_long(self, exc: PoolTimeout) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{self.name}: the call's deadline passed while waiting for a "
            f"connection ({exc})"
        )

    async def _checkout_test(
        self, conn: Any, *, always: bool, when: float | None = None
    ) -> BaseException | None:
        """The checkout test; the dead link's error, or None when alive."""
        adapter = self._drv
        closed = adapter.is_closed(conn)
        if not self._needs_ping(conn, closed, always):
            return None
        try:
            if when is None:
                await adapter.ping(conn)
            else:
                await _watched(adapter, conn, when, False, adapter.ping, self.name)
        except DeadlineExceeded as exc:
            await self._pool.release(conn, broken=exc._discard)
            raise
        except Exception as exc:
            return exc
        except BaseException:
            # A cancel or interrupt mid-ping leaves the protocol state unknown.
            await self._pool.release(conn, broken=True)
            raise
        return self._closed_error() if closed else None

    async def _release(self, conn: Any, broken: bool) -> None:
        await self._pool.release(conn, broken=broken)

    async def _drain(self, warn: bool) -> None:
        """Give back the connections of forgotten objects (no pool lock held).

        Args:
            warn: raise the ResourceWarning now (a caller's call); False
                (the reaper) leaves it owed to the next call.
        """
        forgotten = self._forgotten
        if True:  # ASYNC
            while forgotten:
                conn, _, what = forgotten.popleft()
                await self._release(conn, False)
                self._warn_forgotten(what, warn)
        else:
            with self._drain_lock:
                self._draining = True
                try:
                    while forgotten:
                        conn, cursor, what = forgotten.popleft()
                        if cursor is not None:
                            close_quietly(cursor)
                        self._release(conn, False)
                        self._warn_forgotten(what, warn)
                finally:
                    self._draining = False

    async def _once(
        self, retry: bool, when: float | None, run: Callable[[Any], Awaitable[_T]]
    ) -> _T:
        """``exec``/``query_row``/``ping``: one call on a connection, released."""
        conn = await self._acquire(retry, when)
        broken = False
        try:
            if when is None:
                return await run(conn)
            adapter = self._adapter
            assert adapter is not None  # set by the dial that made conn
            if True:  # ASYNC
                return await _watched(adapter, conn, when, False, run, self.name)
            else:
                # _watched inlined, as _watchdog.arm (the hot path of a call
                # with a deadline: no function call beyond the statement's).
                # A deadline that passed since the acquire looked fires at
                # once: the statement is cancelled as soon as it was sent.
                box: list[Any] = [None, False]
                entry = [when, (_fire, adapter, conn, box)]
                _armed.append(entry)
                if when < _watchdog.service.wake_at:
                    _watchdog.wake()
                try:
                    result = run(conn)
                except BaseException as exc:
                    if _watchdog.disarm(entry):
                        raise  # the deadline had not passed: not a miss
                    sent = _wait_cancel(box)
                    if not isinstance(exc, Exception):
                        raise  # KeyboardInterrupt, SystemExit: never a deadline miss
                    raise _missed(adapter, conn, False, exc, sent, self.name) from exc
                try:
                    entry.pop(1)  # disarmed
                except IndexError:  # fired: its cancel ends before the next use
                    _wait_cancel(box)
                return result
        except BaseException as exc:
            broken = await self._judge(conn, exc)
            raise
        finally:
            await self._release(conn, broken)

    async def _judge(self, conn: Any, exc: BaseException) -> bool:
        """After a statement on ``conn`` failed with ``exc``: whether to discard it.

        A cancel from outside (asyncio) stops the statement on the server
        too, and the adapter judges the connection then.
        """
        if True:  # ASYNC
            if isinstance(exc, asyncio.CancelledError):
                return await _after_cancel(self._drv, conn, False)
        return self._failed(conn, exc)

    async def _first_row(
        self, conn: Any, sql: str, params: Any, row_factory: RowFactory | None
    ) -> Any:
        """The first row of a query on ``conn``, or None; the result closed."""
        cur = await self._drv.query(conn, sql, params)
        try:
            rows = await cur.fetchmany(1) if cur.columns else []
            if not rows:
                return None
            make = row_maker(row_factory or self._row_factory, cur.columns)
            return rows[0] if make is None else make(rows[0])
        finally:
            await cur.aclose()

    # -- the API ---------------------------------------------------------------

    async def exec(
        self,
        sql: str,
        params: Any = None,
        *,
        retry: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run a statement that returns no rows.

        Args:
            sql: the statement, in the driver's dialect.
            params: its parameters, in ``db.paramstyle``; None for none.
            retry: on a dead connection found before sending, try another
                (two pooled, then a fresh one); False: one try.
            timeout: seconds for the whole call: the wait for a connection,
                the checkout ping, retries and the statement; when they pass
                while the statement runs, it is cancelled on the server.
                None: the handle's ``statement_timeout`` (``open_async``);
                ``math.inf``: no deadline.

        Returns:
            ``Result(rows_affected, last_insert_id)``.

        Raises:
            DeadlineExceeded: ``timeout`` passed (the driver's or the pool's
                error chained); the connection is kept only when the driver
                left it clean.
            TypeError, ValueError: ``timeout`` is not a number >= 0.
            The driver's error (a dead link also discards the connection);
            the pool's ``PoolTimeout``/``PoolClosed``/``ConnectError``.

        Cancellation:
            While waiting for a connection: nothing is left behind (the
            pool's guarantee). During the statement: it is cancelled on the
            server too, and the connection kept only when the driver left
            it clean. During the checkout ping: the connection is
            discarded (its protocol state is unknown).
        """
        if timeout is None:
            when = None if self._statement_timeout is None else self._when(None)
        elif timeout.__class__ is float and 0.0 <= timeout <= FOREVER:
            when = time.monotonic() + timeout  # _when's common case, inlined
        else:
            when = self._when(timeout)
        count, last = await self._once(
            retry, when, lambda c: self._drv.exec(c, sql, params)
        )
        return Result(count, last)

    async def exec_many(
        self,
        sql: str,
        seq_of_params: Any,
        *,
        retry: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run a statement once per parameter set, on one connection, atomically.

        All or nothing, on every driver: the sets run in one transaction the
        handle begins and commits around the driver's ``executemany`` (one
        round trip where it batches them: psycopg's pipeline, PyMySQL's
        multi-row INSERT, asyncpg's prepared statement; else one per set). A
        set that fails rolls the transaction back: none of them took effect.
        Inside a transaction (``AsyncTx.exec_many``) or on a reserved
        connection (``AsyncConn.exec_many``) the caller's transaction, if
        any, governs instead. Retried as ``exec`` is: only on a dead
        connection found before anything was sent.

        Args:
            sql: the statement, in the driver's dialect.
            seq_of_params: an iterable of parameter sets (tuples or dicts, in
                ``db.paramstyle``); read once.
            retry: as for ``exec``.
            timeout: as for ``exec``; a deadline that passes rolls the sets
                back (none took effect) unless it came during the COMMIT.

        Returns:
            ``Result(rows_affected, None)``: the total where the driver sums
            it (-1 where it does not, as asyncpg).

        Raises:
            TypeError: ``seq_of_params`` is a str, bytes, dict or not
                iterable (nothing was sent).
            As ``exec``.

        Cancellation:
            As ``exec``: once the statement was sent, the connection is
            discarded, its transaction uncommitted (none of the sets took
            effect), unless the cancel came during the COMMIT itself.
        """
        validate_seq_of_params(seq_of_params)
        when = (
            None
            if timeout is None and self._statement_timeout is None
            else self._when(timeout)
        )
        count, last = await self._once(
            retry, when, lambda c: self._many_atomic(c, sql, seq_of_params)
        )
        return Result(count, last)

    async def _many_atomic(
        self, conn: Any, sql: str, seq_of_params: Any
    ) -> tuple[int, int | None]:
        """``exec_many``'s sets in one transaction on ``conn`` (see there)."""
        drv = self._drv
        await drv.begin(conn, None, False)
        try:
            count, last = await drv.exec_many(conn, sql, seq_of_params)
        except Exception:
            # The set's error is the one that matters; a rollback that fails
            # too leaves the connection to the release path's judgement.
            with contextlib.suppress(Exception):
                await drv.rollback(conn, False)
            raise
        await drv.commit(conn, False)
        return count, last

    def query(
        self,
        sql: str,
        params: Any = None,
        *,
        retry: bool = True,
        row_factory: RowFactory | None = None,
        timeout: float | None = None,
    ) -> _Opening[AsyncRows]:
        """Run a query; the rows hold the connection until exhausted or closed.

        Args:
            sql: the query, in the driver's dialect.
            params: its parameters, in ``db.paramstyle``; None for none.
            retry: as for ``exec``.
            row_factory: how to build this query's rows (see ``open_async``);
                None: the handle's.
            timeout: as for ``exec``, up to the query's first rows (reading
                the rows afterwards is not bounded).

        Returns:
            The ``AsyncRows``: iterate them (``async for``), or use them as a
            context manager (``async with``).
            ``async with`` takes the call itself too (no ``await`` needed).

        Raises:
            As ``exec``.

        Cancellation:
            As ``exec``; once the rows are returned they own the connection.
        """
        validate_row_factory(row_factory)
        when = (
            None
            if timeout is None and self._statement_timeout is None
            else self._when(timeout)
        )
        if True:  # ASYNC
            return _Opening(self._query(sql, params, retry, row_factory, when))
        else:
            return self._query(sql, params, retry, row_factory, when)

    async def _query(
        self,
        sql: str,
        params: Any,
        retry: bool,
        row_factory: RowFactory | None,
        when: float | None,
    ) -> AsyncRows:
        conn = await self._acquire(retry, when)
        drv = self._drv
        try:
            if when is None:
                cur = await drv.query(conn, sql, params)
            else:
                cur = await _watched(
                    drv,
                    conn,
                    when,
                    False,
                    lambda c: drv.query(c, sql, params),
                    self.name,
                )
        except BaseException as exc:
            await self._release(conn, await self._judge(conn, exc))
            raise
        make = row_maker(row_factory or self._row_factory, cur.columns)
        return AsyncRows(cur, self._drv, conn, self, None, make)

    async def query_row(
        self,
        sql: str,
        params: Any = None,
        *,
        retry: bool = True,
        row_factory: RowFactory | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run a query and return its first row (the rest are discarded).

        Args:
            sql: the query, in the driver's dialect.
            params: its parameters, in ``db.paramstyle``; None for none.
            retry: as for ``exec``.
            row_factory: how to build the row (see ``open_async``); None:
                the handle's.
            timeout: as for ``exec`` (reading the first row included).

        Returns:
            The first row (a tuple unless a row factory says otherwise), or
            None when there is none.

        Raises:
            As ``exec``.

        Cancellation:
            As ``exec``.
        """
        validate_row_factory(row_factory)
        if timeout is None:
            when = None if self._statement_timeout is None else self._when(None)
        elif timeout.__class__ is float and 0.0 <= timeout <= FOREVER:
            when = time.monotonic() + timeout  # _when's common case, inlined
        else:
            when = self._when(timeout)
        # No rows object (nor its finalizer): the row is read before the release.
        return await self._once(
            retry, when, lambda c: self._first_row(c, sql, params, row_factory)
        )

    def begin(
        self,
        isolation: str | None = None,
        read_only: bool = False,
        *,
        retry: bool = True,
        timeout: float | None = None,
    ) -> _Opening[AsyncTx]:
        """Start a transaction on a connection of its own.

        Args:
            isolation: "read uncommitted", "read committed", "repeatable
                read", "serializable" (any case, ``_`` for spaces), or None
                for the server's default.
            read_only: start a READ ONLY transaction.
            retry: a dead connection met at checkout or by the BEGIN itself
                (which changes nothing) is replaced, as for ``exec``.
            timeout: as for ``exec``, for the wait for a connection and the
                BEGIN (each statement of the transaction takes its own).

        Returns:
            The ``AsyncTx``; as a context manager (``async with``) it commits
            on success and rolls back on an exception.
            ``async with`` takes the call itself too (no ``await`` needed).

        Raises:
            ValueError: unknown isolation level, or one the database lacks.
            TypeError: ``read_only`` is not a bool.
            TransactionAborted: (from ``commit``) the database had already
                aborted the transaction; nothing was committed.
            The driver's and the pool's errors, as ``exec``.

        Cancellation:
            While waiting for a connection: nothing is left behind. During
            the checkout ping or the BEGIN: the connection is discarded and
            no transaction is returned.
        """
        level = validate_begin(isolation, read_only)
        when = (
            None
            if timeout is None and self._statement_timeout is None
            else self._when(timeout)
        )
        if True:  # ASYNC
            return _Opening(self._begin(level, read_only, retry, when))
        else:
            return self._begin(level, read_only, retry, when)

    async def _begin(
        self, level: str | None, read_only: bool, retry: bool, when: float | None
    ) -> AsyncTx:
        tries = len(_retry.plan(retry))
        while True:
            tries -= 1
            conn = await self._acquire(retry, when)
            drv = self._drv  # known once a connection was dialed
            try:
                if when is None:
                    await drv.begin(conn, level, read_only)
                else:
                    await _watched(
                        drv,
                        conn,
                        when,
                        False,
                        lambda c: self._drv.begin(c, level, read_only),
                        self.name,
                    )
            except BaseException as exc:
                if True:  # ASYNC
                    if isinstance(exc, asyncio.CancelledError):
                        discard = await _after_cancel(drv, conn, True)
                        await self._release(conn, discard)
                        raise
                if isinstance(exc, DeadlineExceeded):  # never retried
                    await self._release(conn, exc._discard)
                    raise
                decision = self._begin_failed(conn, exc, retry and tries > 0)
                await self._release(conn, decision.discard)
                if decision.retry:
                    continue
                raise
            return AsyncTx(conn, self._drv, read_only, self, None)

    def conn(
        self, *, retry: bool = True, timeout: float | None = None
    ) -> _Opening[AsyncConn]:
        """Reserve one connection for a series of calls (a session).

        Args:
            retry: a dead connection met at checkout is replaced, as for
                ``exec``.
            timeout: as for ``exec``, for the wait for a connection and the
                checkout ping (each call on it takes its own).

        Returns:
            The ``AsyncConn``; ``close()`` (or leaving its ``async with``
            block) gives it back. ``AsyncConn.raw`` is the driver's
            connection.
            ``async with`` takes the call itself too (no ``await`` needed).

        Raises:
            The pool's errors; a dead link's, as ``exec``.

        Cancellation:
            While waiting for a connection: nothing is left behind. During
            the checkout ping: the connection is discarded.
        """
        when = (
            None
            if timeout is None and self._statement_timeout is None
            else self._when(timeout)
        )
        if True:  # ASYNC
            return _Opening(self._conn(retry, when))
        else:
            return self._conn(retry, when)

    async def _conn(self, retry: bool, when: float | None) -> AsyncConn:
        return AsyncConn(await self._acquire(retry, when), self._drv, self)

    async def ping(self, *, timeout: float | None = None) -> None:
        """Check that the database answers (always a round trip).

        Args:
            timeout: as for ``exec``.

        Raises:
            DeadlineExceeded: ``timeout`` passed.
            The driver's error (a dead connection is discarded), or the pool's.

        Cancellation:
            As ``exec``.
        """
        when = (
            None
            if timeout is None and self._statement_timeout is None
            else self._when(timeout)
        )
        await self._once(True, when, lambda c: self._drv.ping(c))

    @property
    def paramstyle(self) -> str:
        """The driver's DB-API paramstyle ("qmark", "pyformat"...).

        asyncpg's is "numeric_dollar" ($1). With a connect callable the
        driver is known after the first dial: before it, the handle for
        threads pings once, the asyncio one raises (ping it first).

        Raises:
            The errors of ``ping`` (only before the first connection).
        """
        if self._adapter is None:  # a connect callable not yet dialed
            if True:  # ASYNC
                raise Error(
                    "paramstyle is known after the first connection: ping first"
                )
            else:
                self.ping()
        return self._drv.paramstyle

    @property
    def pool(self) -> AsyncPool[Any]:
        """The ``AsyncPool`` underneath."""
        return self._pool

    def stats(self) -> Stats:
        """The pool's figures.

        Under threads, forgotten objects' connections are given back first;
        under asyncio that is the drain task's job (see ``sqlgate._reaper``).

        Returns:
            The pool's ``Stats``.

        Warns:
            ResourceWarning: for each forgotten ``AsyncRows``/``AsyncTx``/
                ``AsyncConn`` whose warning is owed.
        """
        if True:  # ASYNC
            if self._owed:
                self._pay_owed()
        else:
            if self._forgotten or self._draining or self._owed:
                self._tidy()
        return self._pool.stats()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._pool.closed

    async def close(self) -> None:
        """Close the pool and wait for its work (see ``AsyncPool.close``).

        Forgotten objects' connections are given back first. Connections
        held by open ``AsyncRows``, ``AsyncTx`` or ``AsyncConn`` are closed
        when they are given back. A ``:memory:`` SQLite database ends here.
        Idempotent.

        Raises:
            sqlgate.Error: the pool is bound to another event loop.

        Cancellation:
            While giving back forgotten objects' connections: those not yet
            given back stay queued for the next ``close()``. While waiting
            for the pool: as ``AsyncPool.close`` (the pool is closed already;
            call ``close()`` again to wait).
        """
        if self._forgotten or self._draining or self._owed:
            await self._tidy()
        await self._pool.close()
        if self._closer is not None:
            self._closer()

    async def set_max_open_conns(self, n: int) -> None:
        """Set ``max_open``; takes effect at once.

        See ``AsyncPool.set_max_open_conns``.

        Args:
            n: most connections open at once; 0 = unlimited.

        Raises:
            TypeError: ``n`` is not an int.
            ValueError: ``n`` is negative.
            sqlgate.Error: the pool is bound to another event loop.
        """
        await self._pool.set_max_open_conns(n)

    async def set_max_idle_conns(self, n: int) -> None:
        """Set ``max_idle``; surplus idle connections close now.

        See ``AsyncPool.set_max_idle_conns``.

        Args:
            n: most idle connections kept; <= 0 keeps none.

        Raises:
            TypeError: ``n`` is not an int.
            sqlgate.Error: the pool is bound to another event loop.
        """
        await self._pool.set_max_idle_conns(n)

    async def set_min_idle_conns(self, n: int) -> None:
        """Set the warm floor of idle connections.

        See ``AsyncPool.set_min_idle_conns``.

        Args:
            n: idle connections kept warm (at most the idle cap).

        Raises:
            TypeError: ``n`` is not an int.
            ValueError: ``n`` is negative or above the idle cap.
            sqlgate.Error: the pool is bound to another event loop.
        """
        await self._pool.set_min_idle_conns(n)

    async def set_max_connecting(self, n: int) -> None:
        """Set how many dials may be in flight at once.

        See ``AsyncPool.set_max_connecting``.

        Args:
            n: most dials in flight at once; 0 = unlimited.

        Raises:
            TypeError: ``n`` is not an int.
            ValueError: ``n`` is negative.
            sqlgate.Error: the pool is bound to another event loop.
        """
        await self._pool.set_max_connecting(n)

    async def set_conn_max_lifetime(self, seconds: float | None) -> None:
        """Set the connections' lifetime; expired idle ones close now.

        See ``AsyncPool.set_conn_max_lifetime``.

        Args:
            seconds: a connection's longest life; None = forever.

        Raises:
            TypeError: ``seconds`` is not a number or None.
            ValueError: ``seconds`` is NaN, zero or negative.
            sqlgate.Error: the pool is bound to another event loop.
        """
        await self._pool.set_conn_max_lifetime(seconds)

    async def set_conn_max_idle_time(self, seconds: float | None) -> None:
        """Set the idle time limit; expired idle ones close now.

        See ``AsyncPool.set_conn_max_idle_time``.

        Args:
            seconds: longest idle spell; None = forever.

        Raises:
            TypeError: ``seconds`` is not a number or None.
            ValueError: ``seconds`` is NaN, zero or negative.
            sqlgate.Error: the pool is bound to another event loop.
        """
        await self._pool.set_conn_max_idle_time(seconds)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    if True:  # ASYNC

        def __await__(self) -> Generator[Any, None, Self]:
            """``db = await open_async(...)``: the handle, its target verified.

            As asyncpg's ``create_pool``: one connection is dialed and
            pinged, then the pool's warm floor (``min_idle``) is waited for,
            before the handle is returned; on failure the handle is closed
            and the error raised. ``open_async(...)`` without ``await``
            stays lazy.
            """
            return self._verified().__await__()

        async def _warmed(self) -> None:
            """Wait until ``min_idle`` connections are idle (dialed by the pool).

            Raises:
                ConnectError: a background dial failed meanwhile (chained).
                PoolTimeout: not warm within ``acquire_timeout``.
            """
            pool = self._pool
            core = pool._core
            limit = pool._timeout
            loop = asyncio.get_running_loop()
            deadline = None if limit is None else loop.time() + limit
            while True:
                s = core.stats()
                if s.idle >= core.config.min_idle and s.dialing == 0 and s.closing == 0:
                    return  # warm, and no surplus dial still landing
                if core.failing and core.last_dial_error is not None:
                    error = ConnectError(
                        f"{self.name}: warming min_idle={core.config.min_idle} failed: "
                        f"{core.last_dial_error!r}"
                    )
                    raise error from core.last_dial_error
                if deadline is not None and loop.time() > deadline:
                    raise PoolTimeout(
                        f"{self.name}: {s.idle} of min_idle="
                        f"{core.config.min_idle} connections after {limit:.2f} s"
                    )
                await asyncio.sleep(0.005)  # the pool dials in the background

        async def _verified(self) -> Self:
            try:
                # One dial, no retry: a target that refuses fails here, and
                # no run of failed dials opens the circuit (whose probe
                # would keep dialing after this handle is closed).
                await self._once(False, None, lambda c: self._drv.ping(c))
                await self._warmed()
            except BaseException:
                await self.close()
                raise
            return self


if True:  # ASYNC
    _Made = TypeVar("_Made", "AsyncTx", "AsyncRows", "AsyncConn")

    class _Opening(Generic[_Made]):
        """What ``begin``, ``query`` and ``conn`` return under asyncio.

        Await it for the object, or use it straight in ``async with`` (the
        object's own ``__aexit__`` then runs: commit/rollback, close).
        """

        __slots__ = ("_coro", "_made")

        def __init__(self, coro: Coroutine[Any, Any, _Made]) -> None:
            self._coro: Coroutine[Any, Any, _Made] = coro
            self._made: _Made | None = None

        def __await__(self) -> Generator[Any, None, _Made]:
            return self._coro.__await__()

        async def __aenter__(self) -> _Made:
            made = self._made = await self._coro
            await made.__aenter__()
            return made

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            made = self._made
            assert made is not None
            await made.__aexit__(exc_type, exc, tb)


class AsyncRows:
    """The result of ``query``: an iterator of rows (``async for``).

    Rows are tuples unless a row factory (``open_async``/``query``'s
    ``row_factory``) builds them as dicts, named tuples or the caller's own.

    From ``AsyncDB.query`` the rows hold their connection until exhausted or
    closed (also when dropped unclosed: see ``sqlgate._reaper``). From an
    ``AsyncTx`` or ``AsyncConn`` they hold only a cursor; a dead link, a
    cancel or an interrupt while they fetch or close marks that object lost,
    as it would under ``exec``.

    Attributes:
        columns: the column names, for every driver (empty for a statement
            that returns no rows).
    """

    def __init__(
        self,
        cursor: AsyncCursor,
        adapter: AsyncAdapter,
        conn: Any,
        db: AsyncDB | None,
        session: _AsyncSession | None = None,
        make: Callable[[tuple[Any, ...]], Any] | None = None,
    ) -> None:
        self._cursor: AsyncCursor | None = cursor
        self._adapter = adapter
        self._conn = conn
        # Exactly one owns the connection: the DB (the rows give it back) or
        # a transaction/reserved connection (told when the connection is
        # lost under the rows).
        self._db = db
        self._session = session
        self._batch: list[Any] = []
        self._at = 0
        # Builds each row from the driver's tuple; None keeps the tuples.
        self._make = make
        #: Set when their transaction ended or their Conn closed first: why
        #: every later use raises.
        self._ended_by: str | None = None
        self.columns: tuple[str, ...] = cursor.columns
        # Runs at most once: the GC hands the connection to the DB's forgotten queue.
        self._finalizer = (
            db._watch_forgotten(self, conn, cursor, type(self).__name__)
            if db is not None
            else None
        )

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        if self._ended_by is not None:
            raise Error(f"rows closed: {self._ended_by}")
        if self._at < len(self._batch):
            row = self._batch[self._at]
            self._at += 1
            return row
        cursor = self._cursor
        if cursor is None:
            raise StopAsyncIteration
        try:
            batch = await cursor.fetchmany(BATCH) if self.columns else []
        except BaseException as exc:
            await self._close(broken=dead(self._adapter, self._conn, exc))
            raise
        if not batch:
            await self.close()
            raise StopAsyncIteration
        make = self._make
        if make is not None:
            batch = [make(row) for row in batch]
        self._batch, self._at = batch, 1
        return batch[0]

    async def first(self) -> Any:
        """The next row, then close.

        Returns:
            The next row, or None when there is none left.

        Raises:
            sqlgate.Error: the rows were closed already (by ``close()``,
                ``first()``, ``all()`` or a loop that read them all).
            The driver's error while fetching (a dead link discards the
            connection); the rows are closed either way.

        Cancellation:
            The rows are closed and the connection's protocol state is
            unknown: rows from ``AsyncDB.query`` discard their connection;
            rows from a transaction end it (its connection discarded, or its
            ``AsyncConn`` marked lost); rows from an ``AsyncConn`` mark it
            lost (its ``close()`` discards the connection).
        """
        self._require_open("first")
        try:
            return await anext(self, None)
        finally:
            await self.close()

    async def all(self) -> list[Any]:
        """Every remaining row, then close.

        Returns:
            The rows not yet read, in order.

        Raises:
            As ``first``: after ``first()``, ``all()`` raises rather than
            return an empty list.

        Cancellation:
            As ``first``; the rows read so far are dropped with the call.
        """
        self._require_open("all")
        try:
            return [row async for row in self]
        finally:
            await self.close()

    def _require_open(self, what: str) -> None:
        if self._ended_by is not None:
            raise Error(f"rows closed: {self._ended_by}")
        if self._cursor is None and self._at >= len(self._batch):
            raise Error(
                f"{what}() on rows already closed (by close(), first(), all() "
                "or a loop that read them all)"
            )

    @property
    def closed(self) -> bool:
        """Whether the rows were exhausted or closed."""
        return self._cursor is None

    async def close(self) -> None:
        """Free the cursor and give back the connection; idempotent.

        Cancellation:
            The rows are closed; a cancel while the result is freed leaves
            the connection's protocol state unknown: as for ``first``.
        """
        await self._close(broken=False)

    async def _end_with(self, why: str) -> None:
        """Their transaction or Conn ends first: close; later use raises."""
        if self._cursor is not None:
            self._ended_by = why
            await self._close(broken=False)

    async def _close(self, broken: bool) -> None:
        cursor = self._cursor
        if cursor is None:
            return
        self._cursor = None
        self._batch = []
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            await cursor.aclose()
        except Exception as exc:  # the connection's fate is decided elsewhere
            log.debug("closing a cursor failed: %r", exc)
        except BaseException:
            broken = True  # interrupted mid-close: the protocol state is unknown
            raise
        finally:
            session, self._session = self._session, None
            if self._db is not None:
                await self._db._release(self._conn, broken)
            elif broken and session is not None:
                await session._lost_under_rows()
            self._conn = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _AsyncSession:
    """What a transaction and a reserved connection share: one pinned connection."""

    _conn: Any
    _adapter: AsyncAdapter
    _db: AsyncDB
    #: Rows made here and maybe still open: closed when this object ends,
    #: before its connection goes back (a lazily stepping cursor must not
    #: read through a connection another caller has since been given).
    _rows: weakref.WeakSet[AsyncRows]

    #: Whether statements here run inside a transaction ``begin`` started.
    _in_tx = False

    def _live(self) -> Any:
        raise NotImplementedError

    def _when(self, timeout: float | None) -> float | None:
        """A call's deadline: its own ``timeout``, else the handle's default."""
        db = self._db
        if timeout is None and db._statement_timeout is None:
            return None
        return db._when(timeout)

    def _track(self, rows: AsyncRows) -> None:
        self._rows.add(rows)

    async def _close_rows(self, why: str) -> None:
        for rows in list(self._rows):
            await rows._end_with(why)
        self._rows.clear()

    async def _lost(self) -> None:
        """The connection died under a statement."""
        raise NotImplementedError

    async def _lost_under_rows(self) -> None:
        """The connection died under this object's rows (fetch or close).

        The rows may outlive their statement's session state: only a
        connection this object still holds is marked lost.
        """
        raise NotImplementedError

    async def _cancelled(self, discard: bool) -> None:
        """A statement here was cancelled (deadline or cancel).

        The connection is discarded when ``discard``, else kept; a
        transaction ends (rolled back) either way.
        """
        raise NotImplementedError

    async def _guard(self, exc: BaseException, conn: Any) -> None:
        """After a call on ``conn`` raised ``exc``: a dead link ends this object.

        So does a cancelled statement, unless the driver left the connection
        clean (a transaction ends either way).
        """
        if True:  # ASYNC
            if isinstance(exc, asyncio.CancelledError):
                discard = await _after_cancel(self._adapter, conn, self._in_tx)
                await self._cancelled(discard)
                return
        if isinstance(exc, DeadlineExceeded):
            await self._cancelled(exc._discard)
        elif dead(self._adapter, conn, exc):
            await self._lost()

    async def _run(
        self, conn: Any, when: float | None, run: Callable[[Any], Awaitable[_T]]
    ) -> _T:
        """``run(conn)`` under the deadline ``when``, or as it is."""
        if when is None:
            return await run(conn)
        return await _watched(
            self._adapter, conn, when, self._in_tx, run, self._db.name
        )

    async def exec(
        self,
        sql: str,
        params: Any = None,
        *,
        timeout: float | None = None,
    ) -> Result:
        """Run a statement on this connection (never retried).

        Args:
            sql: the statement, in the driver's dialect.
            params: its parameters, in the driver's paramstyle; None for none.
            timeout: seconds for the statement; when they pass, it is
                cancelled on the server, and a transaction ends (rolled
                back). None: the handle's ``statement_timeout``.

        Returns:
            ``Result(rows_affected, last_insert_id)``.

        Raises:
            sqlgate.Error: finished, or the connection was lost earlier.
            DeadlineExceeded: ``timeout`` passed (the driver's error
                chained); the connection is kept only when the driver left it
                clean, else a transaction ends with its connection discarded
                and an ``AsyncConn`` is marked lost.
            TypeError, ValueError: ``timeout`` is not a number >= 0.
            The driver's error; a dead link ends this object.

        Cancellation:
            While the statement runs: it is cancelled on the server too; a
            transaction ends (rolled back); the connection is kept only
            when the driver left it clean, else a transaction's is
            discarded and an ``AsyncConn`` is marked lost (its ``close()``
            discards the connection).
        """
        conn = self._live()
        when = self._when(timeout)
        adapter = self._adapter
        try:
            if when is None:
                count, last = await adapter.exec(conn, sql, params)
            else:
                count, last = await self._run(
                    conn, when, lambda c: adapter.exec(c, sql, params)
                )
        except BaseException as exc:
            await self._guard(exc, conn)
            raise
        return Result(count, last)

    async def exec_many(
        self,
        sql: str,
        seq_of_params: Any,
        *,
        timeout: float | None = None,
    ) -> Result:
        """Run a statement once per parameter set on this connection (never retried).

        Args:
            sql: the statement, in the driver's dialect.
            seq_of_params: an iterable of parameter sets, in the driver's
                paramstyle; read once.
            timeout: as for ``exec``.

        Returns:
            ``Result(rows_affected, None)``, as ``AsyncDB.exec_many``.

        Raises:
            TypeError: ``seq_of_params`` is a str, bytes, dict or not
                iterable (nothing was sent).
            As ``exec``.

        Cancellation:
            As ``exec``.
        """
        validate_seq_of_params(seq_of_params)
        conn = self._live()
        when = self._when(timeout)
        adapter = self._adapter
        try:
            if when is None:
                count, last = await adapter.exec_many(conn, sql, seq_of_params)
            else:
                count, last = await self._run(
                    conn, when, lambda c: adapter.exec_many(c, sql, seq_of_params)
                )
        except BaseException as exc:
            await self._guard(exc, conn)
            raise
        return Result(count, last)

    def query(
        self,
        sql: str,
        params: Any = None,
        *,
        row_factory: RowFactory | None = None,
        timeout: float | None = None,
    ) -> _Opening[AsyncRows]:
        """Run a query on this connection; the rows hold only the cursor.

        Args:
            sql: the query, in the driver's dialect.
            params: its parameters, in the driver's paramstyle; None for none.
            row_factory: how to build the rows (see ``open_async``); None:
                the handle's.
            timeout: as for ``exec``, up to the query's first rows.

        Returns:
            The ``AsyncRows``; closing them leaves the connection with this
            object. A dead link or an interrupt while they fetch or close
            ends this object as it would under ``exec``; when this object
            ends first, they are closed and any later use raises.
            ``async with`` takes the call itself too (no ``await`` needed).

        Raises:
            As ``exec``.

        Cancellation:
            While the statement runs, or later while the rows fetch or
            close: a transaction ends, its connection discarded; an
            ``AsyncConn`` is marked lost (its ``close()`` discards the
            connection).
        """
        validate_row_factory(row_factory)
        when = self._when(timeout)
        if True:  # ASYNC
            return _Opening(self._query(sql, params, row_factory, when))
        else:
            return self._query(sql, params, row_factory, when)

    async def _query(
        self,
        sql: str,
        params: Any,
        row_factory: RowFactory | None,
        when: float | None,
    ) -> AsyncRows:
        conn = self._live()
        adapter = self._adapter
        try:
            if when is None:
                cur = await adapter.query(conn, sql, params)
            else:
                cur = await self._run(
                    conn, when, lambda c: adapter.query(c, sql, params)
                )
        except BaseException as exc:
            await self._guard(exc, conn)
            raise
        make = row_maker(row_factory or self._db._row_factory, cur.columns)
        rows = AsyncRows(cur, self._adapter, conn, None, self, make)
        self._track(rows)
        return rows

    async def query_row(
        self,
        sql: str,
        params: Any = None,
        *,
        row_factory: RowFactory | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The first row of a query on this connection.

        Args:
            sql: the query, in the driver's dialect.
            params: its parameters, in the driver's paramstyle; None for none.
            row_factory: how to build the row (see ``open_async``); None:
                the handle's.
            timeout: as for ``exec``, up to the query's first rows.

        Returns:
            The first row, or None when there is none.

        Raises:
            As ``exec``, while the query runs or its row is fetched.

        Cancellation:
            While the query runs or its row is fetched: as ``exec`` (the
            result is closed too).
        """
        validate_row_factory(row_factory)
        rows = await self._query(sql, params, row_factory, self._when(timeout))
        return await rows.first()


class AsyncTx(TxState, _AsyncSession):
    """A transaction pinned to one connection: ``AsyncDB.begin`` / ``AsyncConn.begin``.

    As a context manager (``async with``) it commits when the block succeeds
    and rolls back when it raises. After commit or rollback every method
    raises ``sqlgate.Error``; so does one begun on an ``AsyncConn`` once that
    ``AsyncConn`` was lost or closed (the ``AsyncConn`` alone gives the
    connection back). Nothing in a transaction is ever retried.
    """

    _owner: AsyncConn | None
    _in_tx = True

    def __init__(
        self,
        conn: Any,
        adapter: AsyncAdapter,
        read_only: bool,
        db: AsyncDB,
        owner: AsyncConn | None,
    ) -> None:
        self._conn = conn
        self._adapter = adapter
        self._read_only = read_only
        self._db = db
        self._owner = owner
        self._ended = None
        self._rows = weakref.WeakSet()
        self._finalizer = (
            db._watch_forgotten(self, conn, None, type(self).__name__)
            if owner is None
            else None
        )

    async def _lost(self) -> None:
        await self._end("ended: its connection was lost", broken=True)

    async def _cancelled(self, discard: bool) -> None:
        if self._ended is not None:
            return
        how = "rolled back: a statement in it was cancelled"
        if discard:
            await self._end(how + " and its connection discarded", broken=True)
            return
        try:
            await self._adapter.rollback(self._conn, self._read_only)
        except Exception as exc:  # the cancel's error is the one to see
            log.info("rollback after a cancelled statement failed: %r", exc)
            await self._end(how + " and its connection discarded", broken=True)
            return
        except BaseException:  # an interrupt (a cancel) is never swallowed
            await self._end(how + " and its connection discarded", broken=True)
            raise
        await self._end(how, broken=False)

    async def _lost_under_rows(self) -> None:
        if self._ended is None:
            await self._lost()
        elif self._owner is not None:  # ended, but its owner holds the connection
            await self._owner._lost_under_rows()

    def _track(self, rows: AsyncRows) -> None:
        self._rows.add(rows)
        if self._owner is not None:  # closing the Conn closes them too
            self._owner._track(rows)

    async def _end(self, how: str, broken: bool) -> None:
        self._ended = how
        await self._close_rows(f"their transaction {how}")
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._owner is not None:
            if broken:
                await self._owner._lost()
        else:
            await self._db._release(self._conn, broken)

    async def _finish(self, how: str, commit: bool, timeout: float | None) -> None:
        conn = self._live()
        when = self._when(timeout)
        # Rows first: a result still stepping must not outlive the COMMIT.
        await self._close_rows(f"their transaction was {how}")
        adapter, read_only = self._adapter, self._read_only
        try:
            if commit:
                if when is None:
                    await adapter.commit(conn, read_only)
                else:
                    await self._run(conn, when, lambda c: adapter.commit(c, read_only))
            elif when is None:
                await adapter.rollback(conn, read_only)
            else:
                await self._run(conn, when, lambda c: adapter.rollback(c, read_only))
        except BaseException as exc:
            # Not dead: the return-path reset rolls back whatever is left.
            broken = dead(adapter, conn, exc)
            if commit and isinstance(exc, DeadlineExceeded):
                broken = True  # whether the COMMIT took effect is unknown
            await self._end("ended by a failed " + how, broken=broken)
            raise
        await self._end(how, broken=False)

    async def commit(self, *, timeout: float | None = None) -> None:
        """Commit; the transaction is finished whatever happens.

        Rows it made and did not close are closed first (using them later
        raises ``sqlgate.Error``).

        Args:
            timeout: seconds for the COMMIT (None: the handle's
                ``statement_timeout``).

        Raises:
            sqlgate.Error: already finished.
            DeadlineExceeded: ``timeout`` passed during the COMMIT: whether
                it took effect is unknown, and the connection is discarded
                (from ``AsyncConn.begin``: that ``AsyncConn`` is marked lost).
            TransactionAborted: the database had already aborted the
                transaction (PostgreSQL, after an error inside it, even one
                caught): it was rolled back and nothing was committed.
            The driver's error (e.g. a serialization failure); the
                transaction is then rolled back.

        Cancellation:
            The transaction is finished and whether the COMMIT took effect
            is unknown: the connection is discarded (from ``AsyncConn.begin``:
            that ``AsyncConn`` is marked lost).
        """
        await self._finish("committed", commit=True, timeout=timeout)

    async def rollback(self, *, timeout: float | None = None) -> None:
        """Roll back; the transaction is finished whatever happens.

        Args:
            timeout: seconds for the ROLLBACK, as for ``exec``.

        Raises:
            sqlgate.Error: already finished. The driver's error.
            DeadlineExceeded: ``timeout`` passed during the ROLLBACK; the
                connection is kept only when the driver left it clean.

        Cancellation:
            The transaction is finished and the connection discarded (from
            ``AsyncConn.begin``: that ``AsyncConn`` is marked lost); the
            server rolls back what was left when the session ends.
        """
        await self._finish("rolled back", commit=False, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ended is not None:
            return
        if exc_type is None:
            await self.commit()
            return
        try:
            await self.rollback()
        except Exception as rollback_error:
            # The block's exception is the one to see; the connection was
            # handled by rollback() already.
            log.info("rollback after an error failed: %r", rollback_error)


class AsyncConn(ConnState, _AsyncSession):
    """One reserved connection (``AsyncDB.conn``): a session across calls.

    ``raw`` is the driver's connection, for what sqlgate does not wrap;
    leave it in autocommit with no transaction open, or the return-path reset
    will restore that. Nothing on an ``AsyncConn`` is retried.
    """

    def __init__(self, conn: Any, adapter: AsyncAdapter, db: AsyncDB) -> None:
        self._conn = conn
        self._adapter = adapter
        self._db = db
        self._broken = False
        self._closed = False
        self._rows = weakref.WeakSet()
        #: The transaction begun here and not yet ended, if any.
        self._tx: AsyncTx | None = None
        self._finalizer = db._watch_forgotten(self, conn, None, type(self).__name__)

    async def _lost(self) -> None:
        self._broken = True

    async def _cancelled(self, discard: bool) -> None:
        if discard:
            await self._lost()

    async def _lost_under_rows(self) -> None:
        if not self._closed:
            await self._lost()

    def begin(
        self,
        isolation: str | None = None,
        read_only: bool = False,
        *,
        timeout: float | None = None,
    ) -> _Opening[AsyncTx]:
        """Start a transaction on this connection (see ``AsyncDB.begin``).

        Args:
            isolation: as for ``AsyncDB.begin``.
            read_only: as for ``AsyncDB.begin``.
            timeout: seconds for the BEGIN, as for ``exec``.

        Returns:
            The ``AsyncTx``; when it ends, the connection stays with this
            ``AsyncConn``.
            ``async with`` takes the call itself too (no ``await`` needed).

        Raises:
            ValueError: unknown isolation level, or one the database lacks.
            TypeError: ``read_only`` is not a bool.
            sqlgate.Error: closed, the connection was lost earlier, or a
                transaction begun here is still open (nothing was sent:
                transactions do not nest).
            The driver's error; a dead link marks this ``AsyncConn`` lost.

        Cancellation:
            During the BEGIN: this ``AsyncConn`` is marked lost and no
            transaction is returned.
        """
        level = validate_begin(isolation, read_only)
        when = self._when(timeout)
        if True:  # ASYNC
            return _Opening(self._begin(level, read_only, when))
        else:
            return self._begin(level, read_only, when)

    async def _begin(
        self, level: str | None, read_only: bool, when: float | None
    ) -> AsyncTx:
        conn = self._live()
        if self._tx is not None and not self._tx.done:
            raise Error(
                "a transaction begun on this Conn is still open: commit or roll "
                "it back first (transactions do not nest)"
            )
        adapter = self._adapter
        try:
            if when is None:
                await adapter.begin(conn, level, read_only)
            else:
                await self._run(
                    conn, when, lambda c: adapter.begin(c, level, read_only)
                )
        except BaseException as exc:
            await self._guard(exc, conn)
            raise
        tx = self._tx = AsyncTx(conn, self._adapter, read_only, self._db, self)
        return tx

    async def ping(self, *, timeout: float | None = None) -> None:
        """A round trip on this connection.

        Args:
            timeout: seconds, as for ``exec``.

        Raises:
            sqlgate.Error: closed, or the connection was lost earlier.
            DeadlineExceeded: ``timeout`` passed.
            The driver's error; a dead link marks this ``AsyncConn`` lost.

        Cancellation:
            As for ``exec``.
        """
        conn = self._live()
        when = self._when(timeout)
        adapter = self._adapter
        try:
            if when is None:
                await adapter.ping(conn)
            else:
                await self._run(conn, when, adapter.ping)
        except BaseException as exc:
            await self._guard(exc, conn)
            raise

    async def close(self) -> None:
        """Give the connection back (discarded if it was lost); idempotent.

        Rows made on it (or in its transactions) and still open are closed
        first; using them later raises ``sqlgate.Error``. A transaction
        still open is ended with it (the return-path reset rolls it back).

        Cancellation:
            The ``AsyncConn`` is closed; a cancel during the return-path
            reset discards the connection (the pool's guarantee).
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        try:
            await self._close_rows("their Conn was closed")
        finally:
            await self._db._release(self._conn, self._broken)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
