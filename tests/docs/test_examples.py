"""Every fenced Python block in README.md and docs/*.md runs as pasted.

Each ```` ```python ```` block is run on its own, in a fresh interpreter, in
an empty temporary directory, against the real test servers (PostgreSQL on
127.0.0.1:5432, MariaDB on 127.0.0.1:3306; a block that names one is skipped
when it is absent, and fails under ``CI=true``). It passes when it exits 0
with no traceback. A block must therefore be complete: its own imports
(``import sqlgate.observe.otel``, not just ``import sqlgate``), its own
``asyncio.run``, and it cleans up what it creates. Other fences (``sh``,
plain text, indented samples) are not run.

Markers a block may carry (comments the reader sees too):

``# placeholder: <what the reader puts there>``
    At the end of a line that holds a DSN or a libpq conninfo string the
    reader is meant to replace (``"postgresql://app@pgbouncer:6432/app"``).
    The collector swaps each such string on that line for the test server
    of the same kind, keeping the scheme and the query string:
    ``postgresql[+driver]://`` and ``postgres://`` -> postgres@127.0.0.1:5432/test,
    ``mysql[+driver]://`` and ``mariadb://`` -> root@127.0.0.1:3306/test,
    ``"host=... port=... dbname=..."`` -> the PostgreSQL test conninfo. To
    give the test value yourself, end the comment with ``(test: "VALUE")``.
    A DSN that already names a test server needs no marker.

``# example: not run (<why>)``
    Anywhere in the block: the block is collected but skipped, with the
    reason. Use it only for what cannot run here (a cloud endpoint, say);
    prefer a placeholder.

Adding a section to the README or docs/ needs nothing here: the collector
finds new blocks by itself, numbered by file and line in the test id.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import PG_CONNINFO, require_mysql, require_postgres

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_PLACEHOLDER = re.compile(r"#\s*placeholder:[^\n]*$")
_TEST_VALUE = re.compile(r'\(test:\s*"([^"]*)"\)\s*$')
_NOT_RUN = re.compile(r"#\s*example:\s*not run\s*\(([^)]*)\)")
_STRING = re.compile(r'"([^"\n]*)"')
_URL = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+]*)://[^/?\s]*(?:/[^?\s]*)?(?P<query>\?\S*)?$"
)
_CONNINFO = re.compile(r"^(?:\s*\w+=\S+)+\s*$")

#: Where a placeholder of each family points in the tests.
_SERVERS = {
    "postgresql": "postgres@127.0.0.1:5432/test",
    "postgres": "postgres@127.0.0.1:5432/test",
    "mysql": "root@127.0.0.1:3306/test",
    "mariadb": "root@127.0.0.1:3306/test",
}


@dataclass(frozen=True)
class Example:
    """One fenced block: where it is and its code (placeholders resolved)."""

    path: Path
    line: int
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _test_value(text: str) -> str | None:
    """The test server's equivalent of a placeholder string, or None."""
    url = _URL.match(text)
    if url is not None:
        family = url["scheme"].split("+")[0]
        server = _SERVERS.get(family)
        if server is None:
            return None
        return f"{url['scheme']}://{server}{url['query'] or ''}"
    if _CONNINFO.match(text) and "host=" in text:
        return PG_CONNINFO
    return None


def _resolve(line: str, where: str) -> str:
    """``line`` with its placeholder strings swapped for test values."""
    marker = _PLACEHOLDER.search(line)
    if marker is None:
        return line
    given = _TEST_VALUE.search(marker.group(0))
    code = line[: marker.start()]
    swapped = 0

    def swap(match: re.Match[str]) -> str:
        nonlocal swapped
        value = given.group(1) if given is not None else _test_value(match[1])
        if value is None:
            return match[0]
        swapped += 1
        return f'"{value}"'

    code = _STRING.sub(swap, code)
    if not swapped:
        raise ValueError(f"{where}: '# placeholder' on a line with no DSN to replace")
    return code + marker.group(0)


def collect() -> list[Example]:
    """Every Python block of README.md and docs/*.md, in file order."""
    examples = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            code = "\n".join(_resolve(row, where) for row in match[1].splitlines())
            not_run = _NOT_RUN.search(code)
            examples.append(
                Example(path, line, code, None if not_run is None else not_run[1])
            )
    return examples


EXAMPLES = collect()


def test_the_collector_finds_the_blocks() -> None:
    """The fence pattern did not silently stop matching."""
    readme = [e for e in EXAMPLES if e.path.name == "README.md"]
    assert len(readme) >= 6
    assert any("asyncio.run(" in e.code for e in readme)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_runs_as_pasted(example: Example, tmp_path: Path) -> None:
    if example.not_run is not None:
        pytest.skip(f"{example.id}: not run ({example.not_run})")
    if "127.0.0.1:5432" in example.code or "port=5432" in example.code:
        require_postgres()
    if "127.0.0.1:3306" in example.code:
        require_mysql()
    proc = subprocess.run(
        [sys.executable, "-c", example.code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 0, (
        f"{example.id} failed (exit {proc.returncode}):\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr


def test_placeholder_swaps_keep_scheme_and_query() -> None:
    line = (
        '    "postgresql://app@pgbouncer:6432/app?prepare_threshold=none",'
        "  # placeholder: x"
    )
    assert _resolve(line, "t") == (
        '    "postgresql://postgres@127.0.0.1:5432/test?prepare_threshold=none",'
        "  # placeholder: x"
    )
    conninfo = '"host=pgbouncer port=6432 dbname=app"  # placeholder: your PgBouncer'
    assert _resolve(conninfo, "t").startswith(f'"{PG_CONNINFO}"')
    given = (
        'url = "https://example.com/x"  # placeholder: yours (test: "file:///dev/null")'
    )
    assert _resolve(given, "t").startswith('url = "file:///dev/null"')
    with pytest.raises(ValueError, match="no DSN to replace"):
        _resolve("x = 1  # placeholder: nothing", "t")
