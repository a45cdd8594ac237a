#!/usr/bin/env python3
"""Write the blocking face of sqlgate's handle from its asyncio source.

``src/sqlgate/db_async.py`` is the source; ``src/sqlgate/db.py`` is generated
from it and checked in. Edit the source, then run::

    python tools/async_to_sync.py            # rewrite db.py
    python tools/async_to_sync.py --check    # fail (and show the diff) if stale

The conversion works on a concrete syntax tree (LibCST), so comments,
blank lines and string literals survive exactly; ``ruff`` then removes the
imports only the asyncio side used, sorts them and formats the result.

The rules, after psycopg's ``tools/async_to_sync.py``:

- ``async def`` / ``async for`` / ``async with`` / ``[... async for ...]``
  lose ``async``; ``await x`` becomes ``x``; ``Awaitable[T]`` becomes ``T``.
- Names are mapped (``NAMES``): ``AsyncDB`` -> ``DB``, ``__aenter__`` ->
  ``__enter__``, ``aclose`` -> ``close``, ``StopAsyncIteration`` ->
  ``StopIteration``...; dotted names too (``DOTTED``: ``asyncio.Lock`` ->
  ``threading.Lock``), and modules in imports (``MODULES``).
- ``if True:  # ASYNC`` keeps only its ``else:`` branch (or nothing); ``if
  False:  # ASYNC`` keeps only its body: the few places where the faces truly
  differ, visible in the source.
- Docstrings: the names are mapped, ``Cancellation:`` sections are dropped
  and so are the asyncio-only lines listed in ``ASYNC_ONLY_DOC_LINES``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from pathlib import Path

import libcst as cst

ROOT = Path(__file__).resolve().parent.parent

#: Source -> generated file, relative to the repository root.
PAIRS = {"src/sqlgate/db_async.py": "src/sqlgate/db.py"}

#: Identifiers renamed everywhere (code and docstrings).
NAMES = {
    # the handle
    "AsyncDB": "DB",
    "AsyncTx": "Tx",
    "AsyncConn": "Conn",
    "AsyncRows": "Rows",
    "_AsyncSession": "_Session",
    "_AsyncWatch": "_Watch",
    "open_async": "open",
    # what it stands on
    "AsyncPool": "Pool",
    "AsyncAdapter": "SyncAdapter",
    "AsyncCursor": "Cursor",
    "async_adapter": "sync_adapter",
    "detect_async": "detect_sync",
    # the language's async protocol
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "StopAsyncIteration": "StopIteration",
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
    "AsyncGenerator": "Generator",
    "aclose": "close",
    "anext": "next",
    "aiter": "iter",
}

#: Dotted names renamed in code: asyncio's primitives -> threading's.
DOTTED = {
    "asyncio.Lock": "threading.Lock",
    "asyncio.Event": "threading.Event",
    "asyncio.Condition": "threading.Condition",
    "asyncio.Semaphore": "threading.Semaphore",
    "asyncio.BoundedSemaphore": "threading.BoundedSemaphore",
    "asyncio.Queue": "queue.Queue",
    "asyncio.QueueEmpty": "queue.Empty",
    "asyncio.QueueFull": "queue.Full",
    "asyncio.sleep": "time.sleep",
    "asyncio.TimeoutError": "TimeoutError",
    "contextlib.asynccontextmanager": "contextlib.contextmanager",
    "contextlib.aclosing": "contextlib.closing",
}

#: Modules renamed in imports.
MODULES = {
    "sqlgate.db_async": "sqlgate.db",
    "sqlgate.aiodb": "sqlgate.db",
    "sqlgate.pool_async": "sqlgate.pool",
    "sqlgate.aiopool": "sqlgate.pool",
}

#: Generic wrappers the blocking face drops: ``Awaitable[T]`` -> ``T``, and
#: ``_Opening[T]`` (what ``begin``/``query``/``conn`` return under asyncio: an
#: awaitable that is also an async context manager) -> ``T``.
UNWRAP = frozenset({"Awaitable", "_Opening"})

#: Docstring lines (stripped) that only the asyncio face has.
ASYNC_ONLY_DOC_LINES = (
    "sqlgate.Error: the pool is bound to another event loop.",
    "``async with`` takes the call itself too (no ``await`` needed).",
)

_WORDS = re.compile(r"\b(" + "|".join(map(re.escape, NAMES)) + r")\b")
_ASYNC_KEYWORD = re.compile(r"\basync (for|with|def)\b")
_AWAIT_KEYWORD = re.compile(r"\bawait (?=\S)")
_ARTICLE = re.compile(r"\b([Aa])n (``[^AEIOUaeiou`])")


class ConversionError(Exception):
    """The source uses a form this converter does not handle."""


def _dotted(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a chain of names, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr.value}"
    return None


def _is_async_marker(node: cst.If) -> bool | None:
    """True/False for ``if True|False:  # ASYNC``; None for any other ``if``."""
    test = node.test
    if not (isinstance(test, cst.Name) and test.value in ("True", "False")):
        return None
    body = node.body
    if not isinstance(body, cst.IndentedBlock):
        return None
    comment = body.header.comment
    if comment is None or not comment.value.startswith("# ASYNC"):
        return None
    return test.value == "True"


def convert_docstring(literal: str) -> str:
    """Map a docstring literal's names; drop its asyncio-only parts."""
    quote = '"""' if literal.endswith('"""') else "'''"
    start = literal.index(quote) + len(quote)
    lines = literal[start : -len(quote)].split("\n")
    # The closing quotes' indentation, kept as it is.
    tail = lines.pop() if len(lines) > 1 and not lines[-1].strip() else None
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped == "Cancellation:":
            # A Google-style section: its lines are blank or indented deeper.
            i += 1
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
            ):
                i += 1
            while out and not out[-1].strip():
                out.pop()
            if i < len(lines):
                out.append("")  # before the next section
            continue
        if stripped.startswith("Cancellation:"):
            # A paragraph (in a module docstring): up to the next blank line.
            while i < len(lines) and lines[i].strip():
                i += 1
            while out and not out[-1].strip():
                out.pop()
            continue
        if stripped in ASYNC_ONLY_DOC_LINES:
            i += 1
            continue
        out.append(line)
        i += 1
    out = _drop_empty_sections(out)
    if tail is not None:
        out.append(tail)
    text = "\n".join(out)
    text = _WORDS.sub(lambda m: NAMES[m.group(1)], text)
    text = _ASYNC_KEYWORD.sub(r"\1", text)
    text = _AWAIT_KEYWORD.sub("", text)
    # "an ``AsyncTx``" -> "a ``Tx``"
    text = _ARTICLE.sub(r"\1 \2", text)
    return literal[:start] + text + quote


_SECTIONS = frozenset({"Args:", "Returns:", "Yields:", "Raises:", "Warns:"})


def _drop_empty_sections(lines: list[str]) -> list[str]:
    """Without the section headers left with no content, nor trailing blanks."""
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.strip() in _SECTIONS:
            indent = len(line) - len(line.lstrip())
            rest = lines[i + 1 : i + 2]
            if (
                not rest
                or not rest[0].strip()
                or (len(rest[0]) - len(rest[0].lstrip()) <= indent)
            ):
                continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


class AsyncToSync(cst.CSTTransformer):
    """The rules in the module docstring, on a LibCST module."""

    def __init__(self) -> None:
        super().__init__()
        #: Modules a ``DOTTED`` replacement refers to (imported if missing).
        self.needs: set[str] = set()

    def leave_FunctionDef(
        self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef
    ) -> cst.FunctionDef:
        """``async def`` -> ``def``; the docstring converted."""
        return updated_node.with_changes(
            asynchronous=None, body=self._docstring(updated_node.body)
        )

    def leave_For(self, original_node: cst.For, updated_node: cst.For) -> cst.For:
        """``async for`` -> ``for``."""
        return updated_node.with_changes(asynchronous=None)

    def leave_With(self, original_node: cst.With, updated_node: cst.With) -> cst.With:
        """``async with`` -> ``with``."""
        return updated_node.with_changes(asynchronous=None)

    def leave_CompFor(
        self, original_node: cst.CompFor, updated_node: cst.CompFor
    ) -> cst.CompFor:
        """``async for`` in a comprehension -> ``for``."""
        return updated_node.with_changes(asynchronous=None)

    def leave_Await(
        self, original_node: cst.Await, updated_node: cst.Await
    ) -> cst.BaseExpression:
        """``await x`` -> ``x``."""
        # The operand of await is a primary: it needs no parentheses of the
        # await's (``(await x).y`` -> ``x.y``).
        return updated_node.expression

    def leave_Subscript(
        self, original_node: cst.Subscript, updated_node: cst.Subscript
    ) -> cst.BaseExpression:
        """``Awaitable[T]`` (and ``UNWRAP``'s other wrappers) -> ``T``."""
        value = updated_node.value
        if isinstance(value, cst.Name) and value.value in UNWRAP:
            (element,) = updated_node.slice
            index = element.slice
            assert isinstance(index, cst.Index)
            return index.value
        return updated_node

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.Name:
        """``NAMES``."""
        new = NAMES.get(updated_node.value)
        return updated_node if new is None else updated_node.with_changes(value=new)

    def leave_SimpleString(
        self, original_node: cst.SimpleString, updated_node: cst.SimpleString
    ) -> cst.SimpleString:
        """A string that is exactly a mapped name (``__all__``'s) is mapped."""
        value = updated_node.value
        quote = value[-1]
        new = NAMES.get(value[1:-1]) if value[:1] == quote else None
        if new is None:
            return updated_node
        return updated_node.with_changes(value=f"{quote}{new}{quote}")

    def leave_ListComp(
        self, original_node: cst.ListComp, updated_node: cst.ListComp
    ) -> cst.BaseExpression:
        """``[x async for x in it]`` -> ``list(it)`` (what C416 asks for)."""
        comp = original_node.for_in
        if (
            comp.asynchronous is not None
            and comp.inner_for_in is None
            and not comp.ifs
            and isinstance(comp.target, cst.Name)
            and isinstance(original_node.elt, cst.Name)
            and comp.target.value == original_node.elt.value
        ):
            return cst.Call(
                func=cst.Name("list"), args=[cst.Arg(updated_node.for_in.iter)]
            )
        return updated_node

    def leave_Attribute(
        self, original_node: cst.Attribute, updated_node: cst.Attribute
    ) -> cst.BaseExpression:
        """``DOTTED``."""
        new = DOTTED.get(_dotted(original_node) or "")
        if new is None:
            return updated_node
        if "." in new:
            self.needs.add(new.rsplit(".", 1)[0])
        return cst.parse_expression(new).with_changes(
            lpar=updated_node.lpar, rpar=updated_node.rpar
        )

    def leave_ImportFrom(
        self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom
    ) -> cst.ImportFrom:
        """``MODULES``."""
        module = updated_node.module
        name = _dotted(module) if module is not None else None
        new = MODULES.get(name or "")
        if new is None:
            return updated_node
        expr = cst.parse_expression(new)
        assert isinstance(expr, cst.Attribute | cst.Name)
        return updated_node.with_changes(module=expr)

    def leave_If(
        self, original_node: cst.If, updated_node: cst.If
    ) -> (
        cst.BaseStatement | cst.FlattenSentinel[cst.BaseStatement] | cst.RemovalSentinel
    ):
        """``if True|False:  # ASYNC`` -> the blocking side's statements."""
        marker = _is_async_marker(original_node)
        if marker is None:
            return updated_node
        if marker:  # if True:  # ASYNC -> the else branch, or nothing
            orelse = updated_node.orelse
            if orelse is None:
                return cst.RemoveFromParent()
            if not isinstance(orelse, cst.Else):
                raise ConversionError("'if True:  # ASYNC' takes else:, not elif")
            block = orelse.body
        else:  # if False:  # ASYNC -> the body (the blocking side only)
            if updated_node.orelse is not None:
                raise ConversionError("'if False:  # ASYNC' takes no else:")
            block = updated_node.body
        if not isinstance(block, cst.IndentedBlock):
            raise ConversionError("an ASYNC branch must be an indented block")
        kept: list[cst.BaseStatement] = list(block.body)
        # Comments above the ``if`` stay above what replaces it.
        first = kept[0]
        assert isinstance(first, cst.SimpleStatementLine | cst.BaseCompoundStatement)
        kept[0] = first.with_changes(
            leading_lines=[*updated_node.leading_lines, *first.leading_lines]
        )
        return cst.FlattenSentinel(kept)

    def _docstring(self, body: cst.BaseSuite) -> cst.BaseSuite:
        statements = body.body if isinstance(body, cst.IndentedBlock) else ()
        if not statements:
            return body
        first = statements[0]
        if not (
            isinstance(first, cst.SimpleStatementLine)
            and len(first.body) == 1
            and isinstance(first.body[0], cst.Expr)
            and isinstance(first.body[0].value, cst.SimpleString)
        ):
            return body
        string = first.body[0].value
        new = string.with_changes(value=convert_docstring(string.value))
        expr = first.body[0].with_changes(value=new)
        line = first.with_changes(body=[expr])
        assert isinstance(body, cst.IndentedBlock)
        return body.with_changes(body=[line, *statements[1:]])

    def leave_ClassDef(
        self, original_node: cst.ClassDef, updated_node: cst.ClassDef
    ) -> cst.ClassDef:
        """The class docstring converted."""
        return updated_node.with_changes(body=self._docstring(updated_node.body))

    def leave_Module(
        self, original_node: cst.Module, updated_node: cst.Module
    ) -> cst.Module:
        """The module docstring converted."""
        if not updated_node.body:
            return updated_node
        block = self._docstring(cst.IndentedBlock(body=updated_node.body))
        assert isinstance(block, cst.IndentedBlock)
        body = list(block.body)
        return updated_node.with_changes(body=self._import_needed(body))

    def _import_needed(self, body: list[cst.BaseStatement]) -> list[cst.BaseStatement]:
        """``body`` with an ``import m`` for each needed module not imported."""
        have = {
            _dotted(alias.name)
            for line in body
            if isinstance(line, cst.SimpleStatementLine)
            for stmt in line.body
            if isinstance(stmt, cst.Import)
            for alias in stmt.names
        }
        missing = sorted(self.needs - have)
        if not missing:
            return body
        # After the docstring and ``from __future__``; ruff sorts them later.
        at = 0
        for i, line in enumerate(body):
            if isinstance(line, cst.SimpleStatementLine) and (
                (i == 0 and isinstance(line.body[0], cst.Expr))
                or (
                    isinstance(line.body[0], cst.ImportFrom)
                    and _dotted(line.body[0].module or cst.Name("")) == "__future__"
                )
            ):
                at = i + 1
        imports = [cst.parse_statement(f"import {name}") for name in missing]
        return [*body[:at], *imports, *body[at:]]


def header(source: str) -> str:
    """The comment the generated file starts with."""
    return (
        f"# Generated from {Path(source).name} by tools/async_to_sync.py: "
        "do not edit.\n"
        f"# Edit {source}, then run: python tools/async_to_sync.py\n"
    )


def _ruff(args: list[str], code: str, filename: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", filename, "-"],
        input=code,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode not in (0, 1) or not done.stdout:
        raise ConversionError(f"ruff {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def convert(source_text: str, source: str, target: str) -> str:
    """The generated module's text for ``source_text`` (read from ``source``).

    Args:
        source_text: the asyncio module's text.
        source: its path relative to the repository root (for the header).
        target: the generated module's path (for ruff's configuration).

    Returns:
        The blocking module's text: converted, imports pruned and sorted,
        formatted by ruff.

    Raises:
        ConversionError: a form the converter does not handle, or ruff failed.
    """
    module = cst.parse_module(source_text)
    module = module.visit(AsyncToSync())
    code = header(source) + module.code
    # Imports only the asyncio side used, then isort, then the formatter.
    code = _ruff(
        ["check", "--fix", "--exit-zero", "--quiet", "--select", "F401,I001,RUF022"],
        code,
        target,
    )
    return _ruff(["format", "--quiet"], code, target)


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or check) every generated module.

    Returns:
        0 when every module is (now) current; 1 with ``--check`` when one is
        stale (the diff is printed).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail and print the diff when a file is stale",
    )
    opts = parser.parse_args(argv)
    stale = 0
    for source, target in PAIRS.items():
        want = convert((ROOT / source).read_text(), source, target)
        path = ROOT / target
        have = path.read_text() if path.exists() else ""
        if have == want:
            continue
        if opts.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    have.splitlines(keepends=True),
                    want.splitlines(keepends=True),
                    f"{target} (checked in)",
                    f"{target} (generated from {source})",
                )
            )
            print(
                f"{target} is stale: edit {source}, then run "
                "python tools/async_to_sync.py",
                file=sys.stderr,
            )
        else:
            path.write_text(want)
            print(f"wrote {target}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
