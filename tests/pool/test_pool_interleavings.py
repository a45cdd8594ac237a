"""Every interleaving of the threaded shell (issue 11, check a).

Each scenario is 2-3 threads doing pool calls (acquire, release, release
broken, close, setters), plus the dial threads the pool starts. The scheduler
in ``tests/pool/sched.py`` runs them one at a time and switches only at the
instrumented points: the pool lock's acquire and release, the waiters' gates
(wait and wake), and the driver's connect (a dial completing) and close (via
``on_close``, just before it). Between two such points a thread touches no
shared state, so these are all the interleavings that can differ.

``explore`` replays the scenario once per schedule, depth first. After each
schedule: no thread raised anything unexpected, nothing deadlocked, every
effect the core issued was carried out exactly once, the core's ``check()``
passes with driver live == pool open and no connection closed twice; then the
pool is closed and must end with nothing open (driver live == 0).

Depth: ``explore`` counts a preemption each time the scheduler switches away
from a thread that could have gone on (CHESS's bound: this class of bug needs
one or two). In CI, the three smallest scenarios explore every schedule, the
other two-thread ones (dial threads come on top) every schedule with at most 3
preemptions and the three-thread ones with at most 1: 8661 schedules, about
30 s here. ``SQLGATE_EXPLORE=N`` sets both bounds to N and
``SQLGATE_EXPLORE=full`` drops them (every schedule; hours for the cold and
three-thread scenarios). With ``-s`` each scenario prints its count.

Defect 1 (effects carried out twice) is found when its fix is reverted (in
``release``: ``out = core.outbox``, kept as "this call's effects" even when
empty). ``release_vs_broken`` fails at its second schedule, ``[0, 0, 1]``:

    T1 T1 T2 T2 T2 T2 T2 T2 T1 ...

T1 ``release(c1)`` takes the lock, gives c1 to the idle stack (no effects: its
``out`` is the outbox list itself) and releases the lock; one preemption: T2
``release(c2, broken=True)`` takes the lock, appends ``Close(c2)`` to that same
list and takes it as its own, closes c2 (``on_close``), settles it and is done;
T1 goes on, finds ``out`` non-empty and carries out ``Close(c2)`` again:
"effect Close(<Entry <FakeConn #2> ...>, 'broken') carried out twice" (without
the exactly-once check: ``ValueError: ... is not being closed`` from the second
``closed``). With the fix reverted, ``close_under_load`` fails at schedule 2,
``setters_under_load`` at 157, ``three_cycles`` at 114 and
``cycle_vs_broken_cold`` at 1545 too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate._handoff
import sqlgate.pool
from sqlgate import Pool, PoolClosed, PoolTimeout
from tests.fakes import FakeConn, FakeDriver
from tests.pool import sched as S

if TYPE_CHECKING:
    from sqlgate._core import Effect

#: Preemption bounds in the default (CI) run: two-thread, three-thread scenarios.
CI_PREEMPTIONS = (3, 1)


def _depth() -> tuple[int | None, int | None]:
    """Bounds for two- and three-thread scenarios; None means every schedule."""
    mode = os.environ.get("SQLGATE_EXPLORE", "")
    if mode == "full":
        return None, None
    if mode.isdigit():
        return int(mode), int(mode)
    return CI_PREEMPTIONS


@dataclass
class World:
    """One run of a scenario: the pool, its driver, what the threads did."""

    pool: Pool[FakeConn]
    driver: FakeDriver
    held: dict[str, FakeConn] = field(default_factory=dict)
    #: Exceptions a thread may end with (e.g. PoolClosed next to close()).
    allowed: tuple[type[BaseException], ...] = ()
    effects: dict[int, Effect[Any]] = field(default_factory=dict)


Body = Callable[[World], None]


@dataclass
class Scenario:
    name: str
    knobs: dict[str, Any]
    bodies: list[Body]
    #: Connections taken (by name) in setup, before the schedule starts.
    hold: tuple[str, ...] = ()
    idle: int = 0
    allowed: tuple[type[BaseException], ...] = ()
    timeouts: bool = False
    #: Small enough to explore every schedule even in CI (a second or two).
    exhaustive: bool = False


def cycle(broken: bool = False) -> Body:
    def body(w: World) -> None:
        conn = w.pool.acquire()
        w.pool.release(conn, broken=broken)

    return body


def give_back(name: str, broken: bool = False) -> Body:
    def body(w: World) -> None:
        w.pool.release(w.held[name], broken=broken)

    return body


def setters(w: World) -> None:
    w.pool.set_max_open_conns(1)
    w.pool.set_max_idle_conns(0)


def close(w: World) -> None:
    w.pool.close()


def timed_cycle(w: World) -> None:
    try:
        conn = w.pool.acquire(timeout=5)
    except PoolTimeout:
        return
    w.pool.release(conn)


SCENARIOS = [
    # Two threads.
    Scenario(
        "release_vs_broken",
        {"max_open": 2, "max_idle": 2},
        [give_back("c1"), give_back("c2", broken=True)],
        hold=("c1", "c2"),
        exhaustive=True,
    ),
    Scenario("two_cycles_cold", {"max_open": 1, "max_idle": 1}, [cycle(), cycle()]),
    Scenario(
        "cycle_vs_broken_cold",
        {"max_open": 1, "max_idle": 1},
        [cycle(), cycle(broken=True)],
    ),
    Scenario(
        "handoff_vs_timeout",
        {"max_open": 1, "max_idle": 1, "acquire_timeout": 5},
        [give_back("c1"), timed_cycle],
        hold=("c1",),
        timeouts=True,
        exhaustive=True,
    ),
    Scenario(
        "release_vs_close",
        {"max_open": 1, "max_idle": 1},
        [give_back("c1"), close],
        hold=("c1",),
        exhaustive=True,
    ),
    # Three threads.
    Scenario(
        "three_cycles",
        {"max_open": 2, "max_idle": 1},
        [cycle(), cycle(broken=True), cycle()],
        idle=1,
    ),
    Scenario(
        "setters_under_load",
        {"max_open": 2, "max_idle": 2},
        [cycle(), setters, cycle(broken=True)],
        idle=2,
    ),
    Scenario(
        "close_under_load",
        {"max_open": 2, "max_idle": 2},
        [give_back("c1"), cycle(), close],
        hold=("c1",),
        allowed=(PoolClosed,),
    ),
]


def run_scenario(sc: Scenario, sched: S.Scheduler) -> None:
    """Build ``sc``'s pool, run its threads under ``sched``, check the ledger."""
    driver = FakeDriver()

    def connect() -> FakeConn:
        S.point("connect")  # the dial completes here
        return driver.connect()

    pool: Pool[FakeConn] = Pool(
        connect, on_close=lambda conn: S.point("close"), **sc.knobs
    )
    pool._lock = S.SchedLock()  # type: ignore[assignment]
    w = World(pool, driver, allowed=sc.allowed)
    # Setup, outside the schedule: dials run in this thread.
    pool._start_dial = pool._dial  # type: ignore[method-assign]
    conns = [pool.acquire() for _ in range(len(sc.hold) + sc.idle)]
    for name, conn in zip(sc.hold, conns, strict=False):
        w.held[name] = conn
    for conn in conns[len(sc.hold) :]:
        pool.release(conn)

    # Every effect taken from the core is carried out once (defect 1).
    run = pool._run

    def run_once(effects: Any) -> None:
        for effect in effects:
            if id(effect) in w.effects:
                raise AssertionError(f"effect {effect!r} carried out twice")
            w.effects[id(effect)] = effect  # kept alive: ids stay unique
        run(effects)

    pool._run = run_once  # type: ignore[method-assign]

    def start_dial(ticket: int) -> None:
        sched.spawn(lambda: pool._dial(ticket), f"dial{ticket}")

    pool._start_dial = start_dial  # type: ignore[method-assign]
    for i, body in enumerate(sc.bodies):
        sched.spawn(lambda body=body: body(w), f"T{i + 1}")  # type: ignore[misc]
    sched.run()

    for t in sched.threads:
        if t.error is not None and not isinstance(t.error, w.allowed):
            raise AssertionError(f"{t.name} raised {t.error!r}") from t.error
    core = pool._core
    core.check()
    assert driver.live == core.num_open, (driver.live, core.num_open)
    s = pool.stats()
    assert (s.in_use, s.waiting, s.dialing, s.closing) == (0, 0, 0, 0), s
    assert all(c.closes <= 1 for c in driver.conns), "a connection closed twice"
    # Then close: nothing may stay open.
    pool._start_dial = pool._dial  # type: ignore[method-assign]
    pool.close()
    core.check()
    assert driver.live == 0 == core.num_open, (driver.live, core.num_open)


@pytest.fixture(autouse=True)
def _sched_gates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlgate.pool, "_new_gate", S.SchedLock)
    monkeypatch.setattr(sqlgate._handoff, "_new_gate", S.SchedLock)


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda sc: sc.name)
def test_issue11_every_interleaving(sc: Scenario) -> None:
    two, three = _depth()
    bound = two if len(sc.bodies) <= 2 else three
    if sc.exhaustive and not os.environ.get("SQLGATE_EXPLORE"):
        bound = None
    explored = S.explore(
        lambda sched: run_scenario(sc, sched),
        preemptions=bound,
        timeouts=sc.timeouts,
    )
    depth = "every schedule" if bound is None else f"<= {bound} preemptions"
    print(
        f"\n{sc.name}: {explored.schedules} schedules ({depth}), "
        f"up to {explored.max_steps} steps"
    )
    assert not explored.truncated
    assert explored.schedules > 1
