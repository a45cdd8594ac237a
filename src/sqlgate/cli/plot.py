"""``--plot FILE``: throughput, connections in use and waiters over time."""

from __future__ import annotations

from typing import Any

__all__ = ["write_plot"]


def write_plot(report: dict[str, Any], path: str) -> None:
    """Draw the run's samples (every ~100 ms) into an image file.

    Three stacked panels sharing the time axis: completed requests per second;
    connections open, in use and idle; callers waiting. The format follows
    the file's suffix (PNG, SVG, PDF: whatever matplotlib supports).

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
    fig, (ax_rate, ax_conn, ax_wait) = plt.subplots(
        3, 1, sharex=True, figsize=(9, 7), constrained_layout=True
    )
    try:
        cfg = report["config"]
        fig.suptitle(
            f"sqlgate stress: {report['target']['dsn']}\n"
            f"workers={cfg['workers']} max_open={cfg['max_open']} "
            f"max_idle={cfg['max_idle']} - {report['throughput_rps']:.0f} req/s, "
            f"leak check {report['verdict']}",
            fontsize=10,
        )
        ax_rate.plot(t, [s["throughput_rps"] for s in samples], color="tab:blue")
        ax_rate.set_ylabel("requests / s")
        ax_conn.plot(t, [s["open"] for s in samples], label="open", color="tab:gray")
        ax_conn.plot(t, [s["in_use"] for s in samples], label="in use")
        ax_conn.plot(t, [s["idle"] for s in samples], label="idle")
        if cfg["max_open"]:
            ax_conn.axhline(
                cfg["max_open"], color="tab:red", linestyle=":", label="max_open"
            )
        ax_conn.set_ylabel("connections")
        ax_conn.legend(loc="upper right", fontsize=8)
        ax_wait.plot(t, [s["waiting"] for s in samples], color="tab:orange")
        ax_wait.set_ylabel("waiting")
        ax_wait.set_xlabel("seconds")
        for ax in (ax_rate, ax_conn, ax_wait):
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        fig.savefig(path)
    finally:
        plt.close(fig)
