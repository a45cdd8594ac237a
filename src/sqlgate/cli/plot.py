"""``--plot FILE``: throughput, connections, waiters and latency over time."""

from __future__ import annotations

from typing import Any

__all__ = ["write_plot"]


def write_plot(report: dict[str, Any], path: str) -> None:
    """Draw the run's samples (every ~100 ms) into an image file.

    Four stacked panels sharing the time axis: completed requests per second;
    connections open, in use and idle (and the ``max_open`` line, or
    "unlimited" in the title); callers waiting; the mean acquire wait and
    query latency of each interval. Legends sit outside the plotting area so
    they never hide a line. An interrupted run is marked in the title and by
    a line where it stopped. The format follows the file's suffix (PNG, SVG,
    PDF: whatever matplotlib supports).

    Args:
        report: a report from ``build_report`` (its ``samples``).
        path: where to write the picture.

    Raises:
        ImportError: matplotlib is not installed (the ``plot`` extra).
        OSError: the file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(
        4, 1, sharex=True, figsize=(10, 9), constrained_layout=True
    )
    ax_rate, ax_conn, ax_wait, ax_lat = axes
    try:
        cfg = report["config"]
        max_open = cfg["max_open"] or "unlimited"
        status = (
            "INTERRUPTED (Ctrl-C)"
            if report["interrupted"]
            else f"exit {report['exit_code']}: {report['outcome']}"
        )
        fig.suptitle(
            f"sqlgate stress: {report['target']['dsn']}\n"
            f"workers={cfg['workers']} max_open={max_open} "
            f"max_idle={cfg['max_idle']} hold={cfg['hold_time_s']:g}s "
            f"think={cfg['think_time_s']:g}s - "
            f"{report['throughput_rps']:.0f} req/s - {status}",
            fontsize=10,
            color="tab:red" if report["exit_code"] else "black",
        )
        outside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8}
        ax_rate.plot(t, [s["throughput_rps"] for s in samples], color="tab:blue")
        ax_rate.set_ylabel("requests / s")
        # Wide and pale, under the others: visible even where in use == open.
        ax_conn.plot(
            t,
            [s["open"] for s in samples],
            label="open",
            color="tab:gray",
            linewidth=4,
            alpha=0.4,
        )
        ax_conn.plot(t, [s["in_use"] for s in samples], label="in use")
        ax_conn.plot(t, [s["idle"] for s in samples], label="idle")
        if cfg["max_open"]:
            ax_conn.axhline(
                cfg["max_open"], color="tab:red", linestyle=":", label="max_open"
            )
        ax_conn.set_ylabel("connections")
        ax_conn.legend(**outside)
        ax_wait.plot(t, [s["waiting"] for s in samples], color="tab:orange")
        ax_wait.set_ylabel("waiting")
        ax_lat.plot(
            t, [s["wait_ms"] for s in samples], label="acquire wait", color="tab:red"
        )
        ax_lat.plot(
            t, [s["query_ms"] for s in samples], label="query", color="tab:green"
        )
        ax_lat.set_ylabel("mean ms / interval")
        ax_lat.legend(**outside)
        ax_lat.set_xlabel("seconds")
        for ax in axes:
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            if report["interrupted"] and t:
                ax.axvline(t[-1], color="tab:red", linestyle="--", linewidth=1)
        if report["interrupted"] and t:
            ax_rate.annotate(
                "interrupted",
                xy=(t[-1], 0),
                xycoords=("data", "axes fraction"),
                xytext=(-4, 4),
                textcoords="offset points",
                ha="right",
                color="tab:red",
                fontsize=8,
            )
        fig.savefig(path)
    finally:
        plt.close(fig)
