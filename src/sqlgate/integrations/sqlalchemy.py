"""SQLAlchemy (Core and ORM) on sqlgate: ``SqlgatePool``, ``AsyncSqlgatePool``.

Example::

    from sqlalchemy import create_engine
    from sqlgate.integrations.sqlalchemy import SqlgatePool

    engine = create_engine(
        "postgresql+psycopg://app@db/orders",
        poolclass=SqlgatePool,
        max_open=10,          # sqlgate's knobs pass straight through
        min_idle=2,
        pool_timeout=5,       # SQLAlchemy's name for acquire_timeout
    )
    engine.pool.stats()       # sqlgate's Stats

For asyncio (``AsyncEngine``, ``AsyncSession``), the same knobs on
``sqlgate.AsyncPool``::

    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlgate.integrations.sqlalchemy import AsyncSqlgatePool

    engine = create_async_engine(
        "postgresql+asyncpg://app@db/orders", poolclass=AsyncSqlgatePool, max_open=10
    )

SQLAlchemy keeps its part: its connection records, reset on return
(``pool_reset_on_return``), ``pool_pre_ping`` and pool events. sqlgate decides
everything else: limits, FIFO hand-off, dialing off the caller's path,
lifetimes, stats. Each sqlgate "connection" is one SQLAlchemy connection
record. A record whose connection SQLAlchemy closed (a dead connection found
by a query or by ``pool_pre_ping``, ``invalidate()``, ``detach()``) goes back
to sqlgate as broken: sqlgate counts it closed (``broken_closed``), and the
next dial reconnects that same record rather than make a new one, so its
``record_info`` survives, as SQLAlchemy documents, and the counts stay exact.
An idle record that SQLAlchemy finds stale at checkout (a soft or engine-wide
invalidation, ``pool_recycle``) is reconnected in place by SQLAlchemy.

SQLAlchemy's contract, kept:

- ``pool_timeout`` bounds only the wait for a connection when ``max_open``
  connections exist; a checkout below the limit waits for its dial however
  long that takes (``pool_timeout=0`` fails only at the limit).
- ``pool.dispose()`` closes the idle connections and leaves the pool usable:
  a fresh sqlgate pool takes over, and connections checked out before it are
  closed when they come back. ``engine.dispose()`` does that, then gives the
  engine a new pool; ``engine.dispose(close=False)`` leaves the old pool's
  connections alone (a forked child's recipe).
- A driver that binds connections to their thread (sqlite3 with
  ``check_same_thread``, as in SQLAlchemy's own SQLite URL examples) is
  dialed in the caller's thread: detected for sqlite3, forced with
  ``dial_in_caller=True`` for others (``SqlgatePool`` only).
- ``QueuePool``'s sizing arguments are understood: ``pool_size`` is
  ``max_idle`` and, with ``max_overflow``, ``max_open = pool_size +
  max_overflow`` (-1: unlimited). Without either, ``max_idle`` is 5,
  QueuePool's default ``pool_size`` (``sqlgate.Pool``'s own default is 2),
  and ``max_open`` is unlimited. ``pool_use_lifo`` is accepted; sqlgate
  always reuses the most recently returned connection first.

The async pool is used from SQLAlchemy's greenlet bridge: SQLAlchemy runs its
synchronous pool code in a greenlet, and ``AsyncSqlgatePool`` awaits
``AsyncPool.acquire``/``release``/``close`` from there with
``sqlalchemy.util.await_only``; sqlgate's dial and close tasks enter a greenlet
of their own (``greenlet_spawn``) to open and close records, since the async
drivers' adapters await inside them. Like any ``AsyncPool``, an engine's pool
belongs to the event loop that first used it.

A connection the application forgot (never closed) is returned by SQLAlchemy
from a finalizer: inside a garbage collection, in whatever thread it ran and
at whatever allocation triggered it, perhaps while that thread is inside the
pool's critical section. Both classes queue such a return instead of taking
the pool's lock or calling its core there: ``SqlgatePool`` has the courier
thread release it, ``AsyncSqlgatePool`` the pool's event loop (any thread may
hand it over). So a forgotten connection neither deadlocks the pool nor loses
its slot, and a caller waiting for a connection gets it.

Requires the ``sqlalchemy`` extra.
"""

from __future__ import annotations

from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    NoReturn,
    Self,
    TypeVar,
    cast,
)

from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool
from sqlalchemy.pool.base import _AsyncConnDialect, _ConnectionRecord
from sqlalchemy.util import await_only, greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from sqlgate._courier import in_collection, start_courier
from sqlgate.aiopool import AsyncPool
from sqlgate.drivers._probe import thread_bound
from sqlgate.errors import ConnectError, PoolTimeout
from sqlgate.pool import DEFAULT_MAX_CONNECTING, Pool

if TYPE_CHECKING:
    from sqlgate.stats import Stats

__all__ = ["AsyncSqlgatePool", "SqlgatePool"]

Record = sa_pool.ConnectionPoolEntry
#: The sqlgate pool underneath: the threading one or the asyncio one.
G = TypeVar("G", Pool[Record], AsyncPool[Record])


def _raise_for_sqlalchemy(error: PoolTimeout | ConnectError) -> NoReturn:
    """Raise what SQLAlchemy's callers expect for a failed sqlgate acquire."""
    if isinstance(error, PoolTimeout):
        raise sa_exc.TimeoutError(str(error)) from error
    # The driver's own error, so that the engine wraps it as usual.
    cause = error.__cause__
    if isinstance(cause, Exception):
        raise cause from None
    raise error


def _sizes(
    max_open: int | None,
    max_idle: int | None,
    pool_size: int | None,
    max_overflow: int | None,
) -> tuple[int, int]:
    """``max_open`` and ``max_idle`` from sqlgate's knobs or QueuePool's.

    Raises:
        TypeError, ValueError: both names of one knob given, naming them.
    """
    if pool_size is not None and max_idle is not None:
        raise ValueError(
            f"give max_idle ({max_idle!r}) or pool_size ({pool_size!r}), not both"
        )
    if max_overflow is not None and max_open is not None:
        raise ValueError(
            f"give max_open ({max_open!r}) or max_overflow ({max_overflow!r}), not both"
        )
    for name, value in (("pool_size", pool_size), ("max_overflow", max_overflow)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int)
        ):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if pool_size is not None and pool_size < 0:
        raise ValueError(f"pool_size must be >= 0, got {pool_size!r}")
    if max_overflow is not None and max_overflow < -1:
        raise ValueError(f"max_overflow must be >= -1, got {max_overflow!r}")
    if max_idle is None:
        # QueuePool keeps pool_size connections (default 5); 0 means no limit.
        size = _QUEUEPOOL_SIZE if pool_size is None else pool_size
        max_idle = size or _UNLIMITED
    if max_open is None:
        max_open = 0
        if max_overflow is not None and max_overflow >= 0:
            size = _QUEUEPOOL_SIZE if pool_size is None else pool_size
            max_open = size + max_overflow if size else 0
    return max_open, max_idle


#: ``max_idle`` for QueuePool's ``pool_size=0`` (no limit).
_UNLIMITED = 2**31 - 1
#: QueuePool's default ``pool_size``: the default ``max_idle`` here, so that an
#: engine moved from QueuePool keeps as many idle connections as before.
_QUEUEPOOL_SIZE = 5


class _GatedPool(sa_pool.Pool, Generic[G]):
    """What both pool classes share: knobs, checkout rules, figures, recreate."""

    # The knobs' docs live once, on PoolConfig: D417 would have them again here.
    def __init__(  # noqa: D417
        self,
        creator: Any,
        # Not keyword-only: create_engine() finds a pool class's keywords by
        # its positional parameters (sqlalchemy.util.get_cls_kwargs).
        max_open: int | None = None,
        max_idle: int | None = None,
        min_idle: int = 0,
        max_connecting: int = DEFAULT_MAX_CONNECTING,
        conn_max_lifetime: float | None = None,
        conn_max_idle_time: float | None = None,
        max_waiting: int = 0,
        timeout: float | None = 30.0,
        name: str | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        use_lifo: bool = True,
        dial_in_caller: bool | None = None,
        **kw: Any,
    ) -> None:
        """Create the pool; ``create_engine`` passes these keywords through.

        Args:
            creator: SQLAlchemy's connection factory.
            max_open: most connections open at once; 0 (the default, unless
                ``max_overflow`` is given) means unlimited.
            max_idle: most connections kept idle: ``pool_size`` when given,
                else 5, QueuePool's default ``pool_size`` (not sqlgate's 2:
                an engine moved from QueuePool keeps as many idle).
            min_idle, max_connecting, conn_max_lifetime, conn_max_idle_time,
            max_waiting: sqlgate's knobs, as on ``Pool`` (described once, on
                ``sqlgate._core.PoolConfig``).
            timeout: seconds a checkout waits when ``max_open`` connections
                exist (``pool_timeout`` in ``create_engine``); a checkout
                below the limit waits for its dial. None waits forever.
            name: the sqlgate pool's name (messages, metrics).
            pool_size: QueuePool's name for ``max_idle`` (0: no limit).
            max_overflow: with ``pool_size`` (default 5), sets ``max_open``
                to their sum, as QueuePool; -1 means unlimited.
            use_lifo: accepted for QueuePool's ``pool_use_lifo``; sqlgate
                always reuses the most recently returned connection first.
            dial_in_caller: ``SqlgatePool`` only: dial in the caller's
                thread, for drivers whose connections work only in the
                thread that made them (see ``sqlgate.Pool``). None (the
                default) detects it: with the sqlite3 driver the first
                connection is dialed in the caller and tried from another
                thread; if ``check_same_thread`` allows that, later dials
                run on sqlgate's threads again.
            kw: SQLAlchemy's own pool arguments (``reset_on_return``,
                ``pre_ping``, ``echo``, ``events``, ``dialect``...).

        Raises:
            TypeError, ValueError: a knob is wrong; the message names it.
        """
        super().__init__(creator, **kw)
        if not isinstance(use_lifo, bool):
            raise TypeError(f"use_lifo must be a bool, got {use_lifo!r}")
        if dial_in_caller is not None and not isinstance(dial_in_caller, bool):
            raise TypeError(
                f"dial_in_caller must be a bool or None, got {dial_in_caller!r}"
            )
        #: Whether dials run in the caller's thread; None while undecided
        #: (the first sqlite3 connection tells, see _dial_record).
        self._dial_in_caller = dial_in_caller
        if (
            dial_in_caller is None
            and getattr(self._dialect, "driver", "") != "pysqlite"
        ):
            self._dial_in_caller = False
        max_open, max_idle = _sizes(max_open, max_idle, pool_size, max_overflow)
        self._knobs: dict[str, Any] = {
            "max_open": max_open,
            "max_idle": max_idle,
            "min_idle": min_idle,
            "max_connecting": max_connecting,
            "conn_max_lifetime": conn_max_lifetime,
            "conn_max_idle_time": conn_max_idle_time,
            "max_waiting": max_waiting,
            "timeout": timeout,
            "name": name,
            "dial_in_caller": dial_in_caller,
        }
        #: Records whose connection SQLAlchemy closed, given back to sqlgate
        #: as broken: the next dials reconnect them (their record_info kept).
        self._spares: deque[Record] = deque()
        self._gate: G = self._new_gate()
        #: Pools replaced by ``dispose()`` that still have records checked
        #: out: each record goes back to the pool that counts it.
        self._retired: list[G] = []

    def _new_gate(self) -> G:
        """A sqlgate pool with this pool's knobs."""
        knobs = dict(self._knobs)
        knobs["acquire_timeout"] = knobs.pop("timeout")
        if knobs["name"] is None:
            knobs["name"] = f"sqlalchemy-{id(self):x}"
        # SQLAlchemy's pool_timeout: only a wait at max_open is timed.
        knobs["timeout_at_capacity_only"] = True
        # SQLAlchemy resets a connection on its way back (reset_on_return);
        # sqlgate must not roll back a second time.
        knobs["rollback_on_return"] = False
        # Undecided (None) starts in the caller: safe for a thread-bound one.
        knobs["dial_in_caller"] = self._dial_in_caller is not False
        return self._make_gate(knobs)

    def _make_gate(self, knobs: dict[str, Any]) -> G:
        raise NotImplementedError

    def _acquire(self) -> Record:
        raise NotImplementedError

    def _give_back(self, record: Record, *, broken: bool) -> None:
        raise NotImplementedError

    def _dial_record(self) -> Record:
        """A connected record: a spare one reconnected, or a new one."""
        spares = self._spares
        while spares:
            try:
                record = spares.popleft()
            except IndexError:  # another dial took the last one
                break
            if self._gate._core.holds(record) or any(
                old._core.holds(record) for old in self._retired
            ):
                # Its close is still being settled: reuse it next time.
                spares.append(record)
                break
            try:
                # Reconnects: its connection is None.
                cast("_ConnectionRecord", record).get_connection()
            except BaseException:
                spares.append(record)
                raise
            return record
        record = self._create_connection()
        if self._dial_in_caller is None:
            self._decide_dial_in_caller(record)
        return record

    def _decide_dial_in_caller(self, record: Record) -> None:
        """Dial in the caller from now on only if ``record``'s connection is bound."""
        bound = thread_bound(record.dbapi_connection)
        self._dial_in_caller = bound
        if not bound:
            self._set_dial_in_caller(False)

    def _set_dial_in_caller(self, value: bool) -> None:
        """Tell the sqlgate pool underneath (the threaded one only)."""

    def _owner(self, record: Record) -> G:
        """The sqlgate pool that handed ``record`` out."""
        gate = self._gate
        if self._retired and not gate._core.holds(record):
            for old in self._retired:
                if old._core.holds(record):
                    return old
        return gate

    def _retire(self) -> G:
        """Put a fresh sqlgate pool in place; return the old one to close."""
        old = self._gate
        self._gate = self._new_gate()
        # Metrics attached through engine.pool (sqlgate.observe) follow.
        self._gate.observer = old.observer
        # Lists are replaced, never changed in place: a return running
        # meanwhile (in another thread, or from a finalizer) reads one whole.
        # Pools with nothing left out are forgotten here.
        gates = list(self._retired)
        gates.append(old)
        self._retired = [g for g in gates if g._core.stats().in_use]
        return old

    @property
    def sqlgate_pool(self) -> G:
        """The sqlgate pool underneath (for ``instrument``, knobs...)."""
        return self._gate

    def stats(self) -> Stats:
        """The figures of the sqlgate pool underneath (see ``sqlgate.Stats``)."""
        return self._gate.stats()

    def _do_get(self) -> Record:
        # A record invalidated while idle (or dialed long ago, past
        # pool_recycle) is reconnected in place by SQLAlchemy's checkout.
        try:
            return self._acquire()
        except (PoolTimeout, ConnectError) as error:
            _raise_for_sqlalchemy(error)

    def _do_return_conn(self, record: Record) -> None:
        if record.dbapi_connection is not None:
            self._give_back(record, broken=False)
            return
        # Invalidated or detached: sqlgate counts its connection closed, and
        # a later dial reconnects this record (see _dial_record).
        self._give_back(record, broken=True)
        self._spares.append(record)

    def recreate(self) -> Self:
        """A new pool with the same arguments (``engine.dispose()`` uses it)."""
        knobs = dict(self._knobs)
        if knobs["dial_in_caller"] is None and self._dial_in_caller is not None:
            knobs["dial_in_caller"] = self._dial_in_caller  # decided already
        return self.__class__(
            self._creator,
            **knobs,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            pre_ping=self._pre_ping,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def status(self) -> str:
        """A one-line summary of the counts."""
        s = self._gate.stats()
        return (
            f"{type(self).__name__} {self._gate.name}: open={s.open_connections} "
            f"in_use={s.in_use} idle={s.idle} waiting={s.waiting} "
            f"max_open={s.max_open_connections}"
        )

    def checkedout(self) -> int:
        """Connections checked out now."""
        return self._gate.stats().in_use

    def checkedin(self) -> int:
        """Connections idle in the pool now."""
        return self._gate.stats().idle


class SqlgatePool(_GatedPool[Pool[Record]]):
    """A SQLAlchemy pool class backed by a ``sqlgate.Pool`` (threads)."""

    # Refused by create_async_engine(): AsyncSqlgatePool is the asyncio twin.
    _is_asyncio: ClassVar[bool] = False

    def _make_gate(self, knobs: dict[str, Any]) -> Pool[Record]:
        start_courier()  # forgotten connections come back through it
        return Pool(self._dial_record, **knobs)

    def _set_dial_in_caller(self, value: bool) -> None:
        self._gate.dial_in_caller = value

    def _acquire(self) -> Record:
        return self._gate.acquire()

    def _give_back(self, record: Record, *, broken: bool) -> None:
        gate = self._owner(record)
        if in_collection():
            # SQLAlchemy returning a forgotten connection from a finalizer:
            # this thread may hold the pool's lock (the collector ran at an
            # allocation inside it), so the courier thread releases it.
            gate._release_soon(record, broken=broken)
        else:
            gate.release(record, broken=broken)

    def dispose(self) -> None:
        """Close idle connections now, checked-out ones on return; stay usable.

        A fresh sqlgate pool serves the checkouts that follow.
        """
        self._retire().close()


class AsyncSqlgatePool(_GatedPool[AsyncPool[Record]]):
    """A pool class for ``create_async_engine``, backed by ``sqlgate.AsyncPool``.

    Takes the same keywords as ``SqlgatePool``. Its pool belongs to the event
    loop that first checks a connection out; ``engine.dispose()`` (awaited)
    closes it, and the next checkout binds the recreated pool anew.
    """

    _is_asyncio: ClassVar[bool] = True
    _dialect = _AsyncConnDialect()

    def _make_gate(self, knobs: dict[str, Any]) -> AsyncPool[Record]:
        # Dials run on the event loop; a thread-bound driver has no place here.
        if self._knobs["dial_in_caller"]:
            raise ValueError("dial_in_caller applies to SqlgatePool, not to asyncio")
        del knobs["dial_in_caller"]
        # A record is closed through its dialect, whose async adapter awaits
        # inside: the on_close hook closes it in a greenlet, so the pool's own
        # close() that follows finds nothing left to close.
        return AsyncPool(self._dial, on_close=self._close_record, **knobs)

    async def _dial(self) -> Record:
        return await greenlet_spawn(self._dial_record)

    @staticmethod
    async def _close_record(record: Record) -> None:
        await greenlet_spawn(record.close)

    def _acquire(self) -> Record:
        return await_only(self._gate.acquire())

    def _give_back(self, record: Record, *, broken: bool) -> None:
        gate = self._owner(record)
        if in_greenlet() and not in_collection():
            await_only(gate.release(record, broken=broken))
        else:
            # SQLAlchemy detaching a forgotten connection from a finalizer:
            # in any thread (an executor's, aiosqlite's), or in the loop's
            # in the middle of a core call. The pool's loop releases it.
            gate._release_soon(record, broken=broken)

    def dispose(self) -> None:
        """As ``SqlgatePool.dispose``."""
        await_only(self._retire().close())
