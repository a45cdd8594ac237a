"""A KeyboardInterrupt at every point of the threaded shell (issue 11, check b).

The thread twin of AsyncPool's cancellation matrix. Each scenario runs one pool
call in this (the main) thread under ``sys.settrace``: a counting run lists
every line event of the call in the shell (``sqlgate/pool.py``,
``sqlgate/_shell.py`` and the helpers split from it, ``sqlgate/_reset.py``),
in the hooks (``on_acquire``,
``on_release``, ``reset``, ``on_close``), the driver's rollback and the tail of
its close. Then, for each of those N points, a fresh pool runs the same call
and a KeyboardInterrupt is raised at exactly that point (a trace function that
raises is switched off by CPython: one injection per run). Afterwards:

- the call raised that KeyboardInterrupt (nothing swallowed it); points up to the
  outermost ``try`` of the method called are its entry, where nothing has
  happened yet: a ``release`` interrupted there left the connection with the
  caller (who releases it again), as an interrupt just before the call would;
- once the pool's own threads settle: ``check()`` passes, driver live == pool
  open, no connection was closed twice, nobody waits, and exactly the
  connections the test still holds are in use (an interrupted ``release``
  gives the connection back, broken; an interrupted ``acquire`` hands none);
- the pool still serves: ``max_open`` connections can be taken at once;
- ``close()`` leaves nothing open (driver live == 0).

What is not an injection point, and why:

- Lines of ``sqlgate/_core/``: each core input runs under the pool lock as
  one transition, which ``check()`` verifies before and after; a shell cannot
  repair a transition cut in half, and does not try to.
- Line events at which no real interrupt can land. CPython raises a pending
  KeyboardInterrupt only where it checks for signals: after a call returns,
  at a loop's back edge and at a function's entry. So: a line whose first
  instruction is a NOP (``try:``, a ``return`` that only leaves a ``with``
  block), the second line event of a ``with`` statement (its exit, where
  ``__exit__`` is called before any check; raising from the trace function
  there would leave the lock held, which a signal cannot do), and the first
  line of a ``try`` body (an interrupt there is raised at the last check before
  the ``try``, outside it: the point of the line before).
- Pool-owned threads (dials, maintenance): signals are delivered to the main
  thread only.
- The driver's ``close()`` up to the moment the connection is closed: whether
  an interrupted close closed the socket is the driver's business; the pool
  counts a close that raised as done (and never closes twice). The fake here
  closes first, then runs a few traced lines where the interrupt may land.

``SQLGATE_INTERRUPTS=full`` also runs each scenario with rollback and every
hook installed at once (more points); the default covers each hook in its own
scenario. The counts are printed with ``-s``.
"""

from __future__ import annotations

import ast
import dis
import inspect
import itertools
import os
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
import sqlgate._courier
import sqlgate._fork
import sqlgate._handoff
import sqlgate._leaks
import sqlgate._reset
import sqlgate._shell
import sqlgate.drivers._probe
import sqlgate.pool
from sqlgate import Pool
from tests.fakes import FakeClock, FakeConn, FakeDriver, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType


class Injected(KeyboardInterrupt):
    """The injected interrupt (a KeyboardInterrupt), naming where it landed."""


def _tail(conn: FakeConn) -> None:
    """What the driver does after its socket is closed: interruptible lines."""
    conn.tail = 1  # type: ignore[attr-defined]
    conn.tail += 1  # type: ignore[attr-defined]


class Conn(FakeConn):
    """A fake connection whose close takes effect first, then runs traced lines."""

    def close(self) -> None:
        super().close()
        _tail(self)


class Driver(FakeDriver):
    def connect(self) -> Conn:
        conn = super().connect()
        conn.__class__ = Conn
        return conn  # type: ignore[return-value]


def on_acquire(conn: FakeConn) -> None:
    seen = conn.number
    assert seen > 0


def on_release(conn: FakeConn) -> None:
    seen = conn.number
    assert seen > 0


def reset(conn: FakeConn) -> None:
    seen = conn.number
    assert seen > 0


def on_close(conn: FakeConn) -> None:
    seen = conn.number
    assert seen > 0


HOOKS = {
    "on_acquire": on_acquire,
    "on_release": on_release,
    "reset": reset,
    "on_close": on_close,
}

#: The Python source of the shells (a module the compiled build turned into a
#: C extension runs no line events, so it has no injection points: an
#: interrupt can only arrive where it calls back into Python, which the traced
#: hooks and driver methods cover).
SHELL_FILES = {
    os.path.realpath(str(m.__file__))
    for m in (
        sqlgate.pool,
        sqlgate._handoff,
        sqlgate._shell,
        sqlgate._leaks,
        sqlgate._courier,
        sqlgate._fork,
        sqlgate._reset,
        sqlgate.drivers._probe,
    )
    if str(m.__file__).endswith(".py")
}
TRACED_CODE = {f.__code__ for f in (*HOOKS.values(), _tail, FakeConn.rollback)}


def traced(code: CodeType) -> bool:
    return code in TRACED_CODE or os.path.realpath(code.co_filename) in SHELL_FILES


def _try_lines(files: set[str]) -> set[tuple[str, int]]:
    """Each ``try:`` line and the first line of its body, in ``files``."""
    lines: set[tuple[str, int]] = set()
    for path in files:
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                lines.add((path, node.lineno))
                lines.add((path, node.body[0].lineno))
    return lines


#: Not injection points (see the module docstring): a ``try:`` line and the
#: first line of its body.
TRY_LINES = _try_lines(SHELL_FILES)

_with_starts: dict[CodeType, dict[int, int]] = {}


def with_exit(frame: FrameType) -> bool:
    """Whether this line event is a ``with`` block's exit (see the docstring)."""
    code = frame.f_code
    starts = _with_starts.get(code)
    if starts is None:
        starts = {}
        line = None
        for ins in dis.get_instructions(code):
            if ins.positions is not None and ins.positions.lineno is not None:
                line = ins.positions.lineno
            if ins.opname == "BEFORE_WITH" and line is not None:
                starts[line] = ins.offset
        _with_starts[code] = starts
    at = starts.get(frame.f_lineno)
    return at is not None and frame.f_lasti > at


_NOP = dis.opmap["NOP"]


def artifact(frame: FrameType) -> bool:
    """Whether no real interrupt can land at this line event (see the docstring)."""
    code = frame.f_code
    return (
        code.co_code[frame.f_lasti] == _NOP
        or with_exit(frame)
        or (os.path.realpath(code.co_filename), frame.f_lineno) in TRY_LINES
    )


def run_traced(
    op: Callable[[], object], inject_at: int | None
) -> tuple[list[str], BaseException | None]:
    """Run ``op`` traced; raise ``Injected`` at line event ``inject_at`` (1-based).

    Returns:
        The points passed ("file:line"), and what ``op`` raised (or None).
    """
    points: list[str] = []

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and not artifact(frame):
            where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
            points.append(where)
            if len(points) == inject_at:
                raise Injected(where)
        return local

    def entry(frame: FrameType, event: str, arg: object) -> Any:
        return local if traced(frame.f_code) else None

    error: BaseException | None = None
    sys.settrace(entry)
    try:
        op()
    except BaseException as exc:
        error = exc
    finally:
        sys.settrace(None)
    return points, error


@dataclass
class World:
    pool: Pool[Conn]
    driver: Driver
    #: Connections the test still holds after the call under test.
    held: list[Conn] = field(default_factory=list)
    #: Threads waiting in acquire (served after the call), and their results.
    waiters: list[threading.Thread] = field(default_factory=list)
    served: list[Conn] = field(default_factory=list)
    let_go: threading.Event = field(default_factory=threading.Event)
    max_open: int = 2
    closes_pool: bool = False
    #: The connection a release under test gives back.
    op_conn: Conn | None = None


@dataclass
class Scenario:
    name: str
    hooks: tuple[str, ...]
    #: Builds the world; returns the call under test.
    setup: Callable[[World], Callable[[], object]]
    knobs: dict[str, Any] = field(default_factory=dict)
    clock: bool = False
    #: A clock that moves 10 ms at each read: close(timeout)'s wait loop then
    #: runs the same number of times in every run.
    stepping: bool = False
    #: The pool method the call enters (for its entry lines, see ``entry``);
    #: "" when nothing depends on whether the call began (close).
    top: str = "acquire"


def start_waiter(w: World) -> None:
    def run() -> None:
        conn = w.pool.acquire(timeout=10)
        w.served.append(conn)
        w.let_go.wait(10)
        w.pool.release(conn)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    w.waiters.append(t)
    n = len(w.waiters)
    wait_until(lambda: w.pool.stats().waiting == n)


def take(w: World, n: int, idle: int = 0) -> list[Conn]:
    """Take ``n + idle`` connections; give ``idle`` back; return the rest."""
    conns = [w.pool.acquire() for _ in range(n + idle)]
    for conn in conns[n:]:
        w.pool.release(conn)
    return conns[:n]


def acquire_idle(w: World) -> Callable[[], object]:
    take(w, 0, idle=1)
    return w.pool.acquire


def acquire_dial(w: World) -> Callable[[], object]:
    return w.pool.acquire


def release(
    broken: bool = False, in_tx: bool = False
) -> Callable[[World], Callable[[], object]]:
    def setup(w: World) -> Callable[[], object]:
        [conn] = take(w, 1)
        conn.in_transaction = in_tx
        w.op_conn = conn
        return lambda: w.pool.release(conn, broken=broken)

    return setup


def release_handoff(w: World) -> Callable[[], object]:
    [conn] = take(w, 1)
    start_waiter(w)
    w.op_conn = conn
    return lambda: w.pool.release(conn)


def setters(w: World) -> Callable[[], object]:
    take(w, 0, idle=2)

    def op() -> None:
        w.pool.set_max_idle_conns(0)
        w.pool.set_max_open_conns(1)

    w.max_open = 1
    return op


def close_pool(timeout: float) -> Callable[[World], Callable[[], object]]:
    def setup(w: World) -> Callable[[], object]:
        w.held = take(w, 1, idle=1)
        w.closes_pool = True
        return lambda: w.pool.close(timeout)

    return setup


ALL_HOOKS = ("on_acquire", "on_release", "reset", "on_close")

SCENARIOS = [
    Scenario("acquire_idle", (), acquire_idle),
    Scenario("acquire_idle_hooked", ("on_acquire",), acquire_idle),
    Scenario("acquire_dial", (), acquire_dial),
    Scenario("acquire_expired", ("on_close",), acquire_dial, clock=True),
    Scenario("release", ("reset",), release(in_tx=True), top="release"),
    Scenario(
        "release_hooked", ("on_release", "reset"), release(in_tx=True), top="release"
    ),
    Scenario("release_broken", ("on_close",), release(broken=True), top="release"),
    Scenario(
        "release_handoff", (), release_handoff, knobs={"max_open": 1}, top="release"
    ),
    Scenario("setters", ("on_close",), setters, top="_call"),
    Scenario("close", ("on_close",), close_pool(0), top=""),
    Scenario("close_timeout", ("on_close",), close_pool(0.001), top="", stepping=True),
]


def build(
    sc: Scenario, hooks: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> tuple[World, Callable[[], object]]:
    driver = Driver()
    knobs: dict[str, Any] = {"max_open": 2, "max_idle": 2, "acquire_timeout": 10}
    knobs.update(sc.knobs)
    knobs.update({h: HOOKS[h] for h in hooks})
    clock = None
    if sc.clock:
        clock = FakeClock()
        monkeypatch.setattr(sqlgate.pool, "monotonic", clock)
        monkeypatch.setattr(sqlgate._handoff, "monotonic", clock)
        knobs["conn_max_idle_time"] = 60
        # No maintenance thread: it would expire the idle ones too, at a
        # moment of its own, and each run must take the same path.
        monkeypatch.setattr(sqlgate.pool, "_maintain", lambda *_: None)
    if sc.stepping:
        ticks = itertools.count()

        def fake_clock() -> float:
            return next(ticks) / 100

        monkeypatch.setattr(sqlgate.pool, "monotonic", fake_clock)
        monkeypatch.setattr(sqlgate._handoff, "monotonic", fake_clock)
    pool: Pool[Conn] = Pool(driver.connect, **knobs)
    w = World(pool, driver, max_open=knobs["max_open"])
    if sc.clock:
        assert clock is not None
        take(w, 0, idle=2)
        clock.advance(61)  # both idle ones expired: acquire closes them
    op = sc.setup(w)
    return w, op


def entry(pool: Pool[Any], top: str) -> str:
    """The line before the outermost ``try`` of the method ``top``.

    Points up to it are the method's entry: nothing has happened yet (an
    interrupt there is one just before the call, which CPython can deliver
    at any function's entry too), so the caller still holds what it held.
    """
    method = getattr(pool, top)
    func = method.__func__
    if not hasattr(func, "__code__"):
        # Compiled (the compiled build): it runs no lines, so no point is at
        # its entry; every traced point is inside the call.
        return ""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    i = next(i for i, n in enumerate(fn.body) if isinstance(n, ast.Try))
    line = func.__code__.co_firstlineno + fn.body[i - 1].lineno - 1
    return f"{os.path.basename(func.__code__.co_filename)}:{line}"


def check(w: World, error: BaseException | None, where: str, entered: bool) -> None:
    pool, driver = w.pool, w.driver
    assert isinstance(error, Injected), f"the interrupt at {where} became {error!r}"
    if not entered and w.op_conn is not None:
        # Interrupted before release began: still the caller's, who tries again.
        assert pool.stats().in_use == 1 + len(w.held), where
        pool.release(w.op_conn)
    wait_until(
        lambda: (
            len(w.served) == len(w.waiters)
            and pool.stats().dialing == 0
            and pool.stats().closing == 0
        ),
        what=f"the pool to settle after an interrupt at {where}",
    )
    with pool._lock:
        pool._core.check()
        s = pool._core.stats()
        assert driver.live == s.open_connections, (where, driver.live, s)
    assert all(c.closes <= 1 for c in driver.conns), f"closed twice ({where})"
    held = len(w.held) + len(w.served)
    if w.closes_pool and s.in_use == 0:
        held = 0  # close(timeout) took them from the test before the interrupt
    assert (s.waiting, s.in_use) == (0, held), (where, s)
    w.let_go.set()
    for t in w.waiters:
        t.join(10)
    if w.closes_pool:
        for conn in w.held:
            pool.release(conn)  # closed by release, or a no-op if close took it
    else:
        for conn in w.held:
            pool.release(conn)
        conns = [pool.acquire(timeout=5) for _ in range(w.max_open)]  # still serves
        for conn in conns:
            pool.release(conn)
    pool.close()
    wait_until(lambda: pool.stats().closing == 0 and pool.stats().dialing == 0)
    with pool._lock:
        pool._core.check()
    assert driver.live == 0 == pool.stats().open_connections, where


def _hook_sets(sc: Scenario) -> list[tuple[str, ...]]:
    if os.environ.get("SQLGATE_INTERRUPTS") == "full":
        return [sc.hooks, ALL_HOOKS]
    return [sc.hooks]


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda sc: sc.name)
def test_issue11_interrupt_at_every_point(
    sc: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    for hooks in _hook_sets(sc):
        w, op = build(sc, hooks, monkeypatch)
        start = entry(w.pool, sc.top) if sc.top else ""
        op()  # warm up (caches filled on a first call), then count the points
        w.let_go.set()
        w, op = build(sc, hooks, monkeypatch)
        points, error = run_traced(op, None)
        assert error is None, error
        w.let_go.set()
        assert not start or start in points, (start, points)
        first = points.index(start) + 1 if start else 0  # the call's entry
        for i in range(1, len(points) + 1):
            w, op = build(sc, hooks, monkeypatch)
            _, error = run_traced(op, i)
            where = f"{points[i - 1]} (point {i} of {len(points)})"
            check(w, error, where, entered=i > first)
        print(
            f"\n{sc.name} {'+'.join(hooks) or '-'}: {len(points)} points "
            f"({first} at entry), {len(set(points))} distinct lines"
        )
