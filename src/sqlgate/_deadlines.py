"""Many deadlines served by one timer: records in order, due ones expired together.

``Deadlines`` is the clock-free, timer-free part: it keeps ``(deadline, item)``
records and hands the due ones to a callback. ``LoopDeadlines`` adds one
asyncio timer (``AsyncPool`` serves every waiter's acquire timeout with it, so
a wait arms no timer of its own). A threaded service can drive ``Deadlines``
from its own thread the same way: ``add``, then ``expire_due`` at
``next_at()``.

How it stays cheap:

- Records sit in a deque kept in deadline order. With one timeout for all
  (a pool's default), deadlines grow with time, so a new one is an append.
  A deadline earlier than the last record (a shorter per-call timeout) goes
  to the heap ``early`` instead.
- Settled items are never looked for: an item is "live" while the owner's
  ``live(item)`` says so. Records of settled items are dropped from the front
  when due ones are expired, and swept whenever the records outnumber
  ``cap`` (``trim``): so an add costs an append, and the records stay within
  twice the live items plus 64.
- The timer is armed no later than any recorded deadline (so at or before the
  earliest live one); when it fires it expires every live item due and
  re-arms for the next record.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections import deque
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

__all__ = ["Deadlines", "LoopDeadlines"]

T = TypeVar("T")

#: Records allowed beyond twice the live count before a sweep.
SLACK = 64


class Deadlines(Generic[T]):
    """Items with deadlines (float seconds on one clock), earliest first.

    Args:
        live: whether an item still wants its deadline (not settled yet);
            records of items it calls settled are dropped, never expired.
        live_count: how many items are live now (it sets the trim point).
    """

    def __init__(
        self, live: Callable[[T], bool], live_count: Callable[[], int]
    ) -> None:
        self._live = live
        self._live_count = live_count
        #: (deadline, item), in deadline order: the common case, an append.
        self.records: deque[tuple[float, T]] = deque()
        #: (deadline, seq, item): deadlines earlier than the last record.
        self.early: list[tuple[float, int, T]] = []
        self._seq = 0
        #: Records kept before those of settled items are swept (``trim``).
        self.cap = SLACK

    def __len__(self) -> int:
        """How many records are kept (live or not)."""
        return len(self.records) + len(self.early)

    def push(self, item: T, deadline: float) -> None:
        """Record ``item``'s ``deadline``; trim when over ``cap``.

        Owners inline the common case (``records.append`` when ``deadline`` is
        not before ``records[-1]`` and a timer is armed), then trim as here.
        """
        records = self.records
        if records and records[-1][0] > deadline:
            self._seq += 1
            heappush(self.early, (deadline, self._seq, item))
        else:
            records.append((deadline, item))
        if len(records) > self.cap or len(self.early) > self.cap:
            self.trim()

    def next_at(self) -> float | None:
        """The earliest recorded deadline (its item may be settled), or None."""
        records, heap = self.records, self.early
        if not records and not heap:
            return None
        return min(
            records[0][0] if records else math.inf,
            heap[0][0] if heap else math.inf,
        )

    def expire_due(self, now: float, expire: Callable[[T], None]) -> float | None:
        """Call ``expire(item)`` for each live item due by ``now``.

        The ordered records are served first, then the early ones (so items
        due together are not expired in deadline order).

        Records of settled items met on the way are dropped. ``expire`` may
        settle other items (they are then skipped) but must not add any.

        Returns:
            ``next_at()`` afterwards: when to run this again, or None.
        """
        live = self._live
        records = self.records
        while records:
            deadline, item = records[0]
            if live(item):
                if deadline > now:
                    break
                expire(item)
            records.popleft()
        heap = self.early
        while heap:
            deadline, _, item = heap[0]
            if live(item):
                if deadline > now:
                    break
                expire(item)
            heappop(heap)
        return self.next_at()

    def trim(self) -> None:
        """Forget the records of settled items once they outgrow the live ones.

        Items leave from the front (first come, first served): drop those. If
        settled ones behind a live one keep the records over twice the live
        count, sweep them all out. Amortised O(1) an add: the next trim comes
        after as many new records again.
        """
        live = self._live
        records = self.records
        while records and not live(records[0][1]):
            records.popleft()
        heap = self.early
        while heap and not live(heap[0][2]):
            heappop(heap)
        count = self._live_count()
        if len(records) + len(heap) > 2 * count:
            self.records = deque(r for r in records if live(r[1]))
            self.early = [r for r in heap if live(r[2])]
            heapify(self.early)
        self.cap = 2 * count + SLACK

    def clear(self) -> None:
        """Drop every record."""
        self.records.clear()
        self.early.clear()


class LoopDeadlines(Deadlines[T]):
    """``Deadlines`` served by one asyncio timer, armed for the earliest.

    Bind it to the loop (``bind``) before the first ``add``. Not thread-safe:
    use it on its loop only.

    Args:
        live: as ``Deadlines``.
        live_count: as ``Deadlines``.
        expire: called with each live item whose deadline passed, on the loop.
            A bound method is held weakly (``weakref.WeakMethod``), so that
            its owner keeping this object makes no reference cycle; once the
            owner is gone, the timer expires nothing.
    """

    def __init__(
        self,
        live: Callable[[T], bool],
        live_count: Callable[[], int],
        expire: Callable[[T], None],
    ) -> None:
        super().__init__(live, live_count)
        self._expire: Callable[[], Callable[[T], None] | None] = (
            weakref.WeakMethod(expire) if inspect.ismethod(expire) else lambda: expire
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Callable[[], float] = _unbound
        #: The one timer, or None when nothing is recorded; ``at`` is its time.
        self.timer: asyncio.TimerHandle | None = None
        self.at = 0.0

    def bind(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float]) -> None:
        """Use ``loop``'s timers; ``clock`` must be the loop's clock."""
        self._loop = loop
        self._clock = clock

    def add(self, item: T, deadline: float) -> None:
        """Expire ``item`` at ``deadline`` (the loop's clock) unless settled by then."""
        if not self._live(item):
            return  # settled already
        self.push(item, deadline)
        timer = self.timer
        if timer is None or deadline < self.at:
            if timer is not None:
                timer.cancel()
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        loop = self._loop
        assert loop is not None
        self.at = when
        self.timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        """The timer: expire every item due, then re-arm for the next record."""
        self.timer = None
        # The loop ran this because it holds ``at`` reached (to within its
        # clock's resolution): whatever is due by then is due now.
        expire = self._expire()
        if expire is None:
            return  # the owner is gone
        following = self.expire_due(max(self._clock(), self.at), expire)
        if following is not None:
            self._arm(following)

    def clear(self) -> None:
        """Disarm the timer and drop every record."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        super().clear()


def _unbound() -> float:
    raise AssertionError("LoopDeadlines used before bind()")
