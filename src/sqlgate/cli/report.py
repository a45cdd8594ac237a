"""The ``sqlgate stress`` report: one dict (the JSON schema), two renderings.

``build_report`` turns a run's measurements into a plain dict; ``--json FILE``
writes exactly that dict, and the terminal report (rich tables, or plain text
when rich is absent) is rendered from it, so both always agree.

JSON schema (``"schema": "sqlgate-stress/2"``); durations in the ``pool``
object are float seconds (as :class:`sqlgate.Stats`), every ``*_ms`` figure is
float milliseconds, every ``*_s`` figure float seconds::

    {
      "schema": "sqlgate-stress/2",
      "verdict": "PASS" | "FAIL",          # the checks: no leak, no internal
                                           # error; FAIL exits 1
      "exit_code": 0 | 1 | 3 | 130,        # see EXIT_CODES
      "outcome": str,                      # why, in words
      "target": {"kind": "sqlite" | "postgresql" | "asyncpg" | "mysql",
                 "dsn": str,                # password masked
                 "embedded": bool,          # the temporary SQLite database
                 "query": str},
      "config": {"workers": int, "max_open": int, "max_idle": int,
                 "duration_s": float | null, "requests": int | null,
                 "hold_time_s": float, "think_time_s": float,
                 "acquire_timeout_s": float, "async": bool,
                 "max_error_rate": float,
                 "timeout_s": float | null},  # --timeout: each request's deadline
      "elapsed_s": float,                  # workers' wall time
      "interrupted": bool,                 # stopped early by Ctrl-C
      "requests": {"total": int,           # == --requests when given
                   "ok": int, "failed": int,
                   "deadline_missed": int,  # --timeout passed (DeadlineExceeded):
                                            # neither ok nor failed
                   "error_rate": float},   # failed / total (0 when none)
      "throughput_rps": float,             # ok / elapsed_s
      "latency_ms": {                      # each: null when no data
        "acquire_wait": {"count": int, "mean": float, "p50": float,
                         "p90": float, "p99": float, "max": float},
        "query": {...same keys},           # query + fetch, successful ones
        "hold": {...same keys},            # acquire returned -> released
        "relative_error": float},          # of p50/p90/p99 (histogram);
                                           # count, mean, max are exact
      "pool": {<every sqlgate.Stats field>: int | float},  # after the run
      "peak": {"in_use": int,             # exact, counted by the workers
               "idle": int, "waiting": int, "open": int},  # sampled
      "errors": {<exception class name>: int},   # failed requests
      "internal_errors": [{"where": str,   # thread or task name
                           "error": str,   # "Type: first line"
                           "traceback": str}],
      "leak_check": {
        "method": "server" | "driver",
        "source": str,                     # what the independent count is
        "pass": bool,
        "after_run": {"pool_open": int, "driver_open": int,
                      "server_open": int | null, "expected": int,
                      "pass": bool},       # pool still open
        "after_close": {...same keys}},    # expected 0
      "sizing": {
        "busy_connections": float,         # Little's law: total held time / elapsed
        "mean_hold_ms": float | null,
        "acquires_per_s": float,
        "peak_in_use": int,
        "churn": bool,                     # max_idle closed connections under load
        "pool_bound": bool,                # waits caused by max_open
        "workers_bound": bool,             # demand reached the worker count
        "suggested_max_open": int | null,  # null when workers_bound
        "suggested_max_idle": int | null,
        "notes": [str]},
      "samples": [{"t": float, "completed": int, "errors": int,
                   "in_use": int, "idle": int, "waiting": int, "open": int,
                   "wait_ms": float | null,   # mean acquire wait, interval
                   "query_ms": float | null,  # mean query latency, interval
                   "throughput_rps": float}]  # every ~100 ms (thinned to
                                              # at most 1200 on long runs)
    }
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from sqlgate.cli._histogram import RELATIVE_ERROR, Histogram

if TYPE_CHECKING:
    from sqlgate.cli._target import Target
    from sqlgate.cli.stress import Config, LeakPoint, RunResult, Sample

__all__ = [
    "EXIT_CODES",
    "SCHEMA",
    "build_report",
    "percentiles",
    "render",
    "render_plain",
    "summary_line",
]

SCHEMA = "sqlgate-stress/2"
#: Exit status -> meaning (the command line's ``--help`` and README say the same).
EXIT_CODES = {
    0: "passed: no leak, no internal error, errors within --max-error-rate",
    1: "a check failed: a leak, or a worker or pool thread died of an internal error",
    2: "bad input (reported before the run starts)",
    3: "more requests failed than --max-error-rate allows",
    130: "interrupted (Ctrl-C)",
}
#: Headroom the sizing hint adds on top of the measured demand.
HEADROOM = 1.25


def percentiles(hist: Histogram) -> dict[str, float | int] | None:
    """Count, mean, p50, p90, p99 and max of ``hist`` (seconds) in ms.

    Percentiles are nearest-rank, within the histogram's relative error;
    count, mean and max are exact. None when there are no values.
    """
    if not hist.count and not hist.pending:
        return None
    p50, p90, p99 = (hist.percentile(p) for p in (50, 90, 99))
    return {
        "count": hist.count,
        "mean": hist.mean * 1000,
        "p50": p50 * 1000,
        "p90": p90 * 1000,
        "p99": p99 * 1000,
        "max": hist.max * 1000,
    }


def _leak(point: LeakPoint) -> dict[str, Any]:
    return {
        "pool_open": point.pool_open,
        "driver_open": point.driver_open,
        "server_open": point.server_open,
        "expected": point.expected,
        "pass": point.ok,
    }


def _samples(samples: list[Sample]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    prev_t, prev_done = 0.0, 0
    for s in samples:
        dt = s.t - prev_t
        rate = (s.completed - prev_done) / dt if dt > 0 else 0.0
        prev_t, prev_done = s.t, s.completed
        row = asdict(s)
        row["throughput_rps"] = rate
        out.append(row)
    return out


def _sizing(
    cfg: Config, result: RunResult, holds: Histogram, refused: int, peak_in_use: int
) -> dict[str, Any]:
    stats = result.stats
    elapsed = result.elapsed if result.elapsed > 0 else 1e-9
    held, n_holds = holds.total, holds.count
    busy = held / elapsed  # Little's law: L = lambda x W = (n / T) x (held / n)
    mean_hold = held / n_holds if n_holds else None
    pool_bound = (
        stats.wait_count > 0
        and cfg.max_open > 0
        and peak_in_use >= min(cfg.max_open, cfg.workers)
    )
    churn = stats.max_idle_closed > 0 and peak_in_use > stats.max_idle
    demand = busy
    if pool_bound and mean_hold is not None:
        # Capped by max_open, busy understates demand: each worker wanted a
        # connection for hold / (hold + think) of its time.
        demand = max(busy, cfg.workers * mean_hold / (mean_hold + cfg.think_time))
    wanted = max(1, math.ceil(demand * HEADROOM))
    # When every worker wants a connection all the time, the demand is the
    # worker count: a property of this run, not advice about the database.
    workers_bound = wanted >= cfg.workers
    suggested_open = None if workers_bound else wanted
    suggested_idle = (
        None
        if suggested_open is None
        else max(1, min(suggested_open, max(peak_in_use, math.ceil(busy))))
    )
    notes: list[str] = []
    if churn:
        advice = (
            f"set --max-idle >= {suggested_idle}"
            if suggested_idle is not None
            else f"set --max-idle >= {peak_in_use} (the peak in use)"
        )
        notes.append(
            f"churn: {stats.max_idle_closed} connections were closed by "
            f"max_idle={stats.max_idle} while up to {peak_in_use} were in use at "
            f"once ({stats.dials} dials for {stats.acquires} acquires); {advice}."
        )
    if stats.wait_count:
        # Every acquire that queued was attempted: served ones, and refused
        # ones (timed out, connect error) too.
        attempts = stats.acquires + refused
        share = stats.wait_count / attempts * 100 if attempts else 0.0
        mean_wait = stats.wait_duration / stats.wait_count * 1000
        cause = (
            f"max_open={cfg.max_open} was the limit (peak in use {peak_in_use})"
            + (
                f"; raise it to about {suggested_open} if the server has room"
                if suggested_open is not None and suggested_open > cfg.max_open
                else ""
            )
            if pool_bound
            else "they waited for new connections to be dialed, not for max_open"
        )
        notes.append(
            f"waits: {stats.wait_count} of {attempts} acquire attempts "
            f"({share:.1f} %) queued, {stats.wait_duration:.3f} s in total "
            f"(mean {mean_wait:.2f} ms); {cause}."
        )
    if stats.timeouts:
        notes.append(
            f"{stats.timeouts} acquires timed out after {cfg.acquire_timeout:g} s."
        )
    hold_text = "n/a" if mean_hold is None else f"{mean_hold * 1000:.3f} ms"
    busy_text = (
        f"busy connections = {n_holds / elapsed:.1f} acquires/s x {hold_text} "
        f"held = {busy:.2f}"
    )
    if workers_bound:
        notes.append(
            f"{busy_text}: all {cfg.workers} workers wanted a connection nearly "
            f"all the time (think time {cfg.think_time:g} s), so this run "
            "measures the workload, not what the database needs; to size the "
            "pool, give --think-time the gap between your application's "
            "queries, or compare runs at several --max-open values."
        )
    else:
        notes.append(
            f"{busy_text}; suggested max_open={suggested_open}, "
            f"max_idle={suggested_idle}."
        )
    if not churn and not pool_bound:
        limit = "unlimited" if cfg.max_open == 0 else str(cfg.max_open)
        notes.append(
            f"max_open={limit} max_idle={cfg.max_idle} fit this load: "
            "no churn, no waits caused by max_open."
        )
    return {
        "busy_connections": busy,
        "mean_hold_ms": None if mean_hold is None else mean_hold * 1000,
        "acquires_per_s": n_holds / elapsed,
        "peak_in_use": peak_in_use,
        "churn": churn,
        "pool_bound": pool_bound,
        "workers_bound": workers_bound,
        "suggested_max_open": suggested_open,
        "suggested_max_idle": suggested_idle,
        "notes": notes,
    }


def _outcome(
    cfg: Config, result: RunResult, leak_pass: bool, error_rate: float
) -> tuple[int, str]:
    """The exit status and why: a failed check, then Ctrl-C, then errors."""
    if result.internal:
        return 1, f"FAIL: {len(result.internal)} internal error(s)" + (
            "" if leak_pass else " and a leak"
        )
    if not leak_pass:
        return 1, "FAIL: leak"
    if result.interrupted:
        return 130, "interrupted (Ctrl-C): the figures cover the run until then"
    if error_rate > cfg.max_error_rate:
        return 3, (
            f"{error_rate * 100:.2f} % of requests failed, above "
            f"--max-error-rate {cfg.max_error_rate:g}"
        )
    return 0, "PASS"


def build_report(cfg: Config, target: Target, result: RunResult) -> dict[str, Any]:
    """Shape a run into the report dict (the JSON schema in this module).

    Args:
        cfg: the run's settings.
        target: what was stressed (its DSN is already masked).
        result: the measurements.

    Returns:
        A JSON-serialisable dict.
    """
    tallies = result.tallies
    waits = Histogram.of(t.waits for t in tallies)
    queries = Histogram.of(t.queries for t in tallies)
    holds = Histogram.of(t.holds for t in tallies)
    errors: dict[str, int] = {}
    for tally in tallies:
        for kind, n in tally.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    ok = sum(t.done for t in tallies)
    failed = sum(t.failed for t in tallies)
    refused = sum(t.refused for t in tallies)
    missed = sum(t.missed for t in tallies)
    total = ok + failed + missed
    error_rate = failed / total if total else 0.0
    samples = result.samples
    peak = {
        key: max((getattr(s, key) for s in samples), default=0)
        for key in ("in_use", "idle", "waiting", "open")
    }
    # Sampling every 100 ms can miss a short burst; the workers' count cannot.
    peak["in_use"] = max(peak["in_use"], result.peak_in_use)
    leak_pass = result.after_run.ok and result.after_close.ok
    code, outcome = _outcome(cfg, result, leak_pass, error_rate)
    if target.server is not None:
        method, source = "server", target.server.source
    else:
        method = "driver"
        source = (
            "no server can tell on SQLite: connections the connect callable "
            "returned that the driver reports still open (opened minus closed)"
        )
    return {
        "schema": SCHEMA,
        "verdict": "PASS" if leak_pass and not result.internal else "FAIL",
        "exit_code": code,
        "outcome": outcome,
        "target": {
            "kind": target.kind,
            "dsn": target.shown,
            "embedded": target.embedded,
            "query": target.query,
        },
        "config": {
            "workers": cfg.workers,
            "max_open": cfg.max_open,
            "max_idle": cfg.max_idle,
            "duration_s": cfg.duration,
            "requests": cfg.requests,
            "hold_time_s": cfg.hold_time,
            "think_time_s": cfg.think_time,
            "acquire_timeout_s": cfg.acquire_timeout,
            "async": cfg.use_async,
            "max_error_rate": cfg.max_error_rate,
            "timeout_s": cfg.timeout,
        },
        "elapsed_s": result.elapsed,
        "interrupted": result.interrupted,
        "requests": {
            "total": total,
            "ok": ok,
            "failed": failed,
            "deadline_missed": missed,
            "error_rate": error_rate,
        },
        "throughput_rps": ok / result.elapsed if result.elapsed > 0 else 0.0,
        "latency_ms": {
            "acquire_wait": percentiles(waits),
            "query": percentiles(queries),
            "hold": percentiles(holds),
            "relative_error": RELATIVE_ERROR,
        },
        "pool": asdict(result.stats),
        "peak": peak,
        "errors": dict(sorted(errors.items())),
        "internal_errors": [
            {"where": e.where, "error": e.error, "traceback": e.traceback}
            for e in result.internal
        ],
        "leak_check": {
            "method": method,
            "source": source,
            "pass": leak_pass,
            "after_run": _leak(result.after_run),
            "after_close": _leak(result.after_close),
        },
        "sizing": _sizing(cfg, result, holds, refused, peak["in_use"]),
        "samples": _samples(samples),
    }


# -- rendering ------------------------------------------------------------------

_LATENCY_ROWS = (("acquire wait", "acquire_wait"), ("query", "query"), ("hold", "hold"))
_POOL_KEYS = (
    "max_open_connections",
    "max_idle",
    "open_connections",
    "in_use",
    "idle",
    "acquires",
    "dials",
    "closed",
    "wait_count",
    "wait_duration",
    "max_idle_closed",
    "max_idle_time_closed",
    "max_lifetime_closed",
    "broken_closed",
    "timeouts",
    "dial_failures",
    "use_duration",
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _verdict_line(report: dict[str, Any]) -> str:
    leak = report["leak_check"]
    run, closed = leak["after_run"], leak["after_close"]
    witness = "server" if leak["method"] == "server" else "driver"
    return (
        f"leak check {report['verdict']}: after run pool={run['pool_open']} "
        f"driver={run['driver_open']}"
        + (f" server={run['server_open']}" if witness == "server" else "")
        + f"; after close pool={closed['pool_open']} driver={closed['driver_open']}"
        + (f" server={closed['server_open']}" if witness == "server" else "")
    )


def _outcome_line(report: dict[str, Any]) -> str:
    internal = len(report["internal_errors"])
    return f"exit {report['exit_code']}: {report['outcome']}" + (
        f"; {internal} internal error(s)"
        if internal and "internal" not in report["outcome"]
        else ""
    )


def summary_line(report: dict[str, Any]) -> str:
    """One line: requests, throughput, the checks and the exit status."""
    req = report["requests"]
    return (
        ("INTERRUPTED: " if report["interrupted"] else "")
        + f"{req['total']} requests ({req['failed']} failed"
        + (
            f", {req['deadline_missed']} missed the deadline"
            if report["config"]["timeout_s"] is not None
            else ""
        )
        + ") in "
        f"{report['elapsed_s']:.2f} s, {report['throughput_rps']:.0f} req/s; "
        f"{len(report['internal_errors'])} internal errors; "
        + _verdict_line(report)
        + f"; exit {report['exit_code']}"
    )


def _settings(report: dict[str, Any]) -> str:
    cfg = report["config"]
    max_open = cfg["max_open"] or "unlimited"
    return (
        f"  workers={cfg['workers']} max_open={max_open} "
        f"max_idle={cfg['max_idle']} hold={cfg['hold_time_s']:g}s "
        f"think={cfg['think_time_s']:g}s acquire_timeout="
        f"{cfg['acquire_timeout_s']:g}s"
        + (f" timeout={cfg['timeout_s']:g}s" if cfg["timeout_s"] is not None else "")
        + (" async" if cfg["async"] else "")
    )


def _requests_line(report: dict[str, Any]) -> str:
    req = report["requests"]
    missed = (
        f", {req['deadline_missed']} missed the deadline"
        if report["config"]["timeout_s"] is not None
        else ""
    )
    return (
        f"requests: {req['total']} ({req['ok']} ok, {req['failed']} failed"
        f"{missed}, {req['error_rate'] * 100:.2f} %) in "
        f"{report['elapsed_s']:.2f} s = {report['throughput_rps']:.1f} req/s"
    )


def _internal_lines(report: dict[str, Any]) -> list[str]:
    internal = report["internal_errors"]
    if not internal:
        return ["internal errors: none"]
    return [f"internal errors: {len(internal)} (the run FAILS)"] + [
        f"  {e['where']}: {e['error']}" for e in internal
    ]


def render_plain(report: dict[str, Any]) -> str:
    """The report as plain text (used when rich is not installed)."""
    lines = [
        f"sqlgate stress: {report['target']['dsn']}",
        f"  query: {report['target']['query']}",
        _settings(report),
    ]
    if report["interrupted"]:
        lines.append("INTERRUPTED (Ctrl-C): the figures cover the run until then")
    lines += [
        "",
        _requests_line(report),
        "",
        f"{'latency (ms)':<14}{'count':>8}{'p50':>10}{'p90':>10}{'p99':>10}"
        f"{'max':>10}{'mean':>10}",
    ]
    for label, key in _LATENCY_ROWS:
        row = report["latency_ms"][key]
        if row is None:
            lines.append(f"{label:<14}{0:>8}" + "         -" * 5)
            continue
        lines.append(
            f"{label:<14}{row['count']:>8}"
            + "".join(f"{row[k]:>10.3f}" for k in ("p50", "p90", "p99", "max", "mean"))
        )
    lines += ["", "pool stats (after the run):"]
    pool = report["pool"]
    lines += [f"  {key:<22}{_fmt(pool[key])}" for key in _POOL_KEYS]
    peak = report["peak"]
    lines.append(
        f"  peak: in_use={peak['in_use']} idle={peak['idle']} "
        f"waiting={peak['waiting']} open={peak['open']}"
    )
    lines += ["", "errors:"]
    errors = report["errors"]
    lines += [f"  {k}: {v}" for k, v in errors.items()] or ["  none"]
    lines += ["", *_internal_lines(report)]
    leak = report["leak_check"]
    lines += ["", f"leak check ({leak['method']}: {leak['source']}):"]
    for label in ("after_run", "after_close"):
        p = leak[label]
        lines.append(
            f"  {label.replace('_', ' '):<12} pool={p['pool_open']} "
            f"driver={p['driver_open']} server={_fmt(p['server_open'])} "
            f"expected={p['expected']} {'PASS' if p['pass'] else 'FAIL'}"
        )
    lines += ["", "sizing:"]
    lines += [f"  - {note}" for note in report["sizing"]["notes"]]
    lines += ["", _verdict_line(report), _outcome_line(report)]
    return "\n".join(lines) + "\n"


def render(report: dict[str, Any], out: TextIO) -> None:
    """Write the report to ``out``: rich tables if rich is installed, else text."""
    try:
        from rich.console import Console
    except ImportError:
        out.write(render_plain(report))
        return
    # A terminal wraps at its width; a file or pipe gets whole lines.
    tty = out.isatty()
    console = Console(
        file=out, highlight=False, soft_wrap=not tty, width=None if tty else 1000
    )
    _render_rich(report, console)


def _render_rich(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    console.print(f"[bold]sqlgate stress[/bold]: {report['target']['dsn']}")
    console.print(f"  query: {report['target']['query']}", markup=False)
    console.print(_settings(report), markup=False)
    if report["interrupted"]:
        console.print(
            "INTERRUPTED (Ctrl-C): the figures cover the run until then",
            style="bold yellow",
            markup=False,
        )
    console.print(_requests_line(report), markup=False)
    lat = Table(title="latency (ms)", title_justify="left")
    lat.add_column("")
    for col in ("count", "p50", "p90", "p99", "max", "mean"):
        lat.add_column(col, justify="right")
    for label, key in _LATENCY_ROWS:
        row = report["latency_ms"][key]
        if row is None:
            lat.add_row(label, "0", *["-"] * 5)
        else:
            lat.add_row(
                label,
                str(row["count"]),
                *(f"{row[k]:.3f}" for k in ("p50", "p90", "p99", "max", "mean")),
            )
    console.print(lat)
    pool = Table(title="pool stats (after the run)", title_justify="left")
    pool.add_column("field")
    pool.add_column("value", justify="right")
    for key in _POOL_KEYS:
        pool.add_row(key, _fmt(report["pool"][key]))
    peak = report["peak"]
    pool.add_row(
        "peak in_use/idle/waiting/open",
        f"{peak['in_use']}/{peak['idle']}/{peak['waiting']}/{peak['open']}",
    )
    console.print(pool)
    errors = report["errors"]
    if errors:
        err = Table(title="errors", title_justify="left")
        err.add_column("kind")
        err.add_column("count", justify="right")
        for kind, n in errors.items():
            err.add_row(kind, str(n))
        console.print(err)
    else:
        console.print("errors: none")
    internal = _internal_lines(report)
    console.print(
        "\n".join(internal),
        style="bold red" if report["internal_errors"] else None,
        markup=False,
    )
    leak = report["leak_check"]
    table = Table(title=f"leak check ({leak['method']})", title_justify="left")
    for col in ("when", "pool", "driver", "server", "expected", "result"):
        table.add_column(col, justify="left" if col == "when" else "right")
    for label in ("after_run", "after_close"):
        p = leak[label]
        mark = "[green]PASS[/green]" if p["pass"] else "[bold red]FAIL[/bold red]"
        table.add_row(
            label.replace("_", " "),
            str(p["pool_open"]),
            str(p["driver_open"]),
            _fmt(p["server_open"]),
            str(p["expected"]),
            mark,
        )
    console.print(table)
    console.print(f"  counted by: {leak['source']}", markup=False)
    console.print("[bold]sizing[/bold]")
    for note in report["sizing"]["notes"]:
        console.print(f"  - {note}", markup=False)
    style = "green" if report["verdict"] == "PASS" else "bold red"
    console.print(_verdict_line(report), style=style, markup=False)
    style = "green" if report["exit_code"] == 0 else "bold red"
    console.print(_outcome_line(report), style=style, markup=False)
