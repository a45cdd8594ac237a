"""Shared fixtures: the leak check every pool test ends with (Go's ``closeDB``),
and the servers (``pg_up``, ``my_up``: see ``tests.servers``).

Tests marked ``slow`` (soaks) run only when asked for: ``-m slow`` (or any
marker expression naming it without ``not``), or ``SQLGATE_SLOW=1``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from tests import servers
from tests.fakes import FakeDriver, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlgate.pool import Pool


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Skip ``slow`` tests unless they were asked for."""
    markexpr = str(config.getoption("markexpr") or "")
    wanted = "slow" in markexpr and "not slow" not in markexpr
    if wanted or os.environ.get("SQLGATE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow soak: run with -m slow or SQLGATE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def assert_closed_clean(pool: Pool[Any], driver: FakeDriver) -> None:
    """Close ``pool`` and require that nothing leaked.

    Pre: the test released every connection it acquired. Post (asserted):
    every dial has landed and been closed, the driver has no live connection,
    the pool counts none, and ``check()`` passes.
    """
    pool.close()
    # Dials and closes run on pool-owned threads; let the stragglers land.
    wait_until(
        lambda: pool.stats().dialing == 0 and pool.stats().closing == 0,
        what="dials and closes to settle after close()",
    )
    stats = pool.stats()
    assert stats.in_use == 0, f"test left {stats.in_use} connection(s) in use"
    assert stats.idle == 0
    assert stats.waiting == 0
    assert stats.open_connections == 0
    assert driver.opened - driver.closed == 0, (
        f"driver leaked: opened={driver.opened} closed={driver.closed}"
    )
    with pool._lock:
        pool._core.check()


@pytest.fixture
def leak_check() -> Iterator[Callable[[Pool[Any], FakeDriver], None]]:
    """Register (pool, driver) pairs; at teardown each must close clean."""
    pairs: list[tuple[Pool[Any], FakeDriver]] = []

    def register(pool: Pool[Any], driver: FakeDriver) -> None:
        pairs.append((pool, driver))

    yield register
    for pool, driver in pairs:
        assert_closed_clean(pool, driver)


@pytest.fixture(scope="session")
def pg_up() -> None:
    """The test PostgreSQL answers (else skip; fail when CI=true)."""
    servers.require_postgres()


@pytest.fixture(scope="session")
def my_up() -> None:
    """The test MariaDB answers (else skip; fail when CI=true)."""
    servers.require_mysql()
