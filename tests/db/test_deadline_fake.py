"""Per-call deadlines on the blocking handle, with a fake driver (no server).

The fake statements end only when the adapter's ``cancel`` wakes them, so the
order of events is forced: a test never relies on a statement being slow
enough. What is checked after each step: the error, its chain, how the
adapter was asked, and the pool's exact figures.
"""

from __future__ import annotations

import math
import threading

import pytest

import sqlgate
from tests.db.deadline_fakes import Boom, Cancelled, FakeAdapter, fake_db, figures

T = 0.05  # a deadline that passes while the fake statement waits for its cancel


def test_error_class() -> None:
    assert issubclass(sqlgate.DeadlineExceeded, sqlgate.Error)
    assert issubclass(sqlgate.DeadlineExceeded, TimeoutError)
    assert sqlgate.DeadlineExceeded.__module__ == "sqlgate"
    assert "DeadlineExceeded" in sqlgate.__all__


def test_cancelled_and_reused() -> None:
    adapter = FakeAdapter()
    db, conns = fake_db(adapter)
    with pytest.raises(
        sqlgate.DeadlineExceeded, match="cancelled on the server"
    ) as info:
        db.exec("sleep", timeout=T)
    assert isinstance(info.value.__cause__, Cancelled)
    assert adapter.cancels == 1
    assert adapter.asked == [False]
    assert figures(db) == (0, 1, 0, 0)
    # The next call is served, on the same connection.
    assert db.exec("select 1", timeout=T).rows_affected == 1
    assert len(conns) == 1
    assert conns[0].statements == ["sleep", "select 1"]
    assert adapter.cancels == 1
    db.close()


def test_not_reusable_is_discarded() -> None:
    adapter = FakeAdapter()
    adapter.reusable = False
    db, conns = fake_db(adapter)
    with pytest.raises(sqlgate.DeadlineExceeded):
        db.query_row("sleep", timeout=T)
    assert figures(db) == (0, 0, 1, 0)
    assert conns[0].closed
    db.exec("select 1")
    assert len(conns) == 2
    db.close()


@pytest.mark.parametrize("result", [False, RuntimeError("adapter bug")])
def test_no_cancel_discards(result: bool | BaseException) -> None:
    """cancel False (or raising): the statement runs on; its failure is a miss."""
    adapter = FakeAdapter()
    adapter.cancel_result = result
    db, conns = fake_db(adapter)
    done: list[BaseException] = []

    def call() -> None:
        try:
            db.exec("fail", timeout=T)
        except BaseException as exc:
            done.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert adapter.cancelled.wait(5)
    assert caller.is_alive()  # nothing could stop the statement
    conns[0].woken.set()  # it ends by itself, with an error of its own
    caller.join(5)
    (exc,) = done
    assert isinstance(exc, sqlgate.DeadlineExceeded)
    assert "could not cancel" in str(exc)
    assert isinstance(exc.__cause__, Boom)
    assert adapter.asked == []
    assert figures(db) == (0, 0, 1, 0)
    db.close()


def test_completed_despite_the_cancel() -> None:
    """The statement finished before the cancel took effect: its result stands."""
    adapter = FakeAdapter()
    db, _conns = fake_db(adapter)
    assert db.exec("race", timeout=T).rows_affected == 1
    assert adapter.cancels == 1
    assert figures(db) == (0, 1, 0, 0)
    db.close()


def test_fast_statement_is_never_cancelled() -> None:
    adapter = FakeAdapter()
    db, _ = fake_db(adapter)
    for _ in range(50):
        db.exec("select 1", timeout=10)
    assert adapter.cancels == 0
    assert figures(db) == (0, 1, 0, 0)
    db.close()


def test_deadline_passed_before_sending() -> None:
    adapter = FakeAdapter()
    db, conns = fake_db(adapter)
    db.exec("warm")
    with pytest.raises(sqlgate.DeadlineExceeded, match="nothing was sent"):
        db.exec("select 1", timeout=0)
    assert conns[0].statements == ["warm"]
    assert adapter.cancels == 0
    assert figures(db) == (0, 1, 0, 0)
    db.close()


def test_deadline_while_waiting_for_a_connection() -> None:
    adapter = FakeAdapter()
    db, _ = fake_db(adapter, max_open=1)
    held = db.conn()
    waits = db.stats().wait_count  # the first dial was waited for
    with pytest.raises(
        sqlgate.DeadlineExceeded, match="waiting for a connection"
    ) as info:
        db.exec("select 1", timeout=T)
    assert isinstance(info.value.__cause__, sqlgate.PoolTimeout)
    s = db.stats()
    assert (s.in_use, s.waiting, s.wait_count - waits, s.timeouts) == (1, 0, 1, 1)
    held.close()
    assert figures(db) == (0, 1, 0, 0)
    db.close()


def test_pool_acquire_timeout_shorter_stays_pool_timeout() -> None:
    adapter = FakeAdapter()
    db, _ = fake_db(adapter, max_open=1, acquire_timeout=0.01)
    held = db.conn()
    with pytest.raises(sqlgate.PoolTimeout) as info:
        db.exec("select 1", timeout=10)
    assert not isinstance(info.value, sqlgate.DeadlineExceeded)
    held.close()
    assert figures(db) == (0, 1, 0, 0)
    db.close()


def test_inside_a_transaction_rolls_back() -> None:
    adapter = FakeAdapter()
    db, conns = fake_db(adapter)
    tx = db.begin()
    tx.exec("insert")
    with pytest.raises(sqlgate.DeadlineExceeded):
        tx.exec("sleep", timeout=T)
    assert adapter.asked == [True]
    assert tx.done
    with pytest.raises(
        sqlgate.Error, match="rolled back: a statement in it was cancelled"
    ):
        tx.exec("select 1")
    assert conns[0].statements == ["BEGIN", "insert", "sleep", "ROLLBACK"]
    assert figures(db) == (0, 1, 0, 0)
    db.close()


def test_inside_a_transaction_not_reusable() -> None:
    adapter = FakeAdapter()
    adapter.reusable = False
    db, conns = fake_db(adapter)
    tx = db.begin()
    with pytest.raises(sqlgate.DeadlineExceeded):
        tx.query_row("sleep", timeout=T)
    assert tx.done
    with pytest.raises(sqlgate.Error, match="connection discarded"):
        tx.commit()
    assert conns[0].rollbacks == 0
    assert figures(db) == (0, 0, 1, 0)
    db.close()


def test_transaction_on_a_conn() -> None:
    adapter = FakeAdapter()
    db, _conns = fake_db(adapter)
    with db.conn() as conn:
        tx = conn.begin()
        with pytest.raises(sqlgate.DeadlineExceeded):
            tx.exec("sleep", timeout=T)
        assert tx.done
        # The Conn keeps its connection, clean, and serves the next call.
        conn.exec("select 1")
        assert figures(db) == (1, 0, 0, 0)
    assert figures(db) == (0, 1, 0, 0)
    db.close()


@pytest.mark.parametrize("reusable", [True, False])
def test_conn(reusable: bool) -> None:
    adapter = FakeAdapter()
    adapter.reusable = reusable
    db, _ = fake_db(adapter)
    conn = db.conn()
    with pytest.raises(sqlgate.DeadlineExceeded):
        conn.exec("sleep", timeout=T)
    if reusable:
        conn.exec("select 1")
    else:
        with pytest.raises(sqlgate.Error, match="connection was lost"):
            conn.exec("select 1")
    conn.close()
    assert figures(db) == (0, int(reusable), int(not reusable), 0)
    db.close()


def test_every_call_takes_a_timeout() -> None:
    adapter = FakeAdapter()
    db, _ = fake_db(adapter)
    with pytest.raises(sqlgate.DeadlineExceeded):
        db.exec_many("sleep", [(1,)], timeout=T)
    with pytest.raises(sqlgate.DeadlineExceeded):
        db.query("sleep", timeout=T)
    with pytest.raises(sqlgate.DeadlineExceeded):
        db.ping(timeout=0)
    with pytest.raises(sqlgate.DeadlineExceeded):
        db.begin(timeout=0)
    with db.conn(timeout=1) as conn:
        with pytest.raises(sqlgate.DeadlineExceeded):
            conn.query_row("sleep", timeout=T)
        with pytest.raises(sqlgate.DeadlineExceeded):
            conn.query("sleep", timeout=T)
        with pytest.raises(sqlgate.DeadlineExceeded):
            conn.exec_many("sleep", [(1,)], timeout=T)
        with pytest.raises(sqlgate.DeadlineExceeded):
            conn.ping(timeout=0)
        with pytest.raises(sqlgate.DeadlineExceeded):
            conn.begin(timeout=0)
    assert adapter.cancels == 5
    assert figures(db) == (0, 1, 0, 0)
    db.close()


def test_statement_timeout_is_the_default() -> None:
    adapter = FakeAdapter()
    db, _ = fake_db(adapter, statement_timeout=T)
    with pytest.raises(sqlgate.DeadlineExceeded):
        db.exec("sleep")
    with pytest.raises(sqlgate.DeadlineExceeded):
        db.exec("sleep", timeout=None)
    # A call's own timeout wins; math.inf is no deadline at all.
    adapter.cancel_result = False
    assert db.exec("select 1", timeout=math.inf).rows_affected == 1
    assert adapter.cancels == 2
    db.close()


@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (-1, ValueError, "-1"),
        (float("nan"), ValueError, "nan"),
        ("1", TypeError, "'1'"),
        (True, TypeError, "True"),
    ],
)
def test_bad_timeout(value: object, error: type[Exception], shown: str) -> None:
    adapter = FakeAdapter()
    db, conns = fake_db(adapter)
    for call in (
        lambda: db.exec("select 1", timeout=value),  # type: ignore[arg-type]
        lambda: db.query_row("select 1", timeout=value),  # type: ignore[arg-type]
        lambda: db.begin(timeout=value),  # type: ignore[arg-type]
        lambda: db.ping(timeout=value),  # type: ignore[arg-type]
    ):
        with pytest.raises(error, match=rf"timeout .*{shown}"):
            call()
    assert conns == []  # nothing was dialed, nothing queued
    db.close()


@pytest.mark.parametrize("value", [0, -1.0, "x"])
def test_bad_statement_timeout(value: object) -> None:
    with pytest.raises((TypeError, ValueError), match="statement_timeout"):
        sqlgate.open("sqlite:///:memory:", statement_timeout=value)  # type: ignore[arg-type]


def test_commit_deadline_discards() -> None:
    """A COMMIT caught by its deadline: outcome unknown, connection discarded."""
    adapter = FakeAdapter()
    db, _conns = fake_db(adapter)
    tx = db.begin()
    adapter.commit = lambda conn, read_only: adapter._run(conn, "sleep")  # type: ignore[method-assign]
    with pytest.raises(sqlgate.DeadlineExceeded):
        tx.commit(timeout=T)
    assert tx.done
    with pytest.raises(sqlgate.Error, match="ended by a failed committed"):
        tx.exec("select 1")
    assert figures(db) == (0, 0, 1, 0)
    db.close()


def test_rollback_deadline_keeps_a_clean_connection() -> None:
    adapter = FakeAdapter()
    db, _conns = fake_db(adapter)
    tx = db.begin()
    adapter.rollback = lambda conn, read_only: adapter._run(conn, "sleep")  # type: ignore[method-assign]
    with pytest.raises(sqlgate.DeadlineExceeded):
        tx.rollback(timeout=T)
    assert tx.done
    assert figures(db) == (0, 1, 0, 0)
    db.close()
