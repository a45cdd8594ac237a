"""One process-wide thread that calls back at deadlines (blocking statements').

A blocking statement holds its caller's thread, so the cancel that ends it at
its deadline must come from another thread: this one. The handle for threads
(``db.py``) arms an entry before it hands a statement with a deadline to the
driver and disarms it when the driver returns; an entry still armed when its
time comes is fired (its callback runs here, and must be quick: the handle's
starts the driver's cancel in a thread of its own). ``sqlgate._deadlines``
serves the asyncio pool's waiters on the event loop; this module is the
blocking side's counterpart, with a thread instead of a loop timer.

Theory of operation (the caller's side costs one call and no lock):

- An entry is a list ``[when, (callback, *args)]``. ``arm`` appends it
  to a deque (atomic under the GIL, never blocks: so it is
  safe in a finalizer, in any thread) and rings the thread only when ``when``
  comes before the thread's next wake-up (``wake_at``). Disarming is
  ``entry.pop(1)``: whoever pops the callback first, the caller (disarm) or
  the thread (fire), decides the entry, and the loser gets ``IndexError``.
  So an entry fires at most once, and never after a disarm that succeeded.
- The thread alone owns the heap of ``(when, seq, entry)``. Each time it
  wakes it moves the deque's live entries into the heap (disarmed ones are
  dropped there, unseen by the heap), fires what is due, sets ``wake_at`` to
  the heap's head (or, while entries keep coming, ``POLL`` seconds on at
  most, so that a steady stream of later deadlines rings nothing) and sleeps
  on a lock used as a bell until then. Before it
  sleeps it looks at the deque once more: an ``arm`` that read the old
  ``wake_at`` appended before that look (and is seen), or reads the new
  one (and rings when it is earlier). So the deque holds at most ``POLL``
  seconds of arms, and the heap is swept of disarmed entries when they may
  be most of it: memory stays bounded by the arm rate and the deadlines
  still armed, not by the calls made.
- The thread starts on the first ``arm`` made from plain code (never at
  import, nor during a garbage collection, which may run in the middle of
  ``threading``'s own bookkeeping).
- After ``os.fork`` the child starts with no entries and no thread (the
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
from itertools import repeat, starmap
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlgate._courier import in_collection

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["POLL", "arm", "armed", "disarm", "service", "wake"]

log = logging.getLogger("sqlgate")

#: Heap sizes from which the thread sweeps disarmed entries out.
_SWEEP_AT = 256
#: Seconds between the thread's looks at ``armed`` while entries keep coming
#: (so that arming a later deadline than that rings nothing).
POLL = 0.1

_INF = float("inf")

#: An armed entry: ``[when, (callback, *args)]`` while armed, ``[when]``
#: once fired or disarmed.
Entry = list[Any]
#: Its payload, when still armed (an empty, false list otherwise).
_PAYLOAD = itemgetter(slice(1, None))

#: Entries armed since the thread last looked (one object for the process's
#: life: a hot path may bind its ``append``; see ``arm``).
armed: deque[Entry] = deque()


class _Service:
    """The deque, the heap, the bell and the thread (one per process)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        armed.clear()
        #: When the thread wakes next (``inf``: not before a bell).
        self.wake_at = _INF
        #: Held while the thread sleeps; releasing it wakes the thread.
        self.bell = threading.Lock()
        self.bell.acquire()
        self.thread: threading.Thread | None = None
        self._heap: list[tuple[float, int, Entry]] = []
        self._seq = itertools.count()

    def ring(self) -> None:
        # Rung already (RuntimeError): the thread will look again anyway.
        with contextlib.suppress(RuntimeError):
            self.bell.release()

    def start(self) -> None:
        """Start the thread (plain code only: not during a collection)."""
        if self.thread is not None or in_collection():
            return
        self.thread = threading.Thread(
            target=self._run, name="sqlgate-deadlines", daemon=True
        )
        self.thread.start()

    def _take_armed(self) -> None:
        """Move the deque's live entries into the heap; sweep when worth it."""
        heap, seq = self._heap, self._seq
        # Taken in C (popleft n times; an entry armed meanwhile stays for the
        # next look), and only those still armed reach the heap: most were
        # disarmed already.
        taken = starmap(armed.popleft, repeat((), len(armed)))
        for entry in filter(_PAYLOAD, taken):
            heappush(heap, (entry[0], next(seq), entry))
        if len(heap) >= _SWEEP_AT:
            live = [item for item in heap if len(item[2]) > 1]
            if 2 * len(live) <= len(heap):
                heapify(live)
                self._heap = live

    def _due(self, now: float) -> list[Any]:
        """Pop the entries due by ``now``; their payloads, each taken once."""
        heap = self._heap
        fire: list[Any] = []
        while heap and heap[0][0] <= now:
            entry = heappop(heap)[2]
            with contextlib.suppress(IndexError):  # disarmed meanwhile
                fire.append(entry.pop(1))
        while heap and len(heap[0][2]) < 2:  # disarmed heads: their wake-up is moot
            heappop(heap)
        return fire

    def _run(self) -> None:
        bell = self.bell
        while True:
            busy = bool(armed)
            self._take_armed()
            now = time.monotonic()
            for payload in self._due(now):
                try:
                    payload[0](*payload[1:])
                except BaseException as exc:  # the thread outlives any callback
                    log.warning("a deadline's callback failed: %r", exc)
            heap = self._heap
            # While entries keep coming, look again within POLL even with
            # nothing live (most are disarmed before their time): arming a
            # later deadline than that then rings nothing.
            wake_at = heap[0][0] if heap else _INF
            if busy:
                wake_at = min(wake_at, now + POLL)
            self.wake_at = wake_at
            if armed:  # armed before the new wake_at was visible: look again
                continue
            if wake_at == _INF:
                bell.acquire()
            else:
                wait = min(max(wake_at - time.monotonic(), 0.0), threading.TIMEOUT_MAX)
                bell.acquire(timeout=wait)

    def forked(self) -> None:
        """In a forked child: the parent's entries and thread are not ours."""
        self._reset()


service = _Service()


def arm(when: float, callback: Callable[..., object], *args: Any) -> Entry:
    """Have ``callback(*args)`` run on the deadline thread at ``when``.

    A hot path may inline this function: append
    ``[when, (callback, *args)]`` to ``armed``, then call ``wake()`` when
    ``when < service.wake_at``.

    Args:
        when: ``time.monotonic()`` seconds.
        callback: quick, and never raising (an error is logged).
        args: its arguments.

    Returns:
        The entry: ``disarm(entry)`` (or ``entry.pop(1)`` in a hot path)
        disarms it.
    """
    entry = [when, (callback, *args)]
    armed.append(entry)
    if when < service.wake_at:
        wake()
    return entry


def wake() -> None:
    """Have the thread look at ``armed`` now; start it first if need be."""
    if service.thread is None:
        service.start()
    service.ring()


def disarm(entry: Entry) -> bool:
    """Disarm ``entry`` (no lock taken).

    Returns:
        True when it will never fire; False when it fired (or is being
        fired) already.
    """
    try:
        entry.pop(1)
    except IndexError:
        return False
    return True


os.register_at_fork(after_in_child=service.forked)
