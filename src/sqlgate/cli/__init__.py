"""The ``sqlgate`` command line: ``sqlgate stress [DSN]``.

Exit status: 0 when the run passed its leak check, 1 when it found a leak,
2 for bad input (a malformed DSN or number, an unreachable server, a failing
query), reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from sqlgate.cli._target import BadInput, load_callable, make_target, password_of
from sqlgate.cli.report import build_report, render, summary_line
from sqlgate.cli.stress import Config, run

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

PROG = "sqlgate"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (raised, not printed + exit)."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="sqlgate: a leak-proof connection pool after Go's database/sql.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "stress",
        help="drive, watch and verify a pool against a database",
        description=(
            "Drive a pool with concurrent workers against a database, show it "
            "live, then report throughput, latency percentiles, the pool's "
            "stats, a sizing hint and a leak check (exit 1 on a leak). With no "
            "DSN it uses a temporary SQLite database."
        ),
    )
    p.add_argument(
        "dsn",
        nargs="?",
        metavar="DSN",
        help="sqlite:///path.db, postgresql://user@host:5432/db, "
        "mysql://user@host:3306/db (default: a temporary SQLite database)",
    )
    p.add_argument("--workers", default="8", help="concurrent workers (default 8)")
    p.add_argument(
        "--max-open", default="0", help="pool max_open; 0 = unlimited (default 0)"
    )
    p.add_argument("--max-idle", default="2", help="pool max_idle (default 2, as Go)")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--duration", help="seconds to run (default 5)")
    goal.add_argument("--requests", help="total requests across all workers")
    p.add_argument("--query", help="SQL each request runs (default: a small read)")
    p.add_argument(
        "--hold-time",
        default="0",
        help="seconds a worker keeps the connection after its query (default 0)",
    )
    p.add_argument(
        "--think-time", default="0", help="seconds between requests (default 0)"
    )
    p.add_argument(
        "--acquire-timeout",
        default="30",
        help="seconds an acquire may wait (default 30)",
    )
    p.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="asyncio tasks over AsyncPool instead of threads over Pool",
    )
    p.add_argument(
        "--connect",
        metavar="MODULE:CALLABLE",
        help="dial with this callable instead of the DSN's driver (the DSN "
        "still names the server the leak check asks)",
    )
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument(
        "--plot", metavar="FILE", help="write a plot of the run (e.g. run.png)"
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no live view; print only a one-line summary",
    )
    p.add_argument("--no-progress", action="store_true", help="no live view")
    return parser


def _int(option: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{option} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise BadInput(f"{option} must be >= {minimum}, got {text!r}")
    return value


def _seconds(option: str, text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{option} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise BadInput(f"{option} must be a finite number {bound}, got {text!r}")
    return value


def _config(args: argparse.Namespace) -> Config:
    requests = None if args.requests is None else _int("--requests", args.requests, 1)
    duration = None
    if requests is None:
        duration = (
            5.0
            if args.duration is None
            else _seconds("--duration", args.duration, zero_ok=False)
        )
    return Config(
        workers=_int("--workers", args.workers, 1),
        max_open=_int("--max-open", args.max_open, 0),
        max_idle=_int("--max-idle", args.max_idle, 0),
        duration=duration,
        requests=requests,
        hold_time=_seconds("--hold-time", args.hold_time, zero_ok=True),
        think_time=_seconds("--think-time", args.think_time, zero_ok=True),
        acquire_timeout=_seconds(
            "--acquire-timeout", args.acquire_timeout, zero_ok=False
        ),
        use_async=args.use_async,
    )


def _check_output(option: str, path: str | None) -> None:
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInput(f"{option} {path!r}: folder {folder!r} does not exist")


def _stress(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _check_output("--json", args.json)
    _check_output("--plot", args.plot)
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BadInput(
                "--plot needs matplotlib: pip install 'sqlgate[plot]'"
            ) from None
    connect = None if args.connect is None else load_callable(args.connect)
    password = None if args.dsn is None else password_of(args.dsn)
    target = make_target(
        args.dsn, query=args.query, connect=connect, use_async=cfg.use_async
    )
    try:
        show_live = not (args.quiet or args.no_progress) and sys.stderr.isatty()
        if show_live:
            from sqlgate.cli.live import LiveView

            goal = (
                f"/ {cfg.duration:g} s"
                if cfg.requests is None
                else f"/ {cfg.requests} req"
            )
            with LiveView(goal) as view:
                result = run(cfg, target, password=password, on_sample=view.update)
        else:
            result = run(cfg, target, password=password)
        report = build_report(cfg, target, result)
    finally:
        target.close()
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if args.plot is not None:
        from sqlgate.cli.plot import write_plot

        write_plot(report, args.plot)
    if args.quiet:
        print(summary_line(report))
    else:
        render(report, sys.stdout)
    return 0 if report["verdict"] == "PASS" else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sqlgate`` command line.

    Args:
        argv: the arguments after the program name; None reads ``sys.argv``.

    Returns:
        The exit status: 0 passed, 1 a leak was found, 2 bad input.
    """
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            raise BadInput("missing command (try: sqlgate stress --help)")
        return _stress(args)
    except BadInput as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
