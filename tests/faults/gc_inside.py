"""Run the garbage collector at every line of a pool's critical section.

A finalizer (SQLAlchemy's for a forgotten connection, the leak tracker's
weakref callback) runs wherever a collection happens: at any allocation, in
any thread, maybe while that thread is inside a pool's critical section. The
``Inside`` tracer stops the traced thread at every line it runs inside one
and calls back there; the callback forgets one checked-out connection (drops
its last reference inside a fresh reference cycle) and collects, here or in
another thread while this one waits. A collection at a line boundary leaves
the finalizer the same view of the pool as one at an allocation within that
line.

What counts as the critical section:
- ``Pool`` (threads): the body of every ``with <x>._lock:`` block in
  ``pool.py`` and ``_handoff.py`` (found with ``ast``, so edits to the shell
  move the points with them), and every line of the core or the shared
  helpers called from there.
- ``AsyncPool``: every line of the core (``_core/``); a core call is the
  asyncio shell's atomic section.
"""

from __future__ import annotations

import ast
import gc
import queue
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlgate._core
import sqlgate._handoff
import sqlgate.pool

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType, TracebackType

#: ``Pool``'s modules: pool.py and its hand-off (acquire, release, ``with``).
POOL_PYS = frozenset(
    str(Path(str(m.__file__)).resolve()) for m in (sqlgate.pool, sqlgate._handoff)
)
#: The core's modules (``sqlgate/_core/*.py``).
CORE_PYS = frozenset(
    str(path) for path in Path(sqlgate._core.__file__).resolve().parent.glob("*.py")
)


def lock_body_lines(path: str) -> frozenset[tuple[str, int]]:
    """The lines inside ``with <x>._lock:`` blocks of ``path`` (not the ``with``)."""
    if not path.endswith(".py"):  # compiled: no lines to stop at
        return frozenset()
    tree = ast.parse(Path(path).read_text(), path)
    lines: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.With):
            continue
        if not any(
            isinstance(item.context_expr, ast.Attribute)
            and item.context_expr.attr == "_lock"
            for item in node.items
        ):
            continue
        for stmt in node.body:
            end = stmt.end_lineno if stmt.end_lineno is not None else stmt.lineno
            lines.update((path, line) for line in range(stmt.lineno, end + 1))
    return frozenset(lines)


LOCKED_LINES = frozenset().union(*(lock_body_lines(path) for path in POOL_PYS))


#: The shells' own settling of late work (what the collections queue): not
#: stopped in, or each point would queue the work of more points, without end.
LATE_WORK = frozenset({"_settle_late", "_release_late", "_reclaim_leaked"})


def _settling(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name in LATE_WORK:
            return True
        frame = frame.f_back
    return False


def in_pool_lock(frame: FrameType | None) -> bool:
    """Whether ``frame``'s thread holds a ``Pool``'s lock at this point.

    The innermost frame of ``Pool``'s modules on the stack decides: it is
    either inside one of its ``with ..._lock:`` bodies (and everything it
    called runs under the lock) or not.
    """
    start = frame
    while frame is not None:
        name = frame.f_code.co_filename
        if name in POOL_PYS:
            return (name, frame.f_lineno) in LOCKED_LINES and not _settling(start)
        frame = frame.f_back
    return False


def in_core(frame: FrameType | None) -> bool:
    """Whether ``frame`` is a line of the core (an ``AsyncPool`` atomic section)."""
    return (
        frame is not None
        and frame.f_code.co_filename in CORE_PYS
        and not _settling(frame)
    )


class Inside:
    """``with Inside(where, at_point):`` calls ``at_point()`` at every line of a
    critical section the current thread runs; ``points`` counts them, and
    ``sites`` the distinct (function, line) pairs."""

    def __init__(
        self,
        where: Callable[[FrameType | None], bool],
        at_point: Callable[[], None],
    ) -> None:
        self.where = where
        self.at_point = at_point
        self.points = 0
        self.sites: set[tuple[str, int]] = set()
        self._previous: Any = None

    def __enter__(self) -> Inside:
        self._previous = sys.gettrace()
        sys.settrace(self._call)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sys.settrace(self._previous)

    def _call(self, frame: FrameType, event: str, arg: object) -> Any:
        name = frame.f_code.co_filename
        if name in POOL_PYS or name in CORE_PYS:
            return self._line
        return None

    def _line(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and self.where(frame):
            self.points += 1
            self.sites.add((frame.f_code.co_name, frame.f_lineno))
            self.at_point()
        return self._line


class Forgetter:
    """Forgets one checked-out connection per call and collects.

    ``supply`` holds the only references to the connections (SQLAlchemy
    fairies, or driver connections the leak tracker holds weakly). ``here``
    drops one inside a fresh reference cycle and runs a young-generation
    collection in the calling thread; ``there`` has a helper thread do the
    same while the caller waits (at most ``bound`` s: a finalizer that blocks
    on the caller's lock shows up as a stall, never as a hung test).
    """

    def __init__(self, supply: list[Any], bound: float = 5.0) -> None:
        self.supply = supply
        self.bound = bound
        self.forgotten = 0
        self.collected = 0
        #: Points where the helper's collection had not finished in time.
        self.stalls = 0
        #: Points with nothing left to forget (the supply ran out).
        self.dry = 0
        #: Points skipped after a stall (each further one would stall too).
        self.skipped = 0
        self._jobs: queue.SimpleQueue[threading.Event | None] = queue.SimpleQueue()
        self._helper: threading.Thread | None = None

    def _forget_and_collect(self) -> None:
        if not self.supply:
            self.dry += 1
            return
        cycle: list[Any] = [self.supply.pop()]
        cycle.append(cycle)
        del cycle
        self.forgotten += 1
        self.collected += gc.collect(0)

    def here(self) -> None:
        self._forget_and_collect()

    def there(self) -> None:
        if self.stalls:
            self.skipped += 1
            return
        if self._helper is None:
            self._helper = threading.Thread(
                target=self._serve, name="gc-elsewhere", daemon=True
            )
            self._helper.start()
        done = threading.Event()
        self._jobs.put(done)
        if not done.wait(self.bound):
            self.stalls += 1

    def _serve(self) -> None:
        while True:
            done = self._jobs.get()
            if done is None:
                return
            self._forget_and_collect()
            done.set()

    def stop(self) -> None:
        if self._helper is not None:
            self._jobs.put(None)
            self._helper.join(10)
            self._helper = None


def bounded(run: Callable[[], object], seconds: float = 30.0) -> None:
    """Run ``run`` in a daemon thread; fail, with its stack, if it deadlocks.

    A finalizer that blocks on the lock its own thread holds never returns,
    and an exception raised into it (a per-test timeout) is swallowed by the
    weakref machinery: only another thread can notice and report it.
    """
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="gc-traced", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        frame = sys._current_frames().get(thread.ident or 0)
        stack = "".join(traceback.format_stack(frame)) if frame else "(gone)"
        raise AssertionError(f"deadlocked for {seconds:.0f} s at:\n{stack}")
    if failure:
        raise failure[0]


class AtAllocations:
    """The collector's own timing: a collection at (nearly) every allocation.

    Inside ``with``, ``gc.set_threshold(1)`` makes CPython collect the young
    generation at every second allocation of a tracked object, in whatever
    thread allocates (the caller's, a dial thread, the loop's). A
    ``gc.callbacks`` hook plants one forgotten connection into each
    collection that starts inside a critical section (``where`` of the
    allocating frame), so the finalizer runs right there. The attributes
    mirror ``Inside`` and ``Forgetter``: ``points``, ``sites``,
    ``forgotten``, ``dry``, ``stalls`` (always 0: a deadlock here shows as
    the run's bound, ``bounded``).
    """

    def __init__(
        self, where: Callable[[FrameType | None], bool], supply: list[Any]
    ) -> None:
        self.where = where
        self.supply = supply
        self.points = 0
        self.sites: set[tuple[str, int]] = set()
        self.forgotten = 0
        self.dry = 0
        self.stalls = 0
        self._threshold = gc.get_threshold()

    def __enter__(self) -> AtAllocations:
        self._threshold = gc.get_threshold()
        gc.callbacks.append(self._hook)
        gc.set_threshold(1, self._threshold[1], self._threshold[2])
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.set_threshold(*self._threshold)
        gc.callbacks.remove(self._hook)

    def stop(self) -> None:
        """Nothing to stop (for symmetry with ``Forgetter``)."""

    def _hook(self, phase: str, info: dict[str, int]) -> None:
        if phase != "start":
            return
        # The allocating frame; None when C code with no Python frame under
        # it allocated (a thread starting).
        frame = sys._getframe(0).f_back
        try:
            inside = frame is not None and self.where(frame)
        except RuntimeError:  # asyncio.current_task() in a thread with no loop
            inside = False
        if not inside or frame is None:
            return
        self.points += 1
        self.sites.add((frame.f_code.co_name, frame.f_lineno))
        if not self.supply:
            self.dry += 1
            return
        # Made during the callback, so in the young generation this very
        # collection is about to examine: it is found unreachable now.
        cycle: list[Any] = [self.supply.pop()]
        cycle.append(cycle)
        del cycle
        self.forgotten += 1
