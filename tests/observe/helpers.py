from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes import FakeDriver, wait_until

if TYPE_CHECKING:
    from sqlgate import Pool


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float | None]] = []

    def created(self, seconds: float) -> None:
        self.events.append(("created", seconds))

    def waited(self, seconds: float) -> None:
        self.events.append(("waited", seconds))

    def used(self, seconds: float) -> None:
        self.events.append(("used", seconds))

    def timed_out(self) -> None:
        self.events.append(("timed_out", None))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.events if k == kind)


def settle(pool: Pool[Any]) -> None:
    wait_until(
        lambda: pool.stats().dialing == 0 and pool.stats().closing == 0,
        what="dials and closes to settle",
    )


def close_clean(pool: Pool[Any], driver: FakeDriver) -> None:
    pool.close()
    settle(pool)
    s = pool.stats()
    assert (s.open_connections, s.in_use, s.idle, s.waiting) == (0, 0, 0, 0)
    assert driver.opened == driver.closed
    with pool._lock:
        pool._core.check()
