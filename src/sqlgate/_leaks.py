"""Leak tracking: who holds each connection, and the warnings when one is held too long.

Only while a pool's ``leak_threshold`` is set. ``track`` records the
acquirer's stack and leaves the core only a weak reference to the connection,
so one dropped without release is collected and its slot reclaimed
(``report_reclaimed``); ``check_leaks`` warns once about each connection held
past the threshold. Both shells call these from their hooked acquire and
their maintenance.
"""

from __future__ import annotations

import logging
import sys
import traceback
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlgate._core import IN_USE, Entry

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from sqlgate._core import PoolCore

__all__ = ["Held", "check_leaks", "report_reclaimed", "track"]

C = TypeVar("C")

log = logging.getLogger("sqlgate")

#: Connections in use, while leak tracking is on: entry -> (the acquirer's
#: stack, whether the ``leak_threshold`` warning was logged for it).
Held = dict[Entry[C], tuple[list[traceback.FrameSummary], bool]]


#: Connection classes already reported as impossible to reclaim (no weakref).
_unreclaimable: set[type] = set()


def track(
    core: PoolCore[C],
    lock: AbstractContextManager[object],
    conn: C,
    held: Held[C],
    lost: deque[Entry[C]],
    wake: Callable[[], None],
) -> None:
    """Remember who acquired ``conn`` and keep only a weak reference to it.

    Call it straight from the shell's acquire: the stack recorded leaves out
    this frame and the caller's, so it ends at the application's frame. The
    stack is taken first; the core is asked only under ``lock``, the shell's
    critical section (``Pool``'s lock; nothing for ``AsyncPool``, whose core
    calls never await). ``lost`` receives the entry if the connection is
    garbage-collected while in use (drivers whose connections support weak
    references), and ``wake`` is called then, so that the slot reaches a
    caller waiting for one.
    """
    # As traceback.extract_stack()[:-2], but source lines are read only if a
    # warning is ever formatted (half the cost of every tracked acquire).
    stack = traceback.StackSummary.extract(
        traceback.walk_stack(sys._getframe(2)), lookup_lines=False
    )
    stack.reverse()
    with lock:
        entry = core.lookup(conn)
        held[entry] = (stack, False)
        loosened = core.loosen(entry, partial(_collected, entry, lost, wake))
    if not loosened and type(conn) not in _unreclaimable:
        # sqlite3's connections cannot be weakly referenced: say so once.
        _unreclaimable.add(type(conn))
        log.warning(
            "%s: %s connections cannot be weakly referenced, so one dropped "
            "without release is reported after leak_threshold but never "
            "reclaimed: its slot stays taken until close(timeout)",
            core.name,
            type(conn).__qualname__,
        )


def _collected(
    entry: Entry[C], lost: deque[Entry[C]], wake: Callable[[], None], _ref: object
) -> None:
    """A tracked connection was collected while in use (its weakref callback).

    Runs in whatever thread drops the connection, maybe inside another pool
    call: it only appends and rings (no lock; STYLE.md).
    """
    lost.append(entry)
    wake()


def report_reclaimed(
    name: str, held: tuple[list[traceback.FrameSummary], bool] | None
) -> None:
    """Log that a connection was collected while in use, with its acquirer's stack."""
    stack = "".join(traceback.format_list(held[0])) if held else "(unknown)\n"
    log.warning(
        "%s: a connection was garbage-collected while in use, never "
        "released; its slot is reclaimed. It was acquired at:\n%s",
        name,
        stack,
    )


def check_leaks(
    name: str, held: Held[Any], threshold: float | None, now: float
) -> float | None:
    """Warn once about each connection held past ``threshold`` seconds.

    Returns:
        When the next one would cross it (monotonic s), or None.
    """
    if threshold is None:
        return None
    due = None
    for entry, (stack, warned) in list(held.items()):
        if warned or entry.state != IN_USE:
            continue
        at = entry.acquired_at + threshold
        if now < at:
            due = at if due is None else min(due, at)
            continue
        held[entry] = (stack, True)
        log.warning(
            "%s: a connection has been in use for %.1f s (leak_threshold="
            "%.1f s); possible leak. It was acquired at:\n%s",
            name,
            now - entry.acquired_at,
            threshold,
            "".join(traceback.format_list(stack)),
        )
    return due
