"""SQLAlchemy Core and ORM on SqlgatePool: SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import gc
import sqlite3
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("sqlalchemy")

from sqlalchemy import Connection, Integer, String, create_engine, exc, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import Pool, QueuePool

from sqlgate.integrations.sqlalchemy import SqlgatePool
from tests.fakes import Gate, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "obs_sa_item"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def queued(pool: SqlgatePool, n: int) -> bool:
    return pool.stats().waiting == n


def gate_check(engine: Engine) -> None:
    pool = engine.pool
    assert isinstance(pool, SqlgatePool)
    gate = pool.sqlgate_pool
    with gate._lock:
        gate._core.check()


def settle(engine: Engine) -> None:
    pool = engine.pool
    assert isinstance(pool, SqlgatePool)
    wait_until(
        lambda: pool.stats().dialing == 0 and pool.stats().closing == 0,
        what="dials and closes to settle",
    )


def kill(killer: Engine, pid: object) -> None:
    """End backend ``pid`` and return once it has exited (not merely signalled)."""
    with killer.connect() as k:
        gone = k.execute(
            text("select pg_terminate_backend(:p, :ms)"), {"p": pid, "ms": 10_000}
        ).scalar()
    assert gone is True, f"backend {pid} still running 10 s after SIGTERM"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'sa.db'}",
        poolclass=SqlgatePool,
        max_open=2,
        max_idle=2,
        pool_timeout=5,
        name="sa-sqlite",
    )
    yield engine
    engine.dispose()


def test_create_engine_passes_sqlgate_knobs(sqlite_engine: Engine) -> None:
    pool = sqlite_engine.pool
    assert isinstance(pool, SqlgatePool)
    s = pool.stats()
    assert (s.max_open_connections, s.max_idle) == (2, 2)
    assert pool.sqlgate_pool.name == "sa-sqlite"
    assert pool.sqlgate_pool._timeout == 5


def test_core_on_sqlite(sqlite_engine: Engine) -> None:
    with sqlite_engine.begin() as conn:
        conn.execute(text("create table obs_sa_core (x integer)"))
        conn.execute(text("insert into obs_sa_core values (1), (2), (3)"))
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("select sum(x) from obs_sa_core")).scalar() == 6
    pool = sqlite_engine.pool
    assert isinstance(pool, SqlgatePool)
    s = pool.stats()
    assert (s.in_use, s.idle, s.dials, s.acquires) == (0, 1, 1, 2)
    assert "in_use=0 idle=1" in pool.status()
    gate_check(sqlite_engine)


def test_orm_on_sqlite(sqlite_engine: Engine) -> None:
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as session, session.begin():
        session.add_all([Item(name="a"), Item(name="b")])
    with Session(sqlite_engine) as session:
        names = session.scalars(select(Item.name).order_by(Item.id)).all()
    assert names == ["a", "b"]
    pool = sqlite_engine.pool
    assert isinstance(pool, SqlgatePool)
    assert pool.stats().in_use == 0
    gate_check(sqlite_engine)


def test_limit_and_fifo_through_the_engine(sqlite_engine: Engine) -> None:
    pool = sqlite_engine.pool
    assert isinstance(pool, SqlgatePool)
    a = sqlite_engine.connect()
    b = sqlite_engine.connect()
    order: list[int] = []

    def wait(i: int) -> None:
        with sqlite_engine.connect() as c:
            order.append(i)
            c.execute(text("select 1"))

    threads = []
    for i in range(3):
        t = threading.Thread(target=wait, args=(i,))
        t.start()
        threads.append(t)
        wait_until(partial(queued, pool, i + 1), what="queueing")
    assert pool.stats().open_connections == 2  # max_open holds
    a.close()
    for t in threads:
        t.join()
    b.close()
    assert order == [0, 1, 2]  # first come, first served
    assert pool.stats().wait_count == 2 + 3  # two waited for their dial
    gate_check(sqlite_engine)


def test_timeout_is_sqlalchemys_timeout_error(tmp_path: Path) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 't.db'}",
        poolclass=SqlgatePool,
        max_open=1,
        min_idle=1,
        pool_timeout=0,
    )
    pool = engine.pool
    assert isinstance(pool, SqlgatePool)
    wait_until(lambda: pool.stats().idle == 1, what="min_idle to fill")
    held = engine.connect()  # the idle one: no wait, so timeout 0 is fine
    with pytest.raises(exc.TimeoutError, match=r"no connection after 0\.00 s"):
        engine.connect()
    held.close()
    assert pool.stats().timeouts == 1
    engine.dispose()


def test_issue16_pool_timeout_zero_still_dials_below_max_open(tmp_path: Path) -> None:
    dialing = Gate()
    path = tmp_path / "t0.db"

    def creator() -> sqlite3.Connection:
        dialing.hold()
        return sqlite3.connect(path, check_same_thread=False)

    engine = create_engine(
        "sqlite://", creator=creator, poolclass=SqlgatePool, max_open=1, pool_timeout=0
    )
    pool = engine.pool
    assert isinstance(pool, SqlgatePool)
    got: list[object] = []
    first = threading.Thread(target=lambda: got.append(engine.connect()))
    first.start()
    dialing.wait_entered()
    wait_until(lambda: queued(pool, 1), what="the first checkout to queue")
    # At max_open, pool_timeout=0 fails at once, as QueuePool's would.
    with pytest.raises(exc.TimeoutError, match=r"no connection after 0\.00 s"):
        engine.connect()
    dialing.open()
    first.join(10)
    (conn,) = got
    assert isinstance(conn, Connection)
    assert conn.execute(text("select 1")).scalar() == 1
    conn.close()
    s = pool.stats()
    assert (s.timeouts, s.dials, s.in_use, s.idle) == (1, 1, 0, 1)
    gate_check(engine)
    engine.dispose()


def test_issue16_pool_dispose_closes_idle_and_the_pool_stays_usable(
    sqlite_engine: Engine,
) -> None:
    pool = sqlite_engine.pool
    assert isinstance(pool, SqlgatePool)
    held = sqlite_engine.connect()
    with sqlite_engine.connect():
        pass
    first = pool.sqlgate_pool
    assert (first.stats().idle, first.stats().in_use) == (1, 1)
    pool.dispose()
    assert first.closed  # its idle connection is closed now
    assert (first.stats().open_connections, first.stats().in_use) == (1, 1)
    assert sqlite_engine.pool is pool
    with sqlite_engine.connect() as conn:  # same pool, a fresh sqlgate pool
        assert conn.execute(text("select 1")).scalar() == 1
    assert pool.sqlgate_pool is not first
    assert pool.sqlgate_pool.name == "sa-sqlite"
    held.close()  # goes back to the pool that counts it, which closes it
    settle(sqlite_engine)
    assert (first.stats().open_connections, first.stats().closed) == (0, 2)
    s = pool.stats()
    assert (s.open_connections, s.idle, s.in_use) == (1, 1, 0)
    gate_check(sqlite_engine)


def test_dispose_closes_and_recreates(sqlite_engine: Engine) -> None:
    old = sqlite_engine.pool
    assert isinstance(old, SqlgatePool)
    held = sqlite_engine.connect()
    with sqlite_engine.connect():
        pass
    sqlite_engine.dispose()
    new = sqlite_engine.pool
    assert isinstance(new, SqlgatePool)
    assert new is not old
    assert new.stats().max_open_connections == 2
    assert new.sqlgate_pool.name == "sa-sqlite"
    assert old.stats().idle == 0
    held.close()  # a late check-in to the disposed pool closes the connection
    assert old.stats().in_use == 0
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1


@pytest.mark.parametrize("close", [True, False])
def test_issue16_disposing_a_copy_of_the_engine(
    sqlite_engine: Engine, close: bool
) -> None:
    with sqlite_engine.connect() as conn:
        first = conn.connection.dbapi_connection
    twin = copy.copy(sqlite_engine)
    twin.dispose(close=close)
    with twin.connect() as conn:  # the copy has a pool of its own now
        assert conn.connection.dbapi_connection is not first
    with sqlite_engine.connect() as conn:  # and the original keeps working
        again = conn.connection.dbapi_connection
        assert conn.execute(text("select 1")).scalar() == 1
    # close=True closed the original's idle connection; close=False left it.
    assert (again is first) is not close
    twin.dispose()


def test_issue16_invalidated_record_is_kept_and_reconnected(
    sqlite_engine: Engine,
) -> None:
    pool = sqlite_engine.pool
    assert isinstance(pool, SqlgatePool)
    with sqlite_engine.connect() as conn:
        record = conn.connection._connection_record
        info = conn.connection.record_info
        assert info is not None
        info["mark"] = 16
        first = conn.connection.dbapi_connection
        conn.invalidate()
    assert record is not None
    assert record.dbapi_connection is None  # closed by SQLAlchemy
    s = pool.stats()
    assert (s.open_connections, s.idle, s.broken_closed) == (0, 0, 1)
    with sqlite_engine.connect() as conn:  # the next dial reconnects that record
        assert conn.connection._connection_record is record
        assert conn.connection.record_info == {"mark": 16}
        assert conn.connection.dbapi_connection is not first
        assert conn.execute(text("select 1")).scalar() == 1
    s = pool.stats()
    assert (s.open_connections, s.idle, s.dials, s.closed) == (1, 1, 2, 1)
    gate_check(sqlite_engine)


def drop_after_invalidate(path: Path, poolclass: type[Pool], *, hold: bool) -> str:
    """SQLAlchemy's test_invalidate_on_results, as a plain function.

    A connection is invalidated while a result on it is half read; then
    another connection drops the table. Returns "" when the drop worked, else
    the error. ``hold`` keeps the half-read cursor alive meanwhile (in that
    test a reference cycle does, until a garbage collection frees it).
    """
    engine = create_engine(
        f"sqlite:///{path}",
        poolclass=poolclass,
        connect_args={"timeout": 0},  # a lock fails at once, no 5 s wait
    )
    try:
        with engine.begin() as conn:
            conn.execute(text("create table obs_sa_lock (id integer, name text)"))
            conn.execute(
                text("insert into obs_sa_lock values (:id, :name)"),
                [{"id": i, "name": f"row {i}"} for i in range(1, 100)],
            )
        conn = engine.connect()
        result = conn.exec_driver_sql("select * from obs_sa_lock")
        for _ in range(20):
            result.fetchone()
        dbapi_conn = conn.connection.dbapi_connection
        cursor = result.cursor
        conn.invalidate()
        # Closed by the time invalidate() returns, in this thread.
        with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
            dbapi_conn.execute("select 1")  # type: ignore[union-attr]
        conn.close()
        del result, dbapi_conn
        if not hold:
            del cursor
            gc.collect()
        try:
            with engine.begin() as conn:
                conn.execute(text("drop table obs_sa_lock"))
        except exc.OperationalError as error:
            return str(error.orig)
        return ""
    finally:
        engine.dispose()


def test_issue16_invalidated_sqlite_connection_leaves_no_lock(tmp_path: Path) -> None:
    # SQLAlchemy closes an invalidated connection itself, in the caller's
    # thread, before the record comes back to the pool. sqlite3 then keeps
    # the database locked only while a cursor of the closed connection is
    # alive (sqlite3_close_v2): on either pool, the same.
    outcomes = {
        (cls, hold): drop_after_invalidate(
            tmp_path / f"{cls.__name__}-{hold}.db", cls, hold=hold
        )
        for cls in (QueuePool, SqlgatePool)
        for hold in (True, False)
    }
    assert outcomes == {
        (QueuePool, True): "database is locked",
        (SqlgatePool, True): "database is locked",
        (QueuePool, False): "",
        (SqlgatePool, False): "",
    }


def test_issue16_queuepool_sizes_map_to_sqlgate_knobs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sizes.db'}"
    engine = create_engine(url, poolclass=SqlgatePool, pool_size=5, max_overflow=3)
    pool = engine.pool
    assert isinstance(pool, SqlgatePool)
    s = pool.stats()
    assert (s.max_idle, s.max_open_connections) == (5, 8)
    conns = [engine.connect() for _ in range(5)]
    for conn in conns:
        conn.close()
    assert pool.stats().idle == 5  # pool_size connections are kept, as QueuePool
    engine.dispose()
    cases: list[tuple[dict[str, Any], tuple[int, int]]] = [
        ({"pool_size": 7}, (7, 0)),
        ({"max_overflow": 2}, (5, 7)),  # QueuePool's default pool_size is 5
        ({"pool_size": 3, "max_overflow": -1}, (3, 0)),
        ({"max_open": 4, "max_idle": 3}, (3, 4)),
        ({}, (5, 0)),  # QueuePool's default pool_size, not sqlgate's 2
    ]
    for knobs, (max_idle, max_open) in cases:
        engine = create_engine(url, poolclass=SqlgatePool, **knobs)
        s = engine.pool.stats()  # type: ignore[attr-defined]
        assert (s.max_idle, s.max_open_connections) == (max_idle, max_open), knobs
        engine.dispose()
    engine = create_engine(url, poolclass=SqlgatePool, pool_size=0)
    assert engine.pool.sqlgate_pool._core.config.max_idle == 2**31 - 1  # type: ignore[attr-defined]
    engine.dispose()
    with pytest.raises(ValueError, match=r"give max_idle \(3\) or pool_size \(5\)"):
        create_engine(url, poolclass=SqlgatePool, pool_size=5, max_idle=3)
    with pytest.raises(ValueError, match=r"max_overflow must be >= -1, got -2"):
        create_engine(url, poolclass=SqlgatePool, max_overflow=-2)
    with pytest.raises(TypeError, match=r"pool_size must be an int, got '5'"):
        create_engine(url, poolclass=SqlgatePool, pool_size="5")


@pytest.mark.postgres
def test_core_and_orm_on_postgres(pg_url: str) -> None:
    engine = create_engine(pg_url, poolclass=SqlgatePool, max_open=3, name="sa-pg")
    try:
        with engine.begin() as conn:
            conn.execute(text("drop table if exists obs_sa_item"))
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            session.add_all([Item(name=f"n{i}") for i in range(5)])
        with Session(engine) as session:
            assert session.scalar(select(Item.id).where(Item.name == "n3")) is not None
            assert len(session.scalars(select(Item)).all()) == 5
        with engine.connect() as conn:
            assert conn.execute(text("select count(*) from obs_sa_item")).scalar() == 5
        pool = engine.pool
        assert isinstance(pool, SqlgatePool)
        assert pool.stats().in_use == 0
        gate_check(engine)
    finally:
        with engine.begin() as conn:
            conn.execute(text("drop table if exists obs_sa_item"))
        engine.dispose()


@pytest.mark.postgres
def test_invalidation_of_a_dead_connection_keeps_the_record(pg_url: str) -> None:
    engine = create_engine(pg_url, poolclass=SqlgatePool, max_open=2, name="sa-kill")
    killer = create_engine(pg_url, poolclass=SqlgatePool, max_open=1)
    try:
        pool = engine.pool
        assert isinstance(pool, SqlgatePool)
        with engine.connect() as conn:
            pid = conn.execute(text("select pg_backend_pid()")).scalar()
            info = conn.connection.record_info
            assert info is not None
            info["seen"] = pid
        assert pool.stats().idle == 1
        kill(killer, pid)
        with engine.connect() as conn:
            with pytest.raises(exc.OperationalError):
                conn.execute(text("select 1"))
            assert conn.invalidated
        settle(engine)
        s = pool.stats()
        assert (s.broken_closed, s.closed, s.in_use, s.idle) == (1, 1, 0, 0)
        assert s.open_connections == 0
        gate_check(engine)
        with engine.connect() as conn:  # a dial reconnects that same record
            assert conn.execute(text("select pg_backend_pid()")).scalar() != pid
            assert conn.connection.record_info == {"seen": pid}
        s = pool.stats()
        assert (s.dials, s.open_connections, s.idle) == (2, 1, 1)
        gate_check(engine)
    finally:
        engine.dispose()
        killer.dispose()


@pytest.mark.postgres
def test_pre_ping_discards_the_dead_one(pg_url: str) -> None:
    engine = create_engine(pg_url, poolclass=SqlgatePool, pool_pre_ping=True)
    killer = create_engine(pg_url, poolclass=SqlgatePool)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("select pg_backend_pid()")).scalar()
        kill(killer, pid)
        with engine.connect() as conn:  # the ping fails; SQLAlchemy reconnects
            assert conn.execute(text("select 1")).scalar() == 1
        gate_check(engine)
        pool = engine.pool
        assert isinstance(pool, SqlgatePool)
        s = pool.stats()
        assert (s.in_use, s.idle, s.open_connections) == (0, 1, 1)
    finally:
        engine.dispose()
        killer.dispose()


def test_issue16_sqlite_check_same_thread_dials_in_the_caller(tmp_path: Path) -> None:
    # SQLAlchemy's own URL example: sqlite3 binds each connection to its thread.
    url = f"sqlite:///{tmp_path / 'bound.db'}?check_same_thread=true"
    engine = create_engine(url, poolclass=SqlgatePool, max_open=2)
    pool = engine.pool
    assert isinstance(pool, SqlgatePool)
    with engine.begin() as conn:  # dialed here, so usable here
        conn.execute(text("create table obs_sa_bound (x integer)"))
    with engine.connect() as a, engine.connect() as b:
        assert a.execute(text("select count(*) from obs_sa_bound")).scalar() == 0
        assert b.execute(text("select 1")).scalar() == 1
    assert pool.sqlgate_pool.dial_in_caller  # detected: it stays in the caller
    s = pool.stats()
    assert (s.dials, s.idle, s.broken_closed) == (2, 2, 0)
    gate_check(engine)
    engine.dispose()


def test_issue16_sqlite_without_thread_binding_dials_on_sqlgates_threads(
    tmp_path: Path,
) -> None:
    # A file URL: SQLAlchemy passes check_same_thread=False.
    engine = create_engine(f"sqlite:///{tmp_path / 'free.db'}", poolclass=SqlgatePool)
    pool = engine.pool
    assert isinstance(pool, SqlgatePool)
    assert pool.sqlgate_pool.dial_in_caller  # undecided: the first one here
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    assert not pool.sqlgate_pool.dial_in_caller  # tried: not bound
    engine.dispose()
    assert not engine.pool.sqlgate_pool.dial_in_caller
    forced = create_engine(
        f"sqlite:///{tmp_path / 'free.db'}", poolclass=SqlgatePool, dial_in_caller=True
    )
    with forced.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    assert forced.pool.sqlgate_pool.dial_in_caller
    forced.dispose()
    with pytest.raises(TypeError, match="dial_in_caller must be a bool or None"):
        create_engine("sqlite://", poolclass=SqlgatePool, dial_in_caller="yes")
