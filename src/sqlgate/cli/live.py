"""The live view while ``sqlgate stress`` runs (stderr, terminals only)."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sqlgate.cli.stress import Sample

__all__ = ["LiveView", "progress_text"]

#: Seconds of samples the live throughput is averaged over.
WINDOW = 1.0


def progress_text(sample: Sample, rate: float, goal: str) -> str:
    """One status line: elapsed, throughput, pool occupancy, errors."""
    return (
        f"{sample.t:6.1f} s {goal}  {sample.completed:>8} req  {rate:>9.0f} req/s  "
        f"in use {sample.in_use:>3}  idle {sample.idle:>3}  "
        f"waiting {sample.waiting:>3}  open {sample.open:>3}  errors {sample.errors}"
    )


class LiveView:
    """Shows the latest sample: a rich ``Live`` line, or a text line a second.

    ``header`` (the target and settings) is shown above it; ``plain`` forces
    the line-a-second text even when rich is installed.

    ``update`` is called from the sampler thread; rich's ``Live`` is
    thread-safe, and the plain fallback only writes whole lines.
    """

    def __init__(
        self,
        goal: str,
        out: TextIO | None = None,
        *,
        header: str = "",
        plain: bool = False,
    ) -> None:
        self._goal = goal
        self._header = header
        self._plain = plain
        self._out = out if out is not None else sys.stderr
        self._recent: deque[Sample] = deque()
        self._live: Any = None
        self._last_plain = 0.0

    def __enter__(self) -> LiveView:
        if self._plain:
            return self
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:
            return self
        console = Console(file=self._out)
        self._live = Live(
            f"{self._header}\nstarting..." if self._header else "starting...",
            console=console,
            refresh_per_second=8,
            transient=True,
        )
        self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, sample: Sample) -> None:
        """Show ``sample`` (throughput over the last ``WINDOW`` seconds)."""
        recent = self._recent
        recent.append(sample)
        while len(recent) > 2 and sample.t - recent[0].t > WINDOW:
            recent.popleft()
        first = recent[0]
        dt = sample.t - first.t
        rate = (sample.completed - first.completed) / dt if dt > 0 else 0.0
        text = progress_text(sample, rate, self._goal)
        if self._live is not None:
            self._live.update(f"{self._header}\n{text}" if self._header else text)
        elif time.monotonic() - self._last_plain >= 1.0:
            if not self._last_plain and self._header:
                self._out.write(self._header + "\n")
            self._last_plain = time.monotonic()
            self._out.write(text + "\n")
            self._out.flush()
