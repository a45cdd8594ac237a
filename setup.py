"""Build sqlgate, compiling its pure core with mypyc where that is possible.

The Python source stays the one truth: the compiled build is the same modules
turned into C extensions by mypyc, which sit beside the ``.py`` files and take
precedence on import; ``sqlgate.compiled`` says which build is running.

``SQLGATE_COMPILE`` chooses:

- unset (or ``auto``): compile when mypyc is importable and a C compiler works;
  otherwise (or when compiling fails) install the pure-Python build. An
  editable install (``pip install -e``) stays pure unless asked, so edits to
  the source always take effect.
- ``1``: compile, and fail the build if that is impossible.
- ``0``: never compile.

Compiled: the modules on every checkout's path: the state machine, the return
path's rollback rules, and ``Pool``'s hand-off (acquire, release, ``with``).
The objects a program holds or weak-references (``Pool``, ``AsyncPool``, the
DB handles) stay ordinary Python classes: mypyc (2.4) leaves a weak reference
to a freed compiled object dangling (mypyc issue 1102), and a compiled build
must never crash whatever the program does (docs/design.md, "The compiled
build").
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: The compiled modules (paths relative to this file).
COMPILED = [
    "src/sqlgate/_core/machine.py",
    "src/sqlgate/_reset.py",
    "src/sqlgate/_handoff.py",
]


def _choice() -> str:
    choice = os.environ.get("SQLGATE_COMPILE", "auto").strip().lower() or "auto"
    if choice not in ("0", "1", "auto"):
        raise SystemExit(f"SQLGATE_COMPILE must be 0, 1 or auto, got {choice!r}")
    return choice


class OptionalBuildExt(build_ext):  # type: ignore[misc]  # setuptools is untyped
    """``build_ext`` that falls back to the pure build unless compiling is required."""

    def run(self) -> None:
        """Compile, or leave the pure build in place (see the module doc)."""
        required = _choice() == "1"
        if getattr(self, "editable_mode", False) and not required:
            print("sqlgate: editable install, pure-Python build", file=sys.stderr)
            return
        try:
            super().run()
        except Exception as exc:  # no compiler, or it failed: stay pure
            if required:
                raise
            self._remove_outputs()
            print(
                f"sqlgate: compiling failed ({exc!r}); pure-Python build",
                file=sys.stderr,
            )

    def _remove_outputs(self) -> None:
        # A half-built set (the shared library without a module, or the
        # reverse) would fail on import: all or nothing.
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.remove(path)


#: setup.py commands that compile nothing (metadata, source archives, the
#: editable install, which stays pure unless asked): mypyc is not even run.
_NOTHING_TO_COMPILE = {"egg_info", "dist_info", "sdist", "editable_wheel"}


def _ext_modules() -> list[Any]:
    choice = _choice()
    if choice == "0" or sys.implementation.name != "cpython":
        return []
    if choice == "auto" and _NOTHING_TO_COMPILE.intersection(sys.argv[1:]):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if choice == "1":
            raise
        print("sqlgate: mypyc not available; pure-Python build", file=sys.stderr)
        return []
    here = os.path.dirname(os.path.abspath(__file__))
    old = os.getcwd()
    os.chdir(here)  # mypyc takes paths relative to the project
    try:
        modules: list[Any] = mypycify(
            COMPILED, opt_level="3", group_name="sqlgate", strip_asserts=False
        )
    except BaseException:
        if choice == "1":
            raise
        print("sqlgate: mypyc failed; pure-Python build", file=sys.stderr)
        return []
    finally:
        os.chdir(old)
    return modules


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
