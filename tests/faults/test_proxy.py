"""The fault proxy itself: each mode does what it says, against the real servers."""

from __future__ import annotations

import socket
import time

import psycopg
import pytest

from tests.faults.conftest import pg_connector
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.postgres


def test_pass_forwards(pg_proxy: FaultProxy, app_name: str) -> None:
    conn = pg_connector(pg_proxy.port, app_name)()
    try:
        assert conn.execute("select 41 + 1").fetchone() == (42,)
    finally:
        conn.close()
    assert pg_proxy.accepted == 1


def test_latency_is_added(pg_proxy: FaultProxy, app_name: str) -> None:
    conn = pg_connector(pg_proxy.port, app_name)()
    try:
        pg_proxy.set_mode("latency", latency=0.1)
        started = time.monotonic()
        conn.execute("select 1").fetchone()
        # A round trip crosses the proxy twice: at least 2 x 100 ms.
        assert time.monotonic() - started >= 0.2
    finally:
        pg_proxy.set_mode("pass")
        conn.close()


def test_reset_kills_existing_and_new(pg_proxy: FaultProxy, app_name: str) -> None:
    conn = pg_connector(pg_proxy.port, app_name)()
    pg_proxy.set_mode("reset")
    assert pg_proxy.open_pipes == 0
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1")
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        pg_connector(pg_proxy.port, app_name)()
    assert pg_proxy.resets == 2
    pg_proxy.set_mode("pass")
    pg_connector(pg_proxy.port, app_name)().close()


def test_blackhole_accepts_and_never_answers(pg_proxy: FaultProxy) -> None:
    pg_proxy.set_mode("blackhole")
    with socket.create_connection(("127.0.0.1", pg_proxy.port), timeout=2) as sock:
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    pg_proxy.set_mode("pass")


def test_refuse_closes_the_listener_and_pass_reopens_it(
    pg_proxy: FaultProxy, app_name: str
) -> None:
    pg_proxy.set_mode("refuse")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", pg_proxy.port), timeout=2)
    pg_proxy.set_mode("pass")
    pg_connector(pg_proxy.port, app_name)().close()


def _cut(sock: socket.socket) -> bool:
    """Whether the server side of ``sock`` is gone (reset or closed)."""
    try:
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
        return sock.recv(1) == b""
    except TimeoutError:
        return False  # still there, just silent
    except OSError:
        return True


def test_refuse_keeps_the_port_and_forwards_nothing_new(
    pg_proxy: FaultProxy, app_name: str
) -> None:
    # Connected just before the switch, whether the proxy accepted it yet or
    # not (then the kernel resets it): nothing reaches the server through it.
    held = socket.create_connection(("127.0.0.1", pg_proxy.port), timeout=2)
    pg_proxy.set_mode("refuse", reset_existing=True)
    held.settimeout(2)
    assert _cut(held)
    held.close()
    # The port stays bound while refusing: nobody else can be given it.
    other = socket.socket()
    with pytest.raises(OSError, match="in use"):
        other.bind(("127.0.0.1", pg_proxy.port))
    other.close()
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", pg_proxy.port), timeout=2)
    port = pg_proxy.port
    t_up = pg_proxy.set_mode("pass")
    assert pg_proxy.switches[-1] == (t_up, "pass", 0.0)
    assert pg_proxy.port == port
    conn = pg_connector(pg_proxy.port, app_name)()
    conn.close()


def test_bad_mode_is_refused(pg_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        pg_proxy.set_mode("flaky")  # type: ignore[arg-type]


def test_stops_by_itself(pg_up: None) -> None:
    proxy = FaultProxy(5432, max_life=0.2).start()
    proxy._thread.join(5)
    assert not proxy._thread.is_alive()
    proxy.stop()
