"""A deterministic scheduler for real threads: one runs at a time, by script.

Each managed thread is a real ``threading.Thread`` that stops at instrumented
yield points: every acquire and release of a ``SchedLock`` (installed as the
pool's lock and as its waiters' gates), and the fake driver's connect and
close (a dial completing, a close being carried out). At each stop the
scheduler picks which thread goes next; ``explore`` replays a scenario once per
schedule and enumerates every schedule (depth first), or every schedule with at
most ``preemptions`` switches away from a thread that could have gone on (the
CHESS bound: most concurrency bugs need one or two).

A ``SchedLock`` never blocks in the operating system: a thread that would wait
for it is simply not offered to the scheduler until it is free, so a schedule
in which nobody can go on is a deadlock, reported with the schedule.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["Deadlock", "Managed", "SchedLock", "Scheduler", "explore"]

#: The scheduler currently running a schedule, if any.
_active: Scheduler | None = None


class Deadlock(AssertionError):
    """No managed thread can go on, yet some have not finished."""


@dataclass(eq=False)
class Managed:
    """One managed thread and where it stopped."""

    index: int
    name: str
    go: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    #: A SchedLock it waits to take (not offered while that lock is held).
    wants: SchedLock | None = None
    #: Whether that wait may also end by timing out (a timed acquire).
    timed: bool = False
    #: Set by the scheduler when it chose "time out" for a timed wait.
    timed_out: bool = False
    done: bool = False
    error: BaseException | None = None
    #: Yield points passed, for the schedule's description.
    where: str = "start"


class Scheduler:
    """Runs managed threads one at a time, following ``prefix`` then option 0.

    Option 0 at each new decision is "the thread that ran last goes on" when it
    can (no preemption), so the default schedule is the non-preemptive one.
    """

    def __init__(self, prefix: list[int], *, timeouts: bool = False) -> None:
        self.prefix = prefix
        #: Whether timed waits may time out (one more option each).
        self.timeouts = timeouts
        self.threads: list[Managed] = []
        #: Each decision: (the options, the index chosen, whether it preempted).
        self.trace: list[tuple[list[tuple[int, str]], int, bool]] = []
        self._back = threading.Semaphore(0)
        self._local = threading.local()
        self._last: Managed | None = None

    # -- inside managed threads ------------------------------------------------

    def me(self) -> Managed | None:
        """The managed thread running now, or None (setup, teardown)."""
        me: Managed | None = getattr(self._local, "me", None)
        return me

    def point(
        self, where: str, wants: SchedLock | None = None, timed: bool = False
    ) -> None:
        """A yield point: hand control to the scheduler and wait for a turn."""
        me = self.me()
        if me is None:
            return
        me.where = where
        me.wants = wants
        me.timed = timed
        me.timed_out = False
        self._back.release()
        me.go.acquire()

    def spawn(self, target: Callable[[], object], name: str) -> Managed:
        """Start a managed thread; it waits for its first turn before running."""
        managed = Managed(len(self.threads), name)
        self.threads.append(managed)

        def run() -> None:
            self._local.me = managed
            managed.go.acquire()
            try:
                target()
            except BaseException as exc:
                managed.error = exc
            finally:
                managed.done = True
                managed.wants = None
                self._back.release()

        threading.Thread(target=run, name=f"sched-{name}", daemon=True).start()
        return managed

    # -- the scheduler itself --------------------------------------------------

    def _options(self) -> list[tuple[int, str]]:
        """Who may go next: (thread index, "go" | "timeout"); the last runner first."""
        options: list[tuple[int, str]] = []
        for t in self.threads:
            if t.done:
                continue
            if t.wants is None or t.wants.holder is None:
                options.append((t.index, "go"))
            if t.timed and self.timeouts and t.wants is not None:
                options.append((t.index, "timeout"))
        last = self._last
        if last is not None:
            options.sort(key=lambda o: (o[0] != last.index, o[0], o[1]))
        return options

    def run(self, step_timeout: float = 10.0) -> None:
        """Run every managed thread to the end, one step at a time."""
        global _active
        _active = self
        try:
            while not all(t.done for t in self.threads):
                options = self._options()
                if not options:
                    raise Deadlock(
                        "no thread can go on: "
                        + ", ".join(
                            f"{t.name} at {t.where}" for t in self.threads if not t.done
                        )
                    )
                n = len(self.trace)
                pick = self.prefix[n] if n < len(self.prefix) else 0
                index, mode = options[pick]
                last = self._last
                preempted = (
                    last is not None
                    and not last.done
                    and index != last.index
                    and any(o[0] == last.index for o in options)
                )
                self.trace.append((options, pick, preempted))
                chosen = self.threads[index]
                chosen.timed_out = mode == "timeout"
                self._last = chosen
                chosen.go.release()
                if not self._back.acquire(timeout=step_timeout):
                    raise AssertionError(
                        f"{chosen.name} never reached its next yield point "
                        f"(blocked outside the scheduler?) after {chosen.where}"
                    )
        finally:
            _active = None

    def describe(self) -> str:
        """The schedule as "thread@point" steps, for failure messages."""
        steps = []
        for options, pick, _ in self.trace:
            index, mode = options[pick]
            t = self.threads[index]
            steps.append(f"{t.name}{'(timeout)' if mode == 'timeout' else ''}")
        return " ".join(steps)


class SchedLock:
    """A lock under the scheduler's control (a plain lock when none is running).

    Installed as ``Pool._lock`` and as the waiters' gates (``_new_gate``).
    """

    def __init__(self) -> None:
        self.holder: object = None
        self._plain = threading.Lock()  # outside a schedule: setup, teardown

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        sched = _active
        me = sched.me() if sched is not None else None
        if sched is None or me is None:
            got = self._plain.acquire(blocking, timeout)
            if got:
                self.holder = "plain"
            return got
        if not blocking:
            sched.point("try-acquire")
            if self.holder is None:
                self.holder = me
                return True
            return False
        sched.point("acquire", wants=self, timed=timeout != -1)
        if me.timed_out:
            return False
        assert self.holder is None, "scheduled while the lock was held"
        self.holder = me
        return True

    def release(self) -> None:
        sched = _active
        me = sched.me() if sched is not None else None
        if self.holder is None:
            raise RuntimeError("release unlocked lock")
        if self.holder == "plain":
            self.holder = None
            self._plain.release()
            return
        self.holder = None
        if sched is not None and me is not None:
            sched.point("released")

    def locked(self) -> bool:
        return self.holder is not None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def point(where: str) -> None:
    """A yield point for code outside ``SchedLock`` (the fake driver's calls)."""
    sched = _active
    if sched is not None:
        sched.point(where)


@dataclass
class Explored:
    """What ``explore`` covered."""

    schedules: int = 0
    max_steps: int = 0
    truncated: bool = False


def explore(
    run_one: Callable[[Scheduler], None],
    *,
    preemptions: int | None,
    timeouts: bool = False,
    limit: int = 1_000_000,
) -> Explored:
    """Run ``run_one`` once per schedule, depth first, until all were tried.

    Args:
        run_one: builds the scenario on the scheduler it is given, runs it
            (``sched.run()``) and checks the ledger; raises on a violation.
        preemptions: the most preemptions a schedule may have; None: no bound
            (every schedule).
        timeouts: whether timed waits may also time out.
        limit: stop (and say so) after this many schedules.

    Raises:
        AssertionError: the first violation, with the schedule that shows it.
    """
    explored = Explored()
    stack: list[list[int]] = [[]]
    while stack:
        prefix = stack.pop()
        sched = Scheduler(prefix, timeouts=timeouts)
        try:
            run_one(sched)
        except BaseException as exc:
            raise AssertionError(
                f"schedule #{explored.schedules + 1} {prefix} fails: {exc!r}\n"
                f"steps: {sched.describe()}"
            ) from exc
        explored.schedules += 1
        explored.max_steps = max(explored.max_steps, len(sched.trace))
        if explored.schedules >= limit:
            explored.truncated = True
            break
        used = sum(1 for i in range(len(prefix)) if sched.trace[i][2])
        # Alternatives at each decision past the prefix, deepest last (DFS).
        for i in range(len(prefix), len(sched.trace)):
            options, _pick, preempted = sched.trace[i]
            for alt in range(1, len(options)):
                alt_preempts = _preempts(sched, i, alt)
                if preemptions is None or used + alt_preempts <= preemptions:
                    stack.append([t[1] for t in sched.trace[:i]] + [alt])
            # The default (option 0) continues along this run's own path.
            if preempted:
                used += 1
    return explored


def _preempts(sched: Scheduler, i: int, alt: int) -> int:
    """Whether taking option ``alt`` at decision ``i`` is a preemption."""
    options, _, _ = sched.trace[i]
    if i == 0:
        return 0
    prev_options, prev_pick, _ = sched.trace[i - 1]
    last = prev_options[prev_pick][0]
    still = any(o[0] == last for o in options)
    return int(still and options[alt][0] != last)


def threads_of(sched: Scheduler) -> Iterator[Managed]:
    """The managed threads, for checks after a run."""
    return iter(sched.threads)
