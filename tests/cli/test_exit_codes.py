"""``sqlgate`` as a user runs it: a subprocess, its exit status and its output.

Exit status: 0 passed, 1 a failed check, 2 bad input (one line, before the
run), 3 too many failed requests, 130 interrupted. Every case also checks
that no traceback reached the user and that the process ended in bounded
time (``cli``'s timeout fails the test otherwise). Runs are kept short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

import sqlgate
from sqlgate import __version__
from tests.cli.helpers import MYSQL_DSN, ROOT, SilentServer, cli, one_line_error

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Bad input the issue saw as tracebacks or hangs, refused before the run
# starts: (args, the exact message). The rest of the bad-input table runs
# in-process (test_bad_input.py: BAD_MORE), where it costs no interpreter start.
BAD = [
    (
        ["--hold-time", "1e12"],
        "--hold-time must be at most 86400 s (one day), got '1e12'",
    ),
    (
        ["--think-time", "1e12"],
        "--think-time must be at most 86400 s (one day), got '1e12'",
    ),
    (
        ["--acquire-timeout", "1e10"],
        "--acquire-timeout must be at most 86400 s (one day), got '1e10'",
    ),
    (
        ["--workers", "99999999"],
        "--workers must be <= 1000 (10000 with --async), got '99999999'",
    ),
    (
        ["sqlite:////nonexistent-sqlgate-dir/x.db", "--async"],
        "cannot connect to sqlite:////nonexistent-sqlgate-dir/x.db: "
        "OperationalError: unable to open database file",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    started = time.monotonic()
    proc = cli("stress", "--duration", "30", *args, timeout=30)
    assert one_line_error(proc) == message
    # Refused before the run: nowhere near the 30 s asked for.
    assert time.monotonic() - started < 20


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.parametrize(
    "scheme", ["mysql://root", "postgresql://postgres", "postgresql+asyncpg://postgres"]
)
def test_server_that_never_answers_is_bounded(
    silent: SilentServer, scheme: str
) -> None:
    """TCP accepted, then silence: the connect and the handshake time out."""
    dsn = f"{scheme}@127.0.0.1:{silent.port}/test?connect_timeout=1"
    extra = ["--async"] if "asyncpg" in scheme else []
    started = time.monotonic()
    proc = cli("stress", dsn, *extra, timeout=30)
    message = one_line_error(proc)
    assert message.startswith(f"cannot connect to {scheme}@127.0.0.1:{silent.port}")
    assert silent.accepted.is_set()
    assert time.monotonic() - started < 15


def _popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sqlgate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
    )


def _wait_for_output(proc: subprocess.Popen[str], text: str = " req/s ") -> None:
    """Block until a stderr line has ``text`` (default: a live-view line)."""
    assert proc.stderr is not None
    while True:  # bounded by the test timeout
        line = proc.stderr.readline()
        assert line, f"the process ended before printing {text!r}"
        if text in line:
            return


@pytest.mark.parametrize("scheme", ["mysql://root", "postgresql://postgres"])
def test_ctrl_c_while_connecting(silent: SilentServer, scheme: str) -> None:
    proc = _popen("stress", f"{scheme}@127.0.0.1:{silent.port}/test")
    assert silent.accepted.wait(30), "the CLI never connected"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert out == ""
    assert err == "sqlgate: interrupted\n"


@pytest.mark.parametrize("mode", [[], ["--async"]], ids=["threads", "async"])
def test_ctrl_c_mid_run_reports_interrupted(mode: list[str]) -> None:
    # --progress-lines: the plain live view on stderr tells when the run is on.
    proc = _popen("stress", "--duration", "60", "--progress-lines", *mode)
    _wait_for_output(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "sqlgate: stopping (Ctrl-C again to quit at once, without a report)\n" in err
    assert "INTERRUPTED (Ctrl-C): the figures cover the run until then" in out
    assert "leak check PASS" in out
    assert out.endswith(
        "exit 130: interrupted (Ctrl-C): the figures cover the run until then\n"
    )


@pytest.mark.parametrize("mode", [[], ["--async"]], ids=["threads", "async"])
def test_second_ctrl_c_exits_at_once(mode: list[str]) -> None:
    # A long hold keeps connections out when the first Ctrl-C lands, so the
    # wind-down (give back, count, close) is still going when the second does.
    proc = _popen(
        "stress", "--duration", "60", "--progress-lines", "--hold-time", "0.05",
        "--query", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
        "FROM c WHERE x < 200000) SELECT count(*) FROM c", *mode,
    )  # fmt: skip
    _wait_for_output(proc)
    proc.send_signal(signal.SIGINT)
    _wait_for_output(proc, "sqlgate: stopping")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "Traceback" not in err
    # The workers were mid-query (each takes a while): the second Ctrl-C
    # ends the program at once, with one line and no report.
    assert err.endswith("sqlgate: interrupted\n")
    assert out == ""


def test_exit_0_and_version() -> None:
    proc = cli("stress", "--requests", "100", "--quiet", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.endswith("; exit 0\n")
    version = cli("--version", timeout=30)
    assert version.returncode == 0
    build = "compiled" if sqlgate.compiled else "pure-Python"
    assert version.stdout == f"sqlgate {__version__} ({build} build)\n"


def test_exit_1_on_a_leak() -> None:
    proc = cli(
        "stress", "--connect", "tests.cli.helpers:sqlite_no_close", "--query",
        "SELECT 1", "--requests", "5", "--workers", "1", "--max-idle", "0",
        "--quiet", timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "leak check FAIL" in proc.stdout


def test_exit_3_above_max_error_rate(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    import sqlite3

    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE sqlgate_stress_t (n INTEGER CHECK (n < 2))")
    c.close()
    query = "INSERT INTO sqlgate_stress_t (n) SELECT count(*) FROM sqlgate_stress_t"
    args = (f"sqlite:///{db}", "--query", query, "--requests", "5", "--workers", "1")
    proc = cli("stress", *args, "--quiet", timeout=60)
    assert proc.returncode == 3
    assert proc.stdout.startswith("5 requests (4 failed)")
    # The same errors under a tolerant threshold pass.
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM sqlgate_stress_t")
    c.close()
    proc = cli("stress", *args, "--max-error-rate", "0.9", "--quiet", timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_json_to_stdout() -> None:
    proc = cli("stress", "--requests", "50", "--json", "-", timeout=60)
    assert proc.returncode == 0
    report = json.loads(proc.stdout)  # stdout is the JSON document alone
    assert report["requests"]["ok"] == 50
    assert report["exit_code"] == 0
    assert "leak check PASS" in proc.stderr  # the text report went to stderr


def test_piped_report_is_not_wrapped() -> None:
    proc = cli("stress", "--requests", "50", timeout=60, env={"COLUMNS": "80"})
    assert proc.returncode == 0
    counted = next(line for line in proc.stdout.splitlines() if "counted by:" in line)
    assert counted.endswith("(opened minus closed)")  # one line, past column 80
    assert len(counted) > 80


@pytest.mark.mysql
def test_mysql_async_is_refused_in_one_line(mysql: str) -> None:
    proc = cli("stress", MYSQL_DSN, "--async", timeout=30)
    assert one_line_error(proc).startswith("--async supports sqlite and postgresql")
