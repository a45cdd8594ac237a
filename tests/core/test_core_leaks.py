"""Leak tracking in the core (loosen, reclaim, close_in_use) and check()'s rules.

A loosened entry holds its connection weakly; if the caller drops it, the
garbage collector takes it and ``reclaim`` settles the slot. The driver's own
finalizer closed the socket, so the test's ledger counts it closed by hand.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from sqlgate._core import (
    CLOSED,
    CLOSING,
    IDLE,
    IN_USE,
    Entry,
    InvariantError,
    Waiter,
)
from tests.core.rig import Conn, Rig, force_knobs


def held_entry(rig: Rig) -> Entry[Conn]:
    got = rig.acquire()
    if isinstance(got, Entry):
        return got
    rig.connect()
    assert got.entry is not None
    return got.entry


def drop(entry: Entry[Conn], rig: Rig) -> None:
    """Let the collector take a loosened entry's connection (the caller lost it)."""
    rig.last = []
    gc.collect()
    assert entry.ref is not None
    assert entry.ref() is None


def test_loosen_then_release_takes_the_connection_back() -> None:
    rig = Rig(max_open=2)
    entry = held_entry(rig)
    conn = entry.conn
    fired: list[object] = []
    assert rig.core.loosen(entry, fired.append)
    assert entry.conn is None
    assert entry.get() is conn
    assert rig.core.lookup(conn) is entry
    assert rig.core.holds(conn)
    rig.check()
    rig.release(entry)
    assert entry.conn is conn
    assert entry.ref is None
    assert entry.state == IDLE
    assert fired == []
    rig.check()


def test_loosen_refuses_twice_and_idle_and_changes_nothing() -> None:
    rig = Rig(max_open=2)
    entry = held_entry(rig)
    keep = entry.conn
    assert rig.core.loosen(entry, lambda _ref: None)
    with pytest.raises(ValueError, match="is not in use, or loosened"):
        rig.core.loosen(entry, lambda _ref: None)
    assert entry.get() is keep
    rig.release(entry)
    with pytest.raises(ValueError, match="is not in use, or loosened"):
        rig.core.loosen(entry, lambda _ref: None)
    assert entry.ref is None
    assert entry.conn is keep
    rig.check()


def test_loosen_without_weakref_support_changes_nothing() -> None:
    rig = Rig(max_open=1)
    w = rig.acquire()
    assert isinstance(w, Waiter)
    plain = object()  # no __weakref__ slot
    entry = rig.core.connected(1, plain, rig.now)  # type: ignore[arg-type]
    rig.dials.clear()
    rig.opened += 1
    rig.file_effects()
    assert not rig.core.loosen(entry, lambda _ref: None)
    assert entry.conn is plain
    assert entry.ref is None
    rig.check()


def test_reclaim_settles_a_collected_connection_and_redials() -> None:
    rig = Rig(max_open=1)
    entry = held_entry(rig)
    conn = entry.conn  # the caller's reference
    fired: list[object] = []
    assert rig.core.loosen(entry, fired.append)
    assert not rig.core.reclaim(entry, rig.now)  # still alive: nothing happens
    w = rig.acquire()
    assert isinstance(w, Waiter)
    assert rig.dials == []  # max_open is taken by the leaked one
    del conn  # the caller drops it without releasing
    drop(entry, rig)
    assert len(fired) == 1
    rig.clock.advance(2.0)
    assert rig.core.reclaim(entry, rig.now)
    rig.file_effects()
    rig.closed += 1  # the driver's finalizer closed it
    assert entry.state == CLOSED
    assert not rig.core.reclaim(entry, rig.now)  # exactly once
    assert rig.dials == [2]  # the slot is free: dial for the waiter
    s = rig.core.stats()
    assert (s.leaks_reclaimed, s.closed, s.in_use, s.use_duration) == (1, 1, 0, 2.0)
    rig.check()
    e2 = rig.connect()
    assert w.entry is e2
    rig.check()


def test_reclaim_after_release_is_a_no_op() -> None:
    rig = Rig(max_open=1)
    entry = held_entry(rig)
    conn = entry.conn
    assert rig.core.loosen(entry, lambda _ref: None)
    rig.release(entry)
    del conn
    assert not rig.core.reclaim(entry, rig.now)
    assert entry.state == IDLE
    rig.check()


def test_connected_reuses_the_id_of_a_collected_connection() -> None:
    rig = Rig(max_open=0, max_idle=2)
    entry = held_entry(rig)
    key = entry.key
    assert rig.core.loosen(entry, lambda _ref: None)
    w = rig.acquire()
    assert isinstance(w, Waiter)
    drop(entry, rig)
    # CPython hands the freed memory to the next object of the same size.
    candidates = [Conn(100 + i) for i in range(1000)]
    reused = next((c for c in candidates if id(c) == key), None)
    if reused is None:  # pragma: no cover - allocator did not reuse the slot
        pytest.skip("the allocator did not reuse the collected object's id")
    rig.opened += 1
    rig.closed += 1  # the collected one, closed by its finalizer
    new = rig.core.connected(rig.dials[0], reused, rig.now)
    rig.dials.pop(0)
    rig.file_effects()
    assert entry.state == CLOSED
    assert w.entry is new
    assert rig.core.stats().leaks_reclaimed == 1
    rig.check()


def test_connected_with_a_live_registered_connection_still_raises() -> None:
    rig = Rig(max_open=0)
    entry = held_entry(rig)
    keep = entry.conn
    assert rig.core.loosen(entry, lambda _ref: None)
    rig.acquire()
    with pytest.raises(ValueError, match="is already registered"):
        rig.core.connected(rig.dials[0], keep, rig.now)
    assert entry.state == IN_USE
    rig.check()


def test_close_in_use_takes_every_handed_out_connection() -> None:
    rig = Rig(max_open=3, max_idle=3)
    plain, alive, lost = held_entry(rig), held_entry(rig), held_entry(rig)
    alive_conn = alive.conn
    assert rig.core.loosen(alive, lambda _ref: None)
    assert rig.core.loosen(lost, lambda _ref: None)
    with pytest.raises(ValueError, match=r"close_in_use\(\) before close\(\)"):
        rig.core.close_in_use(rig.now)
    rig.close()
    drop(lost, rig)
    taken = rig.core.close_in_use(rig.now)
    rig.file_effects()
    rig.closed += 1  # the collected one
    assert taken == 2
    assert (plain.state, alive.state, lost.state) == (CLOSING, CLOSING, CLOSED)
    assert alive.conn is alive_conn
    assert [c.reason for c in rig.closes] == ["pool_closed", "pool_closed"]
    assert rig.core.stats().leaks_reclaimed == 1
    rig.check()
    with pytest.raises(ValueError, match="is not in use"):
        rig.core.release(plain, rig.now)
    rig.finish_all_closes()
    assert rig.counts() == (0, 0, 0, 0, 0, 0)
    assert rig.core.close_in_use(rig.now) == 0
    rig.check()


# -- check() names each broken rule ---------------------------------------------------


def two_idle() -> Rig:
    rig = Rig(max_open=2, max_idle=2)
    a, b = held_entry(rig), held_entry(rig)
    rig.release(a)
    rig.release(b)
    rig.check()
    return rig


def test_check_i3_limit() -> None:
    rig = two_idle()
    force_knobs(rig.core, max_open=1)
    with pytest.raises(InvariantError, match="I3 limit"):
        rig.core.check()


def test_check_i4_no_barging() -> None:
    rig = two_idle()
    rig.core._waiters.append(Waiter(0.0))
    with pytest.raises(InvariantError, match="I4 no barging"):
        rig.core.check()


@pytest.mark.parametrize(("max_open", "max_connecting"), [(0, 0), (2, 0), (0, 1)])
def test_check_i5_liveness(max_open: int, max_connecting: int) -> None:
    rig = Rig(max_open=max_open, max_connecting=max_connecting)
    rig.core._waiters.append(Waiter(0.0))
    with pytest.raises(InvariantError, match="I5 liveness"):
        rig.core.check()


def test_check_i5_holds_when_max_open_is_taken() -> None:
    rig = Rig(max_open=1)
    held_entry(rig)
    rig.acquire()
    assert rig.dials == []
    rig.check()


def test_check_i6_exactly_once() -> None:
    rig = two_idle()
    rig.core._idle[0].state = IN_USE
    with pytest.raises(InvariantError, match="I6 exactly once"):
        rig.core.check()


def test_check_i6_loosened_entry() -> None:
    rig = Rig(max_open=1)
    entry = held_entry(rig)
    entry.ref = weakref.ref(entry.conn)  # weak and strong at once
    with pytest.raises(InvariantError, match=r"I6 exactly once \(loosened entry\)"):
        rig.core.check()


def test_check_i7_idle_cap() -> None:
    rig = two_idle()
    force_knobs(rig.core, max_idle=1)
    with pytest.raises(InvariantError, match="I7 idle cap"):
        rig.core.check()


def test_check_i7_min_idle_within_the_idle_cap() -> None:
    rig = Rig(max_open=2, max_idle=2, min_idle=2)
    rig.check()
    force_knobs(rig.core, min_idle=3)
    with pytest.raises(InvariantError, match="I7 idle cap"):
        rig.core.check()


def test_check_i8_closed() -> None:
    rig = two_idle()
    rig.core._shut_down = True
    with pytest.raises(InvariantError, match="I8 closed"):
        rig.core.check()


def test_check_i9_circuit() -> None:
    rig = Rig(max_open=1)
    rig.core._circuit_since = 0.0
    with pytest.raises(InvariantError, match="I9 circuit"):
        rig.core.check()
