"""Fork safety: the registry of pools and DBs, and what a forked child does with them.

After ``os.fork`` the child inherits the parent's connections (sockets shared
with the parent's sessions), threads that no longer run and locks that may be
held. Every pool and DB registers itself (``forget_after_fork``); in the
child, the handler below resets the process-wide state (``_courier``), then
calls each one's ``_forked``, which starts over with a fresh core
(``renew_after_fork``). Inherited connections are orphaned: their descriptor
is pointed at /dev/null and the object kept referenced for the rest of the
child's life (``keep``), so neither the driver nor a finalizer ever says
goodbye on the parent's session.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Protocol, TypeVar

from sqlgate import _courier
from sqlgate.drivers._probe import fileno_of

if TYPE_CHECKING:
    from sqlgate._core import PoolCore

__all__ = ["forget_after_fork", "keep", "orphan", "renew_after_fork"]

C = TypeVar("C")

log = logging.getLogger("sqlgate")


class _Forkable(Protocol):
    name: str

    def _forked(self) -> None: ...


#: Every live pool of either kind, for the fork handler.
_pools: weakref.WeakSet[_Forkable] = weakref.WeakSet()
#: What a forked child inherited (connections, tasks): kept referenced so that
#: no finalizer runs on it in the child.
_kept: list[object] = []


def forget_after_fork(pool: _Forkable) -> None:
    """Have ``pool._forked()`` called in a child process after ``os.fork``."""
    _pools.add(pool)


def orphan(conn: object) -> None:
    """Disarm an inherited connection without touching the parent's session."""
    _kept.append(conn)
    fileno = fileno_of(conn)
    try:
        fd = fileno() if fileno is not None else -1
    except Exception:
        return
    if not isinstance(fd, int) or fd < 0:
        return
    # Point the descriptor at /dev/null: the socket stays open in the parent,
    # and whatever the driver later writes or closes here goes nowhere.
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def renew_after_fork(core: PoolCore[C], now: float) -> PoolCore[C]:
    """A fresh core for a forked child; every inherited connection is orphaned.

    The new core has the old one's knobs and no connections (closed if the
    old one was).
    """
    fresh = core.renew()
    if core.is_closed:
        fresh.close(now)
    for entry in list(core._registry.values()):
        conn = entry.get()
        if conn is not None:
            orphan(conn)
    return fresh


def keep(obj: object) -> None:
    """Keep ``obj`` referenced for the rest of a forked child's life."""
    _kept.append(obj)


def _after_fork_in_child() -> None:
    _courier.forked()
    for pool in list(_pools):
        try:
            pool._forked()
        except Exception as exc:  # never break the child over a pool
            log.warning("%s: resetting after fork failed: %r", pool.name, exc)


os.register_at_fork(after_in_child=_after_fork_in_child)
