"""A Tx begun on a Conn refuses every method once that Conn is lost or closed.

``Conn.begin`` pins the transaction to the Conn's connection. When the Conn
is marked lost (a dead link or an interrupt under one of its own statements
or Rows), the transaction's connection is in an unknown state; when the Conn
is closed, the connection went back to the pool and may already serve another
caller. Either way the Tx must not touch it again: it ends, refuses with
``sqlgate.Error``, and the connection is discarded (lost) exactly once.
"""

from __future__ import annotations

import asyncio

import pytest

import sqlgate
from tests.db.helpers import ACutCursor, CutCursor, LinkGone, figures

TX_LOST = r"^transaction already ended: its connection was lost$"
TX_CLOSED = r"^transaction already ended: its Conn was closed$"


def _lose(conn: sqlgate.Conn) -> None:
    """Mark ``conn`` lost: an interrupt while its own Rows fetch."""
    rows = conn.query("select 1")
    rows._cursor = CutCursor(rows._cursor, KeyboardInterrupt())  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        next(rows)


@pytest.mark.parametrize("method", ["exec", "query", "query_row", "commit", "rollback"])
def test_tx_of_a_lost_conn_refuses(db: sqlgate.DB, method: str) -> None:
    conn = db.conn()
    tx = conn.begin()
    _lose(conn)
    call = getattr(tx, method)
    args = ("select 1",) if method.startswith(("exec", "query")) else ()
    with pytest.raises(sqlgate.Error, match=TX_LOST):
        call(*args)
    assert tx.done
    # Refused again, the same way; nothing was sent or released.
    with pytest.raises(sqlgate.Error, match=TX_LOST):
        tx.exec("select 1")
    assert figures(db) == (1, 0, 0)
    conn.close()
    assert figures(db) == (0, 0, 1)
    assert db.query_row("select 2") == (2,)
    assert figures(db) == (0, 1, 1)


def test_tx_of_a_lost_conn_refuses_in_with_block(db: sqlgate.DB) -> None:
    conn = db.conn()
    with pytest.raises(sqlgate.Error, match=TX_LOST), conn.begin() as tx:
        _lose(conn)
    assert tx.done
    conn.close()
    assert figures(db) == (0, 0, 1)


def test_tx_of_a_closed_conn_refuses(db: sqlgate.DB) -> None:
    conn = db.conn()
    tx = conn.begin()
    conn.close()  # the connection is back in the pool (rolled back)
    assert figures(db) == (0, 1, 0)
    for call in (lambda: tx.exec("select 1"), tx.commit, tx.rollback):
        with pytest.raises(sqlgate.Error, match=TX_CLOSED):
            call()
    assert tx.done
    assert figures(db) == (0, 1, 0)


# -- asyncio ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["exec", "query", "query_row", "commit", "rollback"])
def test_async_tx_of_a_lost_conn_refuses(method: str) -> None:
    async def main() -> None:
        db = sqlgate.open_async("sqlite:///:memory:")
        try:
            await db.exec("select 1")
            conn = await db.conn()
            tx = await conn.begin()
            adapter = db._drv
            real_is_dead = adapter.is_dead
            adapter.is_dead = lambda c, e: isinstance(e, LinkGone)  # type: ignore[method-assign,assignment]
            try:
                rows = await conn.query("select 1")
                rows._cursor = ACutCursor(rows._cursor, LinkGone())  # type: ignore[assignment]
                with pytest.raises(LinkGone):
                    await rows.first()
            finally:
                adapter.is_dead = real_is_dead  # type: ignore[method-assign]
            call = getattr(tx, method)
            args = ("select 1",) if method.startswith(("exec", "query")) else ()
            with pytest.raises(sqlgate.Error, match=TX_LOST):
                await call(*args)
            assert tx.done
            assert figures(db) == (1, 0, 0)
            await conn.close()
            assert figures(db) == (0, 0, 1)
            assert await db.query_row("select 2") == (2,)
        finally:
            await db.close()

    asyncio.run(main())


def test_async_tx_of_a_closed_conn_refuses() -> None:
    async def main() -> None:
        db = sqlgate.open_async("sqlite:///:memory:")
        try:
            await db.exec("select 1")
            conn = await db.conn()
            tx = await conn.begin()
            await conn.close()
            assert figures(db) == (0, 1, 0)
            with pytest.raises(sqlgate.Error, match=TX_CLOSED):
                await tx.exec("select 1")
            with pytest.raises(sqlgate.Error, match=TX_CLOSED):
                await tx.commit()
            assert tx.done
            assert figures(db) == (0, 1, 0)
        finally:
            await db.close()

    asyncio.run(main())
