"""``db.py`` is generated from ``db_async.py``: the checked-in file is current.

``.ci/run`` runs ``tools/async_to_sync.py --check`` too; this test says the
same to whoever runs pytest locally. It also pins a few of the converter's
rules on small sources, so a change in them is seen here before it is seen
as a surprise diff in ``db.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "async_to_sync", ROOT / "tools" / "async_to_sync.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["async_to_sync"] = module
    spec.loader.exec_module(module)
    return module


def test_db_py_is_generated_from_db_async_py(tool: ModuleType) -> None:
    for source, target in tool.PAIRS.items():
        want = tool.convert((ROOT / source).read_text(), source, target)
        have = (ROOT / target).read_text()
        assert have == want, (
            f"{target} is stale: edit {source}, then run python tools/async_to_sync.py"
        )


def test_db_py_says_it_is_generated() -> None:
    head = (ROOT / "src/sqlgate/db.py").read_text().splitlines()[:2]
    assert head == [
        "# Generated from db_async.py by tools/async_to_sync.py: do not edit.",
        "# Edit src/sqlgate/db_async.py, then run: python tools/async_to_sync.py",
    ]


SOURCE = '''\
"""Uses ``AsyncDB``."""

import asyncio
from collections.abc import Awaitable, Callable

from sqlgate.aiopool import AsyncPool

__all__ = ["AsyncThing"]


class AsyncThing:
    """An ``AsyncThing`` over an ``AsyncPool``.

    Raises:
        sqlgate.Error: the pool is bound to another event loop.

    Cancellation:
        Nothing is left behind.
    """

    async def __aenter__(self) -> "AsyncThing":
        return self

    async def run(self, f: Callable[[], Awaitable[int]], rows: AsyncPool) -> int:
        """Run ``f``.

        Returns:
            What it returns.

        Cancellation:
            As ``AsyncPool.acquire``.
        """
        # the lock of the asyncio side
        lock = asyncio.Lock()
        if True:  # ASYNC
            await asyncio.sleep(0)
        else:
            print("sync")  # kept
        if False:  # ASYNC
            print("sync only")
        got = [r async for r in rows]
        async with lock:
            return (await f()) + len(got)
'''

EXPECTED = '''\
"""Uses ``DB``."""

import threading
from collections.abc import Callable

from sqlgate.pool import Pool

__all__ = ["AsyncThing"]


class AsyncThing:
    """An ``AsyncThing`` over a ``Pool``."""

    def __enter__(self) -> "AsyncThing":
        return self

    def run(self, f: Callable[[], int], rows: Pool) -> int:
        """Run ``f``.

        Returns:
            What it returns.
        """
        # the lock of the asyncio side
        lock = threading.Lock()
        print("sync")  # kept
        print("sync only")
        got = list(rows)
        with lock:
            return f() + len(got)
'''


def test_conversion_rules(tool: ModuleType) -> None:
    out = tool.convert(SOURCE, "src/sqlgate/x_async.py", "src/sqlgate/x.py")
    assert out == tool.header("src/sqlgate/x_async.py") + EXPECTED


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("if True:  # ASYNC\n    a = 1\nelif x:\n    a = 2\n", "not elif"),
        ("if False:  # ASYNC\n    a = 1\nelse:\n    a = 2\n", "takes no else"),
    ],
)
def test_malformed_async_branches_are_refused(
    tool: ModuleType, source: str, message: str
) -> None:
    with pytest.raises(tool.ConversionError, match=message):
        tool.convert(source, "src/sqlgate/x_async.py", "src/sqlgate/x.py")
