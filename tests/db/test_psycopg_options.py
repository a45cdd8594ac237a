"""psycopg's own DSN options (``prepare_threshold``...): not libpq parameters."""

from __future__ import annotations

import asyncio

import pytest

import sqlgate
import sqlgate.db
from sqlgate.drivers import parse


def test_psycopg_options_are_not_libpq_parameters() -> None:
    pytest.importorskip("psycopg")
    from sqlgate.drivers.postgres import connect_options, conninfo_kwargs

    dsn = parse(
        "postgresql://u:pw@h:5432/d?prepare_threshold=none&prepared_max=7"
        "&application_name=a&sslmode=disable"
    )
    assert conninfo_kwargs(dsn) == {
        "application_name": "a",
        "sslmode": "disable",
        "host": "h",
        "port": 5432,
        "user": "u",
        "password": "pw",
        "dbname": "d",
    }
    kwargs, attrs = connect_options(dsn)
    assert kwargs["prepare_threshold"] is None
    assert kwargs["autocommit"] is True
    assert "prepared_max" not in kwargs
    assert attrs == {"prepared_max": 7}
    for query, want in [("0", 0), ("12", 12), ("", None), ("None", None)]:
        got = connect_options(parse(f"postgresql://h/d?prepare_threshold={query}"))
        assert got[0]["prepare_threshold"] == want
    assert "prepare_threshold" not in connect_options(parse("postgresql://h/d"))[0]


@pytest.mark.parametrize("value", ["-1", "often", "1.5"])
def test_bad_prepare_threshold(value: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(
        ValueError,
        match=rf"bad value for parameter 'prepare_threshold' in "
        rf"postgresql://u:\*\*\*@h/d\?prepare_threshold={value}: '{value}'",
    ):
        sqlgate.open(f"postgresql://u:Sekr3t@h/d?prepare_threshold={value}")


def test_prepare_threshold_reaches_psycopg(pg_dsn: str) -> None:
    with sqlgate.open(pg_dsn + "&prepare_threshold=none&prepared_max=3") as db:
        with db.conn() as c:
            assert c.raw.prepare_threshold is None
            assert c.raw.prepared_max == 3
        assert db.query_row("select 1") == (1,)

    async def main() -> None:
        adb = sqlgate.open_async(pg_dsn + "&prepare_threshold=0")
        async with adb, await adb.conn() as c:
            assert c.raw.prepare_threshold == 0
            assert c.raw.prepared_max == 100  # psycopg's default, untouched

    asyncio.run(main())
