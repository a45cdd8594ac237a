"""One process-wide thread that calls back at deadlines (blocking statements').

A blocking statement holds its caller's thread, so the cancel that ends it at
its deadline must come from another thread: this one. The handle for threads
(``db.py``) arms an entry before it hands a statement with a deadline to the
driver and disarms it when the driver returns; an entry still armed when its
time comes is fired (its callback runs here, and must be quick: the handle's
starts the driver's cancel in a thread of its own).

Theory of operation:

- Entries live in a heap of ``(when, seq, entry)`` under one plain lock.
  ``arm`` is one lock, an O(log n) push, and a wake-up of the thread only
  when the new entry comes before the current head (the thread sleeps until
  the head's time, on a lock used as a bell: releasing it never blocks).
- ``Entry.cancel`` takes no lock: the entry's one token is popped from a
  list (atomic under the GIL), by the canceller or by the thread about to
  fire it, whichever comes first; the loser learns it lost. So an entry is
  fired at most once, and never after ``cancel`` returned True. A cancelled
  entry stays in the heap until it reaches the head or a compaction (when
  cancelled entries outnumber live ones) drops it: a disarm costs nothing.
- The thread starts on the first ``arm`` (lazily, never at import). A
  garbage collection running finalizers in this thread (``in_collection``)
  may interrupt ``arm`` while it holds the lock: an ``arm`` made then goes
  to a lock-free side deque that the thread moves into the heap, and starts
  no thread.
- After ``os.fork`` the child starts with an empty heap and no thread (the
  parent's statements are not the child's); the next ``arm`` starts one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING

from sqlgate._courier import in_collection

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Entry", "arm"]

log = logging.getLogger("sqlgate")

#: Heaps smaller than this are never compacted (popping is cheap enough).
_COMPACT_FROM = 64


class Entry:
    """One armed deadline: ``fire`` runs at ``when`` unless cancelled first."""

    __slots__ = ("_token", "fire", "when")

    def __init__(self, when: float, fire: Callable[[], object]) -> None:
        #: ``time.monotonic()`` seconds at which ``fire`` runs.
        self.when = when
        self.fire = fire
        # One token: whoever pops it (cancel or the thread) decides the entry.
        self._token = [True]

    def cancel(self) -> bool:
        """Disarm; no lock taken.

        Returns:
            True when the entry will never fire; False when it fired (or is
            being fired) already.
        """
        try:
            self._token.pop()
        except IndexError:
            return False
        _service.cancelled += 1  # a hint for compaction; a lost update is harmless
        return True

    def _take(self) -> bool:
        try:
            self._token.pop()
        except IndexError:
            return False
        return True


class _Service:
    """The heap, its lock, the bell and the thread (one per process)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        #: Held while the thread sleeps; ``arm`` releases it to wake the thread.
        self._bell = threading.Lock()
        self._bell.acquire()
        self._heap: list[tuple[float, int, Entry]] = []
        self._seq = itertools.count()
        #: Entries armed during a garbage collection in an arming thread.
        self._late: deque[Entry] = deque()
        #: When the thread wakes next (``inf``: not before a bell).
        self._wake_at = float("inf")
        #: Entries cancelled since the last compaction (approximate).
        self.cancelled = 0
        self._thread: threading.Thread | None = None

    def arm(self, when: float, fire: Callable[[], object]) -> Entry:
        entry = Entry(when, fire)
        if in_collection():
            # This thread may hold the lock below the collection: no lock.
            self._late.append(entry)
            self._ring()
            return entry
        with self._lock:
            heap = self._heap
            heappush(heap, (when, next(self._seq), entry))
            if self.cancelled > _COMPACT_FROM and 2 * self.cancelled > len(heap):
                self._compact_locked()
            if when < self._wake_at:
                self._wake_at = when
                ring = True
            else:
                ring = False
            if self._thread is None:
                self._start_locked()
        if ring:
            self._ring()
        return entry

    def _compact_locked(self) -> None:
        self._heap = heap = [item for item in self._heap if item[2]._token]
        heapify(heap)
        self.cancelled = 0

    def _start_locked(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="sqlgate-deadlines", daemon=True
        )
        self._thread.start()

    def _ring(self) -> None:
        # Rung already (RuntimeError): the thread will look again anyway.
        with contextlib.suppress(RuntimeError):
            self._bell.release()

    def _due_locked(self, now: float) -> list[Entry]:
        """Pop every entry due by ``now`` (and cancelled heads); set the wake-up."""
        heap = self._heap
        late = self._late
        while late:
            entry = late.popleft()
            heappush(heap, (entry.when, next(self._seq), entry))
        due: list[Entry] = []
        while heap:
            when, _, entry = heap[0]
            if not entry._token:  # cancelled: dropped as it reaches the head
                heappop(heap)
            elif when <= now:
                heappop(heap)
                due.append(entry)
            else:
                break
        self._wake_at = heap[0][0] if heap else float("inf")
        return due

    def _run(self) -> None:
        bell = self._bell
        while True:
            now = time.monotonic()
            with self._lock:
                due = self._due_locked(now)
                wake_at = self._wake_at
            for entry in due:
                if entry._take():
                    try:
                        entry.fire()
                    except BaseException as exc:  # the thread outlives any callback
                        log.warning("a deadline's callback failed: %r", exc)
            del due
            if wake_at == float("inf"):
                bell.acquire()
            else:
                # Never a negative wait; threading refuses waits above TIMEOUT_MAX.
                wait = min(max(wake_at - time.monotonic(), 0.0), threading.TIMEOUT_MAX)
                bell.acquire(timeout=wait)

    def forked(self) -> None:
        """In a forked child: the parent's entries and thread are not ours."""
        self._reset()


_service = _Service()

#: Arm ``fire`` to run on the deadline thread at ``when`` (``time.monotonic()``
#: seconds); returns the ``Entry`` whose ``cancel()`` disarms it.
arm = _service.arm

os.register_at_fork(after_in_child=_service.forked)
