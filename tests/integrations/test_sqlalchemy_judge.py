"""scripts/sqlalchemy_suite.py: JUnit names of SQLAlchemy's suite as node ids."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sqlalchemy_suite.py"


def judge() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sqlalchemy_suite", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sqlalchemy_suite", module)
    spec.loader.exec_module(module)
    return module


def test_issue16_rerun_names_per_backend_classes_by_their_base(tmp_path: Path) -> None:
    for path in ("test/engine/test_reconnect.py", "test/dialect/mysql/test_query.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    to_node = judge().junit_to_node
    cases = {
        # A __backend__ class: SQLAlchemy's plugin copies it per backend
        # after collection; pytest can select only the class it copies.
        "test.engine.test_reconnect.InvalidateDuringResultTest_sqlite+pysqlite_3_40_1"
        "::test_invalidate_on_results": "test/engine/test_reconnect.py"
        "::InvalidateDuringResultTest::test_invalidate_on_results",
        "test.dialect.mysql.test_query.MatchTest_mariadb+pymysql_10_11_6"
        "::test_x[a-b]": "test/dialect/mysql/test_query.py::MatchTest::test_x[a-b]",
        # Plain and class-parametrized classes are collected by their names.
        "test.engine.test_reconnect.MockReconnectTest::test_reconnect": (
            "test/engine/test_reconnect.py::MockReconnectTest::test_reconnect"
        ),
        "test.engine.test_reconnect.RealPrePingTest_fast_slow::test_y": (
            "test/engine/test_reconnect.py::RealPrePingTest_fast_slow::test_y"
        ),
    }
    assert {junit: to_node(tmp_path, junit) for junit in cases} == cases


def test_issue16_listed_tests_are_found_whatever_their_parameters() -> None:
    function_of = judge().function_of
    base = "test.dialect.sqlite.test_dialect.DialectTest_sqlite+pysqlite_3_40_1"
    assert function_of(f"{base}::test_pool_class") == "test_pool_class"
    assert function_of(f"{base}::test_pool_class[x-QueuePool]") == "test_pool_class"
    # A parameter holding "::" (an in-memory SQLite URI).
    uri = "sqlite+pysqlite:///file::memory:?cache=shared&uri=true"
    assert function_of(f"{base}::test_pool_class[{uri}-QueuePool]") == "test_pool_class"
