"""The build under test: which one it is; weak references never crash it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlgate
import sqlgate._core.machine
import sqlgate._handoff

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"


def test_compiled_says_which_build_runs() -> None:
    compiled = not str(sqlgate._core.machine.__file__).endswith(".py")
    assert sqlgate.compiled is compiled
    # The build compiles its modules together or not at all (setup.py).
    assert str(sqlgate._handoff.__file__).endswith(".py") is not compiled
    expected = os.environ.get("SQLGATE_EXPECT_COMPILED")
    if expected is not None:  # .ci/run says which build each pass must run
        assert sqlgate.compiled is (expected == "1")


def test_weak_references_to_every_public_object() -> None:
    """In a child process: a dangling weak reference would crash it."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE.parent.parent)]),
    }
    child = subprocess.run(
        [sys.executable, str(HERE / "weakref_torture.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert child.returncode == 0, (child.returncode, child.stdout, child.stderr)
    lines = child.stdout.splitlines()
    assert lines[-1] == f"ok (compiled={sqlgate.compiled})", child.stdout
    # Every public object the script names was tried.
    assert len(lines) == 14, child.stdout
