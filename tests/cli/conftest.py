"""Fixtures for the CLI tests: servers (skip unless CI=true), leak cleanup."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from sqlgate.cli import main
from tests.cli import helpers

if TYPE_CHECKING:
    from pathlib import Path


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _need_server(name: str, port: int) -> None:
    if _reachable(port):
        return
    reason = f"{name} is not reachable on 127.0.0.1:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: server tests must run)")
    pytest.skip(reason)


@pytest.fixture
def pg() -> str:
    _need_server("PostgreSQL", 5432)
    return helpers.PG_DSN


@pytest.fixture
def mysql() -> str:
    _need_server("MariaDB", 3306)
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
