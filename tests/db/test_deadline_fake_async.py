"""Per-call deadlines and outside cancellation on the asyncio handle (fake driver).

As in ``test_deadline_fake.py``, a fake statement ends only when the
adapter's ``cancel`` wakes it ("hang" never does: only a task cancel ends it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from tests.db.deadline_fakes import AFakeAdapter, Boom, Cancelled, afake_db, figures

if TYPE_CHECKING:
    from collections.abc import Coroutine

T = 0.05


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_cancelled_and_reused() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, conns = afake_db(adapter)
        with pytest.raises(sqlgate.DeadlineExceeded) as info:
            await db.exec("sleep", timeout=T)
        assert isinstance(info.value.__cause__, Cancelled)
        assert (adapter.cancels, adapter.asked) == (1, [False])
        assert figures(db) == (0, 1, 0, 0)
        assert (await db.exec("select 1")).rows_affected == 1
        assert len(conns) == 1
        await db.close()

    run(main())


def test_not_reusable_is_discarded() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        adapter.reusable = False
        db, conns = afake_db(adapter)
        with pytest.raises(sqlgate.DeadlineExceeded):
            await db.query_row("sleep", timeout=T)
        assert figures(db) == (0, 0, 1, 0)
        assert len(conns) == 1
        await db.close()

    run(main())


@pytest.mark.parametrize("result", [False, RuntimeError("adapter bug")])
def test_no_cancel_cuts_the_wait(result: bool | BaseException) -> None:
    """No cancel could be sent: the call stops waiting; the connection is discarded."""

    async def main() -> None:
        adapter = AFakeAdapter()
        adapter.cancel_result = result
        db, _ = afake_db(adapter)
        with pytest.raises(sqlgate.DeadlineExceeded, match="could not cancel") as info:
            await db.exec("hang", timeout=T)
        assert isinstance(info.value.__cause__, asyncio.CancelledError)
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0  # the cut was taken back
        assert figures(db) == (0, 0, 1, 0)
        assert (await db.exec("select 1")).rows_affected == 1
        await db.close()

    run(main())


def test_completed_despite_the_cancel() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, _ = afake_db(adapter)
        assert (await db.exec("race", timeout=T)).rows_affected == 1
        assert adapter.cancels == 1
        assert figures(db) == (0, 1, 0, 0)
        await db.close()

    run(main())


def test_own_error_after_the_cancel() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, _ = afake_db(adapter)
        with pytest.raises(sqlgate.DeadlineExceeded) as info:
            await db.exec("fail", timeout=T)
        assert isinstance(info.value.__cause__, Boom)
        assert figures(db) == (0, 0, 1, 0)  # not the driver's "cancelled": discarded
        await db.close()

    run(main())


def test_waiting_for_a_connection_leaves_no_waiter() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, _ = afake_db(adapter, max_open=1)
        held = await db.conn()
        waits = db.stats().wait_count
        with pytest.raises(sqlgate.DeadlineExceeded, match="waiting") as info:
            await db.exec("select 1", timeout=T)
        assert isinstance(info.value.__cause__, sqlgate.PoolTimeout)
        s = db.stats()
        assert (s.in_use, s.waiting, s.wait_count - waits, s.timeouts) == (1, 0, 1, 1)
        await held.close()
        assert figures(db) == (0, 1, 0, 0)
        await db.close()

    run(main())


@pytest.mark.parametrize("reusable", [True, False])
def test_outside_cancel_cancels_on_the_server(reusable: bool) -> None:
    """wait_for around a call without timeout=: the cancel reaches the server."""

    async def main() -> None:
        adapter = AFakeAdapter()
        adapter.reusable = reusable
        db, _ = afake_db(adapter)
        with pytest.raises(TimeoutError) as info:
            await asyncio.wait_for(db.exec("hang"), T)
        assert not isinstance(info.value, sqlgate.DeadlineExceeded)
        assert adapter.cancels == 1
        assert adapter.asked == [False]
        assert figures(db) == (0, int(reusable), int(not reusable), 0)
        await db.close()

    run(main())


def test_outside_cancel_with_a_later_deadline() -> None:
    """An outside cancel before the call's own deadline is a CancelledError."""

    async def main() -> None:
        adapter = AFakeAdapter()
        db, _ = afake_db(adapter)
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(T):
                await db.exec("hang", timeout=10)
        assert not isinstance(info.value, sqlgate.DeadlineExceeded)
        assert adapter.cancels == 1
        assert figures(db) == (0, 1, 0, 0)
        await db.close()

    run(main())


def test_task_group_cancellation() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, _ = afake_db(adapter, max_open=2)

        async def fail_soon() -> None:
            await asyncio.sleep(T)
            raise Boom("a sibling failed")

        async def both() -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(db.exec("hang"))
                group.create_task(fail_soon())

        with pytest.raises(ExceptionGroup) as info:
            await both()
        assert info.group_contains(Boom)
        assert adapter.cancels == 1
        assert figures(db) == (0, 1, 0, 0)
        await db.close()

    run(main())


def test_transaction_rolled_back_after_an_outside_cancel() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, conns = afake_db(adapter)
        tx = await db.begin()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tx.exec("hang"), T)
        assert tx.done
        assert adapter.asked == [True]
        with pytest.raises(sqlgate.Error, match="rolled back"):
            await tx.exec("select 1")
        assert conns[0].statements == ["BEGIN", "hang", "ROLLBACK"]
        assert figures(db) == (0, 1, 0, 0)
        await db.close()

    run(main())


def test_transaction_deadline() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, conns = afake_db(adapter)
        async with db.conn() as conn:
            tx = await conn.begin()
            with pytest.raises(sqlgate.DeadlineExceeded):
                await tx.query_row("sleep", timeout=T)
            assert tx.done
            await conn.exec("select 1")
        assert conns[0].statements == ["BEGIN", "sleep", "ROLLBACK", "select 1"]
        assert figures(db) == (0, 1, 0, 0)
        await db.close()

    run(main())


def test_statement_timeout_default() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, _ = afake_db(adapter, statement_timeout=T)
        with pytest.raises(sqlgate.DeadlineExceeded):
            await db.exec("sleep")
        async with db.begin() as tx:
            with pytest.raises(sqlgate.DeadlineExceeded):
                await tx.exec("sleep")
        assert adapter.cancels == 2
        assert figures(db) == (0, 1, 0, 0)
        await db.close()

    run(main())


def test_bad_timeout() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, conns = afake_db(adapter)
        with pytest.raises(ValueError, match=r"timeout .*-2"):
            await db.exec("select 1", timeout=-2)
        with pytest.raises(TypeError, match=r"timeout .*'soon'"):
            db.query("select 1", timeout="soon")  # type: ignore[arg-type]
        assert conns == []
        await db.close()

    run(main())


def test_commit_deadline_discards() -> None:
    async def main() -> None:
        adapter = AFakeAdapter()
        db, _ = afake_db(adapter)
        tx = await db.begin()

        async def slow_commit(conn: Any, read_only: bool) -> None:
            await adapter._run(conn, "sleep")

        adapter.commit = slow_commit  # type: ignore[method-assign]
        with pytest.raises(sqlgate.DeadlineExceeded):
            await tx.commit(timeout=T)
        assert tx.done
        assert figures(db) == (0, 0, 1, 0)
        await db.close()

    run(main())
