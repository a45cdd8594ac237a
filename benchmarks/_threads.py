"""Thread workloads shared by the threaded scenarios."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from time import perf_counter, perf_counter_ns, sleep
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from benchmarks.contenders import Contender


@dataclass
class LoopResult:
    """What a timed loop of many threads produced.

    Attributes:
        counts: cycles completed by each thread.
        waits_ns: every acquire's duration, all threads together (ns).
        elapsed: seconds from the start signal to the stop signal.
    """

    counts: list[int]
    waits_ns: list[int]
    elapsed: float

    @property
    def throughput(self) -> float:
        return sum(self.counts) / self.elapsed

    @property
    def fairness(self) -> float:
        """Most cycles by one thread / fewest by one thread (inf if one starved)."""
        low = min(self.counts)
        return max(self.counts) / low if low else float("inf")


def timed_loop(
    contender: Contender,
    threads: int,
    seconds: float,
    work: Callable[[Any], object],
) -> LoopResult:
    """``threads`` threads acquire, ``work(handle)``, release, until ``seconds`` pass.

    All threads start together (a barrier); each records how long each of its
    acquires took. Errors in a thread are re-raised here.
    """
    acquire, release = contender.acquire, contender.release
    stop = False
    counts = [0] * threads
    waits: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def body(i: int) -> None:
        mine = waits[i]
        note = mine.append
        n = 0
        try:
            barrier.wait()
            while not stop:
                t0 = perf_counter_ns()
                handle = acquire()
                note(perf_counter_ns() - t0)
                try:
                    work(handle)
                finally:
                    release(handle)
                n += 1
        except BaseException as exc:
            errors.append(exc)
        counts[i] = n

    pool = [
        threading.Thread(target=body, args=(i,), daemon=True) for i in range(threads)
    ]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = perf_counter()
    sleep(seconds)
    stop = True
    elapsed = perf_counter() - t0
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return LoopResult(counts, [w for ws in waits for w in ws], elapsed)


@dataclass
class BurstResult:
    """What a burst of simultaneous requests produced.

    Attributes:
        latencies: each request's acquire duration (s).
        total: seconds from the go signal until the last release.
    """

    latencies: list[float]
    total: float


def burst(contender: Contender, requests: int, hold: float) -> BurstResult:
    """``requests`` threads ask at once (one go signal), hold ``hold`` s, release."""
    acquire, release = contender.acquire, contender.release
    go = threading.Event()
    ready = threading.Barrier(requests + 1)
    latencies = [0.0] * requests
    ends = [0.0] * requests
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            ready.wait()
            go.wait()
            t0 = perf_counter()
            handle = acquire()
            latencies[i] = perf_counter() - t0
            sleep(hold)
            release(handle)
            ends[i] = perf_counter()
        except BaseException as exc:
            errors.append(exc)

    pool = [
        threading.Thread(target=body, args=(i,), daemon=True) for i in range(requests)
    ]
    for t in pool:
        t.start()
    ready.wait()
    sleep(0.005)  # let every thread reach go.wait()
    start = perf_counter()
    go.set()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return BurstResult(latencies, max(ends) - start)


def mean_sleep(seconds: float, n: int = 200) -> float:
    """How long ``time.sleep(seconds)`` really takes here, on average."""
    t0 = perf_counter()
    for _ in range(n):
        sleep(seconds)
    return (perf_counter() - t0) / n
