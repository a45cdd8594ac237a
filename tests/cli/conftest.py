"""Fixtures for the CLI tests: servers (skip unless CI=true), leak cleanup."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate.cli import main
from tests.cli import helpers

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def pg(pg_up: None) -> str:
    return helpers.PG_DSN


@pytest.fixture
def mysql(my_up: None) -> str:
    return helpers.MYSQL_DSN


@pytest.fixture(autouse=True)
def _close_leaked() -> Iterator[None]:
    yield
    helpers.close_leaked()


Stress = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def stress(tmp_path: Path) -> Stress:
    """Run ``sqlgate stress ARGS --json F`` in-process; return (rc, report)."""

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        out = tmp_path / "report.json"
        out.unlink(missing_ok=True)
        rc = main(["stress", *args, "--no-progress", "--json", str(out)])
        return rc, json.loads(out.read_text())

    return run
