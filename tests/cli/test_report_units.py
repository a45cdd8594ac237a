"""The report's rules, on made-up runs: the sizing hint and the exit status."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sqlgate.cli._histogram import Histogram
from sqlgate.cli._target import Ledger, Target
from sqlgate.cli.report import EXIT_CODES, build_report
from sqlgate.cli.stress import Config, InternalError, LeakPoint, RunResult, Tally
from sqlgate.stats import Stats


def _stats(**fields: Any) -> Stats:
    base: dict[str, Any] = {
        f.name: 0 for f in dataclasses.fields(Stats) if f.default is dataclasses.MISSING
    }
    base.update(wait_duration=0.0, dial_duration=0.0, use_duration=0.0)
    if "circuit_open" in base:
        base["circuit_open"] = False
    base.update(fields)
    return Stats(**base)


def _target() -> Target:
    ledger = Ledger(lambda: None)
    return Target("sqlite", "sqlite:///x.db", "SELECT 1", ledger, ledger, None, "m")


def _tally(
    holds: list[float], *, done: int, failed: int = 0, refused: int = 0
) -> Tally:
    t = Tally(done=done, failed=failed, refused=refused)
    for h in holds:
        t.holds.record(h)
    return t


def _report(
    cfg: Config, tallies: list[Tally], stats: Stats, **kw: Any
) -> dict[str, Any]:
    ok = LeakPoint(0, 0, None, 0)
    result = RunResult(
        elapsed=kw.pop("elapsed", 1.0),
        tallies=tallies,
        samples=[],
        stats=stats,
        after_run=kw.pop("after_run", ok),
        after_close=ok,
        peak_in_use=kw.pop("peak", 1),
        **kw,
    )
    return build_report(cfg, _target(), result)


def test_workers_bound_run_gives_no_max_open_advice() -> None:
    """8 workers each holding all the time: demand = workers, not advice."""
    cfg = Config(workers=8, max_idle=8)
    r = _report(cfg, [_tally([0.01] * 100, done=100) for _ in range(8)],
                _stats(acquires=800), peak=8)  # fmt: skip
    sizing = r["sizing"]
    assert sizing["busy_connections"] == pytest.approx(8.0)
    assert sizing["workers_bound"] is True
    assert sizing["suggested_max_open"] is None
    assert not any("suggested max_open=8" in n for n in sizing["notes"])
    assert any("all 8 workers wanted a connection" in n for n in sizing["notes"])


def test_light_load_suggests_from_demand() -> None:
    """8 workers, each holding 10 % of the time: about one connection busy."""
    cfg = Config(workers=8, max_idle=8, think_time=0.09)
    r = _report(cfg, [_tally([0.01] * 10, done=10) for _ in range(8)],
                _stats(acquires=80), peak=2)  # fmt: skip
    sizing = r["sizing"]
    assert sizing["busy_connections"] == pytest.approx(0.8)
    assert sizing["workers_bound"] is False
    assert sizing["suggested_max_open"] == 1
    assert "suggested max_open=1, max_idle=1." in sizing["notes"][-2]


def test_waits_count_timed_out_acquires_in_the_attempts() -> None:
    """41 served + 1346 refused: "1346 of 41 acquires waited" cannot happen."""
    cfg = Config(workers=4, max_open=1, max_idle=1, acquire_timeout=0.01)
    tallies = [_tally([0.5] * 41, done=41, failed=1346, refused=1346)]
    stats = _stats(acquires=41, wait_count=1346 + 40, timeouts=1346,
                   wait_duration=20.0)  # fmt: skip
    r = _report(cfg, tallies, stats, peak=1, elapsed=20.5)
    waits = next(n for n in r["sizing"]["notes"] if n.startswith("waits: "))
    assert waits.startswith("waits: 1386 of 1387 acquire attempts (99.9 %) queued")
    assert "1346 acquires timed out after 0.01 s." in r["sizing"]["notes"]


def test_default_settings_do_not_warn_about_churn() -> None:
    """The CLI's own default max_idle (the worker count) never triggers churn."""
    cfg = Config(workers=4, max_idle=4)
    r = _report(
        cfg, [_tally([0.001] * 10, done=10)], _stats(acquires=10, max_idle=4), peak=4
    )
    assert r["sizing"]["churn"] is False
    assert not any(n.startswith("churn:") for n in r["sizing"]["notes"])


@pytest.mark.parametrize(
    ("kw", "code", "outcome"),
    [
        ({}, 0, "PASS"),
        ({"failed": 1}, 0, "PASS"),  # 1 of 100 = 1 %: not above 0.01
        ({"failed": 2}, 3, "2.00 % of requests failed, above --max-error-rate 0.01"),
        ({"interrupted": True, "failed": 50}, 130,
         "interrupted (Ctrl-C): the figures cover the run until then"),
        ({"leak": True, "interrupted": True}, 1, "FAIL: leak"),
        ({"internal": 2, "leak": True}, 1, "FAIL: 2 internal error(s) and a leak"),
    ],
)  # fmt: skip
def test_exit_status_precedence(kw: dict[str, Any], code: int, outcome: str) -> None:
    failed = kw.get("failed", 0)
    cfg = Config(workers=1, max_idle=1)
    extra: dict[str, Any] = {"interrupted": kw.get("interrupted", False)}
    if kw.get("leak"):
        extra["after_run"] = LeakPoint(1, 2, None, 1)
    extra["internal"] = [InternalError("w", "E: x", "tb")] * kw.get("internal", 0)
    r = _report(cfg, [_tally([0.001] * 10, done=100 - failed, failed=failed)],
                _stats(acquires=100), **extra)  # fmt: skip
    assert (r["exit_code"], r["outcome"]) == (code, outcome)
    assert code in EXIT_CODES
    assert r["verdict"] == ("PASS" if code in (0, 3, 130) else "FAIL")


def test_histogram_percentiles_in_the_report() -> None:
    cfg = Config(workers=1, max_idle=1)
    t = Tally(done=3)
    for v in (0.001, 0.002, 0.004):
        t.queries.record(v)
    r = _report(cfg, [t], _stats(acquires=3))
    q = r["latency_ms"]["query"]
    assert q["count"] == 3
    assert q["max"] == pytest.approx(4.0)
    assert q["mean"] == pytest.approx(7 / 3)
    assert abs(q["p50"] - 2.0) <= 2.0 / 512
    assert r["latency_ms"]["relative_error"] == 1 / 512
    assert r["latency_ms"]["acquire_wait"] is None
    assert isinstance(Histogram(), Histogram)
