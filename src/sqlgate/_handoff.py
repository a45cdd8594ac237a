"""The threading shell's hand-off: ``Pool``'s plain acquire and release, and ``with``.

These run on every checkout, so they live apart from ``pool.py`` in a module
the compiled build turns into C (setup.py). ``PlainPath`` is a mixin of
``Pool`` and stays an ordinary (non-native) class: the pool a program holds,
and may weak-reference, is always a plain Python object, while the bodies of
its hot methods are compiled. ``self`` is typed ``Any`` here for that reason
(a compiled method would otherwise accept only instances of this very class);
each method reads the pool's parts into typed locals at once. A ``timeout``
is typed ``object`` and checked by hand, so that a bad one is refused with
the message naming it (a compiled ``float`` parameter would raise mypyc's own
TypeError); ``Pool`` declares the public signatures.
"""

from __future__ import annotations

import logging
import threading
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar

from sqlgate._core import (
    FOREVER,
    IN_USE,
    Effect,
    Entry,
    PoolCore,
    Waiter,
    validate_duration,
)
from sqlgate._reset import (
    _rollbacks,
    commit_open_transaction,
    end_quietly,
    rollback_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # the pure-Python build need not have it
    _T = TypeVar("_T")

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_T], _T]:
        """Stand-in for mypyc's class options, which mean nothing uncompiled."""
        return lambda cls: cls


__all__ = ["Checkout", "PlainPath"]

log = logging.getLogger("sqlgate")

_new_gate = threading.Lock

#: "Nothing to carry out": one shared empty tuple, so no path allocates for it.
_NO_EFFECTS: tuple[()] = ()


@mypyc_attr(native_class=False, allow_interpreted_subclasses=True)
class PlainPath:
    """``Pool``'s acquire and release without hooks, observer or leak tracking.

    ``choose_path`` installs the hooked pair on a pool that needs it.
    """

    def acquire(self: Any, timeout: object = None) -> Any:
        """Take a connection, waiting for one if none is idle.

        Args:
            timeout: seconds to wait; None uses the pool's ``acquire_timeout``;
                ``math.inf`` waits forever; 0 fails unless one is idle now.

        Returns:
            The driver's connection; give it back with ``release``.

        Raises:
            PoolClosed: the pool is closed, or was closed while waiting.
            PoolTimeout: nothing became available in time (the latest connect
                error, if the last dial failed, is chained).
            TooManyWaiters: ``max_waiting`` callers are already queued.
            ConnectError: the dial made for this caller failed (the driver's
                exception is chained).
            TypeError, ValueError: ``timeout`` is not a number of seconds >= 0
                (checked before queueing, so a bad one leaves no waiter behind).
        """
        if timeout is not None and not (
            type(timeout) is float and 0.0 <= timeout <= FOREVER
        ):  # a plain float in range (as the handle's deadline passes) is fine
            validate_duration("timeout", timeout, zero_ok=True)
        core: PoolCore[Any] = self._core
        got: Entry[Any] | Waiter[Any] | None = None
        out: Sequence[Effect[Any]] = _NO_EFFECTS
        try:
            with self._lock:
                got = core.acquire(monotonic())
                if type(got) is Entry:  # the common path: an idle one was there
                    if not core.outbox:
                        return got.conn
                else:
                    got.token = gate = _new_gate()  # type: ignore[union-attr]
                    gate.acquire()
                # Effects are taken in the same hold as the input that made
                # them: a list left in the outbox would be carried out by the
                # next thread to take it as well (issue 11, defect 1).
                if core.outbox:
                    out = core.take_effects()
            # Slow path: effects to carry out (outside the lock), or a wait.
            if out:
                self._run(out)
                out = _NO_EFFECTS
            if type(got) is Entry:
                return got.conn
            return self._wait(got, timeout)
        except BaseException:
            # Refused (shut, too many waiters), timed out, failed, or cut
            # short by an interrupt anywhere above: give back whatever the core
            # decided for this call and carry out every effect, then raise.
            self._acquire_failed(got, out)
            raise

    def release(
        self: Any, conn: Any, *, broken: bool = False, _rollback: bool = True
    ) -> None:
        """Give back a connection that ``acquire`` returned.

        An open transaction is rolled back first and the ``reset`` hook runs;
        if either raises, the connection is discarded instead of reused.

        Args:
            conn: the connection.
            broken: the caller knows it is unusable; it is closed, not reused.
            _rollback: private to ``Checkout``: False skips the rollback step
                after a commit that left nothing open (the ``reset`` hook runs
                all the same).

        Raises:
            ValueError: ``conn`` is not in use from this pool (released twice,
                or foreign); no count changes.
        """
        core: PoolCore[Any] = self._core
        # core.lookup() inlined for the common case; it raises the precise error.
        entry = core._registry.get(id(conn))
        if entry is None or entry.conn is not conn or entry.state != IN_USE:
            entry = self._lookup(conn)
            if entry is None:
                return
        # None until the core has taken the connection back (then the effects
        # to carry out): what an interrupt at any point must still do.
        out: Sequence[Effect[Any]] | None = None
        try:
            if not broken and not core._shut_down:
                try:
                    if _rollback and self._rollback_on_return:
                        # rollback_open_transaction(conn), inlined: one call fewer.
                        cls = type(conn)
                        (_rollbacks.get(cls) or rollback_for(cls))(conn)
                    if self._reset is not None:
                        self._reset(conn)
                except Exception as exc:
                    log.info(
                        "%s: discarding a connection that failed reset: %s",
                        self.name,
                        repr(exc),
                    )
                    broken = True
            with self._lock:
                try:
                    core.release(entry, monotonic(), broken)
                    if not core.outbox:
                        return
                    out = core.take_effects()
                except BaseException as exc:
                    out = self._release_cut_locked(entry)
                    if not (type(exc) is ValueError and entry.key in self._taken):
                        raise
                    # close(timeout) took it while it was being reset: as
                    # documented, its late release is a no-op (defect 4).
            if core._shut_down:
                self._signal_if_all_back()
            self._run(out)
        except BaseException:
            self._release_failed(entry, out)
            raise

    def connection(self: Any, timeout: object = None) -> Checkout:
        """Acquire a connection for a ``with`` block; it is released after the block.

        As ``sqlite3``'s ``with conn:`` and psycopg_pool's ``connection()``:
        a transaction the block leaves open is committed when the block ends
        normally and rolled back when it raises; then the connection goes
        back. (A bare ``release`` rolls back whatever is open.)

        Args:
            timeout: as for ``acquire``.

        Returns:
            A context manager whose ``__enter__`` acquires and returns the
            driver's connection, and whose ``__exit__`` commits or rolls back,
            then releases it.

        Raises:
            TransactionAborted: on leaving the block normally, the driver
                reports the transaction already aborted (PostgreSQL, after an
                error the block caught); it was rolled back.
            The driver's error: the COMMIT failed (the connection is given
                back all the same).
        """
        return Checkout(self, timeout)


class Checkout:
    """``with pool.connection() as conn``: a class, not a generator, for speed.

    On a normal exit the block's transaction is committed (when the driver
    says one is open, or always when it cannot say), and the connection goes
    back without the return path's rollback, which the commit made redundant
    (except where the driver's rule keeps it: see ``commit_open_transaction``).
    """

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: Any, timeout: object) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    def __enter__(self) -> Any:
        self._conn = conn = self._pool.acquire(self._timeout)
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool = self._pool
        conn = self._conn
        self._conn = None
        rollback = True
        try:
            if exc_type is None:
                rollback = commit_open_transaction(conn)
            else:
                end_quietly(conn)
        except Exception as error:
            # Committing failed: the error is the caller's to see. Rolling
            # back after the block's own error failed: the block's error is
            # the one that matters, and the connection cannot be trusted.
            pool.release(conn, broken=exc_type is not None)
            if exc_type is None:
                raise
            log.info("%s: rollback after an error failed: %r", pool.name, error)
            return
        except BaseException:
            pool.release(conn, broken=True)  # interrupted: state unknown
            raise
        if exc_type is None and not pool._hooked:
            # The plain release itself, not ``pool.release``: hooks installed
            # meanwhile would put the hooked release there.
            PlainPath.release(pool, conn, _rollback=rollback)
        else:
            pool.release(conn)
