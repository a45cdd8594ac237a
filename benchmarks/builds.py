"""``python -m benchmarks --both-builds N``: every scenario on both builds, N runs each.

The pure-Python build and the compiled one (setup.py) cannot share a process,
so each run is a child ``python -m benchmarks`` (its usual interleaved rounds
and medians), ``--runs`` times per build: the pure build first (no compiled
module beside the source), then the compiled one (built in place with
``SQLGATE_COMPILE=1``, removed afterwards). The issue's targets are then read
from every run: the median over runs and the spread (lowest, highest).

With ``--markdown`` it writes docs/benchmarks.md: the targets for both builds,
then each build's tables from its median run (by the cycle ratio), with the
load average each run started under.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._common import median

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
BUILDS = ("pure", "compiled")
PEERS = ("psycopg_pool", "SQLAlchemy QueuePool", "DBUtils PooledDB")


def _compiled_files() -> list[Path]:
    return [
        *SRC.glob("sqlgate__mypyc.*.so"),
        *SRC.glob("sqlgate/*.so"),
        *SRC.glob("sqlgate/_core/*.so"),
    ]


def _remove_compiled() -> None:
    for path in _compiled_files():
        path.unlink()


def _build_compiled() -> None:
    env = {**os.environ, "SQLGATE_COMPILE": "1"}
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _run_once(
    out: Path, only: Sequence[str], build: str, quick: bool
) -> dict[str, Any]:
    """One child ``python -m benchmarks``; its JSON (and Markdown in ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks", "--json", str(out / "run.json")]
    if quick:
        cmd.append("--quick")
    cmd += ["--markdown", "--docs-dir", str(out)]
    for name in only:
        cmd += ["--only", name]
    path = os.pathsep.join([str(SRC), str(ROOT)])
    env = {**os.environ, "PYTHONPATH": path}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    payload: dict[str, Any] = json.loads((out / "run.json").read_text())
    ran = payload["machine"].get("sqlgate_build")
    if ran != build:
        raise SystemExit(f"asked for the {build} build, the run says {ran!r}")
    return payload


def _rows(payload: dict[str, Any], scenario: str) -> dict[str, dict[str, Any]] | None:
    for table in payload["tables"]:
        if table["scenario"] == scenario and not table.get("skipped"):
            return {r["contender"]: r for r in table["rows"]}
    return None


@dataclass
class Target:
    """One target of issue 18, read from a run's figures."""

    name: str
    goal: str
    read: Callable[[dict[str, Any]], float | None]
    #: Whether a build's median meets it; None: no goal for that build.
    meets: Callable[[float, str], bool | None]
    fmt: str = "{:.2f}"


def _cycle(key: Callable[[dict[str, dict[str, Any]]], float]) -> Any:
    def read(payload: dict[str, Any]) -> float | None:
        rows = _rows(payload, "cycle")
        return None if rows is None else key(rows)

    return read


def _fastest_peer(rows: dict[str, dict[str, Any]]) -> float:
    peer = min(rows[p]["ns"] for p in PEERS if p in rows)
    return float(rows["sqlgate"]["ns"] / peer)


def _row(scenario: str, contender: str, key: str) -> Any:
    def read(payload: dict[str, Any]) -> float | None:
        rows = _rows(payload, scenario)
        if rows is None or contender not in rows:
            return None
        return float(rows[contender][key])

    return read


def _versus(scenario: str, contender: str, floor: str) -> Any:
    def read(payload: dict[str, Any]) -> float | None:
        rows = _rows(payload, scenario)
        if rows is None or contender not in rows or floor not in rows:
            return None
        # As the scenario's own note: median throughputs, one over the other.
        return float(rows[contender]["throughput"] / rows[floor]["throughput"])

    return read


def _ahead_of_peers(payload: dict[str, Any]) -> float | None:
    rows = _rows(payload, "pg")
    if rows is None:
        return None
    best = max(rows[p]["throughput"] for p in PEERS if p in rows)
    return float(rows["sqlgate"]["throughput"] / best)


TARGETS = [
    Target(
        "cycle: sqlgate / Lock+deque floor",
        "compiled <= 1.4, pure <= 2.5",
        _cycle(lambda r: r["sqlgate"]["ratio"]),
        lambda v, b: v <= (1.4 if b == "compiled" else 2.5),
    ),
    Target(
        "cycle: sqlgate / fastest peer",
        "compiled <= 0.34",
        _cycle(_fastest_peer),
        lambda v, b: v <= 0.34 if b == "compiled" else None,
    ),
    Target(
        "`with pool.connection()` / bare acquire+release",
        "<= 1.2",
        _cycle(lambda r: r["sqlgate (with)"]["ns"] / r["sqlgate"]["ns"]),
        lambda v, b: v <= 1.2,
    ),
    Target(
        "contended: sqlgate / FIFO floor (throughput)",
        ">= 0.95",
        _row("contended", "sqlgate", "ratio"),
        lambda v, b: v >= 0.95,
    ),
    Target(
        "contended: fairness (max/min per thread)",
        "< 1.5",
        _row("contended", "sqlgate", "fairness"),
        lambda v, b: v < 1.5,
    ),
    Target(
        "pg: sqlgate / FIFO floor (same connections)",
        ">= 0.95",
        _versus("pg", "sqlgate", "floor (FIFO hand-off)"),
        lambda v, b: v >= 0.95,
    ),
    Target(
        "pg: sqlgate / best peer",
        "> 1",
        _ahead_of_peers,
        lambda v, b: v > 1.0,
    ),
    Target(
        "async (asyncpg): AsyncPool / asyncio FIFO floor",
        ">= 0.95",
        _versus("async", "sqlgate AsyncPool", "floor (FIFO hand-off)"),
        lambda v, b: v >= 0.95,
    ),
    Target(
        "memory: bytes per idle connection (peers beside it below)",
        "reported",
        _row("memory", "sqlgate", "bytes"),
        lambda v, b: None,
        "{:.0f}",
    ),
    Target(
        "memory: bytes per waiter (peers beside it below)",
        "reported",
        _row("memory", "sqlgate", "waiter"),
        lambda v, b: None,
        "{:.0f}",
    ),
]


def summary(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The targets table: median [lowest-highest] over the runs of each build."""
    counts = ", ".join(f"{b}: {len(runs[b])}" for b in BUILDS if runs.get(b))
    lines = [
        f"Runs per build: {counts}. Each cell: the median over runs "
        "[lowest - highest]; met = the median meets the goal.",
        "",
        "| target | goal | " + " | ".join(b for b in BUILDS if runs.get(b)) + " |",
        "|---|---|" + "---|" * sum(1 for b in BUILDS if runs.get(b)),
    ]
    for target in TARGETS:
        cells = []
        for build in BUILDS:
            payloads = runs.get(build)
            if not payloads:
                continue
            values = [v for v in (target.read(p) for p in payloads) if v is not None]
            if not values:
                cells.append("not measured")
                continue
            mid = median(values)
            met = target.meets(mid, build)
            verdict = "" if met is None else ("met" if met else "NOT met")
            spread = (
                f"{target.fmt.format(min(values))} - {target.fmt.format(max(values))}"
            )
            cells.append(f"{target.fmt.format(mid)} [{spread}] {verdict}".rstrip())
        lines.append(f"| {target.name} | {target.goal} | " + " | ".join(cells) + " |")
    loads = []
    for build in BUILDS:
        for i, payload in enumerate(runs.get(build, []), 1):
            load = " / ".join(str(x) for x in payload["machine"]["load_average"])
            loads.append(f"{build} run {i}: {load}")
    lines += ["", "Load average at the start of each run: " + "; ".join(loads) + "."]
    return lines


def _median_run(payloads: list[dict[str, Any]]) -> int:
    """The index of the run whose sqlgate cycle ratio is the median one."""
    read = TARGETS[0].read
    scored = sorted((read(p) or 0.0, i) for i, p in enumerate(payloads))
    return scored[len(scored) // 2][1]


def _body(markdown: str) -> str:
    """A child's page from its first scenario on, headings one level down."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## "))
    return "\n".join(
        "#" + line if line.startswith("#") else line for line in lines[start:]
    )


def page(runs: dict[str, list[dict[str, Any]]], dirs: dict[str, list[Path]]) -> str:
    """docs/benchmarks.md for both builds."""
    first = next(p for b in BUILDS for p in runs.get(b, []))
    runs_per = max(len(v) for v in runs.values())
    info = first["machine"]
    pk = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `python -m benchmarks --both-builds {runs_per} --markdown` "
        f"on {info['date']}: "
        "every scenario of `python -m benchmarks`, several runs on each build "
        "(the pure-Python source, and the compiled build setup.py makes with "
        "mypyc). Compare figures from the same machine and run only.",
        "",
        f"Machine: {info['cores']} cores ({info['cpu']}), {info['implementation']} "
        f"{info['python']}, PostgreSQL {info['postgresql'] or 'absent'} on "
        f"loopback. Packages: {pk}.",
        "",
        "How the harness works: every contender runs in the same process, once "
        "per round in a freshly shuffled order, and each figure is the median over "
        "the rounds; ratios compare a contender with the floor or limit measured "
        "in the same round. Timings on a busy machine are noisy: read the ratios, "
        "not the absolute numbers. `python -m benchmarks` runs one build (the one "
        "installed: `sqlgate.compiled`); `--only NAME` runs a subset, `--json "
        "FILE` saves the figures, `--quick` is the seconds-long form CI runs, "
        "`--both-builds N` runs N times on each build. "
        "The PostgreSQL scenarios use `SQLGATE_BENCH_DSN` (default `host=127.0.0.1 "
        "port=5432 user=postgres dbname=test`) and are skipped, saying why, when "
        "it does not answer.",
        "",
        "## Targets (issue 18), both builds",
        "",
        *summary(runs),
        "",
    ]
    for build in BUILDS:
        payloads = runs.get(build)
        if not payloads:
            continue
        k = _median_run(payloads)
        name = "Pure-Python build" if build == "pure" else "Compiled build (mypyc)"
        chart = f"benchmarks-{build}.png"
        parts += [
            f"## {name}: run {k + 1} of {len(payloads)} "
            "(its cycle ratio is the median)",
            "",
            f"![Ratios per scenario, {build} build]({chart})",
            "",
            _body((dirs[build][k] / "benchmarks.md").read_text(encoding="utf-8")),
            "",
        ]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run both builds ``--runs`` times; print the targets; write the page."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks --both-builds")
    parser.add_argument("--runs", type=int, default=3, help="runs per build (3)")
    parser.add_argument("--only", action="append", default=[], help="scenarios")
    parser.add_argument("--markdown", action="store_true", help="write docs/")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the seconds-long form (figures mean nothing)",
    )
    parser.add_argument("--docs-dir", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--builds", default="pure,compiled", help="which builds (pure,compiled)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    builds = [b.strip() for b in args.builds.split(",") if b.strip()]
    if not builds or any(b not in BUILDS for b in builds):
        parser.error(f"--builds: choose from {', '.join(BUILDS)}, got {args.builds!r}")
    runs: dict[str, list[dict[str, Any]]] = {}
    dirs: dict[str, list[Path]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="sqlgate-bench-"))
    try:
        for build in BUILDS:
            if build not in builds:
                continue
            _remove_compiled()
            if build == "compiled":
                _build_compiled()
            try:
                for i in range(args.runs):
                    print(f"== {build} build, run {i + 1} of {args.runs}", flush=True)
                    out = tmp / f"{build}-{i}"
                    payload = _run_once(out, args.only, build, args.quick)
                    runs.setdefault(build, []).append(payload)
                    dirs.setdefault(build, []).append(out)
            finally:
                _remove_compiled()
        print("\n".join(summary(runs)))
        if args.markdown:
            args.docs_dir.mkdir(parents=True, exist_ok=True)
            (args.docs_dir / "benchmarks.png").unlink(missing_ok=True)  # one build's
            for build, payloads in runs.items():
                k = _median_run(payloads)
                shutil.copy(
                    dirs[build][k] / "benchmarks.png",
                    args.docs_dir / f"benchmarks-{build}.png",
                )
            (args.docs_dir / "benchmarks.md").write_text(
                page(runs, dirs), encoding="utf-8"
            )
            print(f"wrote {args.docs_dir / 'benchmarks.md'}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
