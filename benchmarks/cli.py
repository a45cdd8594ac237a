"""Command line: ``python -m benchmarks [--quick] [--only NAME] [--json FILE] ...``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import (
    aio,
    connecting,
    contended,
    cycle,
    deadline,
    memory,
    pg,
    report,
    spike,
)
from benchmarks._common import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from benchmarks._common import Table

#: Scenario name -> its runner, in the order they run and are reported.
SCENARIOS: dict[str, Callable[[Settings], Table]] = {
    "cycle": cycle.run,
    "contended": contended.run,
    "spike": spike.run,
    "pg": pg.run,
    "async": aio.run,
    "memory": memory.run,
    "connecting": connecting.run,
    "deadline": deadline.run,
    "deadline-pg": deadline.run_pg,
}

DOCS = Path(__file__).resolve().parent.parent / "docs"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="sqlgate beside its peers, interleaved, medians, ratios.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the CI form: seconds, not minutes"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these scenarios (repeat or comma-separate): "
        + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="write results as JSON"
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="rewrite docs/benchmarks.md and docs/benchmarks.png",
    )
    parser.add_argument(
        "--both-builds",
        type=int,
        metavar="RUNS",
        help="run RUNS times on each build, pure and compiled (each run a child "
        "process; see benchmarks/builds.py); with --markdown, docs/benchmarks.md "
        "covers both with the median and spread over runs",
    )
    parser.add_argument(
        "--docs-dir", type=Path, default=DOCS, help="where --markdown writes (docs/)"
    )
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--seconds", type=float, help="override the length of one timed run"
    )
    args = parser.parse_args(argv)
    names = []
    for item in args.only or []:
        names += [n.strip() for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(
            f"--only: unknown scenario {unknown[0]!r}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    args.names = names or list(SCENARIOS)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.seconds is not None and args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios, print each table, write JSON / Markdown as asked."""
    args = parse(argv)
    if args.both_builds is not None:
        from benchmarks import builds

        forwarded = ["--runs", str(args.both_builds), "--docs-dir", str(args.docs_dir)]
        forwarded += [f"--only={name}" for name in (args.only or [])]
        forwarded += ["--quick"] * args.quick + ["--markdown"] * args.markdown
        return builds.main(forwarded)
    settings = Settings.make(args.quick)
    if args.rounds is not None:
        settings = replace(settings, rounds=args.rounds)
    if args.seconds is not None:
        settings = replace(settings, seconds=args.seconds)
    info = report.machine()
    print(
        f"{info['cores']} cores, Python {info['python']}, sqlgate "
        f"{info['sqlgate_build']} build, load {info['load_average']}, "
        f"{settings.rounds} rounds{' (quick)' if settings.quick else ''}",
        flush=True,
    )
    tables = []
    for name in args.names:
        t0 = time.perf_counter()
        table = SCENARIOS[name](settings)
        tables.append(table)
        print(
            report.text(table) + f"  ({time.perf_counter() - t0:.1f} s)\n", flush=True
        )
    if args.json is not None:
        payload = {
            "machine": info,
            "settings": {
                "quick": settings.quick,
                "rounds": settings.rounds,
                "cycles": settings.cycles,
                "seconds": settings.seconds,
            },
            "tables": [t.to_json() for t in tables],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if args.markdown:
        command = "python -m benchmarks --markdown" + (
            " --quick" if settings.quick else ""
        )
        args.docs_dir.mkdir(parents=True, exist_ok=True)
        md = report.markdown(tables, info, command)
        (args.docs_dir / "benchmarks.md").write_text(md, encoding="utf-8")
        report.chart(tables, args.docs_dir / "benchmarks.png")
        print(
            f"wrote {args.docs_dir / 'benchmarks.md'} and benchmarks.png",
            file=sys.stderr,
        )
    return 0
