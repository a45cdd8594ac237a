"""The pools under test, each behind the same small face.

Every contender exposes the pool's own acquire and release callables, not
wrappers, so the timing loops call the pool exactly as an application would.
The sizes passed are the pool's limit on open connections and what it keeps
idle; each contender starts empty unless ``warm`` is called.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from operator import methodcaller
from typing import Any

from benchmarks.fakes import DialModule, connection_class_for

Dial = Callable[[], Any]

#: Seconds any contender may wait for a connection before failing the run.
TIMEOUT = 30.0

_close = methodcaller("close")


@dataclass
class Contender:
    """A pool under test.

    Attributes:
        name: as shown in the tables.
        acquire: takes a connection handle (the pool's own method).
        release: gives a handle back (the pool's own method where it has one).
        close: closes the pool and its connections.
        cycles: runs n acquire+release cycles its own idiomatic way, if that
            differs from ``release(acquire())`` (a ``with`` block).
    """

    name: str
    acquire: Callable[[], Any]
    release: Callable[[Any], object]
    close: Callable[[], object]
    cycles: Callable[[int], None] | None = None


def warm(contender: Contender, n: int) -> None:
    """Make ``n`` connections idle: take ``n`` at once, then give them all back."""
    handles = [contender.acquire() for _ in range(n)]
    for handle in handles:
        contender.release(handle)


def sqlgate_pool(
    dial: Dial, size: int, *, max_connecting: int | None = None, name: str = "sqlgate"
) -> Contender:
    """sqlgate.Pool: ``max_open`` = ``max_idle`` = ``size``, defaults otherwise."""
    from sqlgate import Pool
    from sqlgate.pool import DEFAULT_MAX_CONNECTING

    pool: Pool[Any] = Pool(
        dial,
        max_open=size,
        max_idle=size,
        acquire_timeout=TIMEOUT,
        max_connecting=(
            DEFAULT_MAX_CONNECTING if max_connecting is None else max_connecting
        ),
    )
    return Contender(name, pool.acquire, pool.release, pool.close)


def sqlgate_with(dial: Dial, size: int) -> Contender:
    """sqlgate.Pool used through ``with pool.connection():``."""
    from sqlgate import Pool

    pool: Pool[Any] = Pool(dial, max_open=size, max_idle=size, acquire_timeout=TIMEOUT)
    connection = pool.connection

    def cycles(n: int) -> None:
        for _ in range(n):
            with connection():
                pass

    return Contender("sqlgate (with)", pool.acquire, pool.release, pool.close, cycles)


def psycopg_pool(dial: Dial, size: int, *, prefill: bool = True) -> Contender:
    """psycopg_pool.ConnectionPool: ``max_size`` = ``size``; ``min_size`` = size or 0.

    ``connection_class`` is a stand-in whose ``connect`` calls ``dial``: the pool
    then handles whatever ``dial`` returns (fake or real psycopg connections).
    """
    from psycopg_pool import ConnectionPool

    pool: ConnectionPool[Any] = ConnectionPool(
        connection_class=connection_class_for(dial),
        min_size=size if prefill else 0,
        max_size=size,
        timeout=TIMEOUT,
        open=False,
        name="bench",
    )
    pool.open(wait=prefill, timeout=TIMEOUT)
    return Contender("psycopg_pool", pool.getconn, pool.putconn, pool.close)


def sqlalchemy_pool(dial: Dial, size: int) -> Contender:
    """SQLAlchemy QueuePool(creator=dial): ``pool_size`` = size, no overflow."""
    from sqlalchemy.pool import QueuePool

    pool = QueuePool(dial, pool_size=size, max_overflow=0, timeout=TIMEOUT)
    return Contender("SQLAlchemy QueuePool", pool.connect, _close, pool.dispose)


def dbutils_pool(dial: Dial, size: int, *, dbapi: Any = None) -> Contender:
    """DBUtils PooledDB over a DB-API module whose ``connect`` is ``dial``.

    ``maxconnections`` = ``maxcached`` = size, ``blocking=True`` (wait rather
    than raise at the limit); ``ping`` and ``reset`` keep their defaults.
    """
    from dbutils.pooled_db import PooledDB

    pool = PooledDB(
        DialModule(dial, dbapi), maxcached=size, maxconnections=size, blocking=True
    )
    return Contender("DBUtils PooledDB", pool.connection, _close, pool.close)


def floor_lock_deque(dial: Dial, size: int) -> Contender:
    """The floor: one threading.Lock and a deque; pop under it, append under it.

    No limit, no waiting, no reset: the least bookkeeping a pool can do.
    """
    lock = threading.Lock()
    idle: deque[Any] = deque()
    opened: list[Any] = []

    def acquire() -> Any:
        with lock:
            if idle:
                return idle.pop()
        conn = dial()
        opened.append(conn)
        return conn

    def release(conn: Any) -> None:
        with lock:
            idle.append(conn)

    def close() -> None:
        for conn in opened:
            conn.close()

    return Contender("floor (Lock+deque)", acquire, release, close)


def floor_fifo(dial: Dial, size: int) -> Contender:
    """The contended floor: a minimal fair pool (FIFO hand-off, no barging).

    A release hands its connection straight to the longest waiter, or parks it.
    No timeouts, no counts beyond the limit, no reset.
    """
    lock = threading.Lock()
    idle: deque[Any] = deque()
    waiters: deque[tuple[threading.Lock, list[Any]]] = deque()
    opened: list[Any] = []

    def acquire() -> Any:
        waiter: tuple[threading.Lock, list[Any]] | None = None
        with lock:
            if idle:
                return idle.pop()
            if len(opened) < size:
                opened.append(None)  # reserve the slot before dialing
            else:
                waiter = (threading.Lock(), [])
                waiter[0].acquire()
                waiters.append(waiter)
        if waiter is None:
            conn = dial()
            with lock:
                opened[opened.index(None)] = conn
            return conn
        waiter[0].acquire()
        return waiter[1][0]

    def release(conn: Any) -> None:
        with lock:
            if waiters:
                gate, slot = waiters.popleft()
                slot.append(conn)
            else:
                idle.append(conn)
                return
        gate.release()

    def close() -> None:
        for conn in opened:
            if conn is not None:
                conn.close()

    return Contender("floor (FIFO hand-off)", acquire, release, close)


def dedicated(dial: Dial, size: int) -> Contender:
    """The limit: each thread keeps its own connection, no pool at all."""
    local = threading.local()
    opened: list[Any] = []

    def acquire() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = dial()
            opened.append(conn)
        return conn

    def release(conn: Any) -> None:
        pass

    def close() -> None:
        for conn in opened:
            conn.close()

    return Contender("limit (dedicated)", acquire, release, close)
