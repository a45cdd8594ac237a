"""The shell's own threads (maintenance, courier) start once, whoever asks at once.

Starting one was check-then-act: ``self._maintenance = Thread(...)`` then
``self._maintenance.start()``. A second caller passing the check in between
stored its own thread, and the first then started that one: it was started
twice (``RuntimeError: threads can only be started once`` in a caller, or a
``KeyError`` from ``del _limbo[self]`` in ``threading``'s bootstrap of the
second run). The window opens because storing the attribute drops the
previous, dead thread, whose ``threading._dangling`` weakref callback is
Python code, so the interpreter may switch threads right there (seen in
``test_pool_switch_stress``). The tests force both callers past the point
where only one may pass: a lock stand-in signals when a caller comes to it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate._courier
from sqlgate import Pool
from tests.fakes import FakeDriver, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

#: The real class, for the test's own threads while ``threading.Thread`` is patched.
_Thread = threading.Thread


class Arrivals:
    """A lock that sets ``arrived`` when the thread named ``watched`` comes to take it.

    ``seen``: every thread that has held it.
    """

    def __init__(self, watched: str, arrived: threading.Event) -> None:
        self._lock = threading.Lock()
        self.watched = watched
        self.arrived = arrived
        self.seen: set[threading.Thread] = set()

    def __enter__(self) -> None:
        if threading.current_thread().name == self.watched:
            self.arrived.set()
        self._lock.acquire()
        self.seen.add(threading.current_thread())

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class Made:
    """Every thread made with a name prefix, and each start of one."""

    def __init__(self, prefix: str, hold: Callable[[], None]) -> None:
        self.threads: list[threading.Thread] = []
        self.starts: list[threading.Thread] = []
        self.prefix = prefix
        self.hold = hold


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Made]:
    """Patch ``threading.Thread`` to record threads named ``prefix``...; ``hold``
    runs at the end of their construction, in the constructing thread."""
    recorders: list[Made] = []

    class Recording(_Thread):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for rec in recorders:
                if self.name.startswith(rec.prefix):
                    rec.threads.append(self)
                    rec.hold()

        def start(self) -> None:
            for rec in recorders:
                if self.name.startswith(rec.prefix):
                    rec.starts.append(self)
            super().start()

    def make(prefix: str, hold: Callable[[], None]) -> Made:
        rec = Made(prefix, hold)
        recorders.append(rec)
        return rec

    monkeypatch.setattr(threading, "Thread", Recording)
    return make


def run(name: str, target: Callable[[], None], errors: list[BaseException]) -> Any:
    def body() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = _Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


def hold_first_until(arrived: threading.Event) -> Callable[[], None]:
    """Keep the caller named "first" in the constructor until "second" arrives."""

    def hold() -> None:
        if threading.current_thread().name == "first":
            assert arrived.wait(10), "the second caller never came"
        elif threading.current_thread().name == "second":
            arrived.set()  # it got past the check too: the race is on

    return hold


def test_two_callers_at_once_start_one_maintenance_thread(
    made: Callable[..., Made],
) -> None:
    driver = FakeDriver()
    pool: Pool[Any] = Pool(driver.connect, max_open=2, name="m")
    assert pool._maintenance is None  # no knob needs it yet
    arrived = threading.Event()
    pool._maintenance_lock = Arrivals("second", arrived)  # type: ignore[assignment]
    rec = made("sqlgate-maintenance", hold_first_until(arrived))
    errors: list[BaseException] = []
    first = run("first", lambda: pool.set_conn_max_idle_time(1.0), errors)
    second = run("second", lambda: pool.set_conn_max_idle_time(1.0), errors)
    first.join(20)
    second.join(20)
    assert not first.is_alive()
    assert not second.is_alive()
    assert errors == []
    assert len(rec.threads) == 1, rec.threads
    assert rec.starts == rec.threads  # each started exactly once
    assert pool._maintenance is rec.threads[0]
    assert rec.threads[0].is_alive()
    pool.close()
    rec.threads[0].join(10)
    assert not rec.threads[0].is_alive()


def test_a_knob_set_as_the_maintenance_thread_exits_gets_a_new_thread() -> None:
    driver = FakeDriver()
    pool: Pool[Any] = Pool(driver.connect, max_open=2, conn_max_idle_time=1.0)
    old = pool._maintenance
    assert old is not None
    assert old.is_alive()
    arrived = threading.Event()
    parked = threading.Event()
    lock = Arrivals("setter", arrived)
    pool._maintenance_lock = lock  # type: ignore[assignment]
    needs = pool._needs_maintenance

    def parking_needs() -> bool:
        # The old thread, having found nothing to do, waits before exiting
        # until the setter comes to the lock (or, unlocked, has returned).
        result = needs()
        if threading.current_thread() is old and not result:
            parked.set()
            assert arrived.wait(10), "the setter never came"
        return result

    pool._needs_maintenance = parking_needs  # type: ignore[method-assign]
    # The thread may have been waiting for the lock it replaced: let it come
    # round once under this one (a knob change wakes it, else its next tick).
    pool.set_conn_max_idle_time(0.5)
    wait_until(lambda: old in lock.seen, what="a tick under the new lock")
    pool.set_conn_max_idle_time(None)  # wakes it: nothing to do, it exits
    assert parked.wait(10), "the maintenance thread never decided to exit"
    errors: list[BaseException] = []

    def setter() -> None:
        pool.set_conn_max_idle_time(1.0)
        arrived.set()

    thread = run("setter", setter, errors)
    thread.join(20)
    old.join(20)
    assert errors == []
    assert not thread.is_alive()
    assert not old.is_alive()
    new = pool._maintenance
    assert new is not None
    assert new is not old
    assert new.is_alive()
    pool.close()
    new.join(10)
    assert not new.is_alive()


def test_two_pools_made_at_once_start_one_courier(
    made: Callable[..., Made],
) -> None:
    courier = sqlgate._courier._Courier()
    arrived = threading.Event()
    courier._starting = Arrivals("second", arrived)  # type: ignore[assignment]
    rec = made("sqlgate-courier", hold_first_until(arrived))
    errors: list[BaseException] = []
    first = run("first", courier.start, errors)
    second = run("second", courier.start, errors)
    first.join(20)
    second.join(20)
    assert errors == []
    assert len(rec.threads) == 1, rec.threads
    assert rec.starts == rec.threads
    assert courier._thread is rec.threads[0]
    assert courier._thread.is_alive()
