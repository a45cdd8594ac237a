"""The reaper: forgotten handle objects give their connections back promptly.

A ``Rows``, ``Tx`` or ``Conn`` (or their asyncio twins) dropped without being
closed still gives its connection back, at once. Its ``weakref.finalize``
callback (``on_forgotten`` or ``on_forgotten_async``) runs inside the garbage
collector, on any thread, maybe inside the pool's critical section, so it
takes no lock and does no I/O: it appends ``(connection, cursor, what)`` to
the DB's ``_forgotten`` deque and wakes whoever drains it.

- Threads (``DB``): the finalizer puts a weak reference to the DB on a
  ``queue.SimpleQueue`` (``put`` is documented safe for ``__del__`` and weakref
  callbacks). One daemon thread per process, the reaper, waits on that queue
  and drains the DB's deque outside GC context: the driver's reset rolls back
  what was left open and the pool hands the connection to the first waiter,
  so a thread blocked in ``acquire`` is served without waiting for the DB's
  next call. The DB's next call from any thread, ``stats()`` and ``close()``
  drain too (and wait for a drain in progress), so the counts they see are
  settled.
- asyncio (``AsyncDB``): the finalizer asks the event loop the object was
  made on, with ``call_soon_threadsafe`` (an append and a byte to the loop),
  to start a drain task; the release is awaited there, so a task waiting in
  ``acquire`` is served. The DB's next call and ``close()`` drain too.

The ``ResourceWarning`` that says what was forgotten is raised by the DB's
next call (or ``stats()``), in the caller's thread: one raised on the reaper
thread or in a drain task would reach no one.

Fork: the parent's reaper does not survive ``os.fork``. ``generation`` counts
the forks between this process and the one that imported sqlgate; an object
made before a fork and forgotten in the child holds a connection of the
parent's, so its finalizer keeps it referenced (``_fork.keep``) and never
gives it to the child's pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from typing import TYPE_CHECKING, Any, Protocol

# Imported first so that its after-fork handler (every DB drops the
# parent's forgotten objects) runs before this module's (the reaper restarts).
from sqlgate._fork import keep

if TYPE_CHECKING:
    import asyncio
    import weakref
    from collections import deque

__all__ = ["generation", "on_forgotten", "on_forgotten_async", "start"]

log = logging.getLogger("sqlgate")


class _Drains(Protocol):
    """What the reaper needs of a ``DB``."""

    _forgotten: deque[Any]
    _ref: weakref.ref[Any]

    def _drain(self, warn: bool) -> None: ...


class _DrainsAsync(Protocol):
    """What a finalizer needs of an ``AsyncDB``."""

    _forgotten: deque[Any]

    def _wake(self) -> None: ...


#: Weak references to DBs with forgotten objects to drain; ``put`` is reentrant-safe
#: (documented for ``__del__`` and weakref callbacks), so a finalizer may call it.
_wakeups: queue.SimpleQueue[weakref.ref[_Drains]] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_lock = threading.Lock()

#: How many forks this process is from the one that imported sqlgate: a
#: forgotten object made before a fork holds a connection of the parent's.
_generation = 0


def generation() -> int:
    """This process's fork generation (read when an object is made)."""
    return _generation


def _reap(wakeups: queue.SimpleQueue[weakref.ref[_Drains]]) -> None:
    """The reaper thread: drain each DB a finalizer names (never in GC context)."""
    while True:
        db = wakeups.get()()
        if db is not None:
            try:
                db._drain(warn=False)
            except Exception as exc:  # keep reaping for the other DBs
                log.warning("reaping a forgotten connection failed: %r", exc)
        del db


def start() -> None:
    """Start the reaper thread unless it runs (called when a DB is made)."""
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(
                target=_reap, args=(_wakeups,), name="sqlgate-reaper", daemon=True
            )
            _thread.start()


def _after_fork_in_child() -> None:
    # The parent's reaper did not survive the fork; its queue may be mid-get.
    global _wakeups, _thread, _lock, _generation
    running = _thread is not None
    _generation += 1
    _wakeups, _thread, _lock = queue.SimpleQueue(), None, threading.Lock()
    if running:
        start()


os.register_at_fork(after_in_child=_after_fork_in_child)


def on_forgotten(db: _Drains, item: tuple[Any, Any, str], generation: int) -> None:
    """A forgotten ``Rows``/``Tx``/``Conn``'s finalizer: hand it to the reaper.

    Runs inside the garbage collector on any thread, maybe inside the pool's
    critical section: an atomic append and a reentrant-safe put, no lock.

    Args:
        db: the DB the object's connection belongs to.
        item: (connection, cursor or None, what was forgotten).
        generation: ``generation()`` when the object was made.
    """
    if generation != _generation:
        keep(item)
        return
    db._forgotten.append(item)
    _wakeups.put(db._ref)


def on_forgotten_async(
    db: _DrainsAsync,
    item: tuple[Any, Any, str],
    loop: asyncio.AbstractEventLoop,
    generation: int,
) -> None:
    """A forgotten ``AsyncRows``/``AsyncTx``/``AsyncConn``'s finalizer.

    Runs inside the garbage collector on any thread: an atomic append and
    ``call_soon_threadsafe`` (an append and a byte to the loop), no lock. An
    object made before a fork names the parent's loop: it is kept
    referenced, nothing more.

    Args:
        db: the AsyncDB the object's connection belongs to.
        item: (connection, cursor or None, what was forgotten).
        loop: the event loop the object was made on.
        generation: ``generation()`` when the object was made.
    """
    if generation != _generation:
        keep(item)
        return
    db._forgotten.append(item)
    with contextlib.suppress(RuntimeError):  # loop closed: the next call drains
        loop.call_soon_threadsafe(db._wake)
