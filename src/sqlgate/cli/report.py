"""The ``sqlgate stress`` report: one dict (the JSON schema), two renderings.

``build_report`` turns a run's measurements into a plain dict; ``--json FILE``
writes exactly that dict, and the terminal report (rich tables, or plain text
when rich is absent) is rendered from it, so both always agree.

JSON schema (``"schema": "sqlgate-stress/1"``); durations in the ``pool``
object are float seconds (as :class:`sqlgate.Stats`), every ``*_ms`` figure is
float milliseconds, every ``*_s`` figure float seconds::

    {
      "schema": "sqlgate-stress/1",
      "verdict": "PASS" | "FAIL",          # the leak check; FAIL exits 1
      "target": {"kind": "sqlite" | "postgresql" | "mysql",
                 "dsn": str,                # password masked
                 "embedded": bool,          # the temporary SQLite database
                 "query": str},
      "config": {"workers": int, "max_open": int, "max_idle": int,
                 "duration_s": float | null, "requests": int | null,
                 "hold_time_s": float, "think_time_s": float,
                 "acquire_timeout_s": float, "async": bool},
      "elapsed_s": float,                  # workers' wall time
      "interrupted": bool,                 # stopped early by Ctrl-C
      "requests": {"total": int,           # == --requests when given
                   "ok": int, "failed": int},
      "throughput_rps": float,             # ok / elapsed_s
      "latency_ms": {                      # each: null when no data
        "acquire_wait": {"count": int, "mean": float, "p50": float,
                         "p90": float, "p99": float, "max": float},
        "query": {...same keys},           # query + fetch, successful ones
        "hold": {...same keys}},           # acquire returned -> released
      "pool": {<every sqlgate.Stats field>: int | float},  # after the run
      "peak": {"in_use": int,             # exact, from the workers' holds
               "idle": int, "waiting": int, "open": int},  # sampled
      "errors": {<exception class name>: int},
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
        "suggested_max_open": int,
        "suggested_max_idle": int,
        "notes": [str]},
      "samples": [{"t": float, "completed": int, "errors": int,
                   "in_use": int, "idle": int, "waiting": int, "open": int,
                   "throughput_rps": float}]   # every ~100 ms
    }
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sqlgate.cli._target import Target
    from sqlgate.cli.stress import Config, LeakPoint, RunResult, Sample

__all__ = [
    "SCHEMA",
    "build_report",
    "peak_concurrency",
    "percentiles",
    "render",
    "render_plain",
    "summary_line",
]

SCHEMA = "sqlgate-stress/1"
#: Headroom the sizing hint adds on top of the measured demand.
HEADROOM = 1.25


def percentiles(values: list[float]) -> dict[str, float | int] | None:
    """Count, mean, p50, p90, p99 and max of ``values`` (seconds) in ms.

    Percentiles are nearest-rank: the smallest value with at least p % of the
    values at or below it. None when there are no values.
    """
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * n) - 1)] * 1000

    return {
        "count": n,
        "mean": sum(ordered) / n * 1000,
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": ordered[-1] * 1000,
    }


def peak_concurrency(starts: list[float], durations: list[float]) -> int:
    """Most intervals ``[start, start + duration)`` open at one moment (exact)."""
    events = sorted(
        [(t, 1) for t in starts]
        + [(t + d, -1) for t, d in zip(starts, durations, strict=True)],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


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
    cfg: Config, result: RunResult, holds: list[float], peak_in_use: int
) -> dict[str, Any]:
    stats = result.stats
    elapsed = result.elapsed if result.elapsed > 0 else 1e-9
    held = sum(holds)
    busy = held / elapsed  # Little's law: L = lambda x W = (n / T) x (held / n)
    mean_hold = held / len(holds) if holds else None
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
    suggested_open = max(1, min(cfg.workers, math.ceil(demand * HEADROOM)))
    suggested_idle = max(1, min(suggested_open, max(peak_in_use, math.ceil(busy))))
    notes: list[str] = []
    if churn:
        notes.append(
            f"churn: {stats.max_idle_closed} connections were closed by "
            f"max_idle={stats.max_idle} while up to {peak_in_use} were in use at "
            f"once ({stats.dials} dials for {stats.acquires} acquires); set "
            f"max_idle >= {suggested_idle}. Go's default max_idle of 2 is a "
            "known cause of this."
        )
    if stats.wait_count:
        share = stats.wait_count / stats.acquires * 100 if stats.acquires else 0.0
        mean_wait = stats.wait_duration / stats.wait_count * 1000
        cause = (
            f"max_open={cfg.max_open} was the limit (peak in use {peak_in_use}); "
            f"raise it to about {suggested_open} if the server has room"
            if pool_bound
            else "they waited for new connections to be dialed, not for max_open"
        )
        notes.append(
            f"waits: {stats.wait_count} of {stats.acquires} acquires ({share:.1f} %) "
            f"waited, {stats.wait_duration:.3f} s in total (mean {mean_wait:.2f} ms); "
            f"{cause}."
        )
    if stats.timeouts:
        notes.append(
            f"{stats.timeouts} acquires timed out after {cfg.acquire_timeout:g} s."
        )
    hold_text = "n/a" if mean_hold is None else f"{mean_hold * 1000:.3f} ms"
    notes.append(
        f"busy connections = {len(holds) / elapsed:.1f} acquires/s x {hold_text} "
        f"held = {busy:.2f}; suggested max_open={suggested_open}, "
        f"max_idle={suggested_idle}."
    )
    if not churn and not pool_bound:
        notes.append(
            f"max_open={cfg.max_open} max_idle={cfg.max_idle} fit this load: "
            "no churn, no waits caused by max_open."
        )
    return {
        "busy_connections": busy,
        "mean_hold_ms": None if mean_hold is None else mean_hold * 1000,
        "acquires_per_s": len(holds) / elapsed,
        "peak_in_use": peak_in_use,
        "churn": churn,
        "pool_bound": pool_bound,
        "suggested_max_open": suggested_open,
        "suggested_max_idle": suggested_idle,
        "notes": notes,
    }


def build_report(cfg: Config, target: Target, result: RunResult) -> dict[str, Any]:
    """Shape a run into the report dict (the JSON schema in this module).

    Args:
        cfg: the run's settings.
        target: what was stressed (its DSN is already masked).
        result: the measurements.

    Returns:
        A JSON-serialisable dict.
    """
    waits = [w for t in result.tallies for w in t.waits]
    queries = [q for t in result.tallies for q in t.queries]
    holds = [h for t in result.tallies for h in t.holds]
    errors: dict[str, int] = {}
    for tally in result.tallies:
        for kind, n in tally.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    ok = sum(t.done for t in result.tallies)
    failed = sum(t.failed for t in result.tallies)
    samples = result.samples
    peak = {
        key: max((getattr(s, key) for s in samples), default=0)
        for key in ("in_use", "idle", "waiting", "open")
    }
    # Sampling every 100 ms can miss a short burst; the holds cannot.
    starts = [a for t in result.tallies for a in t.held_at]
    peak["in_use"] = max(peak["in_use"], peak_concurrency(starts, holds))
    leak_pass = result.after_run.ok and result.after_close.ok
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
        "verdict": "PASS" if leak_pass else "FAIL",
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
        },
        "elapsed_s": result.elapsed,
        "interrupted": result.interrupted,
        "requests": {"total": ok + failed, "ok": ok, "failed": failed},
        "throughput_rps": ok / result.elapsed if result.elapsed > 0 else 0.0,
        "latency_ms": {
            "acquire_wait": percentiles(waits),
            "query": percentiles(queries),
            "hold": percentiles(holds),
        },
        "pool": asdict(result.stats),
        "peak": peak,
        "errors": dict(sorted(errors.items())),
        "leak_check": {
            "method": method,
            "source": source,
            "pass": leak_pass,
            "after_run": _leak(result.after_run),
            "after_close": _leak(result.after_close),
        },
        "sizing": _sizing(cfg, result, holds, peak["in_use"]),
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


def summary_line(report: dict[str, Any]) -> str:
    """One line: requests, throughput, and the verdict (for ``--quiet``)."""
    req = report["requests"]
    return (
        f"{req['total']} requests ({req['failed']} failed) in "
        f"{report['elapsed_s']:.2f} s, {report['throughput_rps']:.0f} req/s; "
        + _verdict_line(report)
    )


def render_plain(report: dict[str, Any]) -> str:
    """The report as plain text (used when rich is not installed)."""
    cfg, req = report["config"], report["requests"]
    lines = [
        f"sqlgate stress: {report['target']['dsn']}",
        f"  query: {report['target']['query']}",
        f"  workers={cfg['workers']} max_open={cfg['max_open']} "
        f"max_idle={cfg['max_idle']} hold={cfg['hold_time_s']:g}s "
        f"think={cfg['think_time_s']:g}s" + (" async" if cfg["async"] else ""),
        "",
        f"requests: {req['total']} ({req['ok']} ok, {req['failed']} failed) in "
        f"{report['elapsed_s']:.2f} s = {report['throughput_rps']:.1f} req/s",
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
    lines += ["", _verdict_line(report)]
    return "\n".join(lines) + "\n"


def render(report: dict[str, Any], out: TextIO) -> None:
    """Write the report to ``out``: rich tables if rich is installed, else text."""
    try:
        from rich.console import Console
    except ImportError:
        out.write(render_plain(report))
        return
    _render_rich(report, Console(file=out, highlight=False, soft_wrap=False))


def _render_rich(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    cfg, req = report["config"], report["requests"]
    console.print(f"[bold]sqlgate stress[/bold]: {report['target']['dsn']}")
    console.print(f"  query: {report['target']['query']}", markup=False)
    console.print(
        f"  workers={cfg['workers']} max_open={cfg['max_open']} "
        f"max_idle={cfg['max_idle']} hold={cfg['hold_time_s']:g}s "
        f"think={cfg['think_time_s']:g}s" + (" async" if cfg["async"] else "")
    )
    console.print(
        f"requests: [bold]{req['total']}[/bold] ({req['ok']} ok, "
        f"{req['failed']} failed) in {report['elapsed_s']:.2f} s = "
        f"[bold]{report['throughput_rps']:.1f} req/s[/bold]"
    )
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
