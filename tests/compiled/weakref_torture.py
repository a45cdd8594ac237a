"""Weak references to every public object, then drop and collect: run as a script.

Run in a child process by ``test_weakrefs.py``, so that a dangling weak
reference (mypyc issue 1102: a compiled object freed without clearing its
weak references) shows as the child's crash, not the test runner's. For each
object: either ``weakref.ref`` refuses it (TypeError, as for any class without
``__weakref__``), or a plain reference, a reference with a callback, a
``WeakSet``, a ``WeakValueDictionary`` and a ``weakref.finalize`` all see it
die: the references read None, each callback ran once, the containers are
empty. Prints one line per object and ``ok`` at the end.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import sys
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any

import sqlgate

if TYPE_CHECKING:
    from collections.abc import Callable


def torture(name: str, make: Callable[[], Any], *, weak: bool) -> None:
    """Weak-reference what ``make`` returns, drop it, collect, check everything."""
    obj = make()
    try:
        plain = weakref.ref(obj)
    except TypeError:
        assert not weak, f"{name}: cannot be weakly referenced (expected it)"
        print(f"{name}: no weak references (TypeError)")
        return
    assert weak, f"{name}: weakly referenceable (expected a TypeError)"
    fired: list[str] = []
    called = weakref.ref(obj, lambda _ref: fired.append("ref"))
    weakref.finalize(obj, fired.append, "finalize")
    group: weakref.WeakSet[Any] = weakref.WeakSet([obj])
    table: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
    table[1] = obj
    # A reference cycle through the object, so that the collector (not the
    # reference count) frees it, as it frees most pools.
    cycle: list[Any] = [obj]
    cycle.append(cycle)
    del obj, cycle
    for _ in range(3):
        gc.collect()
    assert plain() is None, f"{name}: still alive"
    assert called() is None, f"{name}: still alive"
    assert sorted(fired) == ["finalize", "ref"], f"{name}: callbacks {fired}"
    assert len(group) == 0, f"{name}: WeakSet kept it"
    assert list(group) == [], f"{name}: WeakSet kept it"
    assert len(table) == 0, f"{name}: WeakValueDictionary kept it"
    assert 1 not in table, f"{name}: WeakValueDictionary kept it"
    # Touch the dead references again after more garbage came and went.
    junk = [object() for _ in range(10_000)]
    del junk
    gc.collect()
    assert plain() is None
    assert called() is None
    assert len(group) == 0
    print(f"{name}: cleared")


def _pool() -> sqlgate.Pool[sqlite3.Connection]:
    pool = sqlgate.Pool(lambda: sqlite3.connect(":memory:"), max_open=2)
    conn = pool.acquire()
    pool.release(conn)
    with pool.connection():
        pass
    return pool


def _closed_pool() -> sqlgate.Pool[sqlite3.Connection]:
    pool = _pool()
    pool.close()
    return pool


def _db() -> sqlgate.DB:
    db = sqlgate.open("sqlite:///:memory:", max_open=4)
    db.exec("select 1")
    return db


def _async_objects() -> dict[str, Any]:
    made: dict[str, Any] = {}

    async def main() -> None:
        pool = sqlgate.AsyncPool(_AsyncConn.connect, max_open=2)
        conn = await pool.acquire()
        await pool.release(conn)
        made["AsyncPool"] = pool
        closed = sqlgate.AsyncPool(_AsyncConn.connect, max_open=1)
        await closed.close()
        made["AsyncPool (closed)"] = closed
        made["AsyncPool.connection()"] = pool.connection()
        await pool.close()

    asyncio.run(main())
    return made


class _AsyncConn:
    @classmethod
    async def connect(cls) -> _AsyncConn:
        return cls()

    async def close(self) -> None:
        pass

    async def rollback(self) -> None:
        pass


def main() -> int:
    """Torture every public object; return 0 when all is well."""
    db = _db()
    checks: list[tuple[str, Callable[[], Any], bool]] = [
        ("Pool", _pool, True),
        ("Pool (closed)", _closed_pool, True),
        ("Pool.connection()", lambda: _pool().connection(), False),
        ("Stats", lambda: _pool().stats(), False),
        ("DB", _db, True),
        ("Conn", lambda: db.conn(), True),
        ("Tx", lambda: db.begin(), True),
        ("Rows", lambda: db.query("select 1"), True),
        ("Result", lambda: db.exec("select 1"), False),
        ("Error", lambda: sqlgate.PoolTimeout("x"), True),
    ]
    for name, make, weak in checks:
        torture(name, make, weak=weak)
    made = _async_objects()
    for name in sorted(made, reverse=True):  # the checkout (holding its pool) first
        weak = name != "AsyncPool.connection()"
        torture(name, partial(made.pop, name), weak=weak)
    db.close()
    print(f"ok (compiled={sqlgate.compiled})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
