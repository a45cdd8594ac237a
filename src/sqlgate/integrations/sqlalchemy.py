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
record. A record SQLAlchemy invalidated (a dead connection found by a query,
``pool_pre_ping``, or ``engine.dispose()``'s invalidation of older ones) goes
back to sqlgate as broken: sqlgate counts it closed (``broken_closed``) and
dials a replacement when one is needed, so the counts stay exact.

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

from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, Self, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool
from sqlalchemy.pool.base import _AsyncConnDialect
from sqlalchemy.util import await_only, greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from sqlgate._shell import in_collection, start_courier
from sqlgate.aiopool import AsyncPool
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


def _is_stale(record: Record) -> bool:
    """Whether an idle record was invalidated meanwhile (engine-wide invalidation)."""
    stale = getattr(record, "_is_hard_or_soft_invalidated", None)
    return stale is not None and bool(stale())


class _GatedPool(sa_pool.Pool, Generic[G]):
    """What both pool classes share: knobs, checkout rules, figures, recreate."""

    def __init__(
        self,
        creator: Any,
        # Not keyword-only: create_engine() finds a pool class's keywords by
        # its positional parameters (sqlalchemy.util.get_cls_kwargs).
        max_open: int = 0,
        max_idle: int = 2,
        min_idle: int = 0,
        max_connecting: int = DEFAULT_MAX_CONNECTING,
        conn_max_lifetime: float | None = None,
        conn_max_idle_time: float | None = None,
        max_waiting: int = 0,
        timeout: float | None = 30.0,
        name: str | None = None,
        **kw: Any,
    ) -> None:
        """Create the pool; ``create_engine`` passes these keywords through.

        Args:
            creator: SQLAlchemy's connection factory.
            max_open: most connections open at once; 0 means unlimited.
            max_idle: most connections kept idle.
            min_idle: idle connections kept dialed in the background.
            max_connecting: most dials in flight at once; 0 means unlimited.
            conn_max_lifetime: seconds a connection may live; None = forever.
            conn_max_idle_time: seconds a connection may sit idle; None =
                forever.
            max_waiting: most callers queued at once; 0 means unbounded.
            timeout: seconds a checkout waits (``pool_timeout`` in
                ``create_engine``); None waits forever.
            name: the sqlgate pool's name (messages, metrics).
            kw: SQLAlchemy's own pool arguments (``reset_on_return``,
                ``pre_ping``, ``echo``, ``events``, ``dialect``...).

        Raises:
            TypeError, ValueError: a knob is wrong; the message names it.
        """
        super().__init__(creator, **kw)
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
        }
        knobs = dict(self._knobs)
        knobs["acquire_timeout"] = knobs.pop("timeout")
        if name is None:
            knobs["name"] = f"sqlalchemy-{id(self):x}"
        # SQLAlchemy resets a connection on its way back (reset_on_return);
        # sqlgate must not roll back a second time.
        self._gate: G = self._make_gate(knobs)

    def _make_gate(self, knobs: dict[str, Any]) -> G:
        raise NotImplementedError

    def _acquire(self) -> Record:
        raise NotImplementedError

    def _give_back(self, record: Record, *, broken: bool) -> None:
        raise NotImplementedError

    @property
    def sqlgate_pool(self) -> G:
        """The sqlgate pool underneath (for ``instrument``, knobs...)."""
        return self._gate

    def stats(self) -> Stats:
        """The figures of the sqlgate pool underneath (see ``sqlgate.Stats``)."""
        return self._gate.stats()

    def _do_get(self) -> Record:
        while True:
            try:
                record = self._acquire()
            except (PoolTimeout, ConnectError) as error:
                _raise_for_sqlalchemy(error)
            if _is_stale(record):
                # Discard it through sqlgate, so it is counted closed, and
                # take another.
                self._give_back(record, broken=True)
                continue
            return record

    def _do_return_conn(self, record: Record) -> None:
        # A record whose DBAPI connection SQLAlchemy closed (invalidate) is
        # discarded, not kept as an empty slot.
        self._give_back(record, broken=record.dbapi_connection is None)

    def recreate(self) -> Self:
        """A new pool with the same arguments (``engine.dispose()`` uses it)."""
        return self.__class__(
            self._creator,
            **self._knobs,
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
        return Pool(self._create_connection, rollback_on_return=False, **knobs)

    def _acquire(self) -> Record:
        return self._gate.acquire()

    def _give_back(self, record: Record, *, broken: bool) -> None:
        if in_collection():
            # SQLAlchemy returning a forgotten connection from a finalizer:
            # this thread may hold the pool's lock (the collector ran at an
            # allocation inside it), so the courier thread releases it.
            self._gate._release_soon(record, broken=broken)
        else:
            self._gate.release(record, broken=broken)

    def dispose(self) -> None:
        """Close the sqlgate pool: idle connections now, checked-out ones on return."""
        self._gate.close()


class AsyncSqlgatePool(_GatedPool[AsyncPool[Record]]):
    """A pool class for ``create_async_engine``, backed by ``sqlgate.AsyncPool``.

    Takes the same keywords as ``SqlgatePool``. Its pool belongs to the event
    loop that first checks a connection out; ``engine.dispose()`` (awaited)
    closes it, and the next checkout binds the recreated pool anew.
    """

    _is_asyncio: ClassVar[bool] = True
    _dialect = _AsyncConnDialect()

    def _make_gate(self, knobs: dict[str, Any]) -> AsyncPool[Record]:
        # A record is closed through its dialect, whose async adapter awaits
        # inside: the on_close hook closes it in a greenlet, so the pool's own
        # close() that follows finds nothing left to close.
        return AsyncPool(
            self._dial,
            rollback_on_return=False,
            on_close=self._close_record,
            **knobs,
        )

    async def _dial(self) -> Record:
        return await greenlet_spawn(self._create_connection)

    @staticmethod
    async def _close_record(record: Record) -> None:
        await greenlet_spawn(record.close)

    def _acquire(self) -> Record:
        return await_only(self._gate.acquire())

    def _give_back(self, record: Record, *, broken: bool) -> None:
        if in_greenlet() and not in_collection():
            await_only(self._gate.release(record, broken=broken))
        else:
            # SQLAlchemy detaching a forgotten connection from a finalizer:
            # in any thread (an executor's, aiosqlite's), or in the loop's
            # in the middle of a core call. The pool's loop releases it.
            self._gate._release_soon(record, broken=broken)

    def dispose(self) -> None:
        """Close the sqlgate pool: idle connections now, checked-out ones on return."""
        await_only(self._gate.close())
