"""The ``sqlgate`` command line: ``sqlgate stress [DSN]``, ``sqlgate --version``.

Exit status (``EXIT_CODES``, also in ``--help`` and the README): 0 passed;
1 a check failed (a leak, or a worker or pool thread that died of an internal
error, which the report counts and shows); 2 bad input (a malformed DSN,
number or path, an unreachable server, a failing query), reported as one line
on stderr before the run starts; 3 more requests failed than
``--max-error-rate`` allows; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

from sqlgate import __version__, compiled
from sqlgate.cli._target import BadInput, load_callable, make_target, password_of
from sqlgate.cli.report import EXIT_CODES, build_report, render, summary_line
from sqlgate.cli.stress import Config, run

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["EXIT_CODES", "MAX_SECONDS", "MAX_WORKERS", "main"]

PROG = "sqlgate"
#: Most workers: threads (a Python process gains nothing from more; 10 000
#: threads took 16 s just to start here), and asyncio tasks.
MAX_WORKERS = {"threads": 1_000, "async": 10_000}
#: Longest duration any time option takes (one day): beyond it timers
#: overflow, and no run is meant to wait that long.
MAX_SECONDS = 86_400.0
#: Exit status for Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130

_EXIT_HELP = "exit status:\n" + "\n".join(
    f"  {code:<4} {text}" for code, text in EXIT_CODES.items()
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (raised, not printed + exit)."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="sqlgate: a leak-proof connection pool after Go's database/sql.",
        epilog=_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build = "compiled" if compiled else "pure-Python"
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__} ({build} build)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "stress",
        help="drive, watch and verify a pool against a database",
        description=(
            "Drive a pool with concurrent workers against a database, show it "
            "live, then report throughput, latency percentiles, the pool's "
            "stats, a sizing hint and a leak check. With no DSN it uses a "
            "temporary SQLite database."
        ),
        epilog=_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dsn",
        nargs="?",
        metavar="DSN",
        help="sqlite:///path.db, postgresql://user@host:5432/db, "
        "postgresql+asyncpg://... (with --async), mysql://user@host:3306/db "
        "(default: a temporary SQLite database)",
    )
    p.add_argument(
        "--workers",
        default="8",
        help=f"concurrent workers (default 8; at most {MAX_WORKERS['threads']}, "
        f"{MAX_WORKERS['async']} with --async)",
    )
    p.add_argument(
        "--max-open", default="0", help="pool max_open; 0 = unlimited (default 0)"
    )
    p.add_argument(
        "--max-idle",
        help="pool max_idle (default: as many as can be in use at once, "
        "--workers capped by --max-open, so the run does not churn)",
    )
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
        "--timeout",
        metavar="SECONDS",
        help="each request's deadline: the acquire and the query together, "
        "the query cancelled on the server when it passes; misses are "
        "counted apart from errors (default: none)",
    )
    p.add_argument(
        "--max-error-rate",
        default="0.01",
        help="share of failed requests (0 to 1) above which the run exits 3 "
        "(default 0.01, i.e. 1 %%)",
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
    p.add_argument(
        "--json",
        metavar="FILE",
        help="write the full report as JSON ('-': to stdout, and the text "
        "report to stderr)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE",
        help="write a plot of the run (e.g. run.png, .svg, .pdf)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no live view; print only a one-line summary",
    )
    p.add_argument("--no-progress", action="store_true", help="no live view")
    p.add_argument(
        "--progress-lines",
        action="store_true",
        help="live view as a plain line a second on stderr, even when it is "
        "not a terminal (logs, CI)",
    )
    return parser


def _int(option: str, text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{option} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise BadInput(f"{option} must be >= {minimum}, got {text!r}")
    if maximum is not None and value > maximum:
        raise BadInput(f"{option} must be <= {maximum}, got {text!r}")
    return value


def _seconds(option: str, text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{option} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise BadInput(f"{option} must be a finite number {bound}, got {text!r}")
    if value > MAX_SECONDS:
        raise BadInput(
            f"{option} must be at most {MAX_SECONDS:g} s (one day), got {text!r}"
        )
    return value


def _rate(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{option} must be a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:  # also refuses nan
        raise BadInput(f"{option} must be a number from 0 to 1, got {text!r}")
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
    mode = "async" if args.use_async else "threads"
    workers = _int("--workers", args.workers, 1)
    if workers > MAX_WORKERS[mode]:
        raise BadInput(
            f"--workers must be <= {MAX_WORKERS[mode]}"
            + (" (with --async)" if args.use_async else " (10000 with --async)")
            + f", got {args.workers!r}"
        )
    max_open = _int("--max-open", args.max_open, 0)
    max_idle = (
        min(workers, max_open or workers)
        if args.max_idle is None
        else _int("--max-idle", args.max_idle, 0)
    )
    return Config(
        workers=workers,
        max_open=max_open,
        max_idle=max_idle,
        duration=duration,
        requests=requests,
        hold_time=_seconds("--hold-time", args.hold_time, zero_ok=True),
        think_time=_seconds("--think-time", args.think_time, zero_ok=True),
        acquire_timeout=_seconds(
            "--acquire-timeout", args.acquire_timeout, zero_ok=False
        ),
        use_async=args.use_async,
        max_error_rate=_rate("--max-error-rate", args.max_error_rate),
        timeout=None
        if args.timeout is None
        else _seconds("--timeout", args.timeout, zero_ok=False),
    )


def _validate_output(option: str, path: str | None) -> None:
    """Make sure ``path`` can be written, before the run (nothing is left)."""
    if path is None or (option == "--json" and path == "-"):
        return
    if os.path.isdir(path):
        raise BadInput(f"{option} {path!r} is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInput(f"{option} {path!r}: folder {folder!r} does not exist")
    existed = os.path.exists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BadInput(f"{option} {path!r} cannot be written: {reason}") from None
    if not existed:
        os.unlink(path)


def _validate_plot(path: str | None) -> None:
    """``--plot``: matplotlib is installed and can write this file type."""
    if path is None:
        return
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BadInput("--plot needs matplotlib: pip install 'sqlgate[plot]'") from None
    kinds = Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in kinds:
        what = f"'.{ext}' files" if ext else "a file without an extension"
        raise BadInput(
            f"--plot {path!r}: matplotlib cannot write {what} "
            f"(use one of: {', '.join(sorted(kinds))})"
        )
    _validate_output("--plot", path)


def _header(cfg: Config, shown: str) -> str:
    """The run's target and settings, for the live view."""
    max_open = cfg.max_open or "unlimited"
    return (
        f"sqlgate stress {shown}  workers={cfg.workers} max_open={max_open} "
        f"max_idle={cfg.max_idle} hold={cfg.hold_time:g}s "
        f"think={cfg.think_time:g}s" + (" async" if cfg.use_async else "")
    )


def _on_interrupt(program: bool) -> Callable[[], None]:
    """What the first Ctrl-C of a run does: say so; make a second one final."""

    def stopping() -> None:
        print(
            f"{PROG}: stopping (Ctrl-C again to quit at once, without a report)",
            file=sys.stderr,
            flush=True,
        )
        if program:
            # A second Ctrl-C must end the program whatever it is waiting
            # for (a worker's query, a driver's thread): exit from the
            # signal handler itself; the OS closes the connections.
            signal.signal(signal.SIGINT, _quit_now)

    return stopping


def _quit_now(signum: int, frame: object) -> None:
    sys.stderr.write(f"{PROG}: interrupted\n")
    sys.stderr.flush()
    os._exit(INTERRUPTED)


def _stress(args: argparse.Namespace, *, program: bool = False) -> int:
    cfg = _config(args)
    _validate_output("--json", args.json)
    _validate_plot(args.plot)
    connect = None if args.connect is None else load_callable(args.connect)
    password = None if args.dsn is None else password_of(args.dsn)
    target = make_target(
        args.dsn, query=args.query, connect=connect, use_async=cfg.use_async
    )
    try:
        show_live = args.progress_lines or (
            not (args.quiet or args.no_progress) and sys.stderr.isatty()
        )
        if show_live:
            from sqlgate.cli.live import LiveView

            goal = (
                f"/ {cfg.duration:g} s"
                if cfg.requests is None
                else f"/ {cfg.requests} req"
            )
            with LiveView(
                goal, header=_header(cfg, target.shown), plain=args.progress_lines
            ) as view:
                result = run(
                    cfg,
                    target,
                    password=password,
                    on_sample=view.update,
                    on_interrupt=_on_interrupt(program),
                )
        else:
            result = run(
                cfg, target, password=password, on_interrupt=_on_interrupt(program)
            )
        report = build_report(cfg, target, result)
    finally:
        target.close()
    # With --json -, stdout carries the JSON document alone.
    text_out = sys.stderr if args.json == "-" else sys.stdout
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        sys.stdout.flush()
    elif args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if args.plot is not None:
        from sqlgate.cli.plot import write_plot

        write_plot(report, args.plot)
    if args.quiet:
        print(summary_line(report), file=text_out)
    else:
        render(report, text_out)
    code: int = report["exit_code"]
    return code


@contextlib.contextmanager
def _quiet_library_logs() -> Iterator[None]:
    """The report counts what the pool would log; keep stderr to one line.

    Only when the application has configured no handler of its own.
    """
    logger = logging.getLogger("sqlgate")
    if logger.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _stuck_threads() -> bool:
    """Whether a non-daemon thread besides this one is still running."""
    me = threading.current_thread()
    return any(
        t is not me and not t.daemon and t.is_alive() for t in threading.enumerate()
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sqlgate`` command line.

    Args:
        argv: the arguments after the program name; None reads ``sys.argv``.

    Returns:
        The exit status (``EXIT_CODES``): 0 passed, 1 a check failed (leak or
        internal error), 2 bad input, 3 too many failed requests, 130
        interrupted.
    """
    try:
        with _quiet_library_logs():
            args = _parser().parse_args(argv)
            if args.command is None:
                raise BadInput("missing command (try: sqlgate stress --help)")
            return _stress(args, program=argv is None)
    except BadInput as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Before the run (while connecting), or a second Ctrl-C during the
        # wind-down: nothing to report.
        print(f"{PROG}: interrupted", file=sys.stderr)
        if argv is None and _stuck_threads():
            # The program itself (not a caller of main()): a driver's own
            # threads (aiosqlite's) of connections the interrupt left open
            # would keep the interpreter from exiting. The OS closes them.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED)
        return INTERRUPTED
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
