"""``exec_many`` outside a transaction is all or nothing, on every driver.

sqlite3, aiosqlite and duckdb would otherwise keep the sets that ran before
the failing one (each committed by itself); the handle runs them in one
transaction (issue 14 review).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING

import pytest

import sqlgate

if TYPE_CHECKING:
    from pathlib import Path


def test_sqlite_exec_many_is_all_or_nothing(tmp_path: Path) -> None:
    with sqlgate.open(f"sqlite:///{tmp_path / 'a.db'}", max_open=1) as db:
        db.exec("create table t (id integer primary key)")
        db.exec("insert into t values (1)")
        with pytest.raises(sqlite3.IntegrityError):
            db.exec_many("insert into t values (?)", [(7,), (8,), (1,)])
        assert db.query("select id from t order by id").all() == [(1,)]
        # A good batch commits every set, visible to another connection.
        assert db.exec_many("insert into t values (?)", [(2,), (3,)]).rows_affected == 2
        other = sqlite3.connect(tmp_path / "a.db")
        try:
            got = other.execute("select id from t order by id").fetchall()
        finally:
            other.close()
        assert got == [(1,), (2,), (3,)]
        s = db.stats()
        assert (s.dials, s.broken_closed, s.in_use) == (1, 0, 0)


def test_aiosqlite_exec_many_is_all_or_nothing(tmp_path: Path) -> None:
    pytest.importorskip("aiosqlite")

    async def main() -> None:
        db = sqlgate.open_async(f"sqlite:///{tmp_path / 'b.db'}", max_open=1)
        try:
            await db.exec("create table t (id integer primary key)")
            await db.exec("insert into t values (1)")
            with pytest.raises(sqlite3.IntegrityError):
                await db.exec_many("insert into t values (?)", [(7,), (8,), (1,)])
            rows = await (await db.query("select id from t order by id")).all()
            assert rows == [(1,)]
            result = await db.exec_many("insert into t values (?)", [(2,), (3,)])
            assert result.rows_affected == 2
            rows = await (await db.query("select id from t order by id")).all()
            assert rows == [(1,), (2,), (3,)]
            s = db.stats()
            assert (s.dials, s.broken_closed, s.in_use) == (1, 0, 0)
        finally:
            await db.close()

    asyncio.run(main())


def test_duckdb_exec_many_is_all_or_nothing(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    path = str(tmp_path / "c.duckdb")
    with sqlgate.open(lambda: duckdb.connect(path), max_open=1) as db:
        db.exec("create table t (id int primary key)")
        db.exec("insert into t values (1)")
        with pytest.raises(duckdb.ConstraintException):
            db.exec_many("insert into t values (?)", [(7,), (8,), (1,)])
        assert db.query("select id from t order by id").all() == [(1,)]
        db.exec_many("insert into t values (?)", [(2,), (3,)])
        assert db.query("select id from t order by id").all() == [(1,), (2,), (3,)]
        s = db.stats()
        assert (s.dials, s.broken_closed, s.in_use) == (1, 0, 0)
