"""Fixtures for integration tests: PostgreSQL (skips when absent unless CI=true)."""

from __future__ import annotations

import os

import pytest

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def require_postgres() -> None:
    """Skip (or, when CI=true, fail) unless the test PostgreSQL answers."""
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_DSN).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required when CI=true)")
        pytest.skip(reason)


@pytest.fixture
def pg_url() -> str:
    require_postgres()
    return PG_URL
