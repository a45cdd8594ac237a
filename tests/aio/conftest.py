"""Fixtures for the AsyncPool tests, and a runner for ``async def`` tests.

Each coroutine test runs in a fresh event loop (``asyncio.run``), so a test
cannot leak tasks or state into the next one.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from tests.aio.fakes import AsyncFakeDriver, FakeClock
from tests.servers import PG_URL


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests under ``asyncio.run`` (no plugin needed)."""
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(func(**kwargs))
    return True


@pytest.fixture
def driver() -> AsyncFakeDriver:
    """A fake async driver whose dials succeed at once."""
    return AsyncFakeDriver()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The AsyncPool's clock (``sqlgate.aiopool.monotonic``), moved by hand.

    Timers inside asyncio (``asyncio.timeout``) still run on the loop's clock.
    """
    clock = FakeClock()
    monkeypatch.setattr("sqlgate.aiopool.monotonic", clock)
    return clock


@pytest.fixture
def gated_driver() -> AsyncFakeDriver:
    """A fake async driver whose dials wait for the test to land or fail them."""
    return AsyncFakeDriver(gated=True)


@pytest.fixture(scope="session")
def pg_dsn(pg_up: None) -> str:
    """The test database's URL (psycopg and asyncpg); ``pg_up`` probed it."""
    return PG_URL
