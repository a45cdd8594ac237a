"""sqlgate through a real PgBouncer in transaction pooling mode (docs/pgbouncer.md)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate import Pool
from tests.integrations.conftest import require_postgres

if TYPE_CHECKING:
    from collections.abc import Iterator

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres


#: Attempts at starting PgBouncer, each on another port, when its port is taken.
START_ATTEMPTS = 5
#: Seconds PgBouncer may take to log that it listens, on a loaded machine.
START_BOUND = 15.0
#: Seconds it may take to exit after SIGINT before it is killed.
STOP_BOUND = 5.0


def _listen_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Outgoing connections are given source ports from the ephemeral range, so
    one of them could take a port picked there between this check and
    PgBouncer's bind (and a probe dialing a port it happens to own connects to
    itself). Below the range only explicit binds compete, and a lost race
    shows up as PgBouncer's "Address already in use", which ``bouncer``
    retries on another port.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free loopback port below {low} for pgbouncer")


def _pgbouncer() -> str:
    """The pgbouncer executable; skip (fail under CI=true) when it is absent."""
    exe = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if exe is None:
        reason = "pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required when CI=true)")
        pytest.skip(reason)
    return exe


def _start(exe: str, work: Path, port: int) -> subprocess.Popen[bytes] | None:
    """PgBouncer listening on ``port``; None if the port was taken meanwhile."""
    ini = work / f"pgbouncer-{port}.ini"
    ini.write_text(
        "[databases]\n"
        "* = host=127.0.0.1 port=5432\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {work / 'users.txt'}\n"
        "pool_mode = transaction\n"
        "default_pool_size = 3\n"
        "max_client_conn = 50\n"
        "server_round_robin = 0\n"
    )
    cmd = [exe, str(ini)]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; -u drops to an unprivileged user
        # after reading its configuration.
        cmd[1:1] = ["-u", "postgres"]
    log_path = work / f"pgbouncer-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    # Ready is PgBouncer's own word that it listens: a TCP probe could also
    # be answered by whatever took the port, or by the probe itself.
    listening = f"listening on 127.0.0.1:{port}"
    deadline = time.monotonic() + START_BOUND
    while True:
        text = log_path.read_text(errors="replace")
        if listening in text:
            return proc
        if proc.poll() is not None:
            if "Address already in use" in text:
                return None
            pytest.fail(f"pgbouncer exited with {proc.returncode}:\n{text}")
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"pgbouncer did not listen within {START_BOUND} s:\n{text}")
        time.sleep(0.02)  # polling its log; there is nothing to wait on


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (shut down once clients are done), then SIGKILL; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def bouncer() -> Iterator[str]:
    """A PgBouncer on a free loopback port in front of 127.0.0.1:5432; its DSN.

    Stopped and reaped at the end of the module, whatever happened.
    """
    require_postgres()
    exe = _pgbouncer()
    work = Path(tempfile.mkdtemp(prefix="sqlgate-pgbouncer-"))
    proc = None
    try:
        work.chmod(0o755)
        (work / "users.txt").write_text('"postgres" ""\n')
        for _ in range(START_ATTEMPTS):
            port = _listen_port()
            proc = _start(exe, work, port)
            if proc is not None:
                break
        else:
            pytest.fail(f"pgbouncer found its port taken {START_ATTEMPTS} times")
        yield f"host=127.0.0.1 port={port} user=postgres dbname=test"
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def connect_via(dsn: str, **kwargs: Any) -> Any:
    return psycopg.connect(dsn, autocommit=True, **kwargs)


def test_auto_prepare_breaks_behind_transaction_pooling(bouncer: str) -> None:
    """The failure docs/pgbouncer.md warns about, with psycopg's default."""
    a = connect_via(bouncer)
    b = connect_via(bouncer)
    try:
        sql = "select %s::int + 1 as obs_pgb_prepared"
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):  # noqa: PT012
            for i in range(8):
                # b holds a server connection in a transaction, so a's next
                # statement lands on another server connection.
                if i == 6:
                    b.execute("begin")
                    b.execute("select 1")
                a.execute(sql, (i,)).fetchone()
    finally:
        a.close()
        b.close()


def test_prepare_threshold_none_works(bouncer: str) -> None:
    a = connect_via(bouncer, prepare_threshold=None)
    b = connect_via(bouncer, prepare_threshold=None)
    try:
        sql = "select %s::int + 1 as obs_pgb_unprepared"
        for i in range(8):
            if i == 6:
                b.execute("begin")
                b.execute("select 1")
            assert a.execute(sql, (i,)).fetchone() == (i + 1,)
        b.execute("rollback")
    finally:
        a.close()
        b.close()


def test_pool_queries_and_transactions_through_pgbouncer(bouncer: str) -> None:
    pool: Pool[Any] = Pool(
        lambda: connect_via(bouncer, prepare_threshold=None),
        max_open=4,
        name="127.0.0.1:pgbouncer/test",
    )
    try:
        with pool.connection() as conn:
            conn.execute("drop table if exists obs_pgb_t")
            conn.execute("create table obs_pgb_t (x int)")
        # The same parameterized query many times across pooled connections.
        held = [pool.acquire() for _ in range(4)]
        for round_ in range(3):
            for i, conn in enumerate(held):
                conn.execute("insert into obs_pgb_t values (%s)", (round_ * 4 + i,))
        for conn in held:
            pool.release(conn)
        with pool.connection() as conn, conn.transaction():
            conn.execute("insert into obs_pgb_t values (100)")
            conn.execute("insert into obs_pgb_t values (101)")
        with pool.connection() as conn:
            with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():  # noqa: PT012
                conn.execute("insert into obs_pgb_t values (200)")
                conn.execute("select 1/0")
            row = conn.execute("select count(*), sum(x) from obs_pgb_t").fetchone()
        assert row == (14, sum(range(12)) + 201)
        s = pool.stats()
        assert (s.dials, s.in_use) == (4, 0)
    finally:
        with pool.connection() as conn:
            conn.execute("drop table if exists obs_pgb_t")
        pool.close()


def test_db_handle_through_pgbouncer(bouncer: str) -> None:
    db_mod = pytest.importorskip("sqlgate.db")
    db = db_mod.open(
        lambda: psycopg.connect(bouncer, prepare_threshold=None),
        max_open=3,
        ping_idle=0,  # the liveness check on every checkout, through PgBouncer
        name="pgbouncer/test",
    )
    try:
        db.ping()
        for i in range(12):
            assert db.query_row("select %s::int * 2", (i,)) == (i * 2,)
        with db.begin() as tx:
            assert tx.query_row("select 41 + 1") == (42,)
        assert db.stats().in_use == 0
    finally:
        db.close()


def test_session_settings_do_not_survive_between_transactions(bouncer: str) -> None:
    """Why on_connect must not rely on SET behind transaction pooling."""
    a = connect_via(bouncer, prepare_threshold=None)
    b = connect_via(bouncer, prepare_threshold=None)
    try:
        a.execute("set statement_timeout = '1234ms'")
        assert a.execute("show statement_timeout").fetchone() == ("1234ms",)
        b.execute("begin")  # takes the server connection a's SET landed on
        b.execute("select 1")
        assert a.execute("show statement_timeout").fetchone() != ("1234ms",)
        b.execute("rollback")
        with a.transaction():  # SET LOCAL inside one transaction is safe
            a.execute("set local statement_timeout = '4321ms'")
            assert a.execute("show statement_timeout").fetchone() == ("4321ms",)
    finally:
        a.close()
        b.close()


def _url(bouncer: str, scheme: str, query: str) -> str:
    """The fixture's key=value DSN as a sqlgate URL."""
    parts = dict(item.split("=", 1) for item in bouncer.split())
    return (
        f"{scheme}://{parts['user']}@{parts['host']}:{parts['port']}/"
        f"{parts['dbname']}{query}"
    )


def _interleaved(db: Any, tag: str) -> list[Any]:
    """One parameterized query 8 times on a pinned connection (docs/pgbouncer.md).

    At the 7th, a transaction on another pooled connection takes the server
    connection the first one used so far, so the pinned one moves to another.
    """
    out = []
    with db.conn() as c, contextlib.ExitStack() as stack:
        for i in range(8):
            if i == 6:  # BEGIN takes the server connection c used last
                stack.enter_context(db.begin()).exec("select 1")
            out.append(c.query_row(f"select %s::int + 1 as {tag}", (i,)))
    return out


@pytest.mark.parametrize(
    "query", ["?prepare_threshold=none", "?prepare_threshold=&application_name=dbt"]
)
def test_open_with_prepare_threshold_none_in_the_dsn(bouncer: str, query: str) -> None:
    """docs/pgbouncer.md: the DSN alone turns psycopg's auto-prepare off."""
    import sqlgate

    with sqlgate.open(_url(bouncer, "postgresql", query), max_open=2) as db:
        assert _interleaved(db, "dbt_pgb_dsn") == [(i + 1,) for i in range(8)]
        assert db.stats().dials == 2


def test_open_with_the_plain_dsn_breaks(bouncer: str) -> None:
    """The control: without the parameter the same calls fail as documented."""
    import sqlgate

    with (
        sqlgate.open(_url(bouncer, "postgresql", ""), max_open=2) as db,
        pytest.raises(psycopg.errors.InvalidSqlStatementName),
    ):
        _interleaved(db, "dbt_pgb_plain")


async def _ainterleaved(db: Any) -> list[Any]:
    out = []
    async with await db.conn() as c, contextlib.AsyncExitStack() as stack:
        for i in range(8):
            if i == 6:
                tx = await stack.enter_async_context(await db.begin())
                await tx.exec("select 1")
            # exec with parameters goes through asyncpg's statement cache.
            out.append(await c.exec("select $1::int + 1", (i,)))
    return out


@pytest.mark.parametrize(
    ("query", "works"), [("?statement_cache_size=0", True), ("", False)]
)
def test_open_async_asyncpg_statement_cache_size(
    bouncer: str, query: str, works: bool
) -> None:
    """asyncpg behind transaction pooling: ``?statement_cache_size=0``."""
    import asyncio

    pytest.importorskip("asyncpg")
    import sqlgate

    url = _url(bouncer, "postgresql+asyncpg", query)

    async def main() -> list[Any]:
        async with sqlgate.open_async(url, max_open=2) as db:
            return await _ainterleaved(db)

    if works:
        assert asyncio.run(main()) == [sqlgate.Result(1, None)] * 8
    else:
        with pytest.raises(Exception, match="prepared statement"):
            asyncio.run(main())


def test_asyncpg_deadline_cancels_only_its_own_statement(bouncer: str) -> None:
    """A deadline through PgBouncer stops the caller's statement, not another's.

    asyncpg's protocol CancelRequest (the key PgBouncer gave the client) is
    routed by PgBouncer to the server connection running that client's
    statement; the backend pid a client sees behind PgBouncer is not its
    statement's backend, so ``pg_cancel_backend`` of it cannot be used.
    """
    import asyncio

    pytest.importorskip("asyncpg")
    import sqlgate

    url = _url(bouncer, "postgresql+asyncpg", "?statement_cache_size=0")
    long_sql = "select pg_sleep(7) /* sqlgate-pgb-deadline */"

    async def still_running() -> bool:
        async with await psycopg.AsyncConnection.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True
        ) as admin:
            cur = await admin.execute(
                "select count(*) from pg_stat_activity"
                " where state = 'active' and query = %s",
                (long_sql,),
            )
            row = await cur.fetchone()
        return row is not None and row[0] > 0

    async def main() -> None:
        async with (
            sqlgate.open_async(url, max_open=1) as a,
            sqlgate.open_async(url, max_open=1) as b,
        ):
            await a.exec("select 1")
            await b.exec("select 1")
            other = asyncio.ensure_future(b.query_row("select 1 from pg_sleep(1.0)"))
            started = time.monotonic()
            with pytest.raises(sqlgate.DeadlineExceeded) as caught:
                await a.exec(long_sql, timeout=0.3)
            took = time.monotonic() - started
            assert took < 1.5, f"DeadlineExceeded after {took:.2f} s"
            assert "cancelled on the server" in str(caught.value)
            assert not await still_running()
            assert await other == (1,)  # not cancelled
            assert await a.query_row("select 2") == (2,)
            assert a.stats().in_use == 0
            assert b.stats().in_use == 0

    asyncio.run(main())
