"""Bad input: one clear line on stderr, exit 2, no traceback, no password."""

from __future__ import annotations

import pytest

from sqlgate.cli import main

CASES = [
    (["--workers", "0"], "--workers must be >= 1, got '0'"),
    (["--workers", "many"], "--workers must be a whole number, got 'many'"),
    (["--max-open", "-1"], "--max-open must be >= 0, got '-1'"),
    (["--max-idle", "1.5"], "--max-idle must be a whole number, got '1.5'"),
    (["--requests", "0"], "--requests must be >= 1, got '0'"),
    (["--duration", "-1"], "--duration must be a finite number > 0, got '-1'"),
    (["--duration", "0"], "--duration must be a finite number > 0, got '0'"),
    (["--duration", "nan"], "--duration must be a finite number > 0, got 'nan'"),
    (["--duration", "soon"], "--duration must be a number of seconds, got 'soon'"),
    (["--hold-time", "-0.5"], "--hold-time must be a finite number >= 0, got '-0.5'"),
    (["--think-time", "inf"], "--think-time must be a finite number >= 0, got 'inf'"),
    (
        ["--acquire-timeout", "0"],
        "--acquire-timeout must be a finite number > 0, got '0'",
    ),
    (
        ["--duration", "1", "--requests", "5"],
        "argument --requests: not allowed with argument --duration",
    ),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (
        ["--query", "SELEC 1"],
        "--query 'SELEC 1' failed: OperationalError: near \"SELEC\": syntax error",
    ),
    (["--connect", "nocolon"], "--connect must be 'module:callable', got 'nocolon'"),
    (
        ["--connect", "sqlgate_no_such_module:connect"],
        "--connect 'sqlgate_no_such_module:connect': ModuleNotFoundError: "
        "No module named 'sqlgate_no_such_module'",
    ),
    (
        ["--connect", "tests.cli.helpers:NOT_CALLABLE"],
        "--connect 'tests.cli.helpers:NOT_CALLABLE' is not callable",
    ),
    (
        ["--json", "/nonexistent-sqlgate-dir/r.json"],
        "--json '/nonexistent-sqlgate-dir/r.json': folder "
        "'/nonexistent-sqlgate-dir' does not exist",
    ),
    (
        ["mysql://root:pw@127.0.0.1:3306/test", "--async"],
        "--async supports sqlite and postgresql DSNs, not mysql "
        "(sqlgate has no asyncio MySQL driver; run without --async)",
    ),
]


#: More bad input, each refused before the run starts (exact messages).
BAD_MORE = [
    (
        ["--duration", "1e12"],
        "--duration must be at most 86400 s (one day), got '1e12'",
    ),
    (
        ["--workers", "99999999", "--async"],
        "--workers must be <= 10000 (with --async), got '99999999'",
    ),
    (
        ["--max-error-rate", "1.5"],
        "--max-error-rate must be a number from 0 to 1, got '1.5'",
    ),
    (["--json", "/tmp"], "--json '/tmp' is a directory, not a file"),
    (
        ["--json", "/proc/version"],
        "--json '/proc/version' cannot be written: Invalid argument",
    ),
    (
        ["--plot", "/tmp/run.xyz"],
        "--plot '/tmp/run.xyz': matplotlib cannot write '.xyz' files (use one "
        "of: avif, eps, gif, jpeg, jpg, pdf, pgf, png, ps, raw, rgba, svg, svgz, "
        "tif, tiff, webp)",
    ),
    (
        ["postgresql+asyncpg://postgres@127.0.0.1:5432/test"],
        "DSN 'postgresql+asyncpg://postgres@127.0.0.1:5432/test': asyncpg is an "
        "asyncio driver; add --async (or use postgresql:// for psycopg)",
    ),
    (
        ["sqlite:////nonexistent-sqlgate-dir/x.db"],
        "cannot connect to sqlite:////nonexistent-sqlgate-dir/x.db: "
        "OperationalError: unable to open database file",
    ),
]


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith("sqlgate: error: ")
    return err[len("sqlgate: error: ") : -1]


@pytest.mark.parametrize(("args", "message"), CASES + BAD_MORE)
def test_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _one_line_error(capsys, ["stress", *args, "--no-progress"]) == message


@pytest.mark.parametrize(
    ("dsn", "start"),
    [
        ("nonsense", "bad DSN: target must look like scheme://..., got 'nonsense'"),
        ("ftp://host/db", "bad DSN: unknown scheme 'ftp' in target 'ftp://host/db'"),
        (
            "postgresql://u:pw@h:notaport/db",
            "bad DSN: ",
        ),
    ],
)
def test_malformed_dsn(
    capsys: pytest.CaptureFixture[str], dsn: str, start: str
) -> None:
    msg = _one_line_error(capsys, ["stress", dsn])
    assert msg.startswith(start)
    assert ":pw@" not in msg


def test_plot_without_extension(capsys: pytest.CaptureFixture[str]) -> None:
    assert _one_line_error(capsys, ["stress", "--plot", "run"]).startswith(
        "--plot 'run': matplotlib cannot write a file without an extension (use "
        "one of: "
    )


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert _one_line_error(capsys, []) == "missing command (try: sqlgate stress --help)"


def test_unreachable_server_hides_password(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on loopback: refused at once, no server involved.
    msg = _one_line_error(
        capsys, ["stress", "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/test"]
    )
    assert msg.startswith(
        "cannot connect to postgresql://postgres:***@127.0.0.1:1/test: "
        "OperationalError: "
    )
    assert "s3cr3t-pw" not in msg


def test_unreachable_mysql(capsys: pytest.CaptureFixture[str]) -> None:
    msg = _one_line_error(capsys, ["stress", "mysql://root:hunter2@127.0.0.1:1/test"])
    assert msg.startswith(
        "cannot connect to mysql://root:***@127.0.0.1:1/test: OperationalError: "
    )
    assert "hunter2" not in msg


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stress", "--help"]) == 0
    assert "--hold-time" in capsys.readouterr().out
