"""Work handed over by the garbage collector: ``in_collection`` and the courier thread.

A finalizer, a weakref callback or ``__del__`` runs wherever the collector
happened to run: in any thread, at any allocation, perhaps inside a pool's
critical section (``Pool`` holding its non-reentrant lock, ``AsyncPool`` in
the middle of a core call). Such code must never take a pool's lock or call
its core: it queues its work (a deque append) and rings a bell that cannot
block. The courier thread below, or the event loop, does the work later.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import weakref

__all__ = ["forked", "in_collection", "send_courier", "start_courier"]

log = logging.getLogger("sqlgate")

#: Idents of the threads running a garbage collection now. Kept by a
#: ``gc.callbacks`` hook; weakref callbacks and finalizers run in between.
_collecting: set[int] = set()


def _note_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _collecting.add(threading.get_ident())
    else:
        _collecting.discard(threading.get_ident())


gc.callbacks.append(_note_collection)


def in_collection() -> bool:
    """Whether this thread is running a garbage collection (its finalizers).

    Code that SQLAlchemy (or anyone) may call from a finalizer uses it to
    choose between doing the work now and queueing it.
    """
    return bool(_collecting) and threading.get_ident() in _collecting


class _Late(Protocol):
    """A pool whose queued late work the courier settles."""

    def _settle_late(self) -> None: ...


class _Courier:
    """One daemon thread per process that runs pools' ``_settle_late``.

    ``send`` is safe anywhere (in a finalizer, inside a pool's critical
    section, in any thread): it appends to a deque and releases a plain lock
    used as a bell, neither of which can block. The thread must have been
    started beforehand, from plain code (``start``): starting a thread takes
    locks of ``threading``'s own.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._errands: deque[weakref.ref[_Late]] = deque()
        #: Held while there is nothing to do; ``send`` releases it.
        self._bell = threading.Lock()
        self._bell.acquire()
        self._thread: threading.Thread | None = None
        #: Held to start the thread: pools made at once start one courier.
        self._starting = threading.Lock()

    def start(self) -> None:
        """Start the thread unless it runs (plain code only, never a finalizer)."""
        with self._starting:
            thread = self._thread
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=self._run, name="sqlgate-courier", daemon=True
                )
                thread.start()
                self._thread = thread

    def send(self, pool: weakref.ref[_Late]) -> None:
        """Have ``pool()._settle_late()`` run on the courier thread, soon."""
        self._errands.append(pool)
        # Rung already (RuntimeError): the courier will see this errand too.
        with contextlib.suppress(RuntimeError):
            self._bell.release()

    def _run(self) -> None:
        errands = self._errands
        while True:
            self._bell.acquire()
            while errands:
                pool = errands.popleft()()
                if pool is None:
                    continue
                try:
                    pool._settle_late()
                except BaseException as exc:  # the courier must outlive any errand
                    log.warning(
                        "%s: settling late returns failed: %s",
                        getattr(pool, "name", "?"),
                        repr(exc),
                    )
                del pool

    def forked(self) -> None:
        """In a forked child: the parent's thread and errands are not ours."""
        running = self._thread is not None
        self._reset()
        if running:
            self.start()


_the_courier = _Courier()


def start_courier() -> None:
    """Make sure the courier thread runs (call from plain code)."""
    _the_courier.start()


def send_courier(pool: weakref.ref[_Late]) -> None:
    """Queue ``pool()._settle_late()`` for the courier; never blocks."""
    _the_courier.send(pool)


def forked() -> None:
    """In a forked child: no collection runs, and the courier starts over.

    Called by the fork handler (``_fork``) before any pool resets itself.
    """
    _collecting.clear()
    _the_courier.forked()
