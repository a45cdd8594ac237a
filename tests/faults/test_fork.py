"""Fork safety: the child forgets the parent's connections and never touches them."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sqlgate import Pool
from tests.faults.conftest import pg_connector, pg_server_count

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # The child inherits pytest's threads' state; we only call os._exit there.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def test_child_gets_a_fresh_pool_and_parent_keeps_its_connection(
    pg_up: None, app_name: str
) -> None:
    parent = os.getpid()
    # The child's sessions carry their own application_name, so the parent's
    # count on the server is exact: a backend of the exited child may still be
    # shutting down (listed in pg_stat_activity) when waitpid returns.
    to_parent = pg_connector(5432, app_name)
    to_child = pg_connector(5432, f"{app_name}-child")

    def connect() -> Any:
        return to_parent() if os.getpid() == parent else to_child()

    pool: Pool[Any] = Pool(connect, max_open=4, max_idle=4)
    held = pool.acquire()
    idle = pool.acquire()
    pool.release(idle)
    assert held.execute("select 1").fetchone() == (1,)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 0
        try:
            s = pool.stats()
            if (s.open_connections, s.in_use, s.idle, s.dials) != (0, 0, 0, 0):
                code = 2
            else:
                with pool.connection() as conn:
                    if conn.execute("select 2").fetchone() != (2,):
                        code = 3
                pool.close()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
    # The parent's sessions survived the child: both still answer.
    assert held.execute("select 3").fetchone() == (3,)
    pool.release(held)
    with pool.connection() as conn:
        assert conn.execute("select 4").fetchone() == (4,)
    s = pool.stats()
    assert (s.open_connections, s.dials, s.closed) == (2, 2, 0)
    assert pg_server_count(app_name) == 2
    pool.close()
    pool._core.check()
