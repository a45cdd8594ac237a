"""The outage tests' recovery claim, on the pure core: once the probe closes the
circuit, no dial issued during the outage is still in flight to fail late, so
a recovered pool cannot re-open its circuit on stale failures.

This is what made a re-opened circuit after recovery a proxy problem rather
than a pool one (see ``proxy.py``): while the circuit is open only the probe
dials, and only once every dial issued before the circuit opened has settled.
"""

from __future__ import annotations

from sqlgate._core import Connect, PoolConfig, PoolCore, Waiter


def _tickets(core: PoolCore[object]) -> list[int]:
    return [e.ticket for e in core.take_effects() if isinstance(e, Connect)]


def test_no_stale_dial_outlives_the_probe_that_closes_the_circuit() -> None:
    config = PoolConfig(max_open=8, max_connecting=2, circuit_after=3)
    core: PoolCore[object] = PoolCore(config, rng=lambda: 0.0)
    waiters = [core.acquire(0.0) for _ in range(4)]
    assert all(isinstance(w, Waiter) for w in waiters)
    first = _tickets(core)
    assert len(first) == 2
    # The database goes away: dials fail; the third failure opens the circuit
    # while the fourth dial is still in flight.
    core.connect_failed(first[0], ConnectionRefusedError(), 1.0)
    (third,) = _tickets(core)
    core.connect_failed(first[1], ConnectionRefusedError(), 1.0)
    (fourth,) = _tickets(core)
    core.connect_failed(third, ConnectionRefusedError(), 1.0)
    assert core.circuit_open
    core.check()
    # No probe while a dial issued before the circuit opened is in flight,
    # even once the probe is due.
    assert core.expire(10.0) is None
    assert _tickets(core) == []
    # That dial fails late: still open, and now the probe may go.
    core.connect_failed(fourth, ConnectionRefusedError(), 10.0)
    assert core.circuit_open
    core.expire(20.0)
    (probe,) = _tickets(core)
    assert core.stats().dialing == 1
    # The database is back: the probe lands and closes the circuit with
    # nothing else in flight, so nothing stale can fail afterwards.
    core.connected(probe, object(), 20.1)
    assert not core.circuit_open
    assert core.stats().dialing == 0
    assert not core.failing
    core.check()
