"""A cancel, interrupt or dead link while a Tx's or Conn's rows fetch ends that session.

Rows from ``Tx``/``Conn`` (and ``AsyncTx``/``AsyncConn``) hold only a cursor;
the connection belongs to the session. If their fetch (or the result's close)
is cut short, the connection's protocol state is unknown, so the session that
owns it is marked lost exactly as a dead link under ``exec`` marks it: a
transaction ends and its connection is discarded, a Conn refuses further use
and its ``close()`` discards the connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

import sqlgate
from sqlgate.drivers.sqlite import SqliteAdapter
from tests.db.helpers import CutCursor, DeadOnLinkGone, LinkGone, figures

if TYPE_CHECKING:
    from sqlgate.aiodb import AsyncRows

TX_LOST = r"^transaction already ended: its connection was lost$"
CONN_LOST = r"^connection was lost; close this Conn and take another$"


def _cut(rows: sqlgate.Rows, exc: BaseException, *, in_close: bool = False) -> None:
    rows._cursor = CutCursor(rows._cursor, exc, in_close=in_close)  # type: ignore[assignment]


# -- sync -------------------------------------------------------------------


def test_interrupt_in_tx_rows_fetch_ends_the_tx_and_discards_its_connection(
    db: sqlgate.DB,
) -> None:
    tx = db.begin()
    rows = tx.query("select 1")
    _cut(rows, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        next(rows)
    assert rows.closed
    assert tx.done
    with pytest.raises(sqlgate.Error, match=TX_LOST):
        tx.exec("select 1")
    with pytest.raises(sqlgate.Error, match=TX_LOST):
        tx.commit()
    assert figures(db) == (0, 0, 1)
    assert db.query_row("select 2") == (2,)  # a fresh connection serves on


def test_interrupt_in_tx_query_row_ends_the_tx(db: sqlgate.DB) -> None:
    tx = db.begin()
    real = tx._adapter.query

    def query(conn: Any, sql: str, params: Any) -> Any:
        return CutCursor(real(conn, sql, params), KeyboardInterrupt())

    tx._adapter = SqliteAdapter()
    tx._adapter.query = query  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        tx.query_row("select 1")
    assert tx.done
    assert figures(db) == (0, 0, 1)


def test_interrupt_in_tx_rows_close_ends_the_tx(db: sqlgate.DB) -> None:
    tx = db.begin()
    rows = tx.query("select 1")
    _cut(rows, KeyboardInterrupt(), in_close=True)
    with pytest.raises(KeyboardInterrupt):
        rows.all()
    assert tx.done
    with pytest.raises(sqlgate.Error, match=TX_LOST):
        tx.rollback()
    assert figures(db) == (0, 0, 1)


def test_dead_link_in_tx_rows_fetch_ends_the_tx(db: sqlgate.DB) -> None:
    tx = db.begin()
    rows = tx.query("select 1")
    rows._adapter = DeadOnLinkGone()
    _cut(rows, LinkGone("socket closed"))
    with pytest.raises(LinkGone):
        rows.first()
    assert tx.done
    with pytest.raises(sqlgate.Error, match=TX_LOST):
        tx.exec("select 1")
    assert figures(db) == (0, 0, 1)


def test_sql_error_in_tx_rows_fetch_keeps_the_tx(db: sqlgate.DB) -> None:
    tx = db.begin()
    rows = tx.query("select 1")
    _cut(rows, LinkGone("not dead for sqlite"))
    with pytest.raises(LinkGone):
        next(rows)
    assert not tx.done
    assert tx.query_row("select 3") == (3,)
    tx.commit()
    assert figures(db) == (0, 1, 0)


def test_interrupt_in_rows_of_a_committed_tx_releases_nothing_twice(
    db: sqlgate.DB,
) -> None:
    tx = db.begin()
    rows = tx.query("select 1")
    tx.commit()
    # The commit closed the rows (issue 13, item 3): nothing reads through
    # the connection it gave back, so no interrupt can reach it either.
    assert rows.closed
    with pytest.raises(sqlgate.Error, match="rows closed: their transaction"):
        next(rows)
    assert figures(db) == (0, 1, 0)


def test_interrupt_in_conn_rows_fetch_marks_the_conn_lost(db: sqlgate.DB) -> None:
    conn = db.conn()
    rows = conn.query("select 1")
    _cut(rows, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        next(rows)
    with pytest.raises(sqlgate.Error, match=CONN_LOST):
        conn.exec("select 1")
    with pytest.raises(sqlgate.Error, match=CONN_LOST):
        conn.begin()
    assert figures(db) == (1, 0, 0)
    conn.close()
    assert figures(db) == (0, 0, 1)


def test_interrupt_in_conn_tx_rows_fetch_ends_the_tx_and_the_conn(
    db: sqlgate.DB,
) -> None:
    conn = db.conn()
    tx = conn.begin()
    rows = tx.query("select 1")
    _cut(rows, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        next(rows)
    assert tx.done
    with pytest.raises(sqlgate.Error, match=TX_LOST):
        tx.exec("select 1")
    with pytest.raises(sqlgate.Error, match=CONN_LOST):
        conn.ping()
    conn.close()
    assert figures(db) == (0, 0, 1)


def test_interrupt_in_rows_of_an_ended_conn_tx_marks_the_conn_lost(
    db: sqlgate.DB,
) -> None:
    conn = db.conn()
    tx = conn.begin()
    rows = tx.query("select 1")
    tx.commit()
    # The commit closed the rows (issue 13, item 3): they cannot read, so
    # no interrupt can reach the Conn's connection through them.
    with pytest.raises(sqlgate.Error, match="rows closed: their transaction"):
        next(rows)
    assert conn.query_row("select 2") == (2,)
    conn.close()
    assert figures(db) == (0, 1, 0)


# -- asyncio ----------------------------------------------------------------


class _Hang:
    """Wraps the adapter's cursor: its fetch waits until cancelled."""

    def __init__(self, real: Any, entered: asyncio.Event) -> None:
        self._real = real
        self.entered = entered
        self.columns = real.columns

    async def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._real.aclose()


async def _cancel_mid_fetch(rows: AsyncRows) -> None:
    """Cancel ``rows.first()`` once its fetch is in flight (a fixed point)."""
    entered = asyncio.Event()
    rows._cursor = _Hang(rows._cursor, entered)  # type: ignore[assignment]
    task = asyncio.create_task(rows.first())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rows.closed


async def _adb() -> sqlgate.AsyncDB:
    db = sqlgate.open_async("sqlite:///:memory:")
    await db.exec("select 1")
    return db


def test_cancel_in_async_tx_rows_fetch_ends_the_tx_and_discards_its_connection() -> (
    None
):
    async def main() -> None:
        db = await _adb()
        try:
            tx = await db.begin()
            await _cancel_mid_fetch(await tx.query("select 1"))
            assert tx.done
            with pytest.raises(sqlgate.Error, match=TX_LOST):
                await tx.exec("select 1")
            with pytest.raises(sqlgate.Error, match=TX_LOST):
                await tx.commit()
            assert figures(db) == (0, 0, 1)
            assert await db.query_row("select 2") == (2,)
        finally:
            await db.close()

    asyncio.run(main())


def test_cancel_in_async_conn_rows_fetch_marks_the_conn_lost() -> None:
    async def main() -> None:
        db = await _adb()
        try:
            conn = await db.conn()
            await _cancel_mid_fetch(await conn.query("select 1"))
            with pytest.raises(sqlgate.Error, match=CONN_LOST):
                await conn.exec("select 1")
            assert figures(db) == (1, 0, 0)
            await conn.close()
            assert figures(db) == (0, 0, 1)
        finally:
            await db.close()

    asyncio.run(main())


def test_cancel_in_async_conn_tx_rows_fetch_ends_the_tx_and_the_conn() -> None:
    async def main() -> None:
        db = await _adb()
        try:
            conn = await db.conn()
            tx = await conn.begin()
            await _cancel_mid_fetch(await tx.query("select 1"))
            assert tx.done
            with pytest.raises(sqlgate.Error, match=TX_LOST):
                await tx.rollback()
            with pytest.raises(sqlgate.Error, match=CONN_LOST):
                await conn.ping()
            await conn.close()
            assert figures(db) == (0, 0, 1)
        finally:
            await db.close()

    asyncio.run(main())


def test_cancel_in_rows_of_a_committed_async_tx_releases_nothing_twice() -> None:
    async def main() -> None:
        db = await _adb()
        try:
            tx = await db.begin()
            rows = await tx.query("select 1")
            await tx.commit()
            # The commit closed the rows (issue 13, item 3).
            with pytest.raises(sqlgate.Error, match="rows closed: their transaction"):
                await anext(rows)
            assert figures(db) == (0, 1, 0)
        finally:
            await db.close()

    asyncio.run(main())


def test_cancel_in_async_tx_rows_close_ends_the_tx() -> None:
    class _HangInClose(_Hang):
        async def aclose(self) -> None:
            await self._real.aclose()
            self.entered.set()
            await asyncio.Event().wait()

    async def main() -> None:
        db = await _adb()
        try:
            tx = await db.begin()
            rows = await tx.query("select 1")
            entered = asyncio.Event()
            rows._cursor = _HangInClose(rows._cursor, entered)  # type: ignore[assignment]
            task = asyncio.create_task(rows.close())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert tx.done
            assert figures(db) == (0, 0, 1)
        finally:
            await db.close()

    asyncio.run(main())
