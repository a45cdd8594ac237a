"""A bounded threaded load over a Pool, recording how every call ended."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from sqlgate.errors import Error

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlgate import Pool


@dataclass
class Backend:
    """How to talk to one real server through a pool."""

    name: str
    #: The driver's "this connection is dead" error class.
    dead: tuple[type[BaseException], ...]
    #: Run one trivial query on a connection.
    query: Callable[[Any], object]


@dataclass
class Call:
    started: float
    ended: float
    outcome: str  # "ok" or the exception's class name
    error: BaseException | None = None


@dataclass
class _Runner:
    """``threads`` workers looping one call each until stopped; every call kept."""

    threads: int = 32
    #: Keep each error object (with its traceback) in ``calls``; a soak that
    #: measures memory keeps only the kind.
    keep_errors: bool = True
    calls: list[Call] = field(default_factory=list)
    unexpected: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Self:
        for i in range(self.threads):
            t = threading.Thread(target=self._work, name=f"load-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def finish(self, bound: float = 15.0) -> None:
        """Stop the workers; fail if any of them is stuck past ``bound`` s."""
        self.stop.set()
        deadline = time.monotonic() + bound
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._workers if t.is_alive()]
        assert not stuck, f"workers stuck: {stuck}"
        assert not self.unexpected, f"unexpected errors: {self.unexpected[:3]!r}"

    def _once(self, n: int) -> BaseException | None:
        """One call; the error a caller may see, or None. Others raise."""
        raise NotImplementedError

    def _work(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                error = self._once(n)
            except BaseException as exc:
                with self._lock:
                    self.unexpected.append(exc)
                return
            outcome = "ok" if error is None else type(error).__name__
            if not self.keep_errors:
                error = None
            with self._lock:
                self.calls.append(Call(started, time.monotonic(), outcome, error))
            if error is not None:
                time.sleep(0.005)  # a failing caller backs off a little

    def outcomes(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        with self._lock:
            return Counter(c.outcome for c in self.calls if since <= c.started < until)

    def first_ok_after(self, t: float) -> float | None:
        with self._lock:
            ends = [c.ended for c in self.calls if c.outcome == "ok" and c.started >= t]
        return min(ends) if ends else None

    def longest(self, since: float, until: float = float("inf")) -> float:
        with self._lock:
            spans = [
                c.ended - c.started for c in self.calls if since <= c.started < until
            ]
        return max(spans, default=0.0)


@dataclass(kw_only=True)
class Load(_Runner):
    """Workers looping acquire / query / release on a ``Pool``."""

    pool: Pool[Any]
    backend: Backend
    acquire_timeout: float = 5.0

    def _once(self, n: int) -> BaseException | None:
        pool, backend = self.pool, self.backend
        try:
            conn = pool.acquire(self.acquire_timeout)
        except Error as exc:
            return exc
        try:
            backend.query(conn)
        except backend.dead as exc:
            pool.release(conn, broken=True)
            return exc
        except BaseException:
            pool.release(conn, broken=True)
            raise
        pool.release(conn)
        return None


@dataclass(kw_only=True)
class CallLoad(_Runner):
    """Workers looping ``call(n)``; errors of the ``expected`` kinds are results.

    ``call`` must return ``n`` back (a query echoing its parameter), so a
    wrong answer is caught, not only a missing one.
    """

    call: Callable[[int], object]
    expected: tuple[type[BaseException], ...]

    def _once(self, n: int) -> BaseException | None:
        try:
            got = self.call(n)
        except self.expected as exc:
            return exc
        if got != n:
            raise AssertionError(f"call({n}) answered {got!r}")
        return None


#: Seconds to wait for a view to catch up with the pool's (the server dropping
#: closed sessions, dials and closes landing, threads ending). A convergence
#: wait returns as soon as its condition holds: this is no performance bound,
#: only how long a loaded machine may take before "never" is concluded.
SETTLE = 15.0


def wait_for(predicate: Callable[[], bool], bound: float, what: str) -> float:
    """Poll until ``predicate`` holds; return when it did; fail after ``bound`` s."""
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound} s")
        time.sleep(0.01)
    return time.monotonic()


def pg_backend() -> Backend:
    import psycopg

    return Backend(
        "postgres", (psycopg.OperationalError,), lambda c: c.execute("select 1")
    )


def my_backend() -> Backend:
    import pymysql

    def query(conn: Any) -> object:
        with conn.cursor() as cur:
            cur.execute("select 1")
            return cur.fetchone()

    return Backend(
        "mysql", (pymysql.err.OperationalError, pymysql.err.InterfaceError), query
    )
