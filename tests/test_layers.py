"""Arrows point down: the import-layer contract of docs/design.md, checked.

Every module under ``src/sqlgate`` belongs to one layer; a module may import
(at run time or for type checking alike: an arrow is an arrow) only modules of
its own layer or below. The two pool shells are independent of each other, and
so are the two faces of the handle. The package ``sqlgate`` itself is the
public facade and may import anything; nothing imports it back except for its
submodules by name (``from sqlgate import _reaper``), except the top layer
(the CLI reads ``sqlgate.__version__``).

A new module must be placed in ``LAYERS``: an unplaced one fails the test, so
the contract cannot silently miss it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: Bottom to top. A prefix ending in "." places a whole package.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("sqlgate.errors", "sqlgate.stats")),
    # drivers/_probe.py is below the other drivers: the pools ask through it.
    (
        "core",
        ("sqlgate._core", "sqlgate._core.", "sqlgate.drivers._probe", "sqlgate._reset"),
    ),
    (
        "shells",
        (
            "sqlgate._deadlines",
            "sqlgate._courier",
            "sqlgate._fork",
            "sqlgate._leaks",
            "sqlgate._shell",
            "sqlgate._handoff",
            "sqlgate.pool",
            "sqlgate.aiopool",
            "sqlgate._reaper",
            "sqlgate._watchdog",
        ),
    ),
    ("drivers", ("sqlgate.drivers", "sqlgate.drivers.")),
    (
        "handle",
        ("sqlgate._handle", "sqlgate.db_async", "sqlgate.db", "sqlgate.aiodb"),
    ),
    ("observe", ("sqlgate.observe", "sqlgate.observe.")),
    ("integrations", ("sqlgate.integrations", "sqlgate.integrations.")),
    ("cli", ("sqlgate.cli", "sqlgate.cli.", "sqlgate.__main__")),
]

#: Pairs of modules that may not import each other (siblings in one layer).
INDEPENDENT = [
    ("sqlgate.pool", "sqlgate.aiopool"),
    ("sqlgate.db", "sqlgate.db_async"),
]

FACADE = "sqlgate"


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of ``module``'s layer; KeyError if unplaced."""
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".") and module.startswith(member)):
                return index
    raise KeyError(f"{module} is in no layer: place it in tests/test_layers.py")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The ``sqlgate`` modules ``path`` imports, relative imports resolved."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(FACADE))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == FACADE or target.startswith(FACADE + "."):
                # ``from sqlgate import _reaper`` names a submodule;
                # ``from sqlgate import __version__`` the facade itself.
                for alias in node.names:
                    sub = SRC.joinpath(*target.split("."), alias.name)
                    is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                    found.add(f"{target}.{alias.name}" if is_module else target)
    return found


def graph() -> dict[str, set[str]]:
    return {
        module_name(path): imports_of(path)
        for path in sorted((SRC / FACADE).rglob("*.py"))
    }


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every import that points up a layer or joins two independent siblings."""
    found = []
    for module, targets in sorted(edges.items()):
        if module == FACADE:
            continue
        for target in sorted(targets):
            if target == FACADE:
                # Only the top layer stands above the facade (it reads
                # ``sqlgate.__version__``); anything lower would be a cycle.
                if layer_of(module) != len(LAYERS) - 1:
                    found.append(f"{module} imports the facade {FACADE}")
            elif layer_of(target) > layer_of(module):
                found.append(
                    f"{module} ({LAYERS[layer_of(module)][0]}) imports "
                    f"{target} ({LAYERS[layer_of(target)][0]}): an arrow points up"
                )
            elif (module, target) in INDEPENDENT or (target, module) in INDEPENDENT:
                found.append(f"{module} imports its independent sibling {target}")
    return found


def test_every_module_is_placed() -> None:
    for module in graph():
        if module != FACADE:
            layer_of(module)


def test_arrows_point_down() -> None:
    assert violations(graph()) == []


def test_the_core_imports_only_the_foundation() -> None:
    for module, targets in graph().items():
        if module == "sqlgate._core" or module.startswith("sqlgate._core."):
            outside = {t for t in targets if not t.startswith("sqlgate._core")}
            assert outside <= {"sqlgate.errors", "sqlgate.stats"}, module


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        (
            {"sqlgate._shell": {"sqlgate.observe"}},
            [
                "sqlgate._shell (shells) imports sqlgate.observe (observe): "
                "an arrow points up"
            ],
        ),
        (
            {"sqlgate.aiopool": {"sqlgate.pool"}},
            ["sqlgate.aiopool imports its independent sibling sqlgate.pool"],
        ),
        ({"sqlgate.pool": {"sqlgate._core", "sqlgate.errors"}}, []),
        ({"sqlgate.db": {"sqlgate"}}, ["sqlgate.db imports the facade sqlgate"]),
        ({"sqlgate.cli": {"sqlgate"}}, []),
    ],
)
def test_the_checker_can_fail(edges: dict[str, set[str]], expected: list[str]) -> None:
    # The two defects this contract was written for: the shells importing the
    # observe layer for the Observer protocol, and AsyncPool importing Pool.
    assert violations(edges) == expected


def test_an_unplaced_module_is_refused() -> None:
    with pytest.raises(KeyError, match=r"sqlgate\.newthing is in no layer"):
        layer_of("sqlgate.newthing")
