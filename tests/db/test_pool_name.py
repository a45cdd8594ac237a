"""The pool's name (``db.client.connection.pool.name``): from the DSN, no secret."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest

import sqlgate
import sqlgate.db
from sqlgate.drivers import parse

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("target", "name"),
    [
        (
            "postgresql://app:Sekr3t@db.example.com:6432/orders",
            "db.example.com:6432/orders",
        ),
        (
            "postgres://app:Sekr3t@db.example.com/orders?sslmode=require",
            "db.example.com:5432/orders",
        ),
        ("postgresql+asyncpg://u@10.1.2.3:5433/x", "10.1.2.3:5433/x"),
        ("postgresql:///orders", "localhost:5432/orders"),
        ("postgresql://u:p@[::1]:5432/t", "[::1]:5432/t"),
        ("mysql://root:Sekr3t@127.0.0.1/test", "127.0.0.1:3306/test"),
        ("mariadb://root@my.host:3307/shop", "my.host:3307/shop"),
        ("sqlite:///:memory:", "sqlite::memory:"),
        ("sqlite:////var/lib/app.db", "sqlite:/var/lib/app.db"),
    ],
)
def test_pool_name_of_a_dsn(target: str, name: str) -> None:
    assert parse(target).pool_name() == name


def test_relative_sqlite_name_is_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse("sqlite:///app.db?timeout=2").pool_name() == (
        "sqlite:" + os.path.join(str(tmp_path), "app.db")
    )


def test_open_names_the_pool_without_user_or_password() -> None:
    db = sqlgate.open("postgresql://app:Sekr3t@127.0.0.1:1/orders?connect_timeout=1")
    try:
        assert db.pool.name == "127.0.0.1:1/orders"
        assert repr(db) == "<sqlgate.DB '127.0.0.1:1/orders' open>"
    finally:
        db.close()
    with sqlgate.open("sqlite:///:memory:") as mem:
        assert mem.pool.name == "sqlite::memory:"


def test_name_knob_overrides() -> None:
    with sqlgate.open("sqlite:///:memory:", name="orders-db") as db:
        assert db.pool.name == "orders-db"
    adb = sqlgate.open_async("sqlite:///:memory:", name="orders-adb")
    assert adb.pool.name == "orders-adb"
    assert repr(adb) == "<sqlgate.AsyncDB 'orders-adb' open>"
    asyncio.run(adb.close())
    with sqlgate.open(
        lambda: __import__("sqlite3").connect(":memory:"), name="cb"
    ) as c:
        assert c.pool.name == "cb"


def test_open_async_default_name() -> None:
    adb = sqlgate.open_async("postgresql+asyncpg://u:Sekr3t@h.example:5439/d")
    assert adb.pool.name == "h.example:5439/d"
    asyncio.run(adb.close())


@pytest.mark.parametrize("bad", ["", 3, b"x"])
def test_bad_name(bad: object) -> None:
    with pytest.raises(
        TypeError, match=f"name must be a non-empty str or None, got {bad!r}"
    ):
        sqlgate.open("sqlite:///:memory:", name=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a non-empty str or None"):
        sqlgate.open_async("sqlite:///:memory:", name=bad)  # type: ignore[arg-type]
