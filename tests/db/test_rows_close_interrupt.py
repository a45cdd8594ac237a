"""A cancel or interrupt while Rows close their cursor leaves no connection in use."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiosqlite
import pytest

import sqlgate


class _InterruptingCursor:
    """Stands in for the adapter's cursor: its close is interrupted."""

    columns = ("x",)

    def close(self) -> None:
        raise KeyboardInterrupt


def test_interrupt_in_rows_close_discards_the_connection() -> None:
    db = sqlgate.open(lambda: sqlite3.connect(":memory:", check_same_thread=False))
    try:
        rows = db.query("select 1")
        rows._cursor = _InterruptingCursor()  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            rows.close()
        assert rows.closed
        s = db.stats()
        # The cursor's fate, so the protocol state, is unknown: closed, not kept.
        assert (s.in_use, s.idle, s.broken_closed) == (0, 0, 1)
    finally:
        db.close()


class _HangingCursor:
    """Stands in for the adapter's cursor: its close waits until cancelled."""

    columns = ("x",)

    def __init__(self, entered: asyncio.Event) -> None:
        self.entered = entered

    async def aclose(self) -> None:
        self.entered.set()
        await asyncio.Event().wait()


def test_cancel_in_async_rows_close_discards_the_connection() -> None:
    async def main() -> None:
        async def connect() -> Any:
            return await aiosqlite.connect(":memory:")

        db = sqlgate.open_async(connect)
        try:
            rows = await db.query("select 1")
            entered = asyncio.Event()
            rows._cursor = _HangingCursor(entered)  # type: ignore[assignment]
            task = asyncio.create_task(rows.close())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert rows.closed
            s = db.stats()
            assert (s.in_use, s.idle, s.broken_closed) == (0, 0, 1)
        finally:
            await db.close()

    asyncio.run(main())
