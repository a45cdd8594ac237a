"""Fixtures for integration tests: PostgreSQL (skips when absent unless CI=true)."""

from __future__ import annotations

import pytest

from tests.servers import PG_CONNINFO, require_postgres

__all__ = ["PG_DSN", "PG_URL", "require_postgres"]

PG_DSN = PG_CONNINFO + " connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> str:
    require_postgres()
    return PG_URL
