"""Database down mid-load: fail fast through the circuit breaker, recover fast."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate import CircuitOpen, Pool
from tests.faults.conftest import (
    Ledger,
    my_connector,
    my_server_count,
    pg_connector,
    pg_server_count,
)
from tests.faults.load import Backend, Load, my_backend, pg_backend, wait_for

if TYPE_CHECKING:
    from tests.faults.proxy import FaultProxy, Mode

# asyncio (3.11) can drop a connection accepted while the proxy's listener is
# being closed without closing its transport; that is the proxy's, not sqlgate's.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function _SelectorTransport.__del__"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:"
        "pytest.PytestUnraisableExceptionWarning"
    ),
]


def _outage(
    pool: Pool[Any],
    backend: Backend,
    proxy: FaultProxy,
    down: Mode,
    server_count: Any,
    ledger: Ledger,
    connect_timeout: float,
) -> None:
    load = Load(pool, backend, threads=32, acquire_timeout=5.0).start()
    try:
        wait_for(lambda: load.outcomes()["ok"] >= 200, 10, "warm-up")
        # The database goes away: live connections are reset, and new
        # connections are refused (or swallowed).
        t_down = time.monotonic()
        proxy.set_mode("reset")
        proxy.set_mode(down)
        wait_for(lambda: pool.stats().circuit_open, 10, "circuit to open")
        t_open = time.monotonic()
        time.sleep(1.0)  # let callers run against the open circuit
        t_up = time.monotonic()
        proxy.set_mode("pass")
        wait_for(lambda: load.first_ok_after(t_up) is not None, 5, "recovery")
        first_ok = load.first_ok_after(t_up)
        assert first_ok is not None
        wait_for(lambda: load.outcomes(since=first_ok)["ok"] >= 100, 10, "service")
    finally:
        load.finish()
    during = load.outcomes(since=t_open, until=t_up)
    # Callers during the outage saw the circuit at once, with the real error.
    assert during["CircuitOpen"] > 0, during
    assert set(during) <= {"CircuitOpen", "ok", *(e.__name__ for e in backend.dead)}
    errors = [c.error for c in load.calls if t_open <= c.started < t_up and c.error]
    for err in errors:
        if isinstance(err, CircuitOpen):
            assert isinstance(err.__cause__, (*backend.dead, OSError)), err.__cause__
            assert "database unreachable" in str(err)
    # No caller waited out its 5 s timeout: every call during the outage
    # ended within 2 s (the connect timeout bounds the dials before it opens).
    assert load.longest(since=t_down, until=t_up) < 2.5
    assert load.longest(since=t_open, until=t_up) < 0.5
    # Service resumed within a second of the database coming back; when the
    # outage swallowed packets, a probe still stuck in the black hole must
    # first reach its connect timeout (``connect_timeout`` s).
    bound = 1.0 if down == "refuse" else 1.0 + connect_timeout
    assert first_ok - t_up < bound, first_ok - t_up
    # Dials issued for the last callers may still be landing.
    wait_for(
        lambda: pool.stats().dialing == 0 and pool.stats().closing == 0, 10, "settle"
    )
    s = pool.stats()
    assert not s.circuit_open, (repr(pool._core.last_dial_error), proxy.mode)
    assert s.circuit_opens >= 1
    # Ledgers: the driver's opens minus the pool's closes are what is open,
    # and the server holds exactly the pool's connections.
    assert ledger.opened == s.dials
    assert s.dials - s.closed == s.open_connections - s.closing
    wait_for(
        lambda: server_count() == pool.stats().idle + pool.stats().in_use,
        10,
        "server's count of our connections to match the pool's",
    )
    pool.close()
    wait_for(lambda: pool.stats().open_connections == 0, 10, "close")
    pool._core.check()
    wait_for(lambda: server_count() == 0, 10, "server to drop our connections")


@pytest.mark.postgres
@pytest.mark.parametrize("down", ["refuse", "blackhole"])
def test_postgres_down_mid_load(
    pg_proxy: FaultProxy, app_name: str, down: Mode
) -> None:
    ledger = Ledger()
    pool: Pool[Any] = Pool(
        pg_connector(pg_proxy.port, app_name, ledger, timeout=2),
        max_open=8,
        max_idle=8,
        acquire_timeout=5.0,
        name="pg-outage",
    )
    _outage(
        pool, pg_backend(), pg_proxy, down, lambda: pg_server_count(app_name), ledger, 2
    )


@pytest.mark.mysql
@pytest.mark.parametrize("down", ["refuse", "blackhole"])
def test_mysql_down_mid_load(my_proxy: FaultProxy, down: Mode) -> None:
    ledger = Ledger()
    pool: Pool[Any] = Pool(
        my_connector(my_proxy.port, ledger, timeout=1.0),
        max_open=8,
        max_idle=8,
        acquire_timeout=5.0,
        name="my-outage",
    )
    _outage(
        pool,
        my_backend(),
        my_proxy,
        down,
        lambda: my_server_count(ledger.ids),
        ledger,
        1,
    )
