"""``SqlgatePool``: SQLAlchemy (Core and ORM) on sqlgate's pool.

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

SQLAlchemy keeps its part: its connection records, reset on return
(``pool_reset_on_return``), ``pool_pre_ping`` and pool events. sqlgate decides
everything else: limits, FIFO hand-off, dialing off the caller's thread,
lifetimes, stats. Each sqlgate "connection" is one SQLAlchemy connection
record. A record SQLAlchemy invalidated (a dead connection found by a query,
``pool_pre_ping``, or ``engine.dispose()``'s invalidation of older ones) goes
back to sqlgate as broken: sqlgate counts it closed (``broken_closed``) and
dials a replacement when one is needed, so the counts stay exact.

Requires the ``sqlalchemy`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool

from sqlgate.errors import ConnectError, PoolTimeout
from sqlgate.pool import DEFAULT_MAX_CONNECTING, Pool

if TYPE_CHECKING:
    from sqlgate.stats import Stats

__all__ = ["SqlgatePool"]


class SqlgatePool(sa_pool.Pool):
    """A SQLAlchemy pool class backed by a ``sqlgate.Pool``."""

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
        # SQLAlchemy resets a connection on its way back (reset_on_return);
        # sqlgate must not roll back a second time.
        self._gate: Pool[sa_pool.ConnectionPoolEntry] = Pool(
            self._create_connection,
            max_open=max_open,
            max_idle=max_idle,
            min_idle=min_idle,
            max_connecting=max_connecting,
            conn_max_lifetime=conn_max_lifetime,
            conn_max_idle_time=conn_max_idle_time,
            max_waiting=max_waiting,
            acquire_timeout=timeout,
            rollback_on_return=False,
            name=name if name is not None else f"sqlalchemy-{id(self):x}",
        )

    @property
    def sqlgate_pool(self) -> Pool[sa_pool.ConnectionPoolEntry]:
        """The ``sqlgate.Pool`` underneath (for ``instrument``, knobs...)."""
        return self._gate

    def stats(self) -> Stats:
        """The figures of the sqlgate pool underneath (see ``sqlgate.Stats``)."""
        return self._gate.stats()

    def _do_get(self) -> sa_pool.ConnectionPoolEntry:
        gate = self._gate
        while True:
            try:
                record = gate.acquire()
            except PoolTimeout as error:
                raise sa_exc.TimeoutError(str(error)) from error
            except ConnectError as error:
                # The driver's own error, so that the engine wraps it as usual.
                cause = error.__cause__
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            stale = getattr(record, "_is_hard_or_soft_invalidated", None)
            if stale is not None and stale():
                # Invalidated while idle (engine-wide invalidation): discard it
                # through sqlgate, so it is counted closed, and take another.
                gate.release(record, broken=True)
                continue
            return record

    def _do_return_conn(self, record: sa_pool.ConnectionPoolEntry) -> None:
        # A record whose DBAPI connection SQLAlchemy closed (invalidate) is
        # discarded, not kept as an empty slot.
        self._gate.release(record, broken=record.dbapi_connection is None)

    def dispose(self) -> None:
        """Close the sqlgate pool: idle connections now, checked-out ones on return."""
        self._gate.close()

    def recreate(self) -> SqlgatePool:
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
            f"SqlgatePool {self._gate.name}: open={s.open_connections} "
            f"in_use={s.in_use} idle={s.idle} waiting={s.waiting} "
            f"max_open={s.max_open_connections}"
        )

    def checkedout(self) -> int:
        """Connections checked out now."""
        return self._gate.stats().in_use

    def checkedin(self) -> int:
        """Connections idle in the pool now."""
        return self._gate.stats().idle
