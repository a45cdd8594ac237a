"""The process-wide deadline thread (``sqlgate._watchdog``).

Deadlines here are far enough apart (tenths of seconds) that their order
cannot depend on scheduling; each test waits on events, never on sleeps.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import TYPE_CHECKING

import pytest

from sqlgate import _watchdog

if TYPE_CHECKING:
    from collections.abc import Callable


def _note(fired: list[int], i: int) -> Callable[[], None]:
    return lambda: fired.append(i)


def test_fires_in_order_once_and_never_after_disarm() -> None:
    fired: list[int] = []
    done = threading.Event()
    now = time.monotonic()
    entries = [
        _watchdog.arm(now + d, _note(fired, i))
        for i, d in enumerate([0.3, 0.1, 0.2, 0.15])
    ]
    assert _watchdog.disarm(entries[3]) is True
    assert _watchdog.disarm(entries[3]) is False  # once
    _watchdog.arm(now + 0.4, done.set)
    assert done.wait(5)
    assert fired == [1, 2, 0]
    assert _watchdog.disarm(entries[0]) is False  # fired already


def test_an_earlier_deadline_wakes_the_sleeping_thread() -> None:
    """The thread sleeps until a far deadline; a nearer one armed later is on time."""
    far = _watchdog.arm(time.monotonic() + 60, lambda: None)
    time.sleep(0)  # let the thread settle on the far deadline, if it will
    fired = threading.Event()
    start = time.monotonic()
    _watchdog.arm(start + 0.05, fired.set)
    assert fired.wait(5)
    assert time.monotonic() - start < 2  # not the far one's 60 s
    assert _watchdog.disarm(far)


def test_disarmed_entries_do_not_pile_up() -> None:
    """A steady stream of far deadlines, each disarmed: the heap stays small."""
    for _ in range(5000):
        entry = _watchdog.arm(time.monotonic() + 30, lambda: None)
        assert _watchdog.disarm(entry)
    done = threading.Event()
    _watchdog.arm(time.monotonic(), done.set)  # rings: the thread drains
    assert done.wait(5)
    assert len(_watchdog.armed) < 5000
    assert len(_watchdog.service._heap) < 64


def test_arm_during_a_garbage_collection() -> None:
    """A finalizer may arm (no lock is taken): it neither deadlocks nor is lost."""
    fired = threading.Event()
    entries: list[object] = []

    class Armer:
        def __del__(self) -> None:
            entries.append(_watchdog.arm(time.monotonic() + 0.05, fired.set))

    a, b = Armer(), Armer()
    a.peer, b.peer = b, a  # type: ignore[attr-defined]  # a cycle: freed by gc
    del a, b
    gc.collect()
    assert len(entries) == 2
    assert fired.wait(5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_has_its_own_thread() -> None:
    _watchdog.arm(time.monotonic() + 60, lambda: None)  # the parent's thread runs
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's entries are gone, a new thread fires
        try:
            ok = not _watchdog.armed and not _watchdog.service._heap
            fired = threading.Event()
            _watchdog.arm(time.monotonic() + 0.05, fired.set)
            ok = ok and fired.wait(5)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
