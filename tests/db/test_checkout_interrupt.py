"""A cancel or interrupt during the checkout ping leaves no connection in use."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiosqlite
import pytest

import sqlgate
from sqlgate.drivers.aiosqlite import AiosqliteAdapter
from sqlgate.drivers.sqlite import SqliteAdapter


class _InterruptingPing(SqliteAdapter):
    def ping(self, conn: sqlite3.Connection) -> None:
        raise KeyboardInterrupt


def test_interrupt_in_checkout_ping_discards_the_connection() -> None:
    db = sqlgate.open(
        lambda: sqlite3.connect(":memory:", check_same_thread=False), ping_idle=0
    )
    try:
        assert db.query_row("select 1") == (1,)  # dialed, released: now pinged
        db._adapter = _InterruptingPing()
        with pytest.raises(KeyboardInterrupt):
            db.exec("select 1")
        s = db.stats()
        # The protocol state is unknown after an interrupt: closed, not reused.
        assert (s.in_use, s.idle, s.broken_closed) == (0, 0, 1)
    finally:
        db.close()


class _HangingPing(AiosqliteAdapter):
    def __init__(self, entered: asyncio.Event) -> None:
        super().__init__()
        self.entered = entered

    async def ping(self, conn: aiosqlite.Connection) -> None:
        self.entered.set()
        await asyncio.Event().wait()  # until cancelled


def test_cancel_in_checkout_ping_discards_the_connection() -> None:
    async def main() -> None:
        async def connect() -> Any:
            return await aiosqlite.connect(":memory:")

        db = sqlgate.open_async(connect, ping_idle=0)
        try:
            assert await db.query_row("select 1") == (1,)
            entered = asyncio.Event()
            db._adapter = _HangingPing(entered)
            task = asyncio.create_task(db.exec("select 1"))
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            s = db.stats()
            assert (s.in_use, s.idle, s.broken_closed) == (0, 0, 1)
        finally:
            await db.close()

    asyncio.run(main())


def test_async_ping_first_with_a_connect_callable() -> None:
    """The adapter is known only after the first dial, which ping makes."""

    async def main() -> None:
        async def connect() -> Any:
            return await aiosqlite.connect(":memory:")

        db = sqlgate.open_async(connect)
        try:
            await db.ping()
            assert db.paramstyle == "qmark"
            assert await db.query_row("select 2 where 0") is None
            assert await db.query_row("select 3") == (3,)
        finally:
            await db.close()

    asyncio.run(main())


def test_conn_begin_checks_read_only() -> None:
    db = sqlgate.open("sqlite:///:memory:")
    try:
        with db.conn() as c, pytest.raises(TypeError, match="read_only must be a bool"):
            c.begin(read_only="yes")  # type: ignore[arg-type]
    finally:
        db.close()


def test_async_conn_begin_checks_read_only() -> None:
    async def main() -> None:
        db = sqlgate.open_async("sqlite:///:memory:")
        try:
            async with await db.conn() as c:
                with pytest.raises(TypeError, match="read_only must be a bool"):
                    await c.begin(read_only="yes")  # type: ignore[arg-type]
        finally:
            await db.close()

    asyncio.run(main())
