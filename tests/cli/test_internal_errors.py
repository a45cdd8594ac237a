"""Issue 11, defect 9: a worker or pool thread that dies fails the run.

A stress worker, a pool's dial thread or an AsyncPool task that dies of an
internal error (sqlgate or the tool breaking, not the database saying no) is
recorded, shown in the report, counted, and exits 1, never hidden behind
"0 failed". The errors are injected where the shell would raise them: after
the real work is done, so the ledger stays exact and the only thing wrong is
the error itself (as with ``release`` raising ``RuntimeError('release unlocked
lock')`` after a doubled wake).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import sqlgate.cli.stress as stress_mod
from sqlgate.aiopool import AsyncPool
from sqlgate.cli import main
from sqlgate.pool import Pool
from tests.cli.helpers import ROOT

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.cli.conftest import Stress


def _fail_on_call(n: int, real: Any, exc: BaseException) -> Any:
    """``real``, but its ``n``-th call raises ``exc`` after doing its work."""
    calls = itertools.count(1)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if next(calls) == n:
            raise exc
        return result

    return wrapper


def _afail_on_call(n: int, real: Any, exc: BaseException) -> Any:
    calls = itertools.count(1)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if next(calls) == n:
            raise exc
        return result

    return wrapper


def test_worker_killed_by_release_fails_the_run(
    stress: Stress, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = RuntimeError("release unlocked lock")
    monkeypatch.setattr(Pool, "release", _fail_on_call(11, Pool.release, boom))
    rc, r = stress("--requests", "40", "--workers", "2", "--max-open", "2")
    assert rc == 1
    assert r["verdict"] == "FAIL"
    assert r["exit_code"] == 1
    assert r["outcome"] == "FAIL: 1 internal error(s)"
    [err] = r["internal_errors"]
    assert err["where"] in {"sqlgate-stress-0", "sqlgate-stress-1"}
    assert err["error"] == "RuntimeError: release unlocked lock"
    assert "Traceback" in err["traceback"]
    # The other worker finished the budget; nothing leaked.
    assert r["requests"]["failed"] == 0
    assert r["requests"]["ok"] == 40 - 0  # the 11th release's request was done
    assert r["leak_check"]["pass"] is True


def test_acquire_raising_a_non_sqlgate_error_is_internal(
    stress: Stress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only sqlgate.Error from acquire is a failed request; anything else is a bug."""
    boom = ValueError("ticket 56 is not in flight")
    monkeypatch.setattr(Pool, "acquire", _fail_on_call(6, Pool.acquire, boom))
    rc, r = stress("--requests", "20", "--workers", "1", "--max-open", "1")
    assert rc == 1
    assert [e["error"] for e in r["internal_errors"]] == [
        "ValueError: ticket 56 is not in flight"
    ]
    # The 6th acquire (the preflight was the 1st) handed out a connection
    # that nobody will give back: the leak check sees it too.
    assert r["requests"] == {
        "total": 4,
        "ok": 4,
        "failed": 0,
        "deadline_missed": 0,
        "error_rate": 0.0,
    }
    assert r["leak_check"]["after_close"]["pass"] is False


def test_dial_thread_that_dies_fails_the_run(
    stress: Stress, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = ValueError("dial thread broke")
    monkeypatch.setattr(Pool, "_dial", _fail_on_call(1, Pool._dial, boom))
    rc, r = stress("--requests", "30", "--workers", "3", "--max-open", "3")
    assert rc == 1
    [err] = r["internal_errors"]
    assert err["where"] == "sqlgate-dial sqlgate-stress"
    assert err["error"] == "ValueError: dial thread broke"
    assert r["requests"]["failed"] == 0
    assert r["leak_check"]["pass"] is True


def test_async_worker_and_pool_task_that_die_fail_the_run(
    stress: Stress, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        AsyncPool,
        "release",
        _afail_on_call(7, AsyncPool.release, RuntimeError("worker broke")),
    )
    monkeypatch.setattr(
        AsyncPool,
        "_dial",
        _afail_on_call(1, AsyncPool._dial, RuntimeError("dial task broke")),
    )
    rc, r = stress("--async", "--requests", "40", "--workers", "3", "--max-open", "3")
    assert rc == 1
    errors = sorted((e["where"], e["error"]) for e in r["internal_errors"])
    assert len(errors) == 2, errors
    (_w1, e1), (w2, e2) = errors
    assert e1 == "RuntimeError: dial task broke"
    assert w2.startswith("sqlgate-stress-")
    assert e2 == "RuntimeError: worker broke"


def test_internal_error_is_shown_in_text_and_quiet(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = RuntimeError("release unlocked lock")
    monkeypatch.setattr(Pool, "release", _fail_on_call(3, Pool.release, boom))
    rc = main(["stress", "--requests", "10", "--workers", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert err == ""  # recorded, not a traceback on stderr
    assert "internal errors: 1 (the run FAILS)" in out
    assert "  sqlgate-stress-0: RuntimeError: release unlocked lock" in out
    assert out.endswith("exit 1: FAIL: 1 internal error(s)\n")
    monkeypatch.setattr(Pool, "release", _fail_on_call(3, Pool.release, boom))
    rc = main(["stress", "--requests", "10", "--workers", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "; 1 internal errors; " in out
    assert out.count("\n") == 1


def test_internal_error_exits_1_as_a_program(tmp_path: Path) -> None:
    """The same through a real process: exit 1, no traceback on stderr."""
    report = tmp_path / "r.json"
    code = (
        "import sys, itertools\n"
        "from sqlgate.pool import Pool\n"
        "real, calls = Pool.release, itertools.count(1)\n"
        "def release(self, conn, broken=False):\n"
        "    real(self, conn, broken=broken)\n"
        "    if next(calls) == 4:\n"
        "        raise RuntimeError('release unlocked lock')\n"
        "Pool.release = release\n"
        "from sqlgate.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "stress", "--requests", "20", "--quiet",
         "--json", str(report)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == ""
    assert "; 1 internal errors; " in proc.stdout
    assert json.loads(report.read_text())["internal_errors"][0]["error"] == (
        "RuntimeError: release unlocked lock"
    )


def test_failures_record_the_thread_name() -> None:
    failures = stress_mod.Failures()
    with failures.watching_threads():
        import threading

        t = threading.Thread(target=lambda: 1 / 0, name="sqlgate-dial x")
        t.start()
        t.join()
    assert [(e.where, e.error) for e in failures.items] == [
        ("sqlgate-dial x", "ZeroDivisionError: division by zero")
    ]
