"""Every core call of ``Pool`` is made under the pool's lock (the core is not
thread-safe).

One thread drives every public operation (plain and hooked paths, leak
tracking, setters, close with connections still out) over a core wrapped by
``tests.fakes.LockedCore``, which records any core method called while the
lock is free. In one thread that is exact: the list must stay empty.
"""

from __future__ import annotations

from typing import Any

import pytest

import sqlgate
from sqlgate import Pool
from tests.fakes import FakeConn, FakeDriver, LockedCore, settled


@pytest.mark.skipif(
    sqlgate.compiled,
    reason="the compiled hand-off calls the core natively: no proxy can stand in "
    "for it (the pure build runs this check on the same source)",
)
@pytest.mark.parametrize("leaks", [False, True], ids=["plain", "leak_tracking"])
@pytest.mark.parametrize("hooks", [False, True], ids=["no_hooks", "hooks"])
def test_every_core_call_holds_the_pool_lock(leaks: bool, hooks: bool) -> None:
    driver = FakeDriver()
    seen: list[str] = []
    knobs: dict[str, Any] = {}
    if hooks:
        knobs.update(
            on_acquire=lambda c: seen.append("acquire"),
            on_release=lambda c: seen.append("release"),
            reset=lambda c: None,
        )
    if leaks:
        knobs["leak_threshold"] = 60.0
    pool: Pool[FakeConn] = Pool(
        driver.connect, max_open=3, max_idle=2, name="locked", **knobs
    )
    guard = LockedCore.install(pool)
    a = pool.acquire()
    b = pool.acquire()
    pool.release(a)
    a = pool.acquire()  # idle this time
    b.in_transaction = True  # rolled back on return
    pool.release(b)
    pool.release(a, broken=True)
    with pool.connection() as conn:
        assert conn.number > 0
    pool.set_max_open_conns(2)
    pool.set_max_idle_conns(1)
    pool.set_min_idle_conns(1)
    pool.set_max_connecting(1)
    pool.set_conn_max_lifetime(30.0)
    pool.set_conn_max_idle_time(30.0)
    pool.set_circuit_after(2)
    settled(pool)
    pool.stats()
    kept = pool.acquire()  # still out when the pool closes
    assert pool.close(timeout=0.01) == 1
    pool.release(kept)  # taken by close(timeout): a no-op
    settled(pool)
    assert guard.unlocked == []
    assert driver.live == 0
    assert (seen != []) == hooks
